//! HTTP request metrics of the edge, in OpenTelemetry's semantic-convention
//! names. The route label is the matched template (`/api/v1/agents/{id}`),
//! never the raw path, so ids do not multiply the series.

use std::time::Instant;

use axum::{extract::MatchedPath, extract::Request, middleware::Next, response::Response};

/// Label for requests no route matched (answered by the fallback).
const UNMATCHED: &str = "unmatched";

fn count(method: &str, route: String, status: u16) {
    metrics::counter!(
        "http_server_requests_total",
        "http_request_method" => method.to_owned(),
        "http_route" => route,
        "http_response_status_code" => status.to_string(),
    )
    .increment(1);
}

/// The fallback's 404s: counted, not timed (there is nothing to time).
pub fn count_unmatched(method: &str) {
    count(method, UNMATCHED.to_owned(), 404);
}

fn record(method: &str, route: String, status: u16, seconds: f64) {
    count(method, route.clone(), status);
    metrics::histogram!(
        "http_server_request_duration_seconds",
        "http_request_method" => method.to_owned(),
        "http_route" => route,
    )
    .record(seconds);
}

/// Route-layer middleware: runs after routing, so the matched template is known.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    record(
        &method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
