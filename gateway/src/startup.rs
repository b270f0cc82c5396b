//! Builds the gateway from its configuration and an already-bound listener.

use std::sync::Arc;

use anyhow::Context as _;
use axum::{Router, http::HeaderName};
use crewmesh_proto::{
    agent::v1::{
        agent_internal_service_client::AgentInternalServiceClient,
        agent_service_client::AgentServiceClient,
    },
    billing::v1::{
        billing_internal_service_client::BillingInternalServiceClient,
        billing_service_client::BillingServiceClient,
    },
    identity::v1::identity_service_client::IdentityServiceClient,
    llm::v1::llm_service_client::LlmServiceClient,
    media::v1::media_service_client::MediaServiceClient,
};
use mesh_kit::{
    ErrorCode, ServiceId, Shutdown,
    auth::{TokenSigner, TokenVerifier},
    client::lazy_channel,
    config::var,
    queues::Queues,
    service::ServiceConfig,
};
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret as _, SecretString};
use streamq::Producer;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    auth::ApiKeyExchange,
    error::{ApiError, REQUEST_ID_HEADER, request_id},
    inbound::InboundQueue,
    openapi::ApiDoc,
    routes::{
        agents, api_keys, audit, billing, channels, dead_letters, health, llm_keys, me, media,
        sessions, templates, tenants, usage, users,
    },
};

pub const DEFAULT_PORT: u16 = 8080;
pub const ADDR_ENV: &str = "CREWMESH_GATEWAY_ADDR";
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Where the gRPC services are.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub identity: String,
    pub agent: String,
    pub llm: String,
    pub billing: String,
    pub media: String,
}

