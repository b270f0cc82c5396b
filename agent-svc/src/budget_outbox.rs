//! Agents' budgets reach billing-svc through an outbox: a save writes the
//! new limit into `agent_budget_outbox` in its own transaction, and once it
//! has committed the request pushes it (`SetAgentBudget`); a relay retries
//! every push that did not land, with backoff, until it does.
//!
//! Invariants:
//! - a committed budget is never lost: its row goes only after billing-svc
//!   took exactly that version;
//! - budgets land in order: one pusher holds an agent's row at a time (by
//!   moving `next_attempt_at` past the push's deadline) and always sends the
//!   newest limit, and a row changed while in flight stays for the next push;
//! - no database connection is held while billing-svc is called.
//!
//! Until its budget lands an agent cannot run: billing-svc leases nothing
//! for an agent it has no budget for.

use std::time::Duration;

use crewmesh_proto::billing::v1::{
    SetAgentBudgetRequest, billing_internal_service_client::BillingInternalServiceClient,
};
use mesh_kit::{
    Shutdown,
    auth::{TokenError, TokenSigner},
    client::CallContext,
    db::begin_platform,
    wire::format_usd,
};
use sqlx::{PgConnection, PgPool};
use tonic::transport::Channel;
use uuid::Uuid;

/// One push's deadline; a held row is not retried before [`HOLD`] is up,
/// so a slow push cannot land after a newer one.
const PUSH_DEADLINE: Duration = Duration::from_secs(5);
const HOLD: Duration = Duration::from_secs(30);
/// Backoff after a failed push: 1 s, doubling, at most this.
const MAX_BACKOFF_SECS: i64 = 60;
const BATCH: i64 = 50;

#[derive(Debug, thiserror::Error)]
pub enum BudgetSyncError {
    #[error("budget outbox query failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error("signing agent-svc's service token failed: {0}")]
    Signing(#[from] TokenError),
}

/// Queues `limit_nanos` as `agent`'s budget, in the transaction that saves it.
pub async fn record(
    conn: &mut PgConnection,
    tenant: Uuid,
    agent: Uuid,
    limit_nanos: i64,
) -> Result<(), sqlx::Error> {
    // A held row keeps its `next_attempt_at`: the push in flight finds the
    // new version when it finishes and leaves the row for the next push.
    sqlx::query(
        "INSERT INTO agent_budget_outbox (agent_id, tenant_id, limit_nanos)
         VALUES ($1, $2, $3)
         ON CONFLICT (agent_id) DO UPDATE
            SET limit_nanos = EXCLUDED.limit_nanos,
                version = agent_budget_outbox.version + 1",
    )
    .bind(agent)
    .bind(tenant)
    .bind(limit_nanos)
    .execute(conn)
    .await
    .map(drop)
}

#[derive(Debug, sqlx::FromRow)]
struct Pending {
    agent_id: Uuid,
    tenant_id: Uuid,
    limit_nanos: i64,
    version: i64,
    attempts: i32,
}

const CLAIMED: &str = "agent_id, tenant_id, limit_nanos, version, attempts";

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// billing-svc has the newest budget; the row is gone.
    Landed,
    /// Nothing to push now: no row, or another push holds it or it is
    /// backing off. The relay finishes the job.
    Deferred,
    /// billing-svc did not take it; the relay retries after a backoff.
    Failed,
}

/// Pushes agents' budgets to billing-svc: right after a save, and from the
/// relay for whatever did not land.
#[derive(Debug, Clone)]
pub struct BudgetRelay {
    pub db: PgPool,
    pub billing: BillingInternalServiceClient<Channel>,
    pub signer: TokenSigner,
}

