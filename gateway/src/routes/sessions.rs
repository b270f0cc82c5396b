//! Login and token refresh: public routes, limited per client address at the
//! edge (`ratelimit`) and, for failed logins, throttled by identity-svc.

use axum::{Json, extract::State};
use crewmesh_proto::identity::v1::{LoginRequest, RefreshTokenRequest, User as ProtoUser};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{non_empty, rfc3339, role_name};
use crate::{error::ApiError, extract::ApiJson, ratelimit::AuthRateLimited, startup::AppState};

#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    #[schema(example = "ann@example.com")]
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    /// Absent for platform staff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// platform_admin, customer_admin or operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl From<ProtoUser> for User {
    fn from(u: ProtoUser) -> User {
        User {
            id: u.id,
            email: u.email,
            name: u.name,
            tenant_id: non_empty(u.tenant_id),
            role: role_name(u.role),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// RFC 3339.
    pub expires_at: Option<String>,
    /// Single use: each refresh returns a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
}

impl Session {
    /// A session with an access token alone.
    pub fn new(access_token: String, expires_at: Option<prost_types::Timestamp>) -> Session {
        Session {
            access_token,
            token_type: "Bearer",
            expires_at: rfc3339(expires_at),
            refresh_token: None,
            user: None,
        }
    }
}

/// Log in with email and password.
#[utoipa::path(
    post, path = "/api/v1/auth/login", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, body = Session),
        (status = 401, description = "Wrong email or password", body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody),
        (status = 429, description = "Too many requests from this address, or too many failed logins for the account (from this address, or from all)",
            body = crate::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "Sign-in is at capacity",
            body = crate::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    AuthRateLimited(meta): AuthRateLimited,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Json<Session>, ApiError> {
    // In the gateway's own name: identity-svc throttles by `client_addr` only
    // when the gateway vouches for it, and by the connection's address otherwise.
    let call = meta.as_gateway(&state.signer)?;
    let session = state
        .identity
        .clone()
        .login(call.request(LoginRequest {
            email: body.email,
            password: body.password,
            client_addr: meta.client_addr.clone(),
            user_agent: meta.user_agent.clone(),
        }))
        .await
        .map_err(|s| meta.error(&s))?
        .into_inner();
    let mut out = Session::new(session.access_token, session.access_expires_at);
    out.refresh_token = non_empty(session.refresh_token);
    out.user = session.user.map(User::from);
    Ok(Json(out))
}

/// Exchange a refresh token for a new access token and refresh token.
#[utoipa::path(
    post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, body = Session),
        (status = 401, description = "Invalid, expired or already used", body = crate::error::ErrorBody),
        (status = 422, description = "Not a refresh request", body = crate::error::ErrorBody),
        (status = 429, description = "Too many requests from this address",
            body = crate::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    AuthRateLimited(meta): AuthRateLimited,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<Session>, ApiError> {
    let session = state
        .identity
        .clone()
        .refresh_token(meta.anonymous().request(RefreshTokenRequest {
            refresh_token: body.refresh_token,
        }))
        .await
        .map_err(|s| meta.error(&s))?
        .into_inner();
    let mut out = Session::new(session.access_token, session.access_expires_at);
    out.refresh_token = non_empty(session.refresh_token);
    Ok(Json(out))
}
