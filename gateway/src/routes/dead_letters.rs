//! Dead letters: channel messages that could not be answered or delivered,
//! with the reason, for a tenant's admins (platform admins: every tenant's).

use axum::{
    Json,
    extract::{Path, Query, State},
};
use crewmesh_proto::llm::v1::{
    DeadLetter as ProtoDeadLetter, DeadLetterQueue, ListDeadLettersRequest, RetryDeadLetterRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ADMINS, TenantPageQuery, non_empty, rfc3339};
use crate::{
    auth::Authenticated,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    startup::AppState,
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct RetryDeadLetter {
    /// Platform admins name the tenant; customer admins may omit it (their own).
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetter {
    pub id: String,
    /// Absent for a message too damaged to name its tenant (platform admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// `inbound`: answering the customer's message failed; `outbound`:
    /// delivering the reply to the channel failed.
    #[schema(example = "outbound")]
    pub queue: &'static str,
    #[schema(example = "slack:Ev0123ABCD:reply")]
    pub message_id: String,
    /// Machine-readable cause, e.g. `slack:token_revoked` or `outside_customer_service_window`.
    #[schema(example = "slack:token_revoked")]
    pub reason: String,
    pub detail: String,
    pub attempts: i32,
    /// `slack` or `whatsapp`.
    pub channel: String,
    /// What the customer wrote, or the reply that was not delivered.
    pub text: String,
    pub failed_at: Option<String>,
    /// Set once an admin retried it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried_by: Option<String>,
}

impl From<ProtoDeadLetter> for DeadLetter {
    fn from(d: ProtoDeadLetter) -> DeadLetter {
        DeadLetter {
            queue: match d.queue() {
                DeadLetterQueue::Inbound => "inbound",
                DeadLetterQueue::Outbound => "outbound",
                DeadLetterQueue::Unspecified => "unknown",
            },
            id: d.id,
            tenant_id: non_empty(d.tenant_id),
            message_id: d.message_id,
            reason: d.reason,
            detail: d.detail,
            attempts: d.attempts,
            channel: d.channel,
            text: d.text,
            failed_at: rfc3339(d.failed_at),
            retried_at: rfc3339(d.retried_at),
            retried_by: non_empty(d.retried_by),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `page_token` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Messages that could not be answered or delivered, newest first.
#[utoipa::path(
    get, path = "/api/v1/dead-letters", tag = "channels",
    security(("bearer" = [])),
    params(TenantPageQuery),
    responses(
        (status = 200, body = DeadLetterPage),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "Another tenant", body = ErrorBody),
        (status = 422, description = "A malformed tenant_id, page_token or page_size", body = ErrorBody),
    )
)]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<TenantPageQuery>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    auth.require(ADMINS)?;
    let page = state
        .llm
        .clone()
        .list_dead_letters(auth.call.request(ListDeadLettersRequest {
            tenant_id: query.tenant_id.unwrap_or_default(),
            page_size: query.page_size.unwrap_or_default(),
            page_token: query.page_token.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(DeadLetterPage {
        dead_letters: page.dead_letters.into_iter().map(Into::into).collect(),
        next_page_token: non_empty(page.next_page_token),
    }))
}

/// Puts a dead letter back on its queue: the message is answered, or the
/// reply delivered, once — e.g. after reconnecting a channel whose token
/// was revoked.
#[utoipa::path(
    post, path = "/api/v1/dead-letters/{id}/retry", tag = "channels",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Dead letter id")),
    request_body = RetryDeadLetter,
    responses(
        (status = 200, description = "Queued again", body = DeadLetter),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such dead letter in the tenant", body = ErrorBody),
        (status = 409, description = "It came from a queue this platform does not know", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, description = "The queue is unavailable; try again", body = ErrorBody),
    )
)]
pub async fn retry_dead_letter(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RetryDeadLetter>,
) -> Result<Json<DeadLetter>, ApiError> {
    auth.require(ADMINS)?;
    let retried = state
        .llm
        .clone()
        .retry_dead_letter(auth.call.request(RetryDeadLetterRequest {
            id,
            tenant_id: body.tenant_id.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner()
        .dead_letter
        .ok_or_else(|| auth.missing("dead_letter"))?;
    Ok(Json(retried.into()))
}
