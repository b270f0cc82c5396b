//! Builds llm-svc from its configuration and an already-bound listener: the
//! gRPC API, the inbound queue's workers and the dead-letter store.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use crewmesh_proto::{
    FILE_DESCRIPTOR_SET,
    agent::v1::agent_internal_service_client::AgentInternalServiceClient,
    billing::v1::billing_internal_service_client::BillingInternalServiceClient,
    llm::v1::llm_service_server::LlmServiceServer,
    media::v1::{
        media_internal_service_client::MediaInternalServiceClient,
        media_service_client::MediaServiceClient,
    },
};
use mesh_kit::{
    ServiceId, Shutdown,
    server::GrpcService,
    service::{ServiceConfig, Storage},
};
use secrecy::ExposeSecret as _;
use streamq::Producer;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    budget::BudgetClient,
    config::LlmConfig,
    dead_letters::{Requeue, Sink},
    grpc::LlmApi,
    inbound::InboundWorker,
    memory::Memory,
    providers::Providers,
    run::Runner,
};

pub const DEFAULT_PORT: u16 = 50053;
pub const ADDR_ENV: &str = "CREWMESH_LLM_ADDR";

/// How often settled usage goes to billing-svc when the outbox is not full.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Replies are re-queued by id, never deduplicated at append: the gateway
/// delivers each reply id once.
const NO_DEDUPE: u64 = 1;

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
    let media = mesh_kit::client::lazy_channel(&config.media_url)?;
    let signer = config.service.keyring.signer.clone();
    let budget = BudgetClient::new(billing.clone(), signer.clone(), config.budget_slice);
    // Usage settles in the background; the last batch goes out on shutdown.
    tokio::spawn(budget.clone().run_flusher(FLUSH_EVERY, shutdown.clone()));
    let providers = Providers::new(
        config.provider_timeout,
        Default::default(),
        config.egress.clone(),
    )?;
    let prices = Arc::new(config.prices);
    let queues = config.queues;
    let redis_client = redis::Client::open(config.service.common.redis_url.expose_secret())
        .context("REDIS_URL is not a valid Redis URL")?;
    // Memory and the producers; the consumers open their own connections.
    let redis = redis::aio::ConnectionManager::new(redis_client.clone())
        .await
        .context("cannot connect to Redis (is it running? `scripts/up` starts it)")?;
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let worker_shutdown = shutdown.clone();
    let served = mesh_kit::service::serve_with_storage(
        config.service,
        listener,
        shutdown,
        STORAGE,
        |_, resources| {
            let runner = Runner {
                db: resources.db.clone(),
                agents: AgentInternalServiceClient::new(agents.clone()),
                billing: BillingInternalServiceClient::new(billing),
                media: MediaServiceClient::new(media.clone()),
                signer: signer.clone(),
                budget,
                providers,
                prices,
                memory: Memory::new(redis.clone()),
            };
            let producer = |topology: &streamq::Topology| {
                Producer::new(redis.clone(), topology.clone(), queues.max_len, NO_DEDUPE)
            };
            let requeue = Requeue {
                inbound: producer(&queues.inbound),
                outbound: producer(&queues.outbound),
            };
            if queues.workers {
                let worker = InboundWorker {
                    runner: runner.clone(),
                    outbound: requeue.outbound.clone(),
                    agents: AgentInternalServiceClient::new(agents),
                    media: MediaInternalServiceClient::new(media),
                    signer,
                };
                workers.push(tokio::spawn(streamq::run(
                    redis_client.clone(),
                    queues.inbound.clone(),
                    queues.consumer(ServiceId::Llm),
                    Arc::new(worker),
                    worker_shutdown.clone(),
                )));
                let sink = Sink {
                    db: resources.db.clone(),
                    inbound_queue: queues.inbound.prefix().to_owned(),
                    outbound_queue: queues.outbound.prefix().to_owned(),
                };
                workers.push(tokio::spawn(streamq::run(
                    redis_client,
                    queues.dead_letters.clone(),
                    queues.consumer(ServiceId::Llm),
                    Arc::new(sink),
                    worker_shutdown,
                )));
            }
            GrpcService::new(FILE_DESCRIPTOR_SET).with(LlmServiceServer::new(LlmApi {
                runner,
                db: resources.db,
                requeue,
            }))
        },
    )
    .await;
    // Let the workers finish what they hold (bounded by their drain time).
    for worker in workers {
        let _ = worker.await;
    }
    served
}
