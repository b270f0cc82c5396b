//! A local stand-in for Stripe's API that speaks its wire format: form-encoded
//! requests with a bearer secret key and `Idempotency-Key`, JSON objects back.
//! It records every request, replays the first answer for a repeated key (as
//! Stripe does), and can fail the next requests with 500 to exercise retries.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::{Value, json};

pub const SECRET_KEY: &str = "sk_test_crewmesh";

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Recorded {
    /// A form field of the body, e.g. `metadata[tenant_id]`.
    pub fn field(&self, name: &str) -> Option<String> {
        form_urlencoded_pairs(&self.body)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

fn decode(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn form_urlencoded_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

#[derive(Debug, Default)]
struct Inner {
    requests: Mutex<Vec<Recorded>>,
    answers: Mutex<HashMap<String, Value>>,
    fail_next: AtomicUsize,
    counter: AtomicUsize,
}

#[derive(Debug, Clone)]
pub struct FakeStripe {
    pub url: String,
    inner: Arc<Inner>,
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/v1/{*resource}", post(create))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeStripe { url, inner }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Answers the next `n` requests with HTTP 500.
    pub fn fail_next(&self, n: usize) {
        self.inner.fail_next.store(n, Ordering::SeqCst);
    }
}

async fn create(
    State(inner): State<Arc<Inner>>,
    Path(resource): Path<String>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let recorded = Recorded {
        path: format!("/v1/{resource}"),
        headers: headers.clone(),
        body,
    };
    inner.requests.lock().unwrap().push(recorded.clone());

    if headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {SECRET_KEY}")) {
        return error(StatusCode::UNAUTHORIZED, "Invalid API Key provided");
    }
    if headers.get("content-type").map(String::as_str) != Some("application/x-www-form-urlencoded")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "Stripe expects form-encoded bodies",
        );
    }
    let Some(key) = headers.get("idempotency-key").cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "this fake insists on an Idempotency-Key",
        );
    };
    if inner
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
    }
    if let Some(previous) = inner.answers.lock().unwrap().get(&key) {
        return (StatusCode::OK, Json(previous.clone()));
    }
    let n = inner.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let answer = match resource.as_str() {
        "customers" => json!({
            "id": format!("cus_fake{n}"), "object": "customer", "created": 1_700_000_000,
            "livemode": false, "metadata": { "tenant_id": recorded.field("metadata[tenant_id]") },
        }),
        "checkout/sessions" => json!({
            "id": format!("cs_test_{n}"), "object": "checkout.session",
            "automatic_tax": { "enabled": false, "liability": null, "status": null },
            "created": 1_700_000_000, "custom_fields": [],
            "custom_text": { "after_submit": null, "shipping_address": null, "submit": null,
                             "terms_of_service_acceptance": null },
            "expires_at": 1_700_086_400, "livemode": false, "mode": "subscription",
            "payment_method_types": ["card"], "payment_status": "unpaid", "shipping_options": [],
            "status": "open", "customer": recorded.field("customer"),
            "client_reference_id": recorded.field("client_reference_id"),
            "url": format!("https://checkout.stripe.com/c/pay/cs_test_{n}"),
        }),
        "billing_portal/sessions" => json!({
            "id": format!("bps_{n}"), "object": "billing_portal.session", "configuration": "bpc_1",
            "created": 1_700_000_000, "customer": recorded.field("customer"), "livemode": false,
            "return_url": recorded.field("return_url"),
            "url": format!("https://billing.stripe.com/p/session/test_{n}"),
        }),
        other => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("Unrecognized request URL (POST: /v1/{other})"),
            );
        }
    };
    inner.answers.lock().unwrap().insert(key, answer.clone());
    (StatusCode::OK, Json(answer))
}

fn error(status: StatusCode, message: &str) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(json!({ "error": { "type": "invalid_request_error", "message": message } })),
    )
}
