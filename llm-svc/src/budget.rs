//! Budget enforcement on the LLM path (L5), cheap enough for thousands of
//! calls per second per core.
//!
//! Each llm-svc replica leases slices of an agent's remaining monthly budget
//! from billing-svc and reserves each call's maximum cost from its slice
//! locally — a mutex and a subtraction, no network. After the call the real
//! cost is queued for settlement, the unused part returns to the slice, and a
//! background flush sends usage and finished leases to billing-svc in
//! batches. billing-svc grants leases only from `limit - spent - leased`, and
//! a lease is closed only after every call drawing on it has settled, so the
//! total settled spend never exceeds the limit, across any number of replicas.
//!
//! Amounts are integer nano-dollars, as in billing-svc.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crewmesh_proto::billing::v1::{
    ClosedLease, LeaseBudgetRequest, SettleUsageRequest, UsageEvent,
    billing_internal_service_client::BillingInternalServiceClient,
};
use mesh_kit::{auth::TokenSigner, client::CallContext};
use tokio::sync::Mutex as AsyncMutex;
use tonic::transport::Channel;
use uuid::Uuid;

pub use mesh_kit::wire::NANOS_PER_USD;
use mesh_kit::wire::{format_usd, parse_usd};
/// A lease is replaced this long before billing-svc would let it lapse.
const LEASE_MARGIN_SECS: i64 = 30;
/// Flush at once when this many settlements are queued.
const FLUSH_AT: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("the agent's monthly budget is spent")]
    Exceeded,
    #[error("billing-svc refused the lease: {0}")]
    Billing(#[from] tonic::Status),
    #[error("signing llm-svc's service token failed")]
    Token(#[from] mesh_kit::auth::TokenError),
}

/// One call's hold on its agent's budget; settle it with the real cost.
#[derive(Debug)]
#[must_use = "a reservation must be settled, or its lease is never closed"]
pub struct Reservation {
    tenant: Uuid,
    agent: Uuid,
    lease_id: String,
    max: i64,
}

#[derive(Debug)]
struct ActiveLease {
    id: String,
    available: i64,
    in_flight: u32,
    expires_at: i64,
}

#[derive(Debug, Default)]
struct AgentLeases {
    current: Option<ActiveLease>,
    /// Replaced leases with calls still running: closed when the last settles.
    retiring: HashMap<String, u32>,
}

#[derive(Debug, Default)]
struct Outbox {
    events: Vec<UsageEvent>,
    closed: Vec<ClosedLease>,
}

/// (tenant, agent).
type AgentKey = (Uuid, Uuid);

/// The budget state of one llm-svc replica.
#[derive(Debug)]
pub struct BudgetClient {
    billing: BillingInternalServiceClient<Channel>,
    signer: TokenSigner,
    /// Nano-dollars leased at a time: larger means fewer lease calls, and more
    /// budget held by one replica while others wait.
    slice: i64,
    agents: Mutex<HashMap<AgentKey, Arc<AsyncMutex<AgentLeases>>>>,
    outbox: Mutex<Outbox>,
    /// Wakes the flusher early when the outbox fills; callers never wait on it.
    full: tokio::sync::Notify,
}

/// What a finished call used.
#[derive(Debug, Clone)]
pub struct Usage {
    pub call_id: String,
    pub conversation_id: Option<Uuid>,
    pub model: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost: i64,
}

impl BudgetClient {
    pub fn new(billing: Channel, signer: TokenSigner, slice: i64) -> Arc<BudgetClient> {
        Arc::new(BudgetClient {
            billing: BillingInternalServiceClient::new(billing),
            signer,
            slice,
            agents: Mutex::new(HashMap::new()),
            outbox: Mutex::new(Outbox::default()),
            full: tokio::sync::Notify::new(),
        })
    }

    fn slot(&self, tenant: Uuid, agent: Uuid) -> Arc<AsyncMutex<AgentLeases>> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents.entry((tenant, agent)).or_default().clone()
    }

    fn queue_close(&self, tenant: Uuid, agent: Uuid, lease_id: String) {
        let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        outbox.closed.push(ClosedLease {
            tenant_id: tenant.to_string(),
            agent_id: agent.to_string(),
            lease_id,
        });
    }

    fn call(&self) -> Result<CallContext, BudgetError> {
        Ok(CallContext::new(self.signer.service_token()?, None))
    }

    /// Holds `max_cost` of the agent's budget for one provider call, or
    /// refuses when the budget cannot cover it.
    pub async fn reserve(
        &self,
        tenant: Uuid,
        agent: Uuid,
        max_cost: i64,
    ) -> Result<Reservation, BudgetError> {
        let slot = self.slot(tenant, agent);
        let mut leases = slot.lock().await;
        let now = chrono::Utc::now().timestamp();
        if let Some(current) = leases.current.as_mut()
            && current.available >= max_cost
            && current.expires_at - LEASE_MARGIN_SECS > now
        {
            current.available -= max_cost;
            current.in_flight += 1;
            return Ok(Reservation {
                tenant,
                agent,
                lease_id: current.id.clone(),
                max: max_cost,
            });
        }
        if let Some(old) = leases.current.take() {
            if old.in_flight == 0 {
                self.queue_close(tenant, agent, old.id);
            } else {
                leases.retiring.insert(old.id, old.in_flight);
            }
        }
        // A refusal may only mean our own finished leases are still counted
        // as held: hand them back once and ask again before saying no.
        let mut returned = false;
        let (lease_id, granted, amount) = loop {
            let lease_id = Uuid::now_v7().to_string();
            let granted = self
                .billing
                .clone()
                .lease_budget(self.call()?.request(LeaseBudgetRequest {
                    tenant_id: tenant.to_string(),
                    agent_id: agent.to_string(),
                    requested_usd: format_usd(max_cost.max(self.slice)),
                    lease_id: lease_id.clone(),
                }))
                .await?
                .into_inner();
            // A malformed grant is treated as none: refuse rather than overspend.
            let amount = parse_usd(&granted.granted_usd).unwrap_or(0);
            if amount >= max_cost {
                break (lease_id, granted, amount);
            }
            if amount > 0 {
                self.queue_close(tenant, agent, lease_id);
            }
            if returned {
                self.flush().await;
                return Err(BudgetError::Exceeded);
            }
            returned = true;
            self.flush().await;
        };
        leases.current = Some(ActiveLease {
            id: lease_id.clone(),
            available: amount - max_cost,
            in_flight: 1,
            expires_at: granted.expires_at_unix,
        });
        Ok(Reservation {
            tenant,
            agent,
            lease_id,
            max: max_cost,
        })
    }

    /// Records what the call really cost; the rest of its reservation returns.
    pub async fn settle(&self, reservation: Reservation, usage: Usage) {
        let Reservation {
            tenant,
            agent,
            lease_id,
            max,
        } = reservation;
        let cost = usage.cost.clamp(0, max);
        let queued = {
            let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
            outbox.events.push(UsageEvent {
                call_id: usage.call_id,
                tenant_id: tenant.to_string(),
                agent_id: agent.to_string(),
                conversation_id: usage
                    .conversation_id
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                model: usage.model,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cost_usd: format_usd(cost),
                lease_id: lease_id.clone(),
            });
            outbox.events.len()
        };
        let slot = self.slot(tenant, agent);
        let mut leases = slot.lock().await;
        match leases.current.as_mut() {
            Some(current) if current.id == lease_id => {
                current.available += max - cost;
                current.in_flight -= 1;
            }
            _ => {
                let remaining = leases.retiring.get_mut(&lease_id).map(|n| {
                    *n -= 1;
                    *n
                });
                if remaining == Some(0) {
                    leases.retiring.remove(&lease_id);
                    drop(leases);
                    self.queue_close(tenant, agent, lease_id);
                }
            }
        }
        if queued >= FLUSH_AT {
            self.full.notify_one();
        }
    }

    /// Sends queued usage and finished leases to billing-svc; on failure they
    /// stay queued for the next flush. Usage goes before the leases it drew on.
    pub async fn flush(&self) {
        let batch = {
            let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *outbox)
        };
        if batch.events.is_empty() && batch.closed.is_empty() {
            return;
        }
        let request = SettleUsageRequest {
            events: batch.events,
            closed_leases: batch.closed,
        };
        let result = match self.call() {
            Ok(call) => self
                .billing
                .clone()
                .settle_usage(call.request(request.clone()))
                .await
                .map_err(BudgetError::from),
            Err(e) => Err(e),
        };
        let result = result.map(|settled| {
            // Set aside by billing-svc for good: resending would not help.
            for rejected in &settled.get_ref().rejected {
                tracing::warn!(call = %rejected.call_id, reason = %rejected.reason, "usage event refused by billing-svc");
            }
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "settling usage failed; will retry");
            let mut outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
            let newer = std::mem::take(&mut *outbox);
            outbox.events = request.events;
            outbox.events.extend(newer.events);
            outbox.closed = request.closed_leases;
            outbox.closed.extend(newer.closed);
        }
    }

    /// Flushes every `interval`, or sooner when the outbox fills, until
    /// shutdown, then once more.
    pub async fn run_flusher(self: Arc<Self>, interval: Duration, shutdown: mesh_kit::Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => self.flush().await,
                _ = self.full.notified() => self.flush().await,
            }
        }
        self.flush().await;
    }
}
