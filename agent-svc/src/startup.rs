//! Builds agent-svc from its configuration and an already-bound listener.

use crewmesh_proto::{
    FILE_DESCRIPTOR_SET,
    agent::v1::{
        agent_internal_service_server::AgentInternalServiceServer,
        agent_service_server::AgentServiceServer,
    },
};
use mesh_kit::{
    Shutdown,
    server::GrpcService,
    service::{ServiceConfig, Storage},
};
use tokio::net::TcpListener;

use crate::grpc::AgentApi;

pub const DEFAULT_PORT: u16 = 50052;
pub const ADDR_ENV: &str = "CREWMESH_AGENT_ADDR";

pub static STORAGE: Storage = Storage {
    schema: "agent",
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
    mesh_kit::service::serve_with_storage(config, listener, shutdown, STORAGE, |_, resources| {
        let api = AgentApi { db: resources.db };
        GrpcService::new(FILE_DESCRIPTOR_SET)
            .with(AgentServiceServer::new(api.clone()))
            .with(AgentInternalServiceServer::new(api))
    })
    .await
}
