//! The start-up every service binary shares: configuration, telemetry, the
//! listener, signals, then the service's own `serve`.

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::{
    Shutdown,
    auth::{Keyring, ServiceId},
    config::{CommonConfig, Environment, listen_addr, parsed_or},
};

/// Configuration every service has, whatever else it needs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub common: CommonConfig,
    pub keyring: Keyring,
    /// How long health says NOT_SERVING before the server stops accepting.
    pub drain: Duration,
}

impl ServiceConfig {
    pub fn from_env(service: ServiceId) -> anyhow::Result<ServiceConfig> {
        let common = CommonConfig::from_env()?;
        let keyring = Keyring::from_env(service, common.environment)?;
        let default_drain_ms = match common.environment {
            Environment::Development => 0,
            Environment::Production => 3_000,
        };
        let drain =
            Duration::from_millis(parsed_or("CREWMESH_SHUTDOWN_DRAIN_MS", default_drain_ms)?);
        Ok(ServiceConfig {
            common,
            keyring,
            drain,
        })
    }

    /// Local development against the default PostgreSQL and Redis; tests
    /// override the URLs.
    pub fn development(service: ServiceId) -> anyhow::Result<ServiceConfig> {
        Ok(ServiceConfig {
            common: CommonConfig {
                environment: Environment::Development,
                database_url: crate::config::DEFAULT_DATABASE_URL.to_owned().into(),
                redis_url: crate::config::DEFAULT_REDIS_URL.to_owned().into(),
            },
            keyring: Keyring::development(service)?,
            drain: Duration::ZERO,
        })
    }
}

/// The whole life of a per-service binary.
pub async fn run_binary<Cfg, C, S, Fut>(
    service: ServiceId,
    addr_env: &'static str,
    default_port: u16,
    config: C,
    serve: S,
) -> anyhow::Result<()>
where
    C: FnOnce() -> anyhow::Result<Cfg>,
    S: FnOnce(Cfg, TcpListener, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let environment = Environment::from_env()?;
    crate::telemetry::init(environment);
    let config = config().with_context(|| format!("configuring {service}"))?;
    let addr = listen_addr(addr_env, default_port)?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {service} to {addr} (set {addr_env} to change it)"))?;
    tracing::info!(%service, %addr, "listening");
    let shutdown = Shutdown::new();
    crate::shutdown::on_signal(shutdown.clone());
    if let Some(metrics_addr) = crate::metrics::metrics_addr()? {
        let metrics = TcpListener::bind(metrics_addr).await.with_context(|| {
            format!(
                "binding {service}'s metrics to {metrics_addr} (set {} to change it, or to off)",
                crate::metrics::METRICS_ADDR_ENV
            )
        })?;
        tracing::info!(%service, addr = %metrics_addr, "metrics at /metrics");
        tokio::spawn(crate::metrics::serve(metrics, shutdown.clone()));
    }
    serve(config, listener, shutdown).await?;
    tracing::info!(%service, "stopped");
    Ok(())
}

/// What a service keeps in PostgreSQL and whether it needs Redis.
#[derive(Debug, Clone, Copy)]
pub struct Storage {
    /// The schema the service owns (and its runtime role `crewmesh_<schema>`).
    pub schema: &'static str,
    pub migrator: &'static sqlx::migrate::Migrator,
    pub max_db_connections: u32,
    pub uses_redis: bool,
}

/// The connections a service is built from.
#[derive(Clone)]
pub struct Resources {
    pub db: sqlx::PgPool,
    pub redis: Option<redis::aio::ConnectionManager>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("redis", &self.redis.is_some())
            .finish_non_exhaustive()
    }
}

/// Migrates the service's schema, opens its pool (and Redis when used).
pub async fn connect(config: &ServiceConfig, storage: &Storage) -> anyhow::Result<Resources> {
    let db = crate::db::prepare(
        &config.common.database_url,
        storage.schema,
        storage.migrator,
        storage.max_db_connections,
    )
    .await?;
    let redis = if storage.uses_redis {
        use secrecy::ExposeSecret as _;
        let client = redis::Client::open(config.common.redis_url.expose_secret())
            .context("REDIS_URL is not a valid Redis URL")?;
        let manager = redis::aio::ConnectionManager::new(client)
            .await
            .context("cannot connect to Redis (is it running? `scripts/up` starts it)")?;
        Some(manager)
    } else {
        None
    };
    Ok(Resources { db, redis })
}

/// Connects, builds the gRPC services from the connections, and serves them
/// until shutdown: the whole `serve` of a service with storage.
pub async fn serve_with_storage<B>(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: Shutdown,
    storage: Storage,
    build: B,
) -> anyhow::Result<()>
where
    B: FnOnce(&ServiceConfig, Resources) -> crate::server::GrpcService,
{
    let resources = connect(&config, &storage).await?;
    let dependencies = crate::server::Dependencies {
        db: Some(resources.db.clone()),
        redis: resources.redis.clone(),
    };
    let service = build(&config, resources);
    crate::server::serve(
        service,
        listener,
        config.keyring.verifier.clone(),
        dependencies,
        shutdown,
        config.drain,
    )
    .await
}
