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

use crate::{config::BillingConfig, grpc::BillingApi};

pub const DEFAULT_PORT: u16 = 50054;
pub const ADDR_ENV: &str = "CREWMESH_BILLING_ADDR";

pub static STORAGE: Storage = Storage {
    schema: "billing",
    migrator: &MIGRATOR,
    max_db_connections: 10,
    uses_redis: true,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The binary's and the launcher's entry: settings from the environment.
pub async fn serve(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    serve_with(BillingConfig::from_env(config)?, listener, shutdown).await
}

pub async fn serve_with(
    config: BillingConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let keyring = config.keyring.clone();
    mesh_kit::service::serve_with_storage(
        config.service,
        listener,
        shutdown,
        STORAGE,
        |_, resources| {
            let api = BillingApi {
                db: resources.db,
                keyring,
            };
            GrpcService::new(FILE_DESCRIPTOR_SET)
                .with(BillingServiceServer::new(api.clone()))
                .with(BillingInternalServiceServer::new(api))
        },
    )
    .await
}
