//! The tonic adapters of billing-svc.
//!
//! The contract is sketched in full; the RPCs of features not built yet answer
//! UNIMPLEMENTED through the generated default methods.

/// Takes the service's connections when its first feature lands.
#[derive(Debug, Clone, Copy)]
pub struct BillingApi;

#[tonic::async_trait]
impl crewmesh_proto::billing::v1::billing_service_server::BillingService for BillingApi {}

#[tonic::async_trait]
impl crewmesh_proto::billing::v1::billing_internal_service_server::BillingInternalService
    for BillingApi
{
}
