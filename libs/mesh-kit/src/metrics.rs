//! Prometheus metrics: one recorder per process, request metrics for every
//! gRPC server, and the text exposition on an internal HTTP port.
//!
//! gRPC metrics follow grpc-ecosystem's go-grpc-prometheus names
//! (`grpc_server_handled_total`, `grpc_server_handling_seconds`), so existing
//! dashboards and alerts apply unchanged. Labels are bounded: a method is
//! named only once the server has recognised it, so a scan of made-up paths
//! cannot grow the series without limit.

use std::{
    net::SocketAddr,
    sync::OnceLock,
    task::{Context, Poll},
    time::Instant,
};

use axum::{Router, http::header::CONTENT_TYPE, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::{Shutdown, config::var};

pub const METRICS_ADDR_ENV: &str = "CREWMESH_METRICS_ADDR";
/// The port OpenTelemetry's Prometheus exporter uses by convention.
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// Latency buckets in seconds, from a cache hit to a slow LLM call.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use. `crewmesh up` runs every
/// service in one process, so they share it; their series differ by label.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets(LATENCY_BUCKETS) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "default histogram buckets");
                PrometheusBuilder::new()
            }
        };
        match builder.install_recorder() {
            Ok(handle) => handle,
            Err(e) => {
                // Another recorder owns the process (an embedding program):
                // keep a private one so rendering still works.
                tracing::warn!(error = %e, "a metrics recorder is already installed");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

/// The Prometheus text exposition of everything recorded so far.
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

/// Where to serve metrics: `CREWMESH_METRICS_ADDR`, `off` to disable.
pub fn metrics_addr() -> Result<Option<SocketAddr>, crate::config::ConfigError> {
    match var(METRICS_ADDR_ENV) {
        Some(v) if v.eq_ignore_ascii_case("off") => Ok(None),
        _ => crate::config::listen_addr(METRICS_ADDR_ENV, DEFAULT_METRICS_PORT).map(Some),
    }
}

/// `GET /metrics` on `listener` until `shutdown`. A separate port from the
/// API, so the edge never exposes it to the internet.
pub async fn serve(listener: TcpListener, shutdown: Shutdown) -> std::io::Result<()> {
    handle();
    let app = Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                render(),
            )
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Records `grpc_server_handled_total` and `grpc_server_handling_seconds` for
/// every call, including those the auth layer refuses.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    known: std::sync::Arc<[&'static str]>,
}

impl GrpcMetricsLayer {
    /// `services`: the fully-qualified gRPC service names the server hosts.
    pub fn new(services: &[&'static str]) -> GrpcMetricsLayer {
        handle();
        GrpcMetricsLayer {
            known: services.into(),
        }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            known: self.known.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    known: std::sync::Arc<[&'static str]>,
}

/// `/pkg.Service/Method` → (service, method) when the service is hosted here.
fn labels(path: &str, known: &[&'static str]) -> (&'static str, Option<String>) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match known.iter().find(|k| **k == service) {
        Some(service) if !method.is_empty() && !method.contains('/') => {
            (service, Some(method.to_owned()))
        }
        _ => ("unknown", None),
    }
}

/// go-grpc-prometheus spells codes as `tonic::Code`'s names, with `OK`.
fn code_label(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".to_owned(),
        other => format!("{other:?}"),
    }
}

impl<S, B> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (service, method) = labels(req.uri().path(), &self.known);
        let started = Instant::now();
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            // A failed unary call is trailers-only: the status is in the
            // headers. Without it the call succeeded (our RPCs are unary).
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Internal,
            };
            // An unknown method of a known service would be unbounded too.
            let method = match (method, code) {
                (Some(m), c) if c != tonic::Code::Unimplemented => m,
                _ => "unknown".to_owned(),
            };
            let service = if method == "unknown" {
                "unknown"
            } else {
                service
            };
            metrics::counter!(
                "grpc_server_handled_total",
                "grpc_service" => service,
                "grpc_method" => method.clone(),
                "grpc_code" => code_label(code),
            )
            .increment(1);
            metrics::histogram!(
                "grpc_server_handling_seconds",
                "grpc_service" => service,
                "grpc_method" => method,
            )
            .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_to_hosted_services() {
        let known = ["crewmesh.agent.v1.AgentService"];
        assert_eq!(
            labels("/crewmesh.agent.v1.AgentService/GetAgent", &known),
            (
                "crewmesh.agent.v1.AgentService",
                Some("GetAgent".to_owned())
            )
        );
        assert_eq!(labels("/evil.Service/Anything", &known), ("unknown", None));
        assert_eq!(
            labels("/crewmesh.agent.v1.AgentService/a/b", &known),
            ("unknown", None)
        );
        assert_eq!(labels("/", &known), ("unknown", None));
        assert_eq!(code_label(tonic::Code::Ok), "OK");
        assert_eq!(code_label(tonic::Code::NotFound), "NotFound");
    }
}
