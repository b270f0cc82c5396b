//! llm-svc's own settings.

use std::time::Duration;

use mesh_kit::{
    config::{parsed_or, var},
    queues::Queues,
    service::ServiceConfig,
};

use crate::pricing::{PRICES_ENV, PriceTable};

#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub service: ServiceConfig,
    /// agent-svc (`CREWMESH_AGENT_URL`): runtime configs.
    pub agent_url: String,
    /// billing-svc (`CREWMESH_BILLING_URL`): keys, budgets, usage.
    pub billing_url: String,
    /// media-svc (`CREWMESH_MEDIA_URL`): a message's files and their URLs.
    pub media_url: String,
    /// The message queues: llm-svc consumes inbound, produces outbound,
    /// and keeps the dead letters.
    pub queues: Queues,
    /// `CREWMESH_PROVIDER_TIMEOUT_SECS`: one provider attempt, end to end.
    pub provider_timeout: Duration,
    pub prices: PriceTable,
    /// Nano-dollars leased from an agent's budget at a time.
    pub budget_slice: i64,
    /// `CREWMESH_EGRESS_ALLOW`: which internal addresses a tenant's base URL
    /// may reach (none by default).
    pub egress: mesh_kit::egress::EgressPolicy,
}

impl LlmConfig {
    pub fn from_env(service: ServiceConfig) -> anyhow::Result<LlmConfig> {
        Ok(LlmConfig {
            service,
            agent_url: var("CREWMESH_AGENT_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50052".to_owned()),
            billing_url: var("CREWMESH_BILLING_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50054".to_owned()),
            media_url: var("CREWMESH_MEDIA_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50055".to_owned()),
            queues: Queues::from_env()?,
            provider_timeout: Duration::from_secs(parsed_or("CREWMESH_PROVIDER_TIMEOUT_SECS", 30)?),
            prices: PriceTable::with_overrides(&var(PRICES_ENV).unwrap_or_default())?,
            // A tenth of a dollar: a few hundred small calls per lease.
            budget_slice: parsed_or("CREWMESH_BUDGET_SLICE_NANOS", 100_000_000)?,
            egress: mesh_kit::egress::EgressPolicy::from_env()?,
        })
    }
}