impl Upstreams {
    /// `CREWMESH_<SVC>_URL`, defaulting to each service's SPEC port on loopback.
    pub fn from_env() -> Upstreams {
        let url =
            |env: &str, port: u16| var(env).unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
        Upstreams {
            identity: url("CREWMESH_IDENTITY_URL", 50051),
            agent: url("CREWMESH_AGENT_URL", 50052),
            llm: url("CREWMESH_LLM_URL", 50053),
            billing: url("CREWMESH_BILLING_URL", 50054),
            media: url("CREWMESH_MEDIA_URL", 50055),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    pub upstreams: Upstreams,
    /// `CREWMESH_TRUST_FORWARDED_FOR`: take the client address from the last
    /// `X-Forwarded-For` hop (set it only behind a proxy that writes that header).
    pub trust_forwarded_for: bool,
    /// `CREWMESH_AUTH_RATE_PER_MINUTE`: the per-address limit on the public auth routes.
    pub auth_rate: crate::ratelimit::AuthRateConfig,
    /// `STRIPE_WEBHOOK_SECRET` (`whsec_…`); without it the Stripe webhook answers 503.
    pub stripe_webhook_secret: Option<SecretString>,
    /// `SLACK_SIGNING_SECRET`; without it the Slack Events endpoint answers 503.
    pub slack_signing_secret: Option<SecretString>,
    /// `WHATSAPP_APP_SECRET` (signs deliveries) and `WHATSAPP_VERIFY_TOKEN`
    /// (the subscription handshake); without them the WhatsApp webhook answers 503.
    pub whatsapp_app_secret: Option<SecretString>,
    pub whatsapp_verify_token: Option<SecretString>,
    /// The message queues: inbound for webhooks, outbound for delivery.
    pub queues: Queues,
    /// `SLACK_API_BASE`: Slack's Web API, where replies are posted.
    pub slack_api_base: String,
    /// `WHATSAPP_API_BASE`: Meta's Graph API with its version, where
    /// WhatsApp replies are sent.
    pub whatsapp_api_base: String,
    /// `SLACK_PLACEHOLDER_TEXT`: what a Slack thread shows while the agent
    /// works; the answer replaces it.
    pub slack_placeholder_text: String,
}

pub const DEFAULT_SLACK_API_BASE: &str = "https://slack.com/api";
pub const DEFAULT_WHATSAPP_API_BASE: &str = "https://graph.facebook.com/v21.0";
pub const DEFAULT_SLACK_PLACEHOLDER_TEXT: &str = "Working on it…";

impl Config {
    pub fn from_env() -> anyhow::Result<Config> {
        Ok(Config {
            service: ServiceConfig::from_env(ServiceId::Gateway)?,
            upstreams: Upstreams::from_env(),
            trust_forwarded_for: mesh_kit::config::parsed_or(
                "CREWMESH_TRUST_FORWARDED_FOR",
                false,
            )?,
            auth_rate: crate::ratelimit::AuthRateConfig::from_env()?,
            stripe_webhook_secret: mesh_kit::config::secret_var("STRIPE_WEBHOOK_SECRET"),
            slack_signing_secret: mesh_kit::config::secret_var("SLACK_SIGNING_SECRET"),
            whatsapp_app_secret: mesh_kit::config::secret_var("WHATSAPP_APP_SECRET"),
            whatsapp_verify_token: mesh_kit::config::secret_var("WHATSAPP_VERIFY_TOKEN"),
            queues: Queues::from_env()?,
            slack_api_base: var("SLACK_API_BASE")
                .unwrap_or_else(|| DEFAULT_SLACK_API_BASE.to_owned()),
            whatsapp_api_base: var("WHATSAPP_API_BASE")
                .unwrap_or_else(|| DEFAULT_WHATSAPP_API_BASE.to_owned()),
            slack_placeholder_text: var("SLACK_PLACEHOLDER_TEXT")
                .unwrap_or_else(|| DEFAULT_SLACK_PLACEHOLDER_TEXT.to_owned()),
        })
    }
}

/// What every handler shares: verified-token checks and service clients.
#[derive(Debug, Clone)]
pub struct AppState {
    pub verifier: TokenVerifier,
    pub identity: IdentityServiceClient<Channel>,
    pub billing: BillingServiceClient<Channel>,
    pub agents: AgentServiceClient<Channel>,
    pub billing_internal: BillingInternalServiceClient<Channel>,
    pub media: MediaServiceClient<Channel>,
    /// llm-svc: agent runs (the portal's agent test).
    pub llm: LlmServiceClient<Channel>,
    /// The gateway's own service identity, for internal RPCs.
    pub signer: TokenSigner,
    pub stripe_webhook_secret: Option<SecretString>,
    pub slack_signing_secret: Option<SecretString>,
    pub whatsapp_app_secret: Option<SecretString>,
    pub whatsapp_verify_token: Option<SecretString>,
    /// agent-svc's internal API: channel resolution for inbound events.
    pub agents_internal: AgentInternalServiceClient<Channel>,
    /// Inbound routes, cached briefly (see `webhooks::routing`).
    pub routes: crate::webhooks::routing::RouteCache,
    pub inbound: InboundQueue,
    pub api_keys: ApiKeyExchange,
    pub trust_forwarded_for: bool,
    /// The per-address limit on the public auth routes.
    pub auth_rate: crate::ratelimit::AuthRateLimit,
    /// Every service the edge depends on, for readiness.
    pub upstreams: Vec<(&'static str, Channel)>,
}

impl AppState {
    pub fn new(config: &Config, redis: ConnectionManager) -> anyhow::Result<AppState> {
        let u = &config.upstreams;
        let identity = lazy_channel(&u.identity)?;
        let billing = lazy_channel(&u.billing)?;
        let agent = lazy_channel(&u.agent)?;
        let media = lazy_channel(&u.media)?;
        let llm = lazy_channel(&u.llm)?;
        let upstreams = vec![
            ("identity-svc", identity.clone()),
            ("agent-svc", agent.clone()),
            ("llm-svc", llm.clone()),
            ("billing-svc", billing.clone()),
            ("media-svc", media.clone()),
        ];
        Ok(AppState {
            verifier: config.service.keyring.verifier.clone(),
            api_keys: ApiKeyExchange::new(identity.clone(), config.service.keyring.signer.clone()),
            trust_forwarded_for: config.trust_forwarded_for,
            auth_rate: crate::ratelimit::AuthRateLimit::new(
                redis.clone(),
                config.auth_rate.clone(),
            ),
            identity: IdentityServiceClient::new(identity),
            billing: BillingServiceClient::new(billing.clone()),
            agents: AgentServiceClient::new(agent.clone()),
            agents_internal: AgentInternalServiceClient::new(agent),
            routes: Default::default(),
            inbound: InboundQueue::new(Producer::new(
                redis,
                config.queues.inbound.clone(),
                config.queues.max_len,
                crate::inbound::SEEN_TTL_SECS,
            )),
            slack_signing_secret: config.slack_signing_secret.clone(),
            whatsapp_app_secret: config.whatsapp_app_secret.clone(),
            whatsapp_verify_token: config.whatsapp_verify_token.clone(),
            billing_internal: BillingInternalServiceClient::new(billing),
            media: MediaServiceClient::new(media),
            llm: LlmServiceClient::new(llm),
            signer: config.service.keyring.signer.clone(),
            stripe_webhook_secret: config.stripe_webhook_secret.clone(),
            upstreams,
        })
    }
}

/// The routes with their OpenAPI document; the document grows with each route.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(me::get_me))
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::get_tenant))
        .routes(routes!(sessions::login))
        .routes(routes!(sessions::refresh))
        .routes(routes!(users::list_users))
        .routes(routes!(users::create_invite))
        .routes(routes!(users::resend_invite))
        .routes(routes!(users::accept_invite))
        .routes(routes!(users::start_impersonation))
        .routes(routes!(audit::list_audit_events))
        .routes(routes!(api_keys::create_api_key, api_keys::list_api_keys))
        .routes(routes!(api_keys::revoke_api_key))
        .routes(routes!(llm_keys::create_llm_key, llm_keys::list_llm_keys))
        .routes(routes!(llm_keys::delete_llm_key))
        .routes(routes!(billing::get_subscription))
        .routes(routes!(billing::create_checkout))
        .routes(routes!(billing::create_portal))
        .routes(routes!(agents::create_agent, agents::list_agents))
        .routes(routes!(agents::create_from_template))
        .routes(routes!(
            agents::get_agent,
            agents::update_agent,
            agents::delete_agent
        ))
        .routes(routes!(agents::system_prompt))
        .routes(routes!(agents::run_agent))
        .routes(routes!(templates::list_templates))
        .routes(routes!(templates::get_template))
        .routes(routes!(channels::create_channel, channels::list_channels))
        .routes(routes!(channels::delete_channel))
        .routes(routes!(channels::begin_slack_install))
        .routes(routes!(channels::slack_callback))
        .routes(routes!(dead_letters::list_dead_letters))
        .routes(routes!(dead_letters::retry_dead_letter))
        .routes(routes!(usage::budget_status))
        .routes(routes!(usage::daily))
        .routes(routes!(usage::conversations))
        .routes(routes!(media::create_upload))
        .routes(routes!(media::get_media))
        .routes(routes!(media::get_download_url))
        .routes(routes!(crate::webhooks::stripe::receive))
        .routes(routes!(crate::webhooks::slack::receive))
        .routes(routes!(
            crate::webhooks::whatsapp::verify,
            crate::webhooks::whatsapp::receive
        ))
        .split_for_parts()
}