impl BudgetRelay {
    /// Pushes `agent`'s queued budget now, after its save has committed.
    pub async fn push(&self, agent: Uuid) -> Result<Pushed, BudgetSyncError> {
        // A save that raced this push leaves a newer version: send that too
        // rather than leave it to the relay's next round.
        for _ in 0..3 {
            let mut tx = begin_platform(&self.db).await?;
            let claimed: Option<Pending> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE agent_budget_outbox
                    SET next_attempt_at = now() + make_interval(secs => $2), attempts = attempts + 1
                  WHERE agent_id = $1 AND next_attempt_at <= now()
                 RETURNING {CLAIMED}"
            )))
            .bind(agent)
            .bind(HOLD.as_secs_f64())
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            let Some(pending) = claimed else {
                return Ok(Pushed::Deferred);
            };
            match self.send(&pending).await? {
                Pushed::Landed if self.finish(&pending).await? => return Ok(Pushed::Landed),
                Pushed::Landed => self.release(agent).await?,
                other => return Ok(other),
            }
        }
        Ok(Pushed::Deferred)
    }

    /// Pushes one batch of due budgets; returns how many were tried.
    pub async fn relay_once(&self) -> Result<usize, BudgetSyncError> {
        let mut tx = begin_platform(&self.db).await?;
        // SKIP LOCKED: replicas take disjoint batches; the hold keeps them apart afterwards.
        let due: Vec<Pending> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE agent_budget_outbox
                SET next_attempt_at = now() + make_interval(secs => $2), attempts = attempts + 1
              WHERE agent_id IN (SELECT agent_id FROM agent_budget_outbox
                                  WHERE next_attempt_at <= now()
                                  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING {CLAIMED}"
        )))
        .bind(BATCH)
        .bind(HOLD.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        for pending in &due {
            if self.send(pending).await? == Pushed::Landed && !self.finish(pending).await? {
                // Saved again meanwhile: due at once, for the next round.
                self.release(pending.agent_id).await?;
            }
        }
        Ok(due.len())
    }

    /// Relays until shutdown, logging (not dying on) failures.
    pub async fn run(self, every: Duration, shutdown: Shutdown) {
        loop {
            match self.relay_once().await {
                // A full batch means more may be due: go again at once.
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "budget relay failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Calls billing-svc; a refusal is recorded on the row with its backoff.
    async fn send(&self, pending: &Pending) -> Result<Pushed, BudgetSyncError> {
        let mut call = CallContext::new(self.signer.service_token()?, None);
        call.deadline = PUSH_DEADLINE;
        let sent = self
            .billing
            .clone()
            .set_agent_budget(call.request(SetAgentBudgetRequest {
                tenant_id: pending.tenant_id.to_string(),
                agent_id: pending.agent_id.to_string(),
                limit_usd: format_usd(pending.limit_nanos),
            }))
            .await;
        let Err(status) = sent else {
            return Ok(Pushed::Landed);
        };
        tracing::warn!(
            agent = %pending.agent_id,
            attempts = pending.attempts,
            code = ?status.code(),
            error = status.message(),
            "billing-svc did not take an agent's budget; retrying later"
        );
        let backoff = 1i64
            .checked_shl(u32::try_from(pending.attempts.saturating_sub(1)).unwrap_or(0))
            .unwrap_or(MAX_BACKOFF_SECS)
            .min(MAX_BACKOFF_SECS);
        let mut tx = begin_platform(&self.db).await?;
        sqlx::query(
            "UPDATE agent_budget_outbox
                SET next_attempt_at = now() + make_interval(secs => $2), last_error = $3
              WHERE agent_id = $1",
        )
        .bind(pending.agent_id)
        .bind(backoff as f64)
        .bind(format!("{:?}: {}", status.code(), status.message()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Pushed::Failed)
    }

    /// Removes the row if it still holds the version that landed.
    async fn finish(&self, pending: &Pending) -> Result<bool, BudgetSyncError> {
        let mut tx = begin_platform(&self.db).await?;
        let removed =
            sqlx::query("DELETE FROM agent_budget_outbox WHERE agent_id = $1 AND version = $2")
                .bind(pending.agent_id)
                .bind(pending.version)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(removed == 1)
    }

    async fn release(&self, agent: Uuid) -> Result<(), BudgetSyncError> {
        let mut tx = begin_platform(&self.db).await?;
        sqlx::query(
            "UPDATE agent_budget_outbox SET next_attempt_at = now(), attempts = 0
              WHERE agent_id = $1",
        )
        .bind(agent)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
