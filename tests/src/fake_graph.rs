//! A local stand-in for Meta's Graph API (WhatsApp Cloud API), speaking its
//! wire format under a versioned base like Meta's
//! (`http://127.0.0.1:port/v21.0`):
//! - `POST /{phone_number_id}/messages`: a bearer token registered for that
//!   number; every body is recorded; answered with
//!   `{"messaging_product", "contacts": [{"input", "wa_id"}], "messages": [{"id": "wamid.…"}]}`,
//!   or an error in Graph's envelope
//!   `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`
//!   (the test can queue errors for the next sends).
//! - A business number: `GET /{phone_number_id}` with the token registered
//!   for it → `{verified_name, code_verification_status,
//!   display_phone_number, quality_rating, platform_type, throughput, id}`;
//!   another registered number's token is refused as Graph refuses an
//!   object the token may not read (100/33), an unknown token with 190.
//! - Media: `GET /{media_id}` → `{url, mime_type, sha256, file_size, id,
//!   messaging_product}` where `url` is `/media-bytes/{media_id}` on this
//!   server (outside the versioned base, as Meta's lookaside host is), and
//!   `GET /media-bytes/{media_id}` with the same bearer → the bytes.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use aws_lc_rs::digest;
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

pub const API_VERSION: &str = "v21.0";

/// The business name Meta verified for every fake number.
pub const VERIFIED_NAME: &str = "Crewmesh Test Business";

/// One send as the Graph API received it.
#[derive(Debug, Clone)]
pub struct GraphSend {
    pub phone_number_id: String,
    pub body: Value,
    /// The Graph error code it was refused with; None when accepted.
    pub error: Option<i64>,
    pub at: Instant,
}

impl GraphSend {
    pub fn accepted(&self) -> bool {
        self.error.is_none()
    }

    /// A text message's body, if this is one.
    pub fn text(&self) -> Option<&str> {
        self.body["text"]["body"].as_str()
    }

    pub fn to(&self) -> Option<&str> {
        self.body["to"].as_str()
    }
}

/// An error the next send is answered with.
#[derive(Debug, Clone)]
pub struct GraphFailure {
    pub status: u16,
    pub code: i64,
    pub subcode: Option<i64>,
    pub message: String,
    /// `Retry-After` in seconds.
    pub retry_after: Option<u64>,
}

impl GraphFailure {
    /// `code` with HTTP 400 and a generic message.
    pub fn code(code: i64) -> GraphFailure {
        GraphFailure {
            status: 400,
            code,
            subcode: None,
            message: format!("(#{code}) failure requested by the test"),
            retry_after: None,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Where this server is, for media URLs.
    origin: String,
    /// phone_number_id → the token accepted for it.
    numbers: Mutex<HashMap<String, String>>,
    sends: Mutex<Vec<GraphSend>>,
    failures: Mutex<VecDeque<GraphFailure>>,
    /// media id → (mime type, bytes).
    media: Mutex<HashMap<String, (String, Vec<u8>)>>,
    downloads: AtomicU64,
    served: AtomicU64,
    number_lookups: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct FakeGraph {
    api_base: String,
    inner: Arc<Inner>,
}

impl FakeGraph {
    pub async fn start() -> FakeGraph {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Inner {
            origin: origin.clone(),
            ..Inner::default()
        });
        let app = Router::new()
            .route(&format!("/{API_VERSION}/{{id}}/messages"), post(messages))
            .route(&format!("/{API_VERSION}/{{id}}"), get(object))
            .route("/media-bytes/{id}", get(media_bytes))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeGraph {
            api_base: format!("{origin}/{API_VERSION}"),
            inner,
        }
    }

    /// The `WHATSAPP_API_BASE` to configure, e.g. `http://127.0.0.1:41234/v21.0`.
    pub fn api_base(&self) -> String {
        self.api_base.clone()
    }

    /// Accepts `token` for sends from `phone_number_id` (and for media).
    pub fn register_number(&self, phone_number_id: &str, token: &str) {
        self.inner
            .numbers
            .lock()
            .unwrap()
            .insert(phone_number_id.into(), token.into());
    }

    /// Answers the next send with `failure` (queued behind earlier ones).
    pub fn fail_next(&self, failure: GraphFailure) {
        self.inner.failures.lock().unwrap().push_back(failure);
    }

    /// Every send received, oldest first, refused ones included.
    pub fn sends(&self) -> Vec<GraphSend> {
        self.inner.sends.lock().unwrap().clone()
    }

    /// The accepted sends from `phone_number_id`, oldest first.
    pub fn accepted(&self, phone_number_id: &str) -> Vec<GraphSend> {
        self.inner
            .sends
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.phone_number_id == phone_number_id && s.accepted())
            .cloned()
            .collect()
    }

    /// How many sends from `phone_number_id` were accepted, without copying
    /// them (load tests poll this).
    pub fn accepted_count(&self, phone_number_id: &str) -> usize {
        self.inner
            .sends
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.phone_number_id == phone_number_id && s.accepted())
            .count()
    }

