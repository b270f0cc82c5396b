//! Liveness and readiness of the edge.

use std::{collections::BTreeMap, time::Duration};

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use utoipa::ToSchema;

use crate::startup::AppState;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `not_ready`.
    pub status: &'static str,
    /// Each dependency's gRPC health (readiness only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<&'static str, String>,
}

/// Liveness: the process answers. Says nothing about dependencies.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        services: BTreeMap::new(),
    })
}

/// Readiness: every service the edge calls reports SERVING on gRPC health,
/// and the inbound message queue (Redis) answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Every dependency is serving", body = Health),
        (status = 503, description = "A dependency is not serving", body = Health),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let checks = state.upstreams.iter().map(|(name, channel)| async move {
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(CHECK_TIMEOUT);
        let status = match tokio::time::timeout(CHECK_TIMEOUT, client.check(request)).await {
            Ok(Ok(response)) => match response.into_inner().status() {
                ServingStatus::Serving => "serving".to_owned(),
                other => other.as_str_name().to_ascii_lowercase(),
            },
            Ok(Err(status)) => format!("unreachable: {}", status.message()),
            Err(_) => "unreachable: timed out".to_owned(),
        };
        (*name, status)
    });
    let mut services: BTreeMap<_, _> = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .collect();
    // Inbound messages are acknowledged only once queued: no queue, not ready.
    let queue = match tokio::time::timeout(CHECK_TIMEOUT, state.inbound.ping()).await {
        Ok(Ok(())) => "serving".to_owned(),
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => "unreachable: timed out".to_owned(),
    };
    services.insert("redis", queue);
    let ready = services.values().all(|s| s == "serving");
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = if ready { "ready" } else { "not_ready" };
    (code, Json(Health { status, services }))
}
