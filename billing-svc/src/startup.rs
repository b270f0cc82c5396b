//! Builds billing-svc from its configuration and an already-bound listener.

use anyhow::Context as _;
use crewmesh_proto::{
    FILE_DESCRIPTOR_SET,
    billing::v1::{
        billing_internal_service_server::BillingInternalServiceServer,
        billing_service_server::BillingServiceServer,
    },
};
use mesh_kit::{
    Shutdown,
    server::{Dependencies, GrpcService},
    service::{ServiceConfig, Storage, connect},
};
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;

use crate::{budget::Budgets, config::BillingConfig, events, grpc::BillingApi};

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
    let resources = connect(&config.service, &STORAGE).await?;
    let client = redis::Client::open(config.service.common.redis_url.expose_secret())
        .context("REDIS_URL is not a valid Redis URL")?;
    let consumer = tokio::spawn(events::run(
        resources.db.clone(),
        client,
        config.events_stream.clone(),
        config.consumer_name.clone(),
        shutdown.clone(),
    ));
    let redis_manager = resources
        .redis
        .clone()
        .context("billing-svc needs Redis for budget leases")?;
    let api = BillingApi {
        budgets: Budgets::new(resources.db.clone(), redis_manager),
        db: resources.db.clone(),
        keyring: config.keyring.clone(),
        stripe: config.stripe.clone(),
        egress: config.egress.clone(),
        plan_prices: config.plan_prices.clone(),
    };
    let service = GrpcService::new(FILE_DESCRIPTOR_SET)
        .with(BillingServiceServer::new(api.clone()))
        .with(BillingInternalServiceServer::new(api));
    let dependencies = Dependencies {
        db: Some(resources.db),
        redis: resources.redis,
    };
    let served = mesh_kit::server::serve(
        service,
        listener,
        config.service.keyring.verifier.clone(),
        dependencies,
        shutdown,
        config.service.drain,
    )
    .await;
    consumer.abort();
    served
}