    /// Serves `bytes` as media `media_id`, as a customer's upload would be.
    pub fn add_media(&self, media_id: &str, mime_type: &str, bytes: Vec<u8>) {
        self.inner
            .media
            .lock()
            .unwrap()
            .insert(media_id.into(), (mime_type.into(), bytes));
    }

    /// How many lookups of a registered number were made, refused or not.
    pub fn number_lookups(&self) -> u64 {
        self.inner.number_lookups.load(Ordering::Relaxed)
    }

    /// How many media downloads (of the bytes) succeeded.
    pub fn downloads(&self) -> u64 {
        self.inner.downloads.load(Ordering::Relaxed)
    }
}

fn trace_id(inner: &Inner) -> String {
    format!("AFake{}", inner.served.fetch_add(1, Ordering::Relaxed))
}

/// An error in Graph's envelope.
fn graph_error(
    inner: &Inner,
    status: u16,
    code: i64,
    subcode: Option<i64>,
    kind: &str,
    message: &str,
) -> Response {
    let mut error = json!({ "message": message, "type": kind, "code": code,
                            "fbtrace_id": trace_id(inner) });
    if let Some(subcode) = subcode {
        error["error_subcode"] = json!(subcode);
    }
    (
        StatusCode::from_u16(status).unwrap(),
        Json(json!({ "error": error })),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn bad_token(inner: &Inner) -> Response {
    graph_error(
        inner,
        401,
        190,
        None,
        "OAuthException",
        "Invalid OAuth access token - Cannot parse access token",
    )
}

/// Whether `headers` carry a token registered for some number (media access).
fn known_token(inner: &Inner, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|t| inner.numbers.lock().unwrap().values().any(|v| v == t))
}

/// What is wrong with a messages body, in Graph's words.
fn invalid(body: &Value) -> Option<String> {
    if body["messaging_product"] != "whatsapp" {
        return Some("(#100) The parameter messaging_product is required.".into());
    }
    if body["to"].as_str().is_none_or(str::is_empty) {
        return Some("(#100) The parameter to is required.".into());
    }
    match body["type"].as_str() {
        Some("text") => {
            let text = body["text"]["body"].as_str().unwrap_or_default();
            if text.is_empty() {
                Some("(#100) The parameter text['body'] is required.".into())
            } else if text.chars().count() > 4096 {
                Some("(#100) Param text['body'] must be at most 4096 characters long.".into())
            } else {
                None
            }
        }
        Some("template") => {
            let template = &body["template"];
            if template["name"].as_str().is_none_or(str::is_empty)
                || template["language"]["code"]
                    .as_str()
                    .is_none_or(str::is_empty)
            {
                Some("(#100) The parameter template['name'] and ['language'] are required.".into())
            } else {
                None
            }
        }
        Some("image" | "document" | "audio" | "video" | "sticker" | "interactive") => None,
        _ => Some("(#100) Param type must be one of the supported message types.".into()),
    }
}

async fn messages(
    State(inner): State<Arc<Inner>>,
    Path(phone_number_id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let record = |error: Option<i64>| {
        inner.sends.lock().unwrap().push(GraphSend {
            phone_number_id: phone_number_id.clone(),
            body: parsed.clone(),
            error,
            at: Instant::now(),
        });
    };
    let expected = inner.numbers.lock().unwrap().get(&phone_number_id).cloned();
    let Some(token) = bearer(&headers) else {
        record(Some(190));
        return bad_token(&inner);
    };
    let Some(expected) = expected else {
        record(Some(100));
        return graph_error(
            &inner,
            400,
            100,
            Some(33),
            "GraphMethodException",
            &format!(
                "Unsupported post request. Object with ID '{phone_number_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
            ),
        );
    };
    if token != expected {
        record(Some(190));
        return bad_token(&inner);
    }
    if let Some(failure) = inner.failures.lock().unwrap().pop_front() {
        record(Some(failure.code));
        let mut response = graph_error(
            &inner,
            failure.status,
            failure.code,
            failure.subcode,
            "OAuthException",
            &failure.message,
        );
        if let Some(secs) = failure.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
        }
        return response;
    }
    if let Some(message) = invalid(&parsed) {
        record(Some(100));
        return graph_error(&inner, 400, 100, None, "OAuthException", &message);
    }
    record(None);
    let to = parsed["to"].as_str().unwrap_or_default().to_owned();
    let wa_id: String = to.chars().filter(char::is_ascii_digit).collect();
    let n = inner.served.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{ "input": to, "wa_id": wa_id }],
        "messages": [{ "id": format!("wamid.HBgLFAKE{n:012}") }],
    }))
    .into_response()
}

