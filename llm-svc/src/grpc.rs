//! The tonic adapters of llm-svc.
//!
//! The contract is sketched in full; the RPCs of features not built yet answer
//! UNIMPLEMENTED through the generated default methods.

use mesh_kit::service::Resources;

#[derive(Debug, Clone)]
pub struct LlmApi {
    #[allow(dead_code)]
    resources: Resources,
}

impl LlmApi {
    pub fn new(resources: Resources) -> LlmApi {
        LlmApi { resources }
    }
}

#[tonic::async_trait]
impl crewmesh_proto::llm::v1::llm_service_server::LlmService for LlmApi {}
