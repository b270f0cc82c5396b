//! A local stand-in for an OpenAI-compatible provider, speaking the Chat
//! Completions wire format: `POST /v1/chat/completions` with a bearer key,
//! answered with a `chat.completion` object, or OpenAI's `{"error": {…}}`
//! body on failure. It records every request body so tests can check exactly
//! what llm-svc sent, and can be told to fail the next calls with 503 to
//! exercise retries and "provider down".

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

/// What every fake answers until told otherwise.
pub const DEFAULT_REPLY: &str = "Happy to help!";
pub const DEFAULT_PROMPT_TOKENS: i64 = 120;
pub const DEFAULT_COMPLETION_TOKENS: i64 = 30;

#[derive(Debug)]
struct Inner {
    api_key: String,
    reply: Mutex<String>,
    /// (prompt, completion) tokens reported in `usage`.
    usage: Mutex<(i64, i64)>,
    /// Calls still to be answered with 503.
    failures: Mutex<u32>,
    requests: Mutex<Vec<Value>>,
    /// Makes completion ids unique, as OpenAI's are.
    served: AtomicU64,
    /// While set, answers wait (a provider still thinking).
    held: tokio::sync::watch::Sender<bool>,
    /// Added before every answer.
    delay: Mutex<std::time::Duration>,
    /// Answer `You said: <the last user message>` instead of the fixed reply.
    echo: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone)]
pub struct FakeOpenAi {
    base_url: String,
    inner: Arc<Inner>,
}

impl FakeOpenAi {
    /// Serves on a random loopback port, accepting only `api_key`.
    pub async fn start(api_key: &str) -> FakeOpenAi {
        let inner = Arc::new(Inner {
            api_key: api_key.to_owned(),
            reply: Mutex::new(DEFAULT_REPLY.to_owned()),
            usage: Mutex::new((DEFAULT_PROMPT_TOKENS, DEFAULT_COMPLETION_TOKENS)),
            failures: Mutex::new(0),
            requests: Mutex::new(Vec::new()),
            served: AtomicU64::new(0),
            held: tokio::sync::watch::channel(false).0,
            delay: Mutex::new(std::time::Duration::ZERO),
            echo: std::sync::atomic::AtomicBool::new(false),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeOpenAi { base_url, inner }
    }

    /// What a tenant stores as its key's `base_url`, e.g. `http://127.0.0.1:41234/v1`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// Every request body received, oldest first: refused and failed ones too,
    /// so a test can count attempts.
    pub fn requests(&self) -> Vec<Value> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// The assistant text of the following answers.
    pub fn set_reply(&self, text: &str) {
        *self.inner.reply.lock().unwrap() = text.to_owned();
    }

    /// The token counts reported in the following answers' `usage`.
    pub fn set_usage(&self, prompt_tokens: i64, completion_tokens: i64) {
        *self.inner.usage.lock().unwrap() = (prompt_tokens, completion_tokens);
    }

    /// Holds every answer until [`FakeOpenAi::release`]: requests are
    /// recorded at once, answers wait.
    pub fn hold(&self) {
        self.inner.held.send_replace(true);
    }

    pub fn release(&self) {
        self.inner.held.send_replace(false);
    }

    /// Answers `You said: <the last user message's text>`, so a test can
    /// tell which message an answer belongs to.
    pub fn echo(&self) {
        self.inner.echo.store(true, Ordering::SeqCst);
    }

    /// Answers only after `delay`.
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.inner.delay.lock().unwrap() = delay;
    }

    /// Answers the next `n` calls with 503, as an overloaded provider does.
    pub fn fail_next(&self, n: u32) {
        *self.inner.failures.lock().unwrap() = n;
    }
}

/// OpenAI's error envelope.
fn error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (
        status,
        Json(json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })),
    )
        .into_response()
}

async fn completions(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    // Parsed by hand (not `Json<Value>`) so a malformed body is still
    // recorded and answered the way OpenAI answers it.
    let parsed: Result<Value, _> = serde_json::from_str(&body);
    inner
        .requests
        .lock()
        .unwrap()
        .push(parsed.as_ref().cloned().unwrap_or(Value::String(body)));

    let expected = format!("Bearer {}", inner.api_key);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided. You can find your API key in your account settings.",
            "invalid_request_error",
            Some("invalid_api_key"),
        );
    }
    {
        let mut failures = inner.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is overloaded or not ready yet.",
                "server_error",
                None,
            );
        }
    }
    let Ok(request) = parsed else {
        return error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        );
    };
    let Some(model) = request["model"].as_str() else {
        return error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            None,
        );
    };
    if request["messages"].as_array().is_none_or(|m| m.is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            "'messages' must contain at least one message",
            "invalid_request_error",
            None,
        );
    }

    let delay = *inner.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let mut held = inner.held.subscribe();
    let _ = held.wait_for(|held| !*held).await;
    let reply = if inner.echo.load(Ordering::SeqCst) {
        let last = request["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .map(|m| match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join(""),
                _ => String::new(),
            })
            .unwrap_or_default();
        format!("You said: {last}")
    } else {
        inner.reply.lock().unwrap().clone()
    };
    let (prompt_tokens, completion_tokens) = *inner.usage.lock().unwrap();
    let n = inner.served.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "id": format!("chatcmpl-fake{n:06}"),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": reply, "refusal": null },
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response()
}
