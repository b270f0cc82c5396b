//! The tonic adapters of agent-svc.
//!
//! The contract is sketched in full; the RPCs of features not built yet answer
//! UNIMPLEMENTED through the generated default methods.

use mesh_kit::service::Resources;

#[derive(Debug, Clone)]
pub struct AgentApi {
    #[allow(dead_code)]
    resources: Resources,
}

impl AgentApi {
    pub fn new(resources: Resources) -> AgentApi {
        AgentApi { resources }
    }
}

#[tonic::async_trait]
impl crewmesh_proto::agent::v1::agent_service_server::AgentService for AgentApi {}

#[tonic::async_trait]
impl crewmesh_proto::agent::v1::agent_internal_service_server::AgentInternalService for AgentApi {}
