use axum::{Json, extract::State};
use crewmesh_proto::identity::v1::{Role as ProtoRole, WhoAmIRequest};
use serde::Serialize;
use utoipa::ToSchema;

use super::non_empty;
use crate::{auth::Authenticated, error::ApiError, startup::AppState};

/// The authenticated caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// `user` or `service`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// platform_admin, customer_admin or operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The platform admin acting as this user, while impersonating.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonator_id: Option<String>,
}

/// Who the bearer token belongs to, as identity-svc sees it.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "identity",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No or bad token", body = crate::error::ErrorBody),
    )
)]
pub async fn get_me(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Me>, ApiError> {
    let mut identity = state.identity.clone();
    let me = identity
        .who_am_i(auth.call.request(WhoAmIRequest {}))
        .await
        .map_err(|status| auth.error(&status))?
        .into_inner();
    let role = match me.role() {
        ProtoRole::Unspecified => None,
        ProtoRole::PlatformAdmin => Some("platform_admin"),
        ProtoRole::CustomerAdmin => Some("customer_admin"),
        ProtoRole::Operator => Some("operator"),
    };
    Ok(Json(Me {
        kind: me.kind,
        user_id: non_empty(me.user_id),
        tenant_id: non_empty(me.tenant_id),
        role: role.map(str::to_owned),
        impersonator_id: non_empty(me.impersonator_id),
    }))
}
