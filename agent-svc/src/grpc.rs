//! The tonic adapters of agent-svc.
//!
//! The contract is sketched in full; the RPCs of features not built yet answer
//! UNIMPLEMENTED through the generated default methods.

/// Takes the service's connections when its first feature lands.
#[derive(Debug, Clone, Copy)]
pub struct AgentApi;

#[tonic::async_trait]
impl crewmesh_proto::agent::v1::agent_service_server::AgentService for AgentApi {}

#[tonic::async_trait]
impl crewmesh_proto::agent::v1::agent_internal_service_server::AgentInternalService for AgentApi {}
