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
    known: std::sync::Arc<Known>,
}

/// The services a server hosts and, of each, the methods it declares: the
/// only label values, so a scan of made-up paths — answered by the auth
/// layer before any router could say UNIMPLEMENTED — adds no series.
#[derive(Debug, Default)]
struct Known {
    services: Vec<&'static str>,
    /// `pkg.Service/Method`.
    methods: std::collections::HashSet<String>,
}

/// Methods of gRPC health and reflection, which are not in our descriptors.
const STANDARD_METHODS: &[&str] = &[
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

impl GrpcMetricsLayer {
    /// `services`: the fully-qualified gRPC service names the server hosts;
    /// `descriptors`: an encoded `FileDescriptorSet` that declares them.
    pub fn new(services: &[&'static str], descriptors: &[u8]) -> GrpcMetricsLayer {
        use prost::Message as _;
        handle();
        let mut methods: std::collections::HashSet<String> =
            STANDARD_METHODS.iter().map(|m| (*m).to_owned()).collect();
        match prost_types::FileDescriptorSet::decode(descriptors) {
            Ok(set) => {
                for file in &set.file {
                    let package = file.package();
                    for service in &file.service {
                        let name = if package.is_empty() {
                            service.name().to_owned()
                        } else {
                            format!("{package}.{}", service.name())
                        };
                        if services.contains(&name.as_str()) {
                            for method in &service.method {
                                methods.insert(format!("{name}/{}", method.name()));
                            }
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "gRPC descriptors unreadable; methods are labelled unknown")
            }
        }
        GrpcMetricsLayer {
            known: std::sync::Arc::new(Known {
                services: services.to_vec(),
                methods,
            }),
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
    known: std::sync::Arc<Known>,
}

/// `/pkg.Service/Method` → (service, method) when the server hosts that
/// service and it declares that method; else `("unknown", "unknown")`.
fn labels(path: &str, known: &Known) -> (&'static str, String) {
    let path = path.trim_start_matches('/');
    let service = path.split_once('/').map_or("", |(s, _)| s);
    match known.services.iter().find(|k| **k == service) {
        Some(service) if known.methods.contains(path) => {
            (service, path[service.len() + 1..].to_owned())
        }
        _ => ("unknown", "unknown".to_owned()),
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
    fn labels_are_bounded_to_declared_methods() {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet {
            file: vec![prost_types::FileDescriptorProto {
                package: Some("crewmesh.agent.v1".into()),
                service: vec![prost_types::ServiceDescriptorProto {
                    name: Some("AgentService".into()),
                    method: vec![prost_types::MethodDescriptorProto {
                        name: Some("GetAgent".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let layer =
            GrpcMetricsLayer::new(&["crewmesh.agent.v1.AgentService"], &set.encode_to_vec());
        let known = &layer.known;
        assert_eq!(
            labels("/crewmesh.agent.v1.AgentService/GetAgent", known),
            ("crewmesh.agent.v1.AgentService", "GetAgent".to_owned())
        );
        let unknown = ("unknown", "unknown".to_owned());
        // A made-up method of a hosted service: refused before any router
        // could answer UNIMPLEMENTED, and still not a new series.
        assert_eq!(
            labels("/crewmesh.agent.v1.AgentService/Made8Up", known),
            unknown
        );
        assert_eq!(labels("/evil.Service/Anything", known), unknown);
        assert_eq!(
            labels("/crewmesh.agent.v1.AgentService/a/b", known),
            unknown
        );
        assert_eq!(labels("/", known), unknown);
        assert_eq!(
            labels("/grpc.health.v1.Health/Check", known),
            unknown,
            "health is labelled only where hosted"
        );
        assert_eq!(code_label(tonic::Code::Ok), "OK");
        assert_eq!(code_label(tonic::Code::NotFound), "NotFound");
    }
}
