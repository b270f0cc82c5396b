//! Builds agent-svc from its configuration and an already-bound listener.

use anyhow::Context as _;
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

use crewmesh_proto::billing::v1::billing_internal_service_client::BillingInternalServiceClient;

use crate::{
    budget_outbox::BudgetRelay, config::AgentConfig, grpc::AgentApi, ownership::Verifier, webapi,
};

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
    let billing =
        BillingInternalServiceClient::new(mesh_kit::client::lazy_channel(&config.billing_url)?);
    let signer = config.service.keyring.signer.clone();
    let verifier = Verifier {
        http: webapi::client().context("building the HTTP client for Slack and the Graph API")?,
        slack_api_base: config.slack_api_base,
        whatsapp_api_base: config.whatsapp_api_base,
    };
    let (keyring, slack) = (config.keyring, config.slack);
    let relay_every = config.budget_relay_interval;
    let relay_shutdown = shutdown.clone();
    mesh_kit::service::serve_with_storage(
        config.service,
        listener,
        shutdown,
        STORAGE,
        |_, resources| {
            let budgets = BudgetRelay {
                db: resources.db.clone(),
                billing: billing.clone(),
                signer: signer.clone(),
            };
            // Delivers the budgets a save could not push; ends with the service.
            tokio::spawn(budgets.clone().run(relay_every, relay_shutdown));
            let api = AgentApi {
                db: resources.db,
                billing,
                signer,
                keyring,
                slack,
                verifier,
                budgets,
            };
            GrpcService::new(FILE_DESCRIPTOR_SET)
                .with(AgentServiceServer::new(api.clone()))
                .with(AgentInternalServiceServer::new(api))
        },
    )
    .await
}
