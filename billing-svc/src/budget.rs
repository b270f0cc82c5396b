//! Budget leases (L5) for llm-svc. llm-svc leases a slice of an agent's
//! remaining monthly budget, spends it locally per call, and settles real
//! usage in batches, so the LLM path makes no synchronous database round
//! trip per call.
//!
//! The ledger of an agent-month lives in Redis and is changed only by Lua
//! scripts, so concurrent leases never grant more than `limit - spent -
//! leased`: the hard cap holds exactly. `spent` is the settled usage (its
//! source of truth is `usage_events` in PostgreSQL; the ledger is rebuilt
//! from it when missing), `leased` the outstanding leases. Leases that are
//! never closed lapse after [`LEASE_TTL`] and their budget returns.
//!
//! Keys: `budget:{tenant}:{agent}:{YYYY-MM}` (hash: limit, spent, leased),
//! `…:leases` (lease id → amount) and `…:expiry` (sorted set of lease ids).

use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use mesh_kit::{ErrorCode, db::begin_tenant};
use redis::{Script, aio::ConnectionManager};
use sqlx::PgPool;
use tonic::Status;
use uuid::Uuid;

use crate::usage::{self, UsageError, UsageEvent};

pub const LEASE_TTL: Duration = Duration::from_secs(300);
/// Ledgers outlive their month a little, then Redis drops them.
const LEDGER_TTL_SECS: i64 = 40 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("no budget is set for this agent")]
    NoBudget,
    #[error("{0}")]
    Invalid(&'static str, &'static str),
    #[error("the budget store is unavailable")]
    Redis(#[from] redis::RedisError),
    /// Redis lost the ledger again right after it was rebuilt.
    #[error("the budget ledger vanished while leasing")]
    LedgerVanished,
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<UsageError> for BudgetError {
    fn from(err: UsageError) -> BudgetError {
        match err {
            UsageError::Invalid(field, reason) => BudgetError::Invalid(field, reason),
            UsageError::NoBudget => BudgetError::NoBudget,
            UsageError::Database(e) => BudgetError::Database(e),
        }
    }
}

impl From<BudgetError> for Status {
    fn from(err: BudgetError) -> Status {
        match err {
            BudgetError::NoBudget => ErrorCode::FailedPrecondition.status(err.to_string()),
            BudgetError::Invalid(field, reason) => mesh_kit::error::invalid_field(field, reason),
            BudgetError::Redis(_) | BudgetError::LedgerVanished => {
                tracing::error!(error = %err, "budget ledger unavailable");
                ErrorCode::Unavailable.status("budgets are briefly unavailable; retry shortly")
            }
            BudgetError::Database(ref e) => mesh_kit::error::internal("budget query failed", e),
        }
    }
}

fn ledger_key(tenant: Uuid, agent: Uuid, now: DateTime<Utc>) -> String {
    format!(
        "budget:{tenant}:{agent}:{:04}-{:02}",
        now.year(),
        now.month()
    )
}

/// KEYS: ledger, leases, expiry. ARGV: lease id, requested, now (s), ttl (s).
/// Returns {-1} when the ledger is missing, else {granted, remaining, expires_at}.
const LEASE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local now = tonumber(ARGV[3])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  local amount = tonumber(redis.call('HGET', KEYS[2], id) or '0')
  redis.call('HINCRBY', KEYS[1], 'leased', -amount)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit'))
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local leased = tonumber(redis.call('HGET', KEYS[1], 'leased'))
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then
  return {tonumber(existing), limit - spent - leased, tonumber(redis.call('ZSCORE', KEYS[3], ARGV[1]))}
end
local remaining = limit - spent - leased
local grant = math.min(tonumber(ARGV[2]), math.max(remaining, 0))
local expires = now + tonumber(ARGV[4])
if grant > 0 then
  redis.call('HINCRBY', KEYS[1], 'leased', grant)
  redis.call('HSET', KEYS[2], ARGV[1], grant)
  redis.call('ZADD', KEYS[3], expires, ARGV[1])
end
return {grant, remaining - grant, expires}
"#;

/// KEYS: ledger, leases, expiry. ARGV: limit, spent, ttl. Creates the ledger
/// unless another replica already did.
const LOAD: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'limit', ARGV[1], 'spent', ARGV[2], 'leased', 0)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"#;

