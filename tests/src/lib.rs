//! The whole mesh in this process, on random ports, against a fresh database:
//! the same `serve` functions the binaries and `crewmesh up` run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fake_graph;
pub mod fake_openai;
pub mod fake_slack;
pub mod fake_stripe;
pub mod gate;
pub mod process;
pub mod webhook;

use std::{net::SocketAddr, time::Duration};

use mesh_kit::{ServiceId, Shutdown};
use tokio::net::TcpListener;

#[derive(Debug)]
pub struct Mesh {
    /// Base URL of the gateway, e.g. `http://127.0.0.1:41234`.
    pub gateway: String,
    /// Each gRPC service and its loopback URL.
    pub grpc: Vec<(ServiceId, String)>,
    pub http: reqwest::Client,
    /// The Redis Stream identity-svc's outbox publishes to (unique per mesh).
    pub events_stream: String,
    /// The mesh's message queues (their own keys per mesh).
    pub queues: mesh_kit::queues::Queues,
    /// The Redis every service of the mesh uses.
    pub redis_url: String,
    /// What llm-svc and billing-svc may reach besides the internet.
    pub egress_allow: String,
    /// The mesh's own database, for tests that inspect what is stored.
    pub database: secrecy::SecretString,
    shutdown: Shutdown,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Mesh {
    pub fn grpc_url(&self, service: ServiceId) -> &str {
        self.grpc
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, url)| url.as_str())
            .expect("no such service in the mesh")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// POSTs JSON to `path` through the gateway; returns the status and JSON body
    /// (`null` for an empty body).
    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Logs in through the gateway; returns the access token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let (status, body) = self
            .post_json(
                "/api/v1/auth/login",
                None,
                &serde_json::json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(status, 200, "login of {email}: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Creates a tenant as `admin`; returns its id.
    pub async fn create_tenant(&self, admin: &str, slug: &str) -> String {
        let (status, body) = self
            .post_json(
                "/api/v1/tenants",
                Some(admin),
                &serde_json::json!({ "slug": slug, "name": slug }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Invites `email` with `role` to `tenant`; returns (invite id, token).
    pub async fn invite(
        &self,
        token: &str,
        tenant: &str,
        email: &str,
        role: &str,
    ) -> (String, String) {
        let (status, body) = self
            .post_json(
                "/api/v1/invites",
                Some(token),
                &serde_json::json!({ "email": email, "role": role, "tenant_id": tenant }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["invite"]["id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Accepts an invite with [`PASSWORD`].
    pub async fn accept_invite(&self, token: &str) -> (u16, serde_json::Value) {
        self.post_json(
            "/api/v1/invites/accept",
            None,
            &serde_json::json!({ "token": token, "name": "Ann Example", "password": PASSWORD }),
        )
        .await
    }

    /// A new tenant with one member of `role`, who has logged in; returns
    /// (tenant id, member's access token, member's user id).
    pub async fn tenant_with_member(&self, slug: &str, role: &str) -> (String, String, String) {
        let admin = self.admin_token().await;
        let tenant = self.create_tenant(&admin, slug).await;
        let email = format!("{role}@{slug}.test");
        let (_, token) = self.invite(&admin, &tenant, &email, role).await;
        let (status, user) = self.accept_invite(&token).await;
        assert_eq!(status, 201, "{user}");
        let member = self.login(&email, PASSWORD).await;
        (tenant, member, user["id"].as_str().unwrap().to_owned())
    }

    /// Every message the gateway queued on this mesh's inbound queue, oldest first.
    pub async fn inbound_messages(&self) -> Vec<crewmesh_proto::messaging::v1::InboundMessage> {
        use prost::Message as _;
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        let topology = &self.queues.inbound;
        let mut entries = Vec::new();
        for p in 0..topology.partitions() {
            let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(topology.stream(p))
                .arg("-")
                .arg("+")
                .query_async(&mut redis)
                .await
                .unwrap();
            entries.extend(range.ids);
        }
        let order = |id: &str| -> (u64, u64) {
            let (ms, seq) = id.split_once('-').unwrap();
            (ms.parse().unwrap(), seq.parse().unwrap())
        };
        entries.sort_by_key(|e| order(&e.id));
        entries
            .iter()
            .map(|entry| {
                let body: Vec<u8> = entry.get("message").unwrap();
                crewmesh_proto::messaging::v1::InboundMessage::decode(body.as_slice()).unwrap()
            })
            .collect()
    }

    /// Waits until both queues are quiet: every entry read by its consumer
    /// group and acknowledged. After that, no reply is still on its way.
    pub async fn queues_settled(&self) {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let queues = [
            (&self.queues.inbound, ServiceId::Llm),
            (&self.queues.outbound, ServiceId::Gateway),
        ];
        testkit::eventually(Duration::from_secs(60), "the queues to settle", || {
            let client = client.clone();
            async move {
                let mut redis = client.get_multiplexed_async_connection().await.ok()?;
                for (topology, group) in queues {
                    for p in 0..topology.partitions() {
                        let stream = topology.stream(p);
                        let last: Option<String> = redis::cmd("XREVRANGE")
                            .arg(&stream)
                            .arg("+")
                            .arg("-")
                            .arg("COUNT")
                            .arg(1)
                            .query_async::<redis::streams::StreamRangeReply>(&mut redis)
                            .await
                            .ok()?
                            .ids
                            .first()
                            .map(|e| e.id.clone());
                        let Some(last) = last else { continue };
                        let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
                            .arg("GROUPS")
                            .arg(&stream)
                            .query_async(&mut redis)
                            .await
                            .ok()?;
                        let group = groups.groups.iter().find(|g| g.name == group.as_str())?;
                        let id = |s: &str| -> (u64, u64) {
                            let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
                            (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
                        };
                        if group.pending > 0 || id(&group.last_delivered_id) < id(&last) {
                            return None;
                        }
                    }
                }
                Some(())
            }
        })
        .await
        .unwrap();
    }

    /// The bootstrap platform admin's access token.
    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// PUTs `bytes` to the presigned URL of an upload the gateway created,
    /// with exactly the headers it named, as a portal would; no bearer token.
    pub async fn put_upload(&self, upload: &serde_json::Value, bytes: Vec<u8>) -> u16 {
        assert_eq!(upload["upload_method"], "PUT", "{upload}");
        let mut request = self
            .http
            .put(upload["upload_url"].as_str().unwrap())
            .body(bytes);
        for (name, value) in upload["upload_headers"].as_object().unwrap() {
            request = request.header(name, value.as_str().unwrap());
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// Uploads `bytes` through the gateway as `token` to `tenant`; returns the media id.
    pub async fn upload_media(
        &self,
        token: &str,
        tenant: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> String {
        let (status, upload) = self
            .post_json(
                "/api/v1/media/uploads",
                Some(token),
                &serde_json::json!({ "content_type": content_type, "size_bytes": bytes.len(),
                                     "tenant_id": tenant }),
            )
            .await;
        assert_eq!(status, 201, "{upload}");
        assert_eq!(self.put_upload(&upload, bytes).await, 200);
        upload["media"]["id"].as_str().unwrap().to_owned()
    }

    /// GETs `path` through the gateway and returns the status and JSON body.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

async fn loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The platform admin every test mesh bootstraps.
pub const ADMIN_EMAIL: &str = "admin@crewmesh.test";
pub const ADMIN_PASSWORD: &str = "bootstrap admin password";
/// The Stripe webhook signing secret of every test mesh.
pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_crewmesh_test";
pub const SLACK_SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const WHATSAPP_APP_SECRET: &str = "whatsapp-app-secret-for-tests";
pub const WHATSAPP_VERIFY_TOKEN: &str = "meatyhamhock";

/// A local address nothing listens on (the discard port).
const UNREACHABLE: &str = "127.0.0.1:9";

/// The password invited test users choose.
pub const PASSWORD: &str = "a long enough password";

/// What a test may change about the mesh it starts.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    pub invite_ttl: Duration,
    pub failed_logins_per_account: u32,
    pub failed_logins_per_account_address: u32,
    /// identity-svc's `CREWMESH_PASSWORD_HASH_CONCURRENCY`.
    pub password_hash_concurrency: usize,
    /// The gateway's `CREWMESH_AUTH_RATE_PER_MINUTE`. High by default: every
    /// test's requests come from 127.0.0.1.
    pub auth_requests_per_minute: u32,
    /// The gateway's `CREWMESH_TRUST_FORWARDED_FOR`, so a test can speak
    /// from several client addresses with `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// Base URL of a Stripe stand-in; None leaves Stripe unconfigured.
    pub stripe_api_base: Option<String>,
    /// `SLACK_API_BASE` of a Slack stand-in (`FakeSlack::api_base`), for
    /// agent-svc (`auth.test` before a bot token is bound, OAuth installs,
    /// which it also configures) and the gateway's deliveries. None leaves
    /// the Slack app unconfigured and points both at a closed local port, so
    /// a test never reaches Slack (and cannot connect a Slack workspace).
    pub slack_api_base: Option<String>,
    /// `WHATSAPP_API_BASE` of a Graph API stand-in (`FakeGraph::api_base`),
    /// for agent-svc (a number is looked up before it is bound), media-svc
    /// and the gateway's deliveries. None points them at a closed local
    /// port, so a test never reaches Meta (and cannot connect a number).
    pub whatsapp_api_base: Option<String>,
    /// A gate between agent-svc and billing-svc the test can close and
    /// reopen (billing-svc itself keeps serving the others).
    pub billing_gate: Option<gate::Gate>,
    /// Whether llm-svc answers queued messages and the gateway delivers
    /// replies; off for tests that inspect the queue itself.
    pub queue_workers: bool,
    /// Whether the in-process llm-svc answers queued messages (tests that
    /// run llm-svc as its own process turn it off).
    pub llm_workers: bool,
    /// A Redis of the test's own (e.g. one it restarts); None: the shared one.
    pub redis_url: Option<String>,
    /// `CREWMESH_EGRESS_ALLOW` of llm-svc and billing-svc. Loopback by
    /// default: the providers tests stand in for live there.
    pub egress_allow: String,
}

impl Default for MeshOptions {
    fn default() -> MeshOptions {
        MeshOptions {
            invite_ttl: Duration::from_secs(7 * 24 * 3600),
            failed_logins_per_account: 20,
            failed_logins_per_account_address: 5,
            password_hash_concurrency: identity_svc::passwords::DEFAULT_CONCURRENCY,
            auth_requests_per_minute: 10_000,
            trust_forwarded_for: false,
            stripe_api_base: None,
            slack_api_base: None,
            whatsapp_api_base: None,
            billing_gate: None,
            queue_workers: true,
            llm_workers: true,
            redis_url: None,
            egress_allow: "127.0.0.0/8".to_owned(),
        }
    }
}

/// Starts every service and the gateway, and returns once `/readyz` says ready.
pub async fn spawn_mesh() -> Mesh {
    spawn_mesh_with(MeshOptions::default()).await
}

/// A mesh whose queues nobody consumes: what the webhooks queued stays there.
pub async fn spawn_mesh_without_workers() -> Mesh {
    spawn_mesh_with(MeshOptions {
        queue_workers: false,
        ..MeshOptions::default()
    })
    .await
}

/// The URL a service of the mesh was started on.
fn url_in(grpc: &[(ServiceId, String)], id: ServiceId) -> String {
    grpc.iter()
        .find(|(s, _)| *s == id)
        .map(|(_, url)| url.clone())
        .expect("the service is started before its callers")
}

pub async fn spawn_mesh_with(options: MeshOptions) -> Mesh {
    let database = testkit::fresh_database().await.unwrap();
    let events_stream = format!("test:events:{}", uuid::Uuid::new_v4().simple());
    let mut queues = mesh_kit::queues::Queues::named(
        &format!("test:{}", uuid::Uuid::new_v4().simple()),
        4,
        "test-mesh",
    )
    .unwrap();
    queues.workers = options.queue_workers;
    let shutdown = Shutdown::new();
    let mut grpc = Vec::new();
    let redis_url = options.redis_url.clone().unwrap_or_else(testkit::redis_url);
    let egress = mesh_kit::egress::EgressPolicy::parse(&options.egress_allow).unwrap();
    let service_config = |id: ServiceId| {
        let mut config = testkit::service_config(id, &database).unwrap();
        config.common.redis_url = redis_url.clone().into();
        config
    };

    {
        let mut config =
            identity_svc::config::IdentityConfig::new(service_config(ServiceId::Identity));
        config.bootstrap_admin = Some(identity_svc::config::BootstrapAdmin {
            email: ADMIN_EMAIL.into(),
            password: ADMIN_PASSWORD.to_owned().into(),
        });
        config.invite_ttl = options.invite_ttl;
        config.login_limits.per_account = options.failed_logins_per_account;
        config.login_limits.per_account_address = options.failed_logins_per_account_address;
        config.password_hash_concurrency = options.password_hash_concurrency;
        // Tests share one Redis: each mesh counts failed logins and streams events on its own.
        config.login_limits.namespace = format!("test-{}", uuid::Uuid::new_v4().simple());
        config.events_stream = events_stream.clone();
        let (listener, addr) = loopback().await;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = identity_svc::startup::serve_with(config, listener, stop).await {
                panic!("identity-svc failed: {e:#}");
            }
        });
        grpc.push((ServiceId::Identity, format!("http://{addr}")));
    }
    {
        let service = service_config(ServiceId::Billing);
        let mut config = billing_svc::config::BillingConfig::from_env(service).unwrap();
        config.egress = egress.clone();
        config.plan_prices =
            billing_svc::subscriptions::PlanPrices::new(&billing_svc::stripe_api::parse_prices(
                "starter=price_starter,growth=price_growth,scale=price_scale",
            ));
        config.events_stream = events_stream.clone();
        config.stripe = options.stripe_api_base.as_deref().map(|base| {
            let prices = billing_svc::stripe_api::parse_prices(
                "starter=price_starter,growth=price_growth,scale=price_scale",
            );
            billing_svc::stripe_api::StripeApi::new(
                &fake_stripe::SECRET_KEY.to_owned().into(),
                base,
                prices,
            )
            .unwrap()
        });
        let (listener, addr) = loopback().await;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = billing_svc::startup::serve_with(config, listener, stop).await {
                panic!("billing-svc failed: {e:#}");
            }
        });
        grpc.push((ServiceId::Billing, format!("http://{addr}")));
    }
    {
        let billing_url = url_in(&grpc, ServiceId::Billing);
        let mut config =
            agent_svc::config::AgentConfig::from_env(service_config(ServiceId::Agent)).unwrap();
        config.billing_url = match &options.billing_gate {
            Some(gate) => {
                gate.forward_to(billing_url.trim_start_matches("http://").parse().unwrap());
                gate.url()
            }
            None => billing_url,
        };
        // Without stand-ins, ownership proofs go to a closed local port.
        config.slack_api_base = options
            .slack_api_base
            .clone()
            .unwrap_or_else(|| format!("http://{UNREACHABLE}/api"));
        config.whatsapp_api_base = options
            .whatsapp_api_base
            .clone()
            .unwrap_or_else(|| format!("http://{UNREACHABLE}/v21.0"));
        // A budget billing-svc missed lands within a test's patience.
        config.budget_relay_interval = Duration::from_millis(200);
        config.slack = options
            .slack_api_base
            .as_deref()
            .map(|_| agent_svc::config::SlackApp {
                client_id: fake_slack::CLIENT_ID.to_owned(),
                client_secret: fake_slack::CLIENT_SECRET.to_owned().into(),
                redirect_uri: Some(fake_slack::REDIRECT_URI.to_owned()),
                scopes: agent_svc::config::DEFAULT_SLACK_SCOPES.to_owned(),
            });
        let (listener, addr) = loopback().await;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = agent_svc::startup::serve_with(config, listener, stop).await {
                panic!("agent-svc failed: {e:#}");
            }
        });
        grpc.push((ServiceId::Agent, format!("http://{addr}")));
    }
    {
        let mut config =
            media_svc::config::MediaConfig::from_env(service_config(ServiceId::Media)).unwrap();
        // WhatsApp media ids resolve at the Graph stand-in, or nowhere.
        config.whatsapp_api_base = options
            .whatsapp_api_base
            .clone()
            .unwrap_or_else(|| "http://127.0.0.1:9/v21.0".to_owned());
        let (listener, addr) = loopback().await;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = media_svc::startup::serve_with(config, listener, stop).await {
                panic!("media-svc failed: {e:#}");
            }
        });
        grpc.push((ServiceId::Media, format!("http://{addr}")));
    }
    {
        let mut config =
            llm_svc::config::LlmConfig::from_env(service_config(ServiceId::Llm)).unwrap();
        config.agent_url = url_in(&grpc, ServiceId::Agent);
        config.billing_url = url_in(&grpc, ServiceId::Billing);
        config.media_url = url_in(&grpc, ServiceId::Media);
        config.egress = egress.clone();
        config.queues = queues.clone();
        config.queues.workers = queues.workers && options.llm_workers;
        // A hung provider fails a test in seconds, not a minute.
        config.provider_timeout = Duration::from_secs(10);
        let (listener, addr) = loopback().await;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = llm_svc::startup::serve_with(config, listener, stop).await {
                panic!("llm-svc failed: {e:#}");
            }
        });
        grpc.push((ServiceId::Llm, format!("http://{addr}")));
    }

    let url_of = |id| url_in(&grpc, id);
    let config = gateway::startup::Config {
        service: service_config(ServiceId::Gateway),
        trust_forwarded_for: options.trust_forwarded_for,
        auth_rate: gateway::ratelimit::AuthRateConfig {
            per_minute: options.auth_requests_per_minute,
            // Tests share one Redis: each mesh counts on its own.
            key_prefix: format!("test-{}:auth-rate", uuid::Uuid::new_v4().simple()),
        },
        stripe_webhook_secret: Some(STRIPE_WEBHOOK_SECRET.to_owned().into()),
        slack_signing_secret: Some(SLACK_SIGNING_SECRET.to_owned().into()),
        whatsapp_app_secret: Some(WHATSAPP_APP_SECRET.to_owned().into()),
        whatsapp_verify_token: Some(WHATSAPP_VERIFY_TOKEN.to_owned().into()),
        queues: queues.clone(),
        // Without a stand-in, replies go to a closed local port, never to Slack or Meta.
        slack_api_base: options
            .slack_api_base
            .clone()
            .unwrap_or_else(|| format!("http://{UNREACHABLE}/api")),
        whatsapp_api_base: options
            .whatsapp_api_base
            .clone()
            .unwrap_or_else(|| format!("http://{UNREACHABLE}/v21.0")),
        slack_placeholder_text: gateway::startup::DEFAULT_SLACK_PLACEHOLDER_TEXT.to_owned(),
        upstreams: gateway::startup::Upstreams {
            identity: url_of(ServiceId::Identity),
            agent: url_of(ServiceId::Agent),
            llm: url_of(ServiceId::Llm),
            billing: url_of(ServiceId::Billing),
            media: url_of(ServiceId::Media),
        },
    };
    let (listener, addr) = loopback().await;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = gateway::startup::serve(config, listener, stop).await {
            panic!("gateway failed: {e:#}");
        }
    });

    let mesh = Mesh {
        gateway: format!("http://{addr}"),
        grpc,
        http: reqwest::Client::new(),
        events_stream,
        queues,
        redis_url,
        egress_allow: options.egress_allow.clone(),
        database: database.clone(),
        shutdown,
    };
    let ready = mesh.url("/readyz");
    testkit::eventually(Duration::from_secs(30), "the mesh to be ready", || async {
        let response = mesh.http.get(&ready).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await
    .unwrap();
    mesh
}
