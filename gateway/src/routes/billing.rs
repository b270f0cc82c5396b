//! The tenant's plan and subscription.

use axum::{
    Json,
    extract::{Query, State},
};
use crewmesh_proto::billing::v1::{
    CreateCheckoutSessionRequest, CreatePortalSessionRequest, GetSubscriptionRequest,
    Subscription as ProtoSubscription,
};
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

#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct NewCheckout {
    /// starter, growth or scale.
    #[schema(example = "growth")]
    pub plan: String,
    pub success_url: String,
    pub cancel_url: String,
    pub tenant_id: Option<String>,
}

#[derive(Debug, serde::Deserialize, ToSchema)]
pub struct NewPortal {
    pub return_url: String,
    pub tenant_id: Option<String>,
}

/// A Stripe-hosted page to open.
#[derive(Debug, Serialize, ToSchema)]
pub struct Redirect {
    pub url: String,
}

/// Start a Stripe Checkout for a plan. An `Idempotency-Key` makes retries return the same session.
#[utoipa::path(
    post, path = "/api/v1/billing/checkout", tag = "billing",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key returns the same session")),
    request_body = NewCheckout,
    responses(
        (status = 201, body = Redirect),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Stripe is not configured, or refused", body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn create_checkout(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: axum::http::HeaderMap,
    crate::extract::ApiJson(body): crate::extract::ApiJson<NewCheckout>,
) -> Result<(axum::http::StatusCode, Json<Redirect>), ApiError> {
    auth.require(ADMINS)?;
    let mut request = auth.call.request(CreateCheckoutSessionRequest {
        tenant_id: body.tenant_id.unwrap_or_default(),
        plan: body.plan,
        success_url: body.success_url,
        cancel_url: body.cancel_url,
    });
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok())
        && let Ok(value) = key.parse()
    {
        request.metadata_mut().insert("idempotency-key", value);
    }
    let session = state
        .billing
        .clone()
        .create_checkout_session(request)
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok((
        axum::http::StatusCode::CREATED,
        Json(Redirect { url: session.url }),
    ))
}

/// Open the Stripe billing portal for the tenant's customer.
#[utoipa::path(
    post, path = "/api/v1/billing/portal", tag = "billing",
    security(("bearer" = [])),
    request_body = NewPortal,
    responses(
        (status = 201, body = Redirect),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn create_portal(
    State(state): State<AppState>,
    auth: Authenticated,
    crate::extract::ApiJson(body): crate::extract::ApiJson<NewPortal>,
) -> Result<(axum::http::StatusCode, Json<Redirect>), ApiError> {
    auth.require(ADMINS)?;
    let session = state
        .billing
        .clone()
        .create_portal_session(auth.call.request(CreatePortalSessionRequest {
            tenant_id: body.tenant_id.unwrap_or_default(),
            return_url: body.return_url,
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok((
        axum::http::StatusCode::CREATED,
        Json(Redirect { url: session.url }),
    ))
}