/// KEYS: ledger, leases, expiry. ARGV: lease id. Releases a lease once.
const CLOSE: &str = r#"
local amount = redis.call('HGET', KEYS[2], ARGV[1])
if not amount then return 0 end
redis.call('HINCRBY', KEYS[1], 'leased', -tonumber(amount))
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"#;

/// KEYS: ledger, spent calls (sorted set: call id → when). ARGV: now (s),
/// how long call ids are remembered (s), then call id and amount pairs.
/// Adds each call's cost once: usage is committed to PostgreSQL first, so a
/// settlement retried after Redis failed here sends the same calls again,
/// and they must be spent now — but never twice. A missing ledger is rebuilt
/// from PostgreSQL, which already has them.
const SPEND: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
local spent = 0
for i = 3, #ARGV, 2 do
  if redis.call('ZADD', KEYS[2], 'NX', now, ARGV[i]) == 1 then
    spent = spent + tonumber(ARGV[i + 1])
  end
end
if spent > 0 then redis.call('HINCRBY', KEYS[1], 'spent', spent) end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return spent
"#;

/// How long the ledger remembers which calls it has spent: longer than any
/// retry of a settlement (llm-svc retries every flush, i.e. within seconds).
const SPENT_CALLS_SECS: i64 = 3600;

/// KEYS: ledger. ARGV: limit. Updates the limit if the ledger exists.
const SET_LIMIT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'limit', ARGV[1])
return 1
"#;

#[derive(Debug, Clone)]
pub struct Budgets {
    db: PgPool,
    redis: ConnectionManager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub granted: i64,
    pub remaining: i64,
    pub expires_at: i64,
}

fn keys(ledger: &str) -> [String; 3] {
    [
        ledger.to_owned(),
        format!("{ledger}:leases"),
        format!("{ledger}:expiry"),
    ]
}

impl Budgets {
    pub fn new(db: PgPool, redis: ConnectionManager) -> Budgets {
        Budgets { db, redis }
    }

    pub async fn set_limit(
        &self,
        tenant: Uuid,
        agent: Uuid,
        limit: i64,
    ) -> Result<(), BudgetError> {
        let mut tx = begin_tenant(&self.db, tenant).await?;
        sqlx::query(
            "INSERT INTO agent_budgets (tenant_id, agent_id, limit_nanos) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, agent_id) DO UPDATE SET limit_nanos = $3, updated_at = now()",
        )
        .bind(tenant)
        .bind(agent)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut redis = self.redis.clone();
        Script::new(SET_LIMIT)
            .key(ledger_key(tenant, agent, Utc::now()))
            .arg(limit)
            .invoke_async::<i64>(&mut redis)
            .await?;
        Ok(())
    }

    /// Rebuilds a missing ledger from PostgreSQL.
    async fn load(&self, tenant: Uuid, agent: Uuid, now: DateTime<Utc>) -> Result<(), BudgetError> {
        let mut tx = begin_tenant(&self.db, tenant).await?;
        let limit = usage::budget_limit(&mut tx, agent)
            .await?
            .ok_or(BudgetError::NoBudget)?;
        let spent = usage::month_to_date(&mut tx, agent, now).await?;
        tx.commit().await?;
        let mut redis = self.redis.clone();
        let [ledger, leases, expiry] = keys(&ledger_key(tenant, agent, now));
        Script::new(LOAD)
            .key(ledger)
            .key(leases)
            .key(expiry)
            .arg(limit)
            .arg(spent)
            .arg(LEDGER_TTL_SECS)
            .invoke_async::<i64>(&mut redis)
            .await?;
        Ok(())
    }

