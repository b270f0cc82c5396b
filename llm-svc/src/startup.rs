//! Builds llm-svc from its configuration and an already-bound listener.

use std::time::Duration;

use crewmesh_proto::{
    FILE_DESCRIPTOR_SET, agent::v1::agent_internal_service_client::AgentInternalServiceClient,
    billing::v1::billing_internal_service_client::BillingInternalServiceClient,
    llm::v1::llm_service_server::LlmServiceServer,
};
use mesh_kit::{
    Shutdown,
    server::GrpcService,
    service::{ServiceConfig, Storage},
};
use tokio::net::TcpListener;

use crate::{
    budget::BudgetClient, config::LlmConfig, grpc::LlmApi, providers::Providers, run::Runner,
};

pub const DEFAULT_PORT: u16 = 50053;
pub const ADDR_ENV: &str = "CREWMESH_LLM_ADDR";

/// How often settled usage goes to billing-svc when the outbox is not full.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

pub static STORAGE: Storage = Storage {
    schema: "llm",
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
    serve_with(LlmConfig::from_env(config)?, listener, shutdown).await
}

pub async fn serve_with(
    config: LlmConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let agents = mesh_kit::client::lazy_channel(&config.agent_url)?;
    let billing = mesh_kit::client::lazy_channel(&config.billing_url)?;
    let signer = config.service.keyring.signer.clone();
    let budget = BudgetClient::new(billing.clone(), signer.clone(), config.budget_slice);
    // Usage settles in the background; the last batch goes out on shutdown.
    tokio::spawn(budget.clone().run_flusher(FLUSH_EVERY, shutdown.clone()));
    let providers = Providers::new(config.provider_timeout, Default::default())?;
    let prices = std::sync::Arc::new(config.prices);
    mesh_kit::service::serve_with_storage(
        config.service,
        listener,
        shutdown,
        STORAGE,
        |_, resources| {
            let runner = Runner {
                db: resources.db,
                agents: AgentInternalServiceClient::new(agents),
                billing: BillingInternalServiceClient::new(billing),
                signer,
                budget,
                providers,
                prices,
            };
            GrpcService::new(FILE_DESCRIPTOR_SET).with(LlmServiceServer::new(LlmApi { runner }))
        },
    )
    .await
}