pub fn router(state: AppState) -> Router {
    let (routes, openapi) = api();
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    mesh_kit::metrics::handle();
    routes
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
        .merge(SwaggerUi::new("/docs").url(OPENAPI_PATH, openapi))
        .fallback(not_found)
        .with_state(state)
        // Outermost first: assign the id, trace with it, echo it back.
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                tracing::info_span!(
                    "http",
                    method = %req.method(),
                    path = %req.uri().path(),
                    request_id = %crate::error::request_id(req.headers()),
                )
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

async fn not_found(method: axum::http::Method, headers: axum::http::HeaderMap) -> ApiError {
    // Route layers do not see the fallback; count it here.
    crate::metrics::count_unmatched(method.as_str());
    ApiError::new(
        ErrorCode::NotFound,
        format!("no such route; the API is described at {OPENAPI_PATH}"),
        request_id(&headers),
    )
}

pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let client = redis::Client::open(config.service.common.redis_url.expose_secret())
        .context("REDIS_URL is not a valid Redis URL")?;
    let redis = redis::aio::ConnectionManager::new(client.clone())
        .await
        .context("cannot connect to Redis, which queues inbound messages (is it running? `scripts/up` starts it)")?;
    let state = AppState::new(&config, redis.clone())?;
    // Replies are delivered by whichever replica holds their partition;
    // every replica serves webhooks regardless.
    let delivery = if config.queues.workers {
        let deliverer = Arc::new(crate::delivery::Deliverer::new(&config, &state, redis)?);
        Some(tokio::spawn(streamq::run(
            client,
            config.queues.outbound.clone(),
            config.queues.consumer(ServiceId::Gateway),
            deliverer,
            shutdown.clone(),
        )))
    } else {
        None
    };
    let app = router(state);
    let drain = config.service.drain;
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.cancelled().await;
        tokio::time::sleep(drain).await;
    })
    .await
    .context("serving HTTP");
    if let Some(delivery) = delivery {
        if served.is_ok() {
            // Shutting down: sends in flight finish (the consumer drains)
            // before the process ends.
            if let Err(e) = delivery.await {
                tracing::error!(error = %e, "the reply delivery task failed");
            }
        } else {
            // Serving failed without a shutdown: the consumer would run on.
            delivery.abort();
        }
    }
    served
}
