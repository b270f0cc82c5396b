//! The tonic adapters of media-svc.
//!
//! The contract is sketched in full; the RPCs of features not built yet answer
//! UNIMPLEMENTED through the generated default methods.

use mesh_kit::service::Resources;

#[derive(Debug, Clone)]
pub struct MediaApi {
    #[allow(dead_code)]
    resources: Resources,
}

impl MediaApi {
    pub fn new(resources: Resources) -> MediaApi {
        MediaApi { resources }
    }
}

#[tonic::async_trait]
impl crewmesh_proto::media::v1::media_service_server::MediaService for MediaApi {}

#[tonic::async_trait]
impl crewmesh_proto::media::v1::media_internal_service_server::MediaInternalService for MediaApi {}
