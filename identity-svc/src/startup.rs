//! Builds identity-svc from its configuration and an already-bound listener.

use anyhow::Context as _;
use crewmesh_proto::{
    FILE_DESCRIPTOR_SET,
    identity::v1::{
        identity_internal_service_server::IdentityInternalServiceServer,
        identity_service_server::IdentityServiceServer,
    },
};
use mesh_kit::{
    Shutdown,
    server::{Dependencies, GrpcService},
    service::{ServiceConfig, Storage, connect},
};
use tokio::net::TcpListener;

use crate::{
    config::IdentityConfig, grpc::IdentityApi, outbox, passwords::Hasher, sessions::Issuer,
    throttle::LoginThrottle, users,
};

pub const DEFAULT_PORT: u16 = 50051;
pub const ADDR_ENV: &str = "CREWMESH_IDENTITY_ADDR";

pub static STORAGE: Storage = Storage {
    schema: "identity",
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
    serve_with(IdentityConfig::from_env(config)?, listener, shutdown).await
}

pub async fn serve_with(
    config: IdentityConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let resources = connect(&config.service, &STORAGE).await?;
    let redis = resources
        .redis
        .clone()
        .context("identity-svc needs Redis for login throttling")?;
    let hasher = Hasher::new(config.password_hash_concurrency)
        .context("starting the password hashing threads")?;
    if let Some(admin) = &config.bootstrap_admin {
        users::bootstrap_admin(&resources.db, &hasher, admin)
            .await
            .map_err(|e| anyhow::anyhow!("creating the bootstrap admin: {e}"))?;
    }
    let relay = tokio::spawn(outbox::run_relay(
        resources.db.clone(),
        redis.clone(),
        config.events_stream.clone(),
        shutdown.clone(),
    ));
    let api = IdentityApi {
        db: resources.db.clone(),
        throttle: LoginThrottle::new(redis, config.login_limits.clone()),
        hasher,
        verifier: config.service.keyring.verifier.clone(),
        issuer: Issuer {
            signer: config.service.keyring.signer.clone(),
            access_ttl: config.access_ttl,
            refresh_ttl: config.refresh_ttl,
            api_key_token_ttl: config.api_key_token_ttl,
        },
        environment: config.service.common.environment,
        invite_ttl: config.invite_ttl,
    };
    let service = GrpcService::new(FILE_DESCRIPTOR_SET)
        .with(IdentityServiceServer::new(api.clone()))
        .with(IdentityInternalServiceServer::new(api))
        .public(crate::grpc::PUBLIC_METHODS);
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
    relay.abort();
    served
}
