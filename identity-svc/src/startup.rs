//! Builds identity-svc from its configuration and an already-bound listener.

use crewmesh_proto::{
    FILE_DESCRIPTOR_SET,
    identity::v1::{
        identity_internal_service_server::IdentityInternalServiceServer,
        identity_service_server::IdentityServiceServer,
    },
};
use mesh_kit::{
    Shutdown,
    server::GrpcService,
    service::{ServiceConfig, Storage},
};
use tokio::net::TcpListener;

use crate::grpc::IdentityApi;

pub const DEFAULT_PORT: u16 = 50051;
pub const ADDR_ENV: &str = "CREWMESH_IDENTITY_ADDR";

pub static STORAGE: Storage = Storage {
    schema: "identity",
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
    mesh_kit::service::serve_with_storage(config, listener, shutdown, STORAGE, |_, resources| {
        let api = IdentityApi::new(resources.db);
        GrpcService::new(FILE_DESCRIPTOR_SET)
            .with(IdentityServiceServer::new(api.clone()))
            .with(IdentityInternalServiceServer::new(api))
    })
    .await
}
