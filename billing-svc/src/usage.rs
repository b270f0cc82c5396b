//! Usage metering (B4, X4): one row per provider call, recorded once per call
//! id; month-to-date spend and budget status per agent; a daily series per
//! tenant; cost per conversation, listable and exportable as CSV.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use mesh_kit::{ErrorCode, db::begin_tenant, error::invalid_field};
use sqlx::{PgConnection, PgPool};
use tonic::Status;
use uuid::Uuid;

/// A provider call to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub call_id: String,
    pub tenant_id: Uuid,
    pub agent_id: Uuid,
    pub conversation_id: Option<Uuid>,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nanos: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetState {
    Ok,
    /// At least 80 % of the limit is spent.
    Warning,
    /// The limit is spent: no more provider calls.
    Exceeded,
}

/// The budget status of `spent` against `limit` (both nano-dollars).
/// A zero limit allows nothing, so it is always exceeded.
pub fn budget_state(spent: i64, limit: i64) -> BudgetState {
    // Integer arithmetic in i128: exact at the 80 % and 100 % boundaries.
    let (spent, limit) = (i128::from(spent), i128::from(limit));
    if spent >= limit {
        BudgetState::Exceeded
    } else if spent * 100 >= limit * 80 {
        BudgetState::Warning
    } else {
        BudgetState::Ok
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{0}")]
    Invalid(&'static str, &'static str),
    #[error("no budget is set for this agent")]
    NoBudget,
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<UsageError> for Status {
    fn from(err: UsageError) -> Status {
        match err {
            UsageError::Invalid(field, reason) => invalid_field(field, reason),
            UsageError::NoBudget => ErrorCode::NotFound.status(err.to_string()),
            UsageError::Database(ref e) => mesh_kit::error::internal("usage query failed", e),
        }
    }
}

/// More tokens than any one call can use (llm-svc clamps providers' counts
/// to 100 M per side): a number past it is broken, not big.
pub const MAX_TOKENS: i64 = 100_000_000;
/// $100,000 for one call: past it a cost is broken, and sums of such numbers
/// could overflow.
pub const MAX_COST_NANOS: i64 = 100_000 * 1_000_000_000;

pub fn validate(event: &UsageEvent) -> Result<(), UsageError> {
    if event.call_id.is_empty() || event.call_id.len() > 200 {
        return Err(UsageError::Invalid("call_id", "must be 1–200 characters"));
    }
    if event.model.is_empty() || event.model.len() > 200 {
        return Err(UsageError::Invalid("model", "must be 1–200 characters"));
    }
    if event.prompt_tokens < 0 || event.completion_tokens < 0 {
        return Err(UsageError::Invalid("tokens", "must not be negative"));
    }
    if event.prompt_tokens > MAX_TOKENS || event.completion_tokens > MAX_TOKENS {
        return Err(UsageError::Invalid("tokens", "are beyond any one call's"));
    }
    if event.cost_nanos < 0 {
        return Err(UsageError::Invalid("cost_usd", "must not be negative"));
    }
    if event.cost_nanos > MAX_COST_NANOS {
        return Err(UsageError::Invalid("cost_usd", "is beyond any one call's"));
    }
    Ok(())
}

/// Records events of one tenant in `conn`'s transaction, in one statement;
/// returns the ones that were new (a redelivered call id is skipped).
pub async fn record(
    conn: &mut PgConnection,
    events: &[UsageEvent],
) -> Result<Vec<UsageEvent>, sqlx::Error> {
    let call_ids: Vec<&str> = events.iter().map(|e| e.call_id.as_str()).collect();
    let tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
    let agents: Vec<Uuid> = events.iter().map(|e| e.agent_id).collect();
    let conversations: Vec<Option<Uuid>> = events.iter().map(|e| e.conversation_id).collect();
    let models: Vec<&str> = events.iter().map(|e| e.model.as_str()).collect();
    let prompts: Vec<i64> = events.iter().map(|e| e.prompt_tokens).collect();
    let completions: Vec<i64> = events.iter().map(|e| e.completion_tokens).collect();
    let costs: Vec<i64> = events.iter().map(|e| e.cost_nanos).collect();
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO usage_events
           (call_id, tenant_id, agent_id, conversation_id, model, prompt_tokens, completion_tokens, cost_nanos)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::int8[], $7::int8[], $8::int8[])
         ON CONFLICT (call_id) DO NOTHING RETURNING call_id",
    )
    .bind(&call_ids)
    .bind(&tenants)
    .bind(&agents)
    .bind(&conversations)
    .bind(&models)
    .bind(&prompts)
    .bind(&completions)
    .bind(&costs)
    .fetch_all(&mut *conn)
    .await?;
    let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
    Ok(events
        .iter()
        .filter(|e| inserted.contains(&e.call_id))
        .cloned()
        .collect())
}

