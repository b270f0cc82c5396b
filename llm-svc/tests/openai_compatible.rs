//! The OpenAI-compatible adapter through `Providers::chat` against a local
//! server speaking Chat Completions: the tenant's key as a bearer token, its
//! base URL, retries of transient failures, and clear errors for the rest.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use llm_svc::providers::{
    ChatRequest, FinishReason, Message, ProviderError, ProviderKey, Providers, retry::Policy,
};
use serde_json::{Value, json};

#[derive(Default)]
struct Script {
    /// Answers for the next calls, in order; the last one repeats.
    answers: Vec<(u16, Value, Option<&'static str>)>,
    delay: Option<Duration>,
    calls: AtomicUsize,
    bodies: std::sync::Mutex<Vec<Value>>,
}

async fn completions(
    State(script): State<Arc<Script>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let n = script.calls.fetch_add(1, Ordering::SeqCst);
    script.bodies.lock().unwrap().push(body);
    if let Some(delay) = script.delay {
        tokio::time::sleep(delay).await;
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sk-tenant-key") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": { "message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key" } })),
        )
            .into_response();
    }
    let (status, answer, retry_after) = script.answers[n.min(script.answers.len() - 1)].clone();
    let mut response = (StatusCode::from_u16(status).unwrap(), Json(answer)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.parse().unwrap());
    }
    response
}

async fn server(script: Script) -> (String, Arc<Script>) {
    let script = Arc::new(script);
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, script)
}

fn success() -> Value {
    json!({
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000, "model": "llama3",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": "Your order shipped." },
                      "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49 },
    })
}

fn providers(timeout: Duration) -> Providers {
    Providers::new(
        timeout,
        Policy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            ..Policy::default()
        },
        // These local servers stand in for providers on the internet.
        mesh_kit::egress::EgressPolicy::parse("127.0.0.0/8").unwrap(),
    )
    .unwrap()
}

fn key(base: &str, api_key: &str) -> ProviderKey {
    ProviderKey {
        api_key: api_key.to_owned().into(),
        base_url: Some(base.to_owned()),
    }
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "llama3".into(),
        system: "You are Ava.".into(),
        messages: vec![Message::user("where is my order?")],
        tools: vec![],
        max_tokens: 256,
    }
}

#[tokio::test]
async fn a_compatible_server_answers_on_the_tenants_key_and_base_url() {
    let (base, script) = server(Script {
        answers: vec![(200, success(), None)],
        ..Script::default()
    })
    .await;
    let reply = providers(Duration::from_secs(5))
        .chat("ollama", &key(&base, "sk-tenant-key"), &request())
        .await
        .unwrap();
    assert_eq!(reply.text, "Your order shipped.");
    assert_eq!(reply.finish, FinishReason::Stop);
    assert_eq!(
        (reply.usage.prompt_tokens, reply.usage.completion_tokens),
        (42, 7)
    );
    let sent = &script.bodies.lock().unwrap()[0];
    assert_eq!(sent["model"], "llama3");
    assert_eq!(sent["messages"][0]["role"], "system");
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff_and_then_reported() {
    // 503, then 429 with Retry-After, then success: three attempts, one answer.
    let (base, script) = server(Script {
        answers: vec![
            (503, json!({ "error": { "message": "overloaded" } }), None),
            (429, json!({ "error": { "message": "Rate limit reached", "code": "rate_limit_exceeded" } }), Some("0")),
            (200, success(), None),
        ],
        ..Script::default()
    })
    .await;
    let reply = providers(Duration::from_secs(5))
        .chat("vllm", &key(&base, "sk-tenant-key"), &request())
        .await
        .unwrap();
    assert_eq!(reply.text, "Your order shipped.");
    assert_eq!(script.calls.load(Ordering::SeqCst), 3);

    // Always failing: bounded, and the error says how often it tried.
    let (base, script) = server(Script {
        answers: vec![(502, json!({ "error": { "message": "bad gateway" } }), None)],
        ..Script::default()
    })
    .await;
    let err = providers(Duration::from_secs(5))
        .chat("vllm", &key(&base, "sk-tenant-key"), &request())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Upstream {
                status: 502,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(script.calls.load(Ordering::SeqCst), 3);
    assert!(err.to_string().contains("after 3 attempts"));
}

#[tokio::test]
async fn permanent_failures_are_reported_at_once_without_the_key() {
    let (base, script) = server(Script {
        answers: vec![(200, success(), None)],
        ..Script::default()
    })
    .await;
    let err = providers(Duration::from_secs(5))
        .chat("openai", &key(&base, "sk-wrong-key-1234"), &request())
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unauthorized { .. }), "{err:?}");
    assert_eq!(
        script.calls.load(Ordering::SeqCst),
        1,
        "a refused key is not retried"
    );
    assert!(err.to_string().contains("LLM keys"));
    assert!(!err.to_string().contains("sk-wrong-key-1234"));

    // An unknown prefix without a base URL says what to do.
    let err = providers(Duration::from_secs(5))
        .chat(
            "my-gateway",
            &ProviderKey {
                api_key: "k".to_owned().into(),
                base_url: None,
            },
            &request(),
        )
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::NoBaseUrl("my-gateway".into()));

    // Nobody listening: unreachable, after the bounded retries.
    let err = providers(Duration::from_secs(5))
        .chat(
            "vllm",
            &key("http://127.0.0.1:9/v1", "sk-tenant-key"),
            &request(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable(_)), "{err:?}");
}

#[tokio::test]
async fn a_hung_provider_times_out() {
    let (base, _) = server(Script {
        answers: vec![(200, success(), None)],
        delay: Some(Duration::from_secs(2)),
        ..Script::default()
    })
    .await;
    let err = providers(Duration::from_millis(200))
        .chat("vllm", &key(&base, "sk-tenant-key"), &request())
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::Timeout(Duration::from_millis(200)));
}
