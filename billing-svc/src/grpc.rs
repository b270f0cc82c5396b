//! The tonic adapters of billing-svc.
//!
//! The contract is sketched in full; the RPCs of features not built yet answer
//! UNIMPLEMENTED through the generated default methods.

use mesh_kit::service::Resources;

#[derive(Debug, Clone)]
pub struct BillingApi {
    #[allow(dead_code)]
    resources: Resources,
}

impl BillingApi {
    pub fn new(resources: Resources) -> BillingApi {
        BillingApi { resources }
    }
}

#[tonic::async_trait]
impl crewmesh_proto::billing::v1::billing_service_server::BillingService for BillingApi {}

#[tonic::async_trait]
impl crewmesh_proto::billing::v1::billing_internal_service_server::BillingInternalService
    for BillingApi
{
}
