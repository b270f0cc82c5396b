//! Builds billing-svc from its configuration and an already-bound listener.

use crewmesh_proto::{
    FILE_DESCRIPTOR_SET,
    billing::v1::{
        billing_internal_service_server::BillingInternalServiceServer,
        billing_service_server::BillingServiceServer,
    },
};
use mesh_kit::{
    Shutdown,
    server::GrpcService,
    service::{ServiceConfig, Storage},
};
use tokio::net::TcpListener;

use crate::grpc::BillingApi;

pub const DEFAULT_PORT: u16 = 50054;
pub const ADDR_ENV: &str = "CREWMESH_BILLING_ADDR";

pub static STORAGE: Storage = Storage {
    schema: "billing",
    migrator: &MIGRATOR,
    max_db_connections: 10,
    uses_redis: true,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub async fn serve(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    mesh_kit::service::serve_with_storage(config, listener, shutdown, STORAGE, |_, _resources| {
        GrpcService::new(FILE_DESCRIPTOR_SET)
            .with(BillingServiceServer::new(BillingApi))
            .with(BillingInternalServiceServer::new(BillingApi))
    })
    .await
}
