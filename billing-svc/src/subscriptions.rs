//! Tenant billing state (B1) and the Stripe events that drive it (B2, G4).
//!
//! Stripe neither orders nor de-duplicates its deliveries. Every event is
//! stored by id first (a redelivery stops there), and subscription state is
//! applied only from an event at least as new as the one it came from, so a
//! late `customer.subscription.created` cannot undo a later `updated`.

use chrono::{DateTime, Utc};
use mesh_kit::db::{begin_platform, begin_tenant};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tonic::Status;
use uuid::Uuid;

use crate::plans::{self, TRIAL, TRIAL_LENGTH};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantBilling {
    pub tenant_id: Uuid,
    pub stripe_customer_id: Option<String>,
    pub subscription_id: Option<String>,
    pub subscription_status: String,
    pub plan: String,
    pub agent_quota: i32,
    pub trial_ends_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("the Stripe event is not valid JSON with id, type, created and data.object")]
    MalformedEvent,
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<BillingError> for Status {
    fn from(err: BillingError) -> Status {
        match err {
            BillingError::MalformedEvent => {
                mesh_kit::error::invalid_field("payload", err.to_string())
            }
            BillingError::Database(ref e) => mesh_kit::error::internal("billing query failed", e),
        }
    }
}

const COLUMNS: &str = "tenant_id, stripe_customer_id, subscription_id, subscription_status, plan, agent_quota, trial_ends_at";

/// Starts the trial of a tenant billing has not seen yet; a no-op otherwise.
pub async fn ensure_trial(
    conn: &mut PgConnection,
    tenant: Uuid,
    tenant_created_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_billing (tenant_id, subscription_status, plan, agent_quota, trial_ends_at)
         VALUES ($1, 'trialing', $2, $3, $4) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(TRIAL.name)
    .bind(TRIAL.agent_quota)
    .bind(tenant_created_at + TRIAL_LENGTH)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The tenant's billing state; a tenant whose creation event has not arrived
/// yet gets its trial now rather than an error.
pub async fn get(db: &PgPool, tenant: Uuid) -> Result<TenantBilling, BillingError> {
    let mut tx = begin_tenant(db, tenant).await?;
    ensure_trial(&mut tx, tenant, Utc::now()).await?;
    let state = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tenant_billing WHERE tenant_id = $1"
    )))
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(state)
}

/// Whether the tenant may create one more agent, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaDecision {
    pub allowed: bool,
    pub agent_quota: i32,
    pub reason: Option<String>,
}

pub fn decide(state: &TenantBilling, current_agents: i32, now: DateTime<Utc>) -> QuotaDecision {
    let trial_over = state.subscription_status == "trialing"
        && state.subscription_id.is_none()
        && state.trial_ends_at.is_some_and(|end| end <= now);
    let reason = if trial_over {
        Some("the trial has ended; choose a plan to add agents".to_owned())
    } else if !plans::status_allows_new_agents(&state.subscription_status) {
        Some(format!(
            "the subscription is {}; update billing to add agents",
            state.subscription_status
        ))
    } else if current_agents >= state.agent_quota {
        Some(format!(
            "the {} plan allows {} agents; upgrade to add more",
            state.plan, state.agent_quota
        ))
    } else {
        None
    };
    QuotaDecision {
        allowed: reason.is_none(),
        agent_quota: state.agent_quota,
        reason,
    }
}

/// Records the Stripe customer created for a tenant.
pub async fn set_customer(db: &PgPool, tenant: Uuid, customer: &str) -> Result<(), BillingError> {
    let mut tx = begin_tenant(db, tenant).await?;
    ensure_trial(&mut tx, tenant, Utc::now()).await?;
    sqlx::query("UPDATE tenant_billing SET stripe_customer_id = $2, updated_at = now() WHERE tenant_id = $1")
        .bind(tenant)
        .bind(customer)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// What handling an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Seen before: nothing changed.
    Duplicate,
    Applied,
    /// Stored, but older than the state or not about a known tenant.
    Ignored,
}

