//! The harness of media-svc's tests: the service on port 0 against a fresh
//! database and the real s3s-fs on 127.0.0.1:8014 (which `scripts/test`
//! starts), each test in its own bucket; plus a fake Graph API / Slack files
//! server on loopback.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use crewmesh_proto::media::v1::{
    media_internal_service_client::MediaInternalServiceClient,
    media_service_client::MediaServiceClient,
};
use media_svc::{
    config::{MediaConfig, Origin},
    storage::ObjectStore,
};
use mesh_kit::{ServiceId, Shutdown};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::{Request, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

pub struct App {
    pub config: MediaConfig,
    pub health: HealthClient<Channel>,
    pub media: MediaServiceClient<Channel>,
    pub internal: MediaInternalServiceClient<Channel>,
    pub store: ObjectStore,
    /// The test database as its owner (bypasses RLS), to see what was written.
    pub owner_db: PgPool,
    shutdown: Shutdown,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A config for a fresh database and a bucket of the test's own.
pub async fn config() -> MediaConfig {
    let url = testkit::fresh_database().await.unwrap();
    let service = testkit::service_config(ServiceId::Media, &url).unwrap();
    let mut config = MediaConfig::local(service).unwrap();
    config.s3.bucket = format!("test-{}", Uuid::new_v4().simple());
    config
}

pub async fn spawn(config: MediaConfig) -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let serving = config.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = media_svc::startup::serve_with(serving, listener, stop).await {
            panic!("media-svc failed: {e:#}");
        }
    });
    let channel = mesh_kit::client::lazy_channel(&format!("http://{addr}")).unwrap();
    // Answering health means migrated and serving RPCs (SERVING or not).
    let health = HealthClient::new(channel.clone());
    testkit::eventually(Duration::from_secs(30), "media-svc to answer", || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest::default())
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await
    .unwrap();
    let owner_db = PgPool::connect(config.service.common.database_url.expose_secret())
        .await
        .unwrap();
    App {
        health,
        store: ObjectStore::new(&config.s3),
        media: MediaServiceClient::new(channel.clone()),
        internal: MediaInternalServiceClient::new(channel),
        config,
        owner_db,
        shutdown,
    }
}

impl App {
    /// Polls health of media-svc's public service until it reports `want`.
    pub async fn wait_health(&self, want: ServingStatus) {
        let health = self.health.clone();
        testkit::eventually(Duration::from_secs(10), "media-svc health", || {
            let mut health = health.clone();
            async move {
                let request = HealthCheckRequest {
                    service: "crewmesh.media.v1.MediaService".into(),
                };
                let status = health.check(request).await.ok()?.into_inner().status();
                (status == want).then_some(())
            }
        })
        .await
        .unwrap();
    }

    /// Metadata rows of `tenant`, counted as the owner.
    pub async fn rows(&self, tenant: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM media.media_objects WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&self.owner_db)
            .await
            .unwrap()
    }

    /// Object keys stored under `tenant`'s prefix.
    pub async fn objects(&self, tenant: Uuid) -> Vec<String> {
        let listed = self
            .store
            .client()
            .list_objects_v2()
            .bucket(self.store.bucket())
            .prefix(format!("tenants/{tenant}/"))
            .send()
            .await
            .unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }
}

/// `message` carrying `token` as a bearer.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn user(role: mesh_kit::Role, tenant: Option<Uuid>) -> String {
    testkit::user_token(role, tenant).unwrap().1
}

pub fn service(id: ServiceId) -> String {
    testkit::service_token(id).unwrap()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    media_svc::presign::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// Deterministic bytes of length `n`.
pub fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// One file the fake channel serves.
#[derive(Clone)]
pub struct FakeFile {
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// What the Graph description claims; None omits `file_size`.
    pub declared_size: Option<u64>,
    /// Send without Content-Length, so only streaming can enforce the limit.
    pub chunked: bool,
}

impl FakeFile {
    pub fn new(content_type: &'static str, body: Vec<u8>) -> FakeFile {
        FakeFile {
            content_type,
            declared_size: Some(body.len() as u64),
            body,
            chunked: false,
        }
    }
}

pub const GOOD_TOKEN: &str = "EAAG-good-token";

struct FakeState {
    files: HashMap<String, FakeFile>,
    base: String,
    /// Every request that reached the server (metadata and downloads).
    hits: AtomicUsize,
    downloads: AtomicUsize,
}

/// A loopback server speaking the Graph API media shape (`/v21.0/{id}` →
/// JSON, `/files/{id}` → bytes) and serving Slack-style private files
/// (`/files-pri/{name}`), all behind [`GOOD_TOKEN`].
pub struct FakeChannel {
    pub base: String,
    state: Arc<FakeState>,
}

impl FakeChannel {
    pub async fn start(files: &[(&str, FakeFile)]) -> FakeChannel {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(FakeState {
            files: files
                .iter()
                .map(|(k, f)| ((*k).to_owned(), f.clone()))
                .collect(),
            base: base.clone(),
            hits: AtomicUsize::new(0),
            downloads: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v21.0/{id}", get(describe))
            .route("/files/{id}", get(download))
            .route("/files-pri/{id}", get(download))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeChannel { base, state }
    }

    pub fn graph_base(&self) -> String {
        format!("{}/v21.0", self.base)
    }

    pub fn origin(&self) -> Origin {
        Origin::parse("SLACK_FILES_BASE", &self.base).unwrap()
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn downloads(&self) -> usize {
        self.state.downloads.load(Ordering::SeqCst)
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {GOOD_TOKEN}"))
}

fn graph_error(status: StatusCode, message: &str) -> Response {
    let body =
        serde_json::json!({"error": {"message": message, "type": "OAuthException", "code": 190}});
    (status, Json(body)).into_response()
}

async fn describe(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if !authorized(&headers) {
        return graph_error(StatusCode::UNAUTHORIZED, "Invalid OAuth access token.");
    }
    let Some(file) = state.files.get(&id) else {
        return graph_error(StatusCode::NOT_FOUND, "Unsupported get request.");
    };
    let mut body = serde_json::json!({
        "messaging_product": "whatsapp",
        "url": format!("{}/files/{id}", state.base),
        "mime_type": file.content_type,
        "sha256": sha256_hex(&file.body),
        "id": id,
    });
    if let Some(size) = file.declared_size {
        body["file_size"] = size.into();
    }
    Json(body).into_response()
}

async fn download(
    State(state): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some(file) = state.files.get(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    state.downloads.fetch_add(1, Ordering::SeqCst);
    let body = if file.chunked {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            file.body.chunks(1024).map(|c| Ok(c.to_vec())).collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    } else {
        Body::from(file.body.clone())
    };
    ([(header::CONTENT_TYPE, file.content_type)], body).into_response()
}