/// The first instant of `now`'s UTC month.
pub fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// Settled spend of an agent this month.
pub async fn month_to_date(
    conn: &mut PgConnection,
    agent: Uuid,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(cost_nanos), 0)::bigint FROM usage_events WHERE agent_id = $1 AND occurred_at >= $2",
    )
    .bind(agent)
    .bind(month_start(now))
    .fetch_one(conn)
    .await
}

pub async fn budget_limit(
    conn: &mut PgConnection,
    agent: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT limit_nanos FROM agent_budgets WHERE agent_id = $1")
        .bind(agent)
        .fetch_optional(conn)
        .await
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    pub limit: i64,
    pub spent: i64,
    pub state: BudgetState,
}

pub async fn budget_status(
    db: &PgPool,
    tenant: Uuid,
    agent: Uuid,
) -> Result<BudgetStatus, UsageError> {
    let mut tx = begin_tenant(db, tenant).await?;
    let limit = budget_limit(&mut tx, agent)
        .await?
        .ok_or(UsageError::NoBudget)?;
    let spent = month_to_date(&mut tx, agent, Utc::now()).await?;
    tx.commit().await?;
    Ok(BudgetStatus {
        limit,
        spent,
        state: budget_state(spent, limit),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DailyUsage {
    pub day: NaiveDate,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nanos: i64,
}

/// The tenant's usage per UTC day in [since, until).
pub async fn daily(
    db: &PgPool,
    tenant: Uuid,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<DailyUsage>, UsageError> {
    if until <= since || until - since > chrono::Duration::days(400) {
        return Err(UsageError::Invalid(
            "until",
            "must be after since, at most 400 days later",
        ));
    }
    let mut tx = begin_tenant(db, tenant).await?;
    let rows = sqlx::query_as(
        "SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day,
                SUM(prompt_tokens)::bigint AS prompt_tokens,
                SUM(completion_tokens)::bigint AS completion_tokens,
                SUM(cost_nanos)::bigint AS cost_nanos
         FROM usage_events WHERE occurred_at >= $1 AND occurred_at < $2
         GROUP BY 1 ORDER BY 1",
    )
    .bind(since)
    .bind(until)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConversationCost {
    pub conversation_id: Uuid,
    pub agent_id: Uuid,
    pub calls: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nanos: i64,
    pub last_call_at: DateTime<Utc>,
}

/// Cost per conversation, in conversation-id order so `after` can page.
pub async fn conversation_costs(
    db: &PgPool,
    tenant: Uuid,
    limit: i64,
    after: Option<Uuid>,
) -> Result<Vec<ConversationCost>, UsageError> {
    let mut tx = begin_tenant(db, tenant).await?;
    let rows = sqlx::query_as(
        "SELECT conversation_id, min(agent_id::text)::uuid AS agent_id, count(*) AS calls,
                SUM(prompt_tokens)::bigint AS prompt_tokens, SUM(completion_tokens)::bigint AS completion_tokens,
                SUM(cost_nanos)::bigint AS cost_nanos, max(occurred_at) AS last_call_at
         FROM usage_events WHERE conversation_id IS NOT NULL AND conversation_id > $1
         GROUP BY conversation_id ORDER BY conversation_id LIMIT $2",
    )
    .bind(after.unwrap_or(Uuid::nil()))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_kit::wire::NANOS_PER_USD;

    #[test]
    fn budget_boundaries() {
        let limit = 100 * NANOS_PER_USD;
        assert_eq!(budget_state(0, limit), BudgetState::Ok);
        assert_eq!(budget_state(80 * NANOS_PER_USD - 1, limit), BudgetState::Ok);
        assert_eq!(
            budget_state(80 * NANOS_PER_USD, limit),
            BudgetState::Warning
        );
        assert_eq!(
            budget_state(100 * NANOS_PER_USD - 1, limit),
            BudgetState::Warning
        );
        assert_eq!(
            budget_state(100 * NANOS_PER_USD, limit),
            BudgetState::Exceeded
        );
        assert_eq!(
            budget_state(150 * NANOS_PER_USD, limit),
            BudgetState::Exceeded
        );
        assert_eq!(
            budget_state(0, 0),
            BudgetState::Exceeded,
            "a zero budget allows nothing"
        );
        assert_eq!(budget_state(7, 10), BudgetState::Ok);
        assert_eq!(budget_state(8, 10), BudgetState::Warning);
        assert_eq!(
            budget_state(i64::MAX, i64::MAX),
            BudgetState::Exceeded,
            "no overflow"
        );
    }

    #[test]
    fn months_start_on_the_first_utc() {
        let t = Utc.with_ymd_and_hms(2026, 11, 25, 13, 4, 5).unwrap();
        assert_eq!(
            month_start(t),
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
        );
    }
}