    /// Grants up to `requested` nano-dollars of the agent's remaining budget.
    pub async fn lease(
        &self,
        tenant: Uuid,
        agent: Uuid,
        lease_id: &str,
        requested: i64,
    ) -> Result<Lease, BudgetError> {
        if lease_id.is_empty() || lease_id.len() > 200 {
            return Err(BudgetError::Invalid("lease_id", "must be 1–200 characters"));
        }
        let now = Utc::now();
        let [ledger, leases, expiry] = keys(&ledger_key(tenant, agent, now));
        for _ in 0..2 {
            let mut redis = self.redis.clone();
            let reply: Vec<i64> = Script::new(LEASE)
                .key(&ledger)
                .key(&leases)
                .key(&expiry)
                .arg(lease_id)
                .arg(requested)
                .arg(now.timestamp())
                .arg(LEASE_TTL.as_secs())
                .invoke_async(&mut redis)
                .await?;
            match reply.as_slice() {
                [granted, remaining, expires_at] => {
                    return Ok(Lease {
                        granted: *granted,
                        remaining: *remaining,
                        expires_at: *expires_at,
                    });
                }
                _ => self.load(tenant, agent, now).await?,
            }
        }
        Err(BudgetError::LedgerVanished)
    }

    /// Records usage (once per call id) and releases closed leases. Events
    /// that fail validation are set aside with their reason; the rest of the
    /// batch is recorded, so one bad event never blocks everyone's usage.
    pub async fn settle(
        &self,
        events: &[UsageEvent],
        closed: &[(Uuid, Uuid, String)],
    ) -> Result<Settled, BudgetError> {
        let mut settled = Settled::default();
        let mut valid = Vec::with_capacity(events.len());
        for event in events {
            match usage::validate(event) {
                Ok(()) => valid.push(event.clone()),
                Err(UsageError::Invalid(field, reason)) => {
                    tracing::warn!(call = %event.call_id, tenant = %event.tenant_id, field, reason, "usage event set aside");
                    metrics::counter!("crewmesh_usage_rejected_total", "field" => field)
                        .increment(1);
                    settled
                        .rejected
                        .push((event.call_id.clone(), format!("{field} {reason}")));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let now = Utc::now();
        let mut tenants: Vec<Uuid> = valid.iter().map(|e| e.tenant_id).collect();
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            let batch: Vec<UsageEvent> = valid
                .iter()
                .filter(|e| e.tenant_id == tenant)
                .cloned()
                .collect();
            let mut tx = begin_tenant(&self.db, tenant).await?;
            let new = usage::record(&mut tx, &batch).await?;
            tx.commit().await?;
            settled.recorded += new.len();
            // The whole batch, not only what was new: a retry after Redis
            // failed here must still spend what was recorded the first time.
            let mut per_agent: std::collections::BTreeMap<Uuid, Vec<&UsageEvent>> =
                std::collections::BTreeMap::new();
            for event in &batch {
                per_agent.entry(event.agent_id).or_default().push(event);
            }
            let mut redis = self.redis.clone();
            let spend = Script::new(SPEND);
            for (agent, calls) in per_agent {
                let ledger = ledger_key(tenant, agent, now);
                let mut invocation = spend.prepare_invoke();
                invocation
                    .key(&ledger)
                    .key(format!("{ledger}:spent-calls"))
                    .arg(now.timestamp())
                    .arg(SPENT_CALLS_SECS);
                for call in calls {
                    invocation.arg(&call.call_id).arg(call.cost_nanos);
                }
                invocation.invoke_async::<i64>(&mut redis).await?;
            }
        }
        settled.duplicates = valid.len() - settled.recorded;
        let mut redis = self.redis.clone();
        for (tenant, agent, lease_id) in closed {
            let [ledger, leases, expiry] = keys(&ledger_key(*tenant, *agent, now));
            Script::new(CLOSE)
                .key(ledger)
                .key(leases)
                .key(expiry)
                .arg(lease_id)
                .invoke_async::<i64>(&mut redis)
                .await?;
        }
        Ok(settled)
    }
}

/// What a settlement did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    pub recorded: usize,
    /// Calls recorded by an earlier delivery of the same batch.
    pub duplicates: usize,
    /// Calls set aside, with why.
    pub rejected: Vec<(String, String)>,
}
