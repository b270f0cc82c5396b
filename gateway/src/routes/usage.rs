//! Usage and budgets: every role of the tenant may read them.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use crewmesh_proto::billing::v1::{
    BudgetState, GetBudgetStatusRequest, GetUsageSeriesRequest, ListConversationCostsRequest,
};
use mesh_kit::Role;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{api_keys::TenantQuery, non_empty, rfc3339, timestamp_param};
use crate::{
    auth::Authenticated,
    error::{ApiError, ErrorBody},
    startup::AppState,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetStatus {
    #[schema(example = "25.00")]
    pub limit_usd: String,
    pub spent_usd: String,
    /// ok, warning (at least 80 % spent) or exceeded (at least 100 %).
    pub status: &'static str,
}

/// An agent's budget and month-to-date spend.
#[utoipa::path(
    get, path = "/api/v1/usage/agents/{agent_id}/budget", tag = "usage",
    security(("bearer" = [])),
    params(("agent_id" = String, Path, description = "Agent id"), TenantQuery),
    responses(
        (status = 200, body = BudgetStatus),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No budget for this agent in the tenant", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn budget_status(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(agent_id): Path<String>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<BudgetStatus>, ApiError> {
    auth.require(&Role::ALL)?;
    let status = state
        .billing
        .clone()
        .get_budget_status(auth.call.request(GetBudgetStatusRequest {
            tenant_id: query.tenant_id.unwrap_or_default(),
            agent_id,
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let label = match status.state() {
        BudgetState::Ok => "ok",
        BudgetState::Warning => "warning",
        BudgetState::Exceeded => "exceeded",
        BudgetState::Unspecified => return Err(auth.missing("state")),
    };
    Ok(Json(BudgetStatus {
        limit_usd: status.limit_usd,
        spent_usd: status.spent_usd,
        status: label,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SeriesQuery {
    pub tenant_id: Option<String>,
    /// RFC 3339; default 30 days before `until`.
    pub since: Option<String>,
    /// RFC 3339; default now.
    pub until: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageDay {
    #[schema(example = "2026-11-25")]
    pub day: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageSeries {
    pub days: Vec<UsageDay>,
}

/// The tenant's usage per UTC day, for charts.
#[utoipa::path(
    get, path = "/api/v1/usage/daily", tag = "usage",
    security(("bearer" = [])),
    params(SeriesQuery),
    responses(
        (status = 200, body = UsageSeries),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn daily(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<SeriesQuery>,
) -> Result<Json<UsageSeries>, ApiError> {
    auth.require(&Role::ALL)?;
    let request_id = auth.meta.request_id.clone();
    let series = state
        .billing
        .clone()
        .get_usage_series(auth.call.request(GetUsageSeriesRequest {
            tenant_id: query.tenant_id.unwrap_or_default(),
            since: timestamp_param("since", query.since, &request_id)?,
            until: timestamp_param("until", query.until, &request_id)?,
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(UsageSeries {
        days: series
            .points
            .into_iter()
            .map(|p| UsageDay {
                day: p.day,
                prompt_tokens: p.prompt_tokens,
                completion_tokens: p.completion_tokens,
                cost_usd: p.cost_usd,
            })
            .collect(),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CostQuery {
    pub tenant_id: Option<String>,
    /// At most 1000; default 100.
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
    /// `csv` for a CSV export (also chosen by `Accept: text/csv`).
    pub format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationCost {
    pub conversation_id: String,
    pub agent_id: String,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_usd: String,
    pub last_call_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationCostPage {
    pub conversations: Vec<ConversationCost>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Tokens and cost per conversation, as JSON or a CSV export.
#[utoipa::path(
    get, path = "/api/v1/usage/conversations", tag = "usage",
    security(("bearer" = [])),
    params(CostQuery),
    responses(
        (status = 200, description = "JSON, or a CSV export",
         content((ConversationCostPage = "application/json"), (String = "text/csv"))),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn conversations(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    Query(query): Query<CostQuery>,
) -> Result<Response, ApiError> {
    auth.require(&Role::ALL)?;
    let csv = query.format.as_deref() == Some("csv")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"));
    let page = state
        .billing
        .clone()
        .list_conversation_costs(auth.call.request(ListConversationCostsRequest {
            tenant_id: query.tenant_id.unwrap_or_default(),
            page_size: query.page_size.unwrap_or_default(),
            page_token: query.page_token.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let rows: Vec<ConversationCost> = page
        .costs
        .into_iter()
        .map(|c| ConversationCost {
            conversation_id: c.conversation_id,
            agent_id: c.agent_id,
            calls: c.calls,
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
            cost_usd: c.cost_usd,
            last_call_at: rfc3339(c.last_call_at),
        })
        .collect();
    if !csv {
        return Ok(Json(ConversationCostPage {
            conversations: rows,
            next_page_token: non_empty(page.next_page_token),
        })
        .into_response());
    }
    // Every field is an id, a number or a timestamp: nothing needs quoting.
    let mut body = String::from(
        "conversation_id,agent_id,calls,prompt_tokens,completion_tokens,cost_usd,last_call_at\r\n",
    );
    for r in &rows {
        body.push_str(&format!(
            "{},{},{},{},{},{},{}\r\n",
            r.conversation_id,
            r.agent_id,
            r.calls,
            r.prompt_tokens,
            r.completion_tokens,
            r.cost_usd,
            r.last_call_at.as_deref().unwrap_or_default()
        ));
    }
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"conversation-costs.csv\""),
    );
    if let Some(next) = non_empty(page.next_page_token)
        && let Ok(value) = HeaderValue::from_str(&next)
    {
        headers.insert("x-next-page-token", value);
    }
    Ok(response)
}
