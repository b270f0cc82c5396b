//! The tenant's plan and subscription.

use axum::{
    Json,
    extract::{Query, State},
};
use crewmesh_proto::billing::v1::{GetSubscriptionRequest, Subscription as ProtoSubscription};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ADMINS, api_keys::TenantQuery, non_empty, rfc3339};
use crate::{
    auth::Authenticated,
    error::{ApiError, ErrorBody},
    startup::AppState,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct Subscription {
    pub tenant_id: String,
    /// trialing, active, past_due, unpaid, canceled, incomplete, incomplete_expired or paused.
    pub status: String,
    /// trial, starter, growth or scale.
    pub plan: String,
    pub agent_quota: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial_ends_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stripe_customer_id: Option<String>,
}

impl From<ProtoSubscription> for Subscription {
    fn from(s: ProtoSubscription) -> Subscription {
        Subscription {
            tenant_id: s.tenant_id,
            status: s.status,
            plan: s.plan,
            agent_quota: s.agent_quota,
            trial_ends_at: rfc3339(s.trial_ends_at),
            stripe_customer_id: non_empty(s.stripe_customer_id),
        }
    }
}

/// The tenant's plan, subscription status and agent quota.
#[utoipa::path(
    get, path = "/api/v1/billing/subscription", tag = "billing",
    security(("bearer" = [])),
    params(TenantQuery),
    responses(
        (status = 200, body = Subscription),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn get_subscription(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<TenantQuery>,
) -> Result<Json<Subscription>, ApiError> {
    auth.require(ADMINS)?;
    let found = state
        .billing
        .clone()
        .get_subscription(auth.call.request(GetSubscriptionRequest {
            tenant_id: query.tenant_id.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let subscription = found
        .subscription
        .ok_or_else(|| auth.missing("subscription"))?;
    Ok(Json(Subscription::from(subscription)))
}
