//! Serving a service's gRPC API the same way everywhere: the auth layer,
//! health that reflects dependencies, reflection, and graceful shutdown.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Status, server::NamedService, service::Routes, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::Instrument;

use crate::{
    Shutdown,
    auth::{Caller, TokenVerifier, bearer},
    error::ErrorCode,
};

/// RPC paths that need no token: the standard health and reflection services.
const OPEN_PREFIXES: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection."];

/// How often readiness re-checks the database and Redis.
const READINESS_INTERVAL: Duration = Duration::from_secs(2);
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// The dependencies whose reachability decides whether the service is SERVING.
#[derive(Clone, Default)]
pub struct Dependencies {
    pub db: Option<PgPool>,
    pub redis: Option<redis::aio::ConnectionManager>,
}

impl std::fmt::Debug for Dependencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependencies")
            .field("db", &self.db.is_some())
            .field("redis", &self.redis.is_some())
            .finish()
    }
}

impl Dependencies {
    async fn check(&self) -> Result<(), String> {
        if let Some(db) = &self.db {
            match tokio::time::timeout(READINESS_TIMEOUT, crate::db::ping(db)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("database: {e}")),
                Err(_) => return Err("database: timed out".into()),
            }
        }
        if let Some(redis) = &self.redis {
            let mut conn = redis.clone();
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<String>(&mut conn);
            match tokio::time::timeout(READINESS_TIMEOUT, ping).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("redis: {e}")),
                Err(_) => return Err("redis: timed out".into()),
            }
        }
        Ok(())
    }
}

/// A dependency only the service itself knows how to probe (object storage,
/// …); readiness waits for it as it does for the database and Redis.
#[derive(Clone)]
pub struct ReadinessCheck {
    pub name: &'static str,
    check: std::sync::Arc<dyn Fn() -> BoxFuture<(), String> + Send + Sync>,
}

impl ReadinessCheck {
    /// `check` answers `Err(reason)` while the dependency is unusable.
    pub fn new<F, Fut>(name: &'static str, check: F) -> ReadinessCheck
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        ReadinessCheck {
            name,
            check: std::sync::Arc::new(move || Box::pin(check())),
        }
    }

    async fn run(&self) -> Result<(), String> {
        match tokio::time::timeout(READINESS_TIMEOUT, (self.check)()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: {e}", self.name)),
            Err(_) => Err(format!("{}: timed out", self.name)),
        }
    }
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What a service hands to [`serve`].
#[derive(Debug)]
pub struct GrpcService {
    /// Fully-qualified gRPC service names served (for health and reflection).
    pub names: Vec<&'static str>,
    /// Full method paths callable without a token (how a token is obtained).
    pub public_methods: Vec<&'static str>,
    pub routes: Routes,
    pub file_descriptor_set: &'static [u8],
    /// Dependencies beyond the database and Redis that readiness waits for.
    pub readiness: Vec<ReadinessCheck>,
}

impl GrpcService {
    pub fn new(file_descriptor_set: &'static [u8]) -> GrpcService {
        GrpcService {
            names: Vec::new(),
            public_methods: Vec::new(),
            routes: Routes::default(),
            file_descriptor_set,
            readiness: Vec::new(),
        }
    }

    /// Adds a generated tonic server; its name goes to health and reflection.
    pub fn with<S>(mut self, service: S) -> GrpcService
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }
}