struct Event<'a> {
    id: &'a str,
    kind: &'a str,
    created: DateTime<Utc>,
    object: &'a Value,
}

fn parse(payload: &Value) -> Option<Event<'_>> {
    Some(Event {
        id: payload.get("id")?.as_str()?,
        kind: payload.get("type")?.as_str()?,
        created: DateTime::from_timestamp(payload.get("created")?.as_i64()?, 0)?,
        object: payload.get("data")?.get("object")?,
    })
}

fn str_field<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Stores and applies one verified Stripe event.
pub async fn handle_stripe_event(
    db: &PgPool,
    prices: &PlanPrices,
    raw: &[u8],
) -> Result<Outcome, BillingError> {
    let payload: Value = serde_json::from_slice(raw).map_err(|_| BillingError::MalformedEvent)?;
    let event = parse(&payload).ok_or(BillingError::MalformedEvent)?;
    let mut tx = begin_platform(db).await?;
    let stored = sqlx::query(
        "INSERT INTO stripe_events (id, type, created, payload) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(event.id)
    .bind(event.kind)
    .bind(event.created)
    .bind(&payload)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if stored == 0 {
        return Ok(Outcome::Duplicate);
    }
    let outcome = apply(&mut tx, prices, &event).await?;
    tx.commit().await?;
    tracing::info!(
        event = event.id,
        kind = event.kind,
        ?outcome,
        "Stripe event handled"
    );
    Ok(outcome)
}

/// The tenant an object belongs to: our metadata first, else its customer.
async fn tenant_of(conn: &mut PgConnection, object: &Value) -> Result<Option<Uuid>, sqlx::Error> {
    let from_metadata = object
        .get("metadata")
        .and_then(|m| str_field(m, "tenant_id"))
        .or_else(|| str_field(object, "client_reference_id"))
        .and_then(|t| t.parse().ok());
    if from_metadata.is_some() {
        return Ok(from_metadata);
    }
    match str_field(object, "customer") {
        Some(customer) => {
            sqlx::query_scalar("SELECT tenant_id FROM tenant_billing WHERE stripe_customer_id = $1")
                .bind(customer)
                .fetch_optional(conn)
                .await
        }
        None => Ok(None),
    }
}

/// The price of a subscription's first item (`items.data[0].price.id`).
fn subscribed_price(subscription: &Value) -> Option<&str> {
    subscription
        .get("items")?
        .get("data")?
        .get(0)?
        .get("price")?
        .get("id")?
        .as_str()
}

/// Which plan each Stripe price is (`CREWMESH_STRIPE_PRICES`, read the other way).
#[derive(Debug, Clone, Default)]
pub struct PlanPrices {
    by_price: std::collections::HashMap<String, plans::Plan>,
}

impl PlanPrices {
    /// From `plan → price` pairs; names that are no paid plan are ignored.
    pub fn new(prices: &std::collections::HashMap<String, String>) -> PlanPrices {
        PlanPrices {
            by_price: prices
                .iter()
                .filter_map(|(plan, price)| Some((price.clone(), plans::paid(plan)?)))
                .collect(),
        }
    }

    pub fn plan_of(&self, price: &str) -> Option<plans::Plan> {
        self.by_price.get(price).copied()
    }
}

async fn apply(
    conn: &mut PgConnection,
    prices: &PlanPrices,
    event: &Event<'_>,
) -> Result<Outcome, sqlx::Error> {
    let object = event.object;
    let Some(tenant) = tenant_of(conn, object).await? else {
        tracing::warn!(
            event = event.id,
            kind = event.kind,
            "Stripe event for no known tenant"
        );
        return Ok(Outcome::Ignored);
    };
    ensure_trial(conn, tenant, event.created).await?;
    let customer = str_field(object, "customer");
    let changed = match event.kind {
        "checkout.session.completed" => {
            // Links the customer and subscription; the status comes from subscription events.
            sqlx::query(
                "UPDATE tenant_billing SET stripe_customer_id = COALESCE($2, stripe_customer_id),
                        subscription_id = COALESCE($3, subscription_id), updated_at = now()
                 WHERE tenant_id = $1",
            )
            .bind(tenant)
            .bind(customer)
            .bind(str_field(object, "subscription"))
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
            let status = if event.kind == "customer.subscription.deleted" {
                "canceled"
            } else {
                str_field(object, "status").unwrap_or("incomplete")
            };
            // What the subscription is billed for decides the plan, not
            // metadata: a plan changed in the billing portal changes the
            // price and leaves the checkout's metadata as it was.
            let plan = subscribed_price(object).and_then(|price| {
                let plan = prices.plan_of(price);
                if plan.is_none() {
                    tracing::warn!(event = event.id, price, "subscription to a price no plan names; plan unchanged (see CREWMESH_STRIPE_PRICES)");
                }
                plan
            });
            sqlx::query(
                "UPDATE tenant_billing SET
                    subscription_status = $2,
                    subscription_id = COALESCE($3, subscription_id),
                    stripe_customer_id = COALESCE($4, stripe_customer_id),
                    plan = COALESCE($5, plan),
                    agent_quota = COALESCE($6, agent_quota),
                    state_as_of = $7, updated_at = now()
                 WHERE tenant_id = $1 AND (state_as_of IS NULL OR state_as_of <= $7)",
            )
            .bind(tenant)
            .bind(status)
            .bind(str_field(object, "id"))
            .bind(customer)
            .bind(plan.map(|p| p.name))
            .bind(plan.map(|p| p.agent_quota))
            .bind(event.created)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        "invoice.paid" => {
            sqlx::query(
                "UPDATE tenant_billing SET subscription_status = 'active', state_as_of = $2, updated_at = now()
                 WHERE tenant_id = $1 AND subscription_status IN ('past_due', 'unpaid', 'incomplete', 'trialing')
                   AND subscription_id IS NOT NULL AND (state_as_of IS NULL OR state_as_of <= $2)",
            )
            .bind(tenant)
            .bind(event.created)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        "invoice.payment_failed" => {
            sqlx::query(
                "UPDATE tenant_billing SET subscription_status = 'past_due', state_as_of = $2, updated_at = now()
                 WHERE tenant_id = $1 AND subscription_status IN ('active', 'trialing')
                   AND subscription_id IS NOT NULL AND (state_as_of IS NULL OR state_as_of <= $2)",
            )
            .bind(tenant)
            .bind(event.created)
            .execute(&mut *conn)
            .await?
            .rows_affected()
        }
        _ => 0,
    };
    Ok(if changed > 0 {
        Outcome::Applied
    } else {
        Outcome::Ignored
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, quota: i32, subscribed: bool, trial_ends_in_days: i64) -> TenantBilling {
        TenantBilling {
            tenant_id: Uuid::nil(),
            stripe_customer_id: None,
            subscription_id: subscribed.then(|| "sub_1".to_owned()),
            subscription_status: status.into(),
            plan: "starter".into(),
            agent_quota: quota,
            trial_ends_at: Some(Utc::now() + chrono::Duration::days(trial_ends_in_days)),
        }
    }

    #[test]
    fn quota_decisions() {
        let now = Utc::now();
        assert!(decide(&state("trialing", 2, false, 3), 1, now).allowed);
        assert!(
            !decide(&state("trialing", 2, false, 3), 2, now).allowed,
            "quota reached"
        );
        assert!(
            !decide(&state("trialing", 2, false, -1), 0, now).allowed,
            "trial over"
        );
        assert!(decide(&state("active", 5, true, -30), 4, now).allowed);
        assert!(
            decide(&state("past_due", 5, true, -30), 4, now).allowed,
            "dunning keeps working"
        );
        for status in ["canceled", "unpaid"] {
            let d = decide(&state(status, 5, true, -30), 0, now);
            assert!(!d.allowed);
            assert!(d.reason.unwrap().contains(status));
        }
    }
}
