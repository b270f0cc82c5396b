//! The audit log: every tenant for platform admins, their own for customer admins.

use axum::{
    Json,
    extract::{Query, State},
};
use crewmesh_proto::identity::v1::{AuditEvent as ProtoAuditEvent, ListAuditEventsRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ADMINS, non_empty, rfc3339, timestamp_param};
use crate::{
    auth::Authenticated,
    error::{ApiError, ErrorBody},
    startup::AppState,
};

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    pub tenant_id: Option<String>,
    /// e.g. `invite.created`, `impersonation.started`.
    pub action: Option<String>,
    /// Events done by this user, or by this platform admin while impersonating.
    pub actor_user_id: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    pub id: String,
    pub tenant_id: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_user_id: Option<String>,
    /// The platform admin who acted as `actor_user_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonator_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    pub occurred_at: Option<String>,
}

impl From<ProtoAuditEvent> for AuditEvent {
    fn from(e: ProtoAuditEvent) -> AuditEvent {
        AuditEvent {
            id: e.id,
            tenant_id: e.tenant_id,
            action: e.action,
            actor_user_id: non_empty(e.actor_user_id),
            impersonator_id: non_empty(e.impersonator_id),
            target_user_id: non_empty(e.target_user_id),
            client_addr: non_empty(e.client_addr),
            user_agent: non_empty(e.user_agent),
            occurred_at: rfc3339(e.occurred_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// List audit events, newest first.
#[utoipa::path(
    get, path = "/api/v1/audit-events", tag = "audit",
    security(("bearer" = [])),
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn list_audit_events(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    auth.require(ADMINS)?;
    let request_id = auth.meta.request_id.as_str();
    let request = ListAuditEventsRequest {
        tenant_id: query.tenant_id.unwrap_or_default(),
        action: query.action.unwrap_or_default(),
        actor_user_id: query.actor_user_id.unwrap_or_default(),
        since: timestamp_param("since", query.since, request_id)?,
        until: timestamp_param("until", query.until, request_id)?,
        page_size: query.page_size.unwrap_or_default(),
        page_token: query.page_token.unwrap_or_default(),
    };
    let page = state
        .identity
        .clone()
        .list_audit_events(auth.call.request(request))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(AuditPage {
        events: page.events.into_iter().map(AuditEvent::from).collect(),
        next_page_token: non_empty(page.next_page_token),
    }))
}