impl GrpcService {
    /// Lets `paths` (e.g. `/pkg.Service/Login`) through without a token; their
    /// handlers get no [`Caller`] and must not need one.
    pub fn public(mut self, paths: &[&'static str]) -> GrpcService {
        self.public_methods.extend_from_slice(paths);
        self
    }

    /// Health stays NOT_SERVING while `check` fails.
    pub fn readiness(mut self, check: ReadinessCheck) -> GrpcService {
        self.readiness.push(check);
        self
    }
}

/// Serves `service` on `listener` until `shutdown` is cancelled.
///
/// Health starts NOT_SERVING and turns SERVING once the dependencies answer;
/// on shutdown it flips back to NOT_SERVING, waits `drain` so load balancers
/// stop sending, then stops accepting and lets in-flight calls finish.
pub async fn serve(
    service: GrpcService,
    listener: TcpListener,
    verifier: TokenVerifier,
    dependencies: Dependencies,
    shutdown: Shutdown,
    drain: Duration,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let mut health_names = service.names.clone();
    health_names.push("");
    set_status(&reporter, &health_names, ServingStatus::NotServing).await;

    let mut reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(service.file_descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let mut reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(service.file_descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for name in service.names.iter().chain(["grpc.health.v1.Health"].iter()) {
        reflection_v1 = reflection_v1.with_service_name(*name);
        reflection_v1alpha = reflection_v1alpha.with_service_name(*name);
    }
    let routes = service
        .routes
        .add_service(health)
        .add_service(reflection_v1.build_v1()?)
        .add_service(reflection_v1alpha.build_v1alpha()?);

    let watcher = tokio::spawn(watch_readiness(
        reporter.clone(),
        health_names.clone(),
        dependencies,
        service.readiness,
        shutdown.clone(),
    ));

    let stop = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            set_status(&reporter, &health_names, ServingStatus::NotServing).await;
            tokio::time::sleep(drain).await;
        }
    };

    let mut hosted = service.names.clone();
    hosted.extend([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]);
    let result = Server::builder()
        // Long-lived HTTP/2 connections would pin clients to one pod; recycling
        // them lets Kubernetes spread load as replicas come and go.
        .max_connection_age(Duration::from_secs(300))
        // Outermost, so refused calls are counted too.
        .layer(crate::metrics::GrpcMetricsLayer::new(
            &hosted,
            service.file_descriptor_set,
        ))
        .layer(AuthLayer::new(verifier).with_public(service.public_methods))
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
        .await;
    watcher.abort();
    result.map_err(Into::into)
}

async fn set_status(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

async fn watch_readiness(
    reporter: HealthReporter,
    names: Vec<&'static str>,
    dependencies: Dependencies,
    checks: Vec<ReadinessCheck>,
    shutdown: Shutdown,
) {
    let mut serving = false;
    loop {
        let mut result = dependencies.check().await;
        for check in &checks {
            if result.is_err() {
                break;
            }
            result = check.run().await;
        }
        let now_ready = match result {
            Ok(()) => true,
            Err(reason) => {
                if serving {
                    tracing::warn!(%reason, "dependency unreachable; health is NOT_SERVING");
                }
                false
            }
        };
        if shutdown.is_cancelled() {
            return;
        }
        if now_ready != serving {
            serving = now_ready;
            let status = if serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_status(&reporter, &names, status).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(READINESS_INTERVAL) => {}
        }
    }
}

/// Turns the bearer token in request metadata into a [`Caller`] in the request
/// extensions; rejects calls without a valid one, except health and reflection.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    verifier: TokenVerifier,
    public: std::sync::Arc<[&'static str]>,
}

impl AuthLayer {
    pub fn new(verifier: TokenVerifier) -> AuthLayer {
        AuthLayer {
            verifier,
            public: std::sync::Arc::new([]),
        }
    }

    pub fn with_public(mut self, paths: Vec<&'static str>) -> AuthLayer {
        self.public = paths.into();
        self
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            verifier: self.verifier.clone(),
            public: self.public.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    verifier: TokenVerifier,
    public: std::sync::Arc<[&'static str]>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) || self.public.contains(&path) {
            return Box::pin(self.inner.call(req));
        }
        let method = path.to_owned();
        match authenticate(&self.verifier, req.headers()) {
            Ok(caller) => {
                let span = match &caller {
                    Caller::User(user) => tracing::info_span!(
                        "rpc",
                        %method,
                        user = %user.user_id,
                        tenant = user.tenant_id.map(tracing::field::display),
                        role = user.role.as_str(),
                        impersonator = user.impersonator.map(tracing::field::display),
                    ),
                    Caller::Service(svc) => {
                        tracing::info_span!("rpc", %method, service = svc.as_str())
                    }
                };
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req).instrument(span))
            }
            Err(status) => {
                tracing::debug!(%method, reason = status.message(), "rejected unauthenticated call");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

fn authenticate(verifier: &TokenVerifier, headers: &http::HeaderMap) -> Result<Caller, Status> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| ErrorCode::Unauthenticated.status("missing bearer token"))?;
    let token =
        value.to_str().ok().and_then(bearer).ok_or_else(|| {
            ErrorCode::Unauthenticated.status("authorization is not a bearer token")
        })?;
    verifier
        .verify(token)
        .map_err(|e| ErrorCode::Unauthenticated.status(e.to_string()))
}

/// The verified caller of a request, put there by [`AuthLayer`].
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| ErrorCode::Unauthenticated.status("missing bearer token"))
}