/// `GET /{id}`: a registered business number, else media.
async fn object(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let number_token = inner.numbers.lock().unwrap().get(&id).cloned();
    match number_token {
        Some(expected) => phone_number(&inner, &id, &expected, &headers),
        None => media_info(&inner, &id, &headers),
    }
}

fn phone_number(inner: &Inner, id: &str, expected: &str, headers: &HeaderMap) -> Response {
    inner.number_lookups.fetch_add(1, Ordering::Relaxed);
    if !known_token(inner, headers) {
        return bad_token(inner);
    }
    if bearer(headers) != Some(expected) {
        return graph_error(
            inner,
            400,
            100,
            Some(33),
            "GraphMethodException",
            &format!(
                "Unsupported get request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
            ),
        );
    }
    let last4 = &id[id.len().saturating_sub(4)..];
    Json(json!({
        "verified_name": VERIFIED_NAME,
        "code_verification_status": "VERIFIED",
        "display_phone_number": format!("+1 555-01{last4}"),
        "quality_rating": "GREEN",
        "platform_type": "CLOUD_API",
        "throughput": { "level": "STANDARD" },
        "id": id,
    }))
    .into_response()
}

fn media_info(inner: &Inner, media_id: &str, headers: &HeaderMap) -> Response {
    if !known_token(inner, headers) {
        return bad_token(inner);
    }
    let media = inner.media.lock().unwrap().get(media_id).cloned();
    let Some((mime_type, bytes)) = media else {
        return graph_error(
            inner,
            400,
            100,
            Some(33),
            "GraphMethodException",
            &format!("Unsupported get request. Object with ID '{media_id}' does not exist."),
        );
    };
    let sha256: String = digest::digest(&digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Json(json!({
        "messaging_product": "whatsapp",
        "url": format!("{}/media-bytes/{media_id}", inner.origin),
        "mime_type": mime_type,
        "sha256": sha256,
        "file_size": bytes.len(),
        "id": media_id,
    }))
    .into_response()
}

async fn media_bytes(
    State(inner): State<Arc<Inner>>,
    Path(media_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !known_token(&inner, &headers) {
        return bad_token(&inner);
    }
    let media = inner.media.lock().unwrap().get(&media_id).cloned();
    match media {
        Some((mime_type, bytes)) => {
            inner.downloads.fetch_add(1, Ordering::Relaxed);
            ([(header::CONTENT_TYPE, mime_type)], bytes).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
