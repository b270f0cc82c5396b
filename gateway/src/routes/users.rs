//! Users, invites and impersonation.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use crewmesh_proto::identity::v1::{
    AcceptInviteRequest, CreateInviteRequest, Invite as ProtoInvite, ListUsersRequest,
    ResendInviteRequest, StartImpersonationRequest,
};
use mesh_kit::Role;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    ADMINS, TenantPageQuery, TenantRole, non_empty, rfc3339, role_name,
    sessions::{Session, User},
};
use crate::{
    auth::Authenticated,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    ratelimit::AuthRateLimited,
    startup::AppState,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub users: Vec<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewInvite {
    #[schema(example = "ann@example.com")]
    pub email: String,
    pub role: TenantRole,
    /// Platform admins name the tenant; customer admins invite to their own.
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Invite {
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub role: Option<String>,
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<String>,
}

impl From<ProtoInvite> for Invite {
    fn from(i: ProtoInvite) -> Invite {
        Invite {
            id: i.id,
            tenant_id: i.tenant_id,
            email: i.email,
            role: role_name(i.role),
            expires_at: rfc3339(i.expires_at),
            accepted_at: rfc3339(i.accepted_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedInvite {
    pub invite: Option<Invite>,
    /// The secret the invitee accepts with. Shown once; only its hash is stored.
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InviteAcceptance {
    pub token: String,
    pub name: String,
    /// At least 12 characters.
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewImpersonation {
    pub tenant_id: String,
    pub user_id: String,
}

/// List a tenant's users.
#[utoipa::path(
    get, path = "/api/v1/users", tag = "users",
    security(("bearer" = [])),
    params(TenantPageQuery),
    responses(
        (status = 200, body = UserPage),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn list_users(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<TenantPageQuery>,
) -> Result<Json<UserPage>, ApiError> {
    auth.require(ADMINS)?;
    let page = state
        .identity
        .clone()
        .list_users(auth.call.request(ListUsersRequest {
            tenant_id: query.tenant_id.unwrap_or_default(),
            page_size: query.page_size.unwrap_or_default(),
            page_token: query.page_token.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(UserPage {
        users: page.users.into_iter().map(User::from).collect(),
        next_page_token: non_empty(page.next_page_token),
    }))
}

/// Invite an email to a tenant with a role. The response carries the token once.
#[utoipa::path(
    post, path = "/api/v1/invites", tag = "users",
    security(("bearer" = [])),
    request_body = NewInvite,
    responses(
        (status = 201, body = IssuedInvite),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A pending invite or an account exists", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn create_invite(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewInvite>,
) -> Result<(StatusCode, Json<IssuedInvite>), ApiError> {
    auth.require(ADMINS)?;
    let issued = state
        .identity
        .clone()
        .create_invite(auth.call.request(CreateInviteRequest {
            tenant_id: body.tenant_id.unwrap_or_default(),
            email: body.email,
            role: body.role.proto(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(IssuedInvite {
            invite: issued.invite.map(Invite::from),
            token: issued.token,
        }),
    ))
}

/// Issue a new token and expiry for a pending invite; the old token stops working.
#[utoipa::path(
    post, path = "/api/v1/invites/{id}/resend", tag = "users",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Invite id")),
    responses(
        (status = 200, body = IssuedInvite),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Already accepted", body = ErrorBody),
        (status = 422, description = "The id is not an invite id", body = ErrorBody),
    )
)]
pub async fn resend_invite(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<IssuedInvite>, ApiError> {
    auth.require(ADMINS)?;
    let issued = state
        .identity
        .clone()
        .resend_invite(auth.call.request(ResendInviteRequest { invite_id: id }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(IssuedInvite {
        invite: issued.invite.map(Invite::from),
        token: issued.token,
    }))
}

/// Accept an invite: creates the account with the invited role. Public.
#[utoipa::path(
    post, path = "/api/v1/invites/accept", tag = "users",
    request_body = InviteAcceptance,
    responses(
        (status = 201, body = User),
        (status = 404, description = "Unknown or replaced token", body = ErrorBody),
        (status = 409, description = "Already accepted, expired, or the email has an account", body = ErrorBody),
        (status = 422, description = "Invalid name or password, or not an invite token", body = ErrorBody),
        (status = 429, description = "Too many requests from this address", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
        (status = 503, description = "Sign-up is at capacity", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
    )
)]
pub async fn accept_invite(
    State(state): State<AppState>,
    AuthRateLimited(meta): AuthRateLimited,
    ApiJson(body): ApiJson<InviteAcceptance>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let accepted = state
        .identity
        .clone()
        .accept_invite(meta.anonymous().request(AcceptInviteRequest {
            token: body.token,
            name: body.name,
            password: body.password,
        }))
        .await
        .map_err(|s| meta.error(&s))?
        .into_inner();
    let user = accepted.user.map(User::from).ok_or_else(|| {
        ApiError::from_status(
            &tonic::Status::internal("accept returned no user"),
            &meta.request_id,
        )
    })?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Start acting as a tenant user (platform admins). Audited; the token names both.
#[utoipa::path(
    post, path = "/api/v1/impersonations", tag = "users",
    security(("bearer" = [])),
    request_body = NewImpersonation,
    responses(
        (status = 201, body = Session),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn start_impersonation(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewImpersonation>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    auth.require(&[Role::PlatformAdmin])?;
    let started = state
        .identity
        .clone()
        .start_impersonation(auth.call.request(StartImpersonationRequest {
            tenant_id: body.tenant_id,
            user_id: body.user_id,
            client_addr: auth.meta.client_addr.clone(),
            user_agent: auth.meta.user_agent.clone(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(Session::new(
            started.access_token,
            started.access_expires_at,
        )),
    ))
}
