//! The tonic adapters of media-svc.
//!
//! The contract is sketched in full; the RPCs of features not built yet answer
//! UNIMPLEMENTED through the generated default methods.

/// Takes the service's connections when its first feature lands.
#[derive(Debug, Clone, Copy)]
pub struct MediaApi;

#[tonic::async_trait]
impl crewmesh_proto::media::v1::media_service_server::MediaService for MediaApi {}

#[tonic::async_trait]
impl crewmesh_proto::media::v1::media_internal_service_server::MediaInternalService for MediaApi {}
