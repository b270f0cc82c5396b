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

/// KEYS: ledger. ARGV: amount. Adds settled spend if the ledger exists (a
/// missing ledger is rebuilt from PostgreSQL, which already has it).
const SPEND: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'spent', ARGV[1])
return 1
"#;

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

    /// Records usage (once per call id) and releases closed leases.
    pub async fn settle(
        &self,
        events: &[UsageEvent],
        closed: &[(Uuid, Uuid, String)],
    ) -> Result<(usize, usize), BudgetError> {
        for event in events {
            usage::validate(event)?;
        }
        let now = Utc::now();
        let mut recorded = 0;
        let mut tenants: Vec<Uuid> = events.iter().map(|e| e.tenant_id).collect();
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            let batch: Vec<UsageEvent> = events
                .iter()
                .filter(|e| e.tenant_id == tenant)
                .cloned()
                .collect();
            let mut tx = begin_tenant(&self.db, tenant).await?;
            let new = usage::record(&mut tx, &batch).await?;
            tx.commit().await?;
            recorded += new.len();
            let mut per_agent: std::collections::HashMap<Uuid, i64> =
                std::collections::HashMap::new();
            for event in &new {
                *per_agent.entry(event.agent_id).or_default() += event.cost_nanos;
            }
            let mut redis = self.redis.clone();
            for (agent, cost) in per_agent {
                Script::new(SPEND)
                    .key(ledger_key(tenant, agent, now))
                    .arg(cost)
                    .invoke_async::<i64>(&mut redis)
                    .await?;
            }
        }
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
        Ok((recorded, events.len() - recorded))
    }
}
