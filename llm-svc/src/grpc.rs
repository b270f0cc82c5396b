//! The tonic adapters of llm-svc.
//!
//! The contract is sketched in full; the RPCs of features not built yet answer
//! UNIMPLEMENTED through the generated default methods.

/// Takes the service's connections when its first feature lands.
#[derive(Debug, Clone, Copy)]
pub struct LlmApi;

#[tonic::async_trait]
impl crewmesh_proto::llm::v1::llm_service_server::LlmService for LlmApi {}
