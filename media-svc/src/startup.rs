//! Builds media-svc from its configuration and an already-bound listener.

use std::{sync::Arc, time::Duration};

use crewmesh_proto::{
    FILE_DESCRIPTOR_SET,
    media::v1::{
        media_internal_service_server::MediaInternalServiceServer,
        media_service_server::MediaServiceServer,
    },
};
use mesh_kit::{
    Shutdown,
    server::{GrpcService, ReadinessCheck},
    service::{ServiceConfig, Storage},
};
use tokio::net::TcpListener;

use crate::{config::MediaConfig, grpc::MediaApi, ingest::Ingester, storage::ObjectStore};

pub const DEFAULT_PORT: u16 = 50055;
pub const ADDR_ENV: &str = "CREWMESH_MEDIA_ADDR";

pub static STORAGE: Storage = Storage {
    schema: "media",
    migrator: &MIGRATOR,
    max_db_connections: 10,
    uses_redis: false,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long start-up waits for object storage before serving anyway (NOT_SERVING).
const STORAGE_STARTUP_WAIT: Duration = Duration::from_secs(5);

/// The binary's and the launcher's entry: settings from the environment.
pub async fn serve(
    config: ServiceConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    serve_with(MediaConfig::from_env(config)?, listener, shutdown).await
}

pub async fn serve_with(
    config: MediaConfig,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let store = Arc::new(ObjectStore::new(&config.s3));
    let ingester = Arc::new(Ingester::new(&config)?);
    // Storage being down is not fatal: readiness keeps the service NOT_SERVING
    // and creates the bucket as soon as storage answers.
    match tokio::time::timeout(STORAGE_STARTUP_WAIT, store.ensure_bucket()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            endpoint = %config.s3.endpoint.url(),
            bucket = %config.s3.bucket,
            error = %e,
            "object storage is not usable yet; health stays NOT_SERVING until it is \
             (`scripts/up` starts a local S3 server, or set S3_ENDPOINT)"
        ),
        Err(_) => tracing::warn!(
            endpoint = %config.s3.endpoint.url(),
            "object storage did not answer within {STORAGE_STARTUP_WAIT:?}; health stays \
             NOT_SERVING until it does (`scripts/up` starts a local S3 server, or set S3_ENDPOINT)"
        ),
    }
    let readiness = {
        let store = store.clone();
        ReadinessCheck::new("object storage", move || {
            let store = store.clone();
            async move { store.ensure_bucket().await.map_err(|e| e.to_string()) }
        })
    };
    let max_bytes = config.max_bytes;
    mesh_kit::service::serve_with_storage(
        config.service,
        listener,
        shutdown,
        STORAGE,
        move |_, resources| {
            let api = MediaApi {
                db: resources.db,
                store,
                ingester,
                max_bytes,
            };
            GrpcService::new(FILE_DESCRIPTOR_SET)
                .with(MediaServiceServer::new(api.clone()))
                .with(MediaInternalServiceServer::new(api))
                .readiness(readiness)
        },
    )
    .await
}
