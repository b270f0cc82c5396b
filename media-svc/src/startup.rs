//! Builds media-svc from its configuration and an already-bound listener.

use crewmesh_proto::{
    FILE_DESCRIPTOR_SET,
    media::v1::{
        media_internal_service_server::MediaInternalServiceServer,
        media_service_server::MediaServiceServer,
    },
};
use mesh_kit::{
    Shutdown,
    server::GrpcService,
    service::{ServiceConfig, Storage},
};
use tokio::net::TcpListener;

use crate::grpc::MediaApi;

pub const DEFAULT_PORT: u16 = 50055;
pub const ADDR_ENV: &str = "CREWMESH_MEDIA_ADDR";

pub static STORAGE: Storage = Storage {
    schema: "media",
    migrator: &MIGRATOR,
    max_db_connections: 10,
    uses_redis: false,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub async fn serve(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    mesh_kit::service::serve_with_storage(config, listener, shutdown, STORAGE, |_, _resources| {
        GrpcService::new(FILE_DESCRIPTOR_SET)
            .with(MediaServiceServer::new(MediaApi))
            .with(MediaInternalServiceServer::new(MediaApi))
    })
    .await
}
