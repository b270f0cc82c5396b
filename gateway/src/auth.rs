//! Authentication at the edge: the bearer token becomes a verified caller
//! plus the context forwarded to services (the same token, `traceparent`,
//! a deadline). Deny by default: a route that takes [`Authenticated`] cannot
//! run without a valid token, and [`Authenticated::require`] checks the role.
//!
//! A tenant API key (`cmk_…`) is exchanged once with identity-svc for a
//! short-lived access token, which is cached for less than its lifetime, so a
//! revoked key stops working within [`API_KEY_CACHE_TTL`].

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::request::Parts,
};
use crewmesh_proto::identity::v1::{
    AuthenticateApiKeyRequest, identity_internal_service_client::IdentityInternalServiceClient,
};
use mesh_kit::{
    Caller, ErrorCode, Role,
    auth::{TokenSigner, UserCaller, bearer},
    client::CallContext,
};
use tonic::transport::Channel;

use crate::{
    error::{ApiError, request_id},
    startup::AppState,
};

/// How long an exchanged API-key token is reused; also the longest a revoked
/// key keeps working at one gateway replica.
pub const API_KEY_CACHE_TTL: Duration = Duration::from_secs(60);
const API_KEY_CACHE_MAX: usize = 10_000;
pub const API_KEY_PREFIX: &str = "cmk_";

/// What every request carries, authenticated or not.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: String,
    pub traceparent: Option<String>,
    /// The client's address: the peer, or the last `X-Forwarded-For` hop when
    /// the gateway is configured to trust its proxy.
    pub client_addr: String,
    pub user_agent: String,
}

impl RequestMeta {
    pub fn error(&self, status: &tonic::Status) -> ApiError {
        ApiError::from_status(status, &self.request_id)
    }

    /// Context for an anonymous call (the public identity RPCs).
    pub fn anonymous(&self) -> CallContext {
        CallContext::new(String::new(), self.traceparent.clone())
    }

    /// Context for a call in the gateway's own name: internal RPCs made on
    /// behalf of verified webhooks and OAuth callbacks, which carry no user.
    pub fn as_gateway(&self, signer: &TokenSigner) -> Result<CallContext, ApiError> {
        let token = signer.service_token().map_err(|e| {
            self.error(&mesh_kit::error::internal(
                "signing the gateway's service token",
                &e,
            ))
        })?;
        Ok(CallContext::new(token, self.traceparent.clone()))
    }
}

impl FromRequestParts<AppState> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let forwarded = state
            .trust_forwarded_for
            .then(|| header("x-forwarded-for"))
            .flatten()
            .and_then(|v| v.rsplit(',').next().map(|s| s.trim().to_owned()))
            .filter(|s| !s.is_empty());
        Ok(RequestMeta {
            request_id: request_id(&parts.headers).to_owned(),
            traceparent: header("traceparent"),
            client_addr: forwarded.or(peer).unwrap_or_default(),
            user_agent: header("user-agent").unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    pub call: CallContext,
    pub meta: RequestMeta,
}

impl Authenticated {
    /// The user, if their role is one of `roles`; 403 otherwise.
    pub fn require(&self, roles: &[Role]) -> Result<&UserCaller, ApiError> {
        self.caller
            .require_role(roles)
            .map_err(|status| self.error(&status))
    }

    pub fn error(&self, status: &tonic::Status) -> ApiError {
        self.meta.error(status)
    }

    /// A service answered without a field its contract promises: a bug upstream.
    pub fn missing(&self, field: &str) -> ApiError {
        tracing::error!(field, request_id = %self.meta.request_id, "upstream response lacks a required field");
        ApiError::new(
            ErrorCode::Internal,
            "internal error; quote the request id when reporting it",
            &self.meta.request_id,
        )
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let meta = RequestMeta::from_request_parts(parts, state).await?;
        let unauthenticated =
            |message: &str| ApiError::new(ErrorCode::Unauthenticated, message, &meta.request_id);
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or_else(|| {
                unauthenticated("send `Authorization: Bearer <token>`; log in to get one")
            })?;
        let token = if presented.starts_with(API_KEY_PREFIX) {
            state
                .api_keys
                .exchange(presented, &meta)
                .await
                .map_err(|status| meta.error(&status))?
        } else {
            presented.to_owned()
        };
        let caller = state
            .verifier
            .verify(&token)
            .map_err(|e| unauthenticated(&format!("{e}; log in again")))?;
        Ok(Authenticated {
            caller,
            call: CallContext::new(token, meta.traceparent.clone()),
            meta,
        })
    }
}

/// SHA-256 of a key → (its access token, when it was fetched).
type TokenCache = HashMap<Vec<u8>, (String, Instant)>;

/// Exchanges tenant API keys for access tokens, with a small cache.
#[derive(Debug, Clone)]
pub struct ApiKeyExchange {
    identity: IdentityInternalServiceClient<Channel>,
    signer: TokenSigner,
    cache: Arc<Mutex<TokenCache>>,
}

impl ApiKeyExchange {
    pub fn new(channel: Channel, signer: TokenSigner) -> ApiKeyExchange {
        ApiKeyExchange {
            identity: IdentityInternalServiceClient::new(channel),
            signer,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    async fn exchange(&self, key: &str, meta: &RequestMeta) -> Result<String, tonic::Status> {
        // Keyed by a hash, so the cache holds no usable key.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes())
            .as_ref()
            .to_vec();
        if let Ok(cache) = self.cache.lock()
            && let Some((token, fetched)) = cache.get(&digest)
            && fetched.elapsed() < API_KEY_CACHE_TTL
        {
            return Ok(token.clone());
        }
        let service_token = self
            .signer
            .service_token()
            .map_err(|e| mesh_kit::error::internal("signing the gateway's service token", &e))?;
        let call = CallContext::new(service_token, meta.traceparent.clone());
        let token = self
            .identity
            .clone()
            .authenticate_api_key(call.request(AuthenticateApiKeyRequest {
                secret: key.to_owned(),
            }))
            .await?
            .into_inner()
            .access_token;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= API_KEY_CACHE_MAX {
                cache.retain(|_, (_, fetched)| fetched.elapsed() < API_KEY_CACHE_TTL);
                if cache.len() >= API_KEY_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(digest, (token.clone(), Instant::now()));
        }
        Ok(token)
    }
}
