//! agent-svc's own settings.

use mesh_kit::{config::var, service::ServiceConfig};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub service: ServiceConfig,
    /// billing-svc, for quota checks and budget limits (`CREWMESH_BILLING_URL`).
    pub billing_url: String,
}

impl AgentConfig {
    pub fn from_env(service: ServiceConfig) -> AgentConfig {
        AgentConfig {
            service,
            billing_url: var("CREWMESH_BILLING_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50054".to_owned()),
        }
    }
}
