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
use std::time::Duration;

use tokio::net::TcpListener;

use crewmesh_proto::billing::v1::billing_internal_service_client::BillingInternalServiceClient;

use crate::{config::AgentConfig, grpc::AgentApi};

pub const DEFAULT_PORT: u16 = 50052;
pub const ADDR_ENV: &str = "CREWMESH_AGENT_ADDR";

pub static STORAGE: Storage = Storage {
    schema: "agent",
    migrator: &MIGRATOR,
    max_db_connections: 10,
    uses_redis: false,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The binary's and the launcher's entry: settings from the environment.
pub async fn serve(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    serve_with(AgentConfig::from_env(config)?, listener, shutdown).await
}

pub async fn serve_with(
    config: AgentConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let billing = mesh_kit::client::lazy_channel(&config.billing_url)?;
    let signer = config.service.keyring.signer.clone();
    // Slack's token endpoint answers in well under a second; a hung call
    // would otherwise hold the admin's browser on the callback.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()?;
    let (keyring, slack) = (config.keyring, config.slack);
    mesh_kit::service::serve_with_storage(
        config.service,
        listener,
        shutdown,
        STORAGE,
        |_, resources| {
            let api = AgentApi {
                db: resources.db,
                billing: BillingInternalServiceClient::new(billing),
                signer,
                keyring,
                slack,
                http,
            };
            GrpcService::new(FILE_DESCRIPTOR_SET)
                .with(AgentServiceServer::new(api.clone()))
                .with(AgentInternalServiceServer::new(api))
        },
    )
    .await
}
