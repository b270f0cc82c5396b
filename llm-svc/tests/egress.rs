//! A tenant's base URL cannot reach our network: every spelling of an
//! internal address is refused before a connection is made, a host name is
//! judged by what it resolves to at connect time, redirects are not
//! followed, answers are bounded, and nothing the other side said — its
//! error body, a key it echoes — comes back in an error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::post,
};
use llm_svc::providers::{
    ChatRequest, Message, ProviderError, ProviderKey, Providers, retry::Policy,
};
use mesh_kit::egress::{EgressError, EgressPolicy};
use tokio::net::TcpListener;

const KEY: &str = "sk-tenant-secret-0123456789";

fn providers(policy: EgressPolicy) -> Providers {
    Providers::new(
        Duration::from_secs(5),
        Policy {
            max_attempts: 2,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            ..Policy::default()
        },
        policy,
    )
    .unwrap()
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "gpt-4o-mini".into(),
        system: String::new(),
        messages: vec![Message::user("hello")],
        tools: vec![],
        max_tokens: 16,
    }
}

async fn chat(providers: &Providers, base: &str) -> ProviderError {
    providers
        .chat(
            "vllm",
            &ProviderKey {
                api_key: KEY.to_owned().into(),
                base_url: Some(base.to_owned()),
            },
            &request(),
        )
        .await
        .unwrap_err()
}

/// A port where a connection attempt would be seen: the kernel completes
/// the handshake into the accept queue even while nobody accepts.
async fn watched_port() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

async fn assert_untouched(listener: &TcpListener) {
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "a connection reached the target");
}

#[tokio::test]
async fn internal_addresses_in_every_spelling_are_refused_without_a_connection() {
    let target = watched_port().await;
    let port = target.local_addr().unwrap().port();
    let deny = providers(EgressPolicy::deny_all());
    for base in [
        format!("http://127.0.0.1:{port}/v1"),
        format!("http://127.1:{port}/v1"),
        format!("http://2130706433:{port}/v1"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1"),
        format!("http://[::1]:{port}/v1"),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://10.0.0.1/v1".to_owned(),
    ] {
        let err = chat(&deny, &base).await;
        assert_eq!(
            err,
            ProviderError::Forbidden(EgressError::Forbidden),
            "{base}"
        );
        assert!(err.to_string().contains("CREWMESH_EGRESS_ALLOW"), "{err}");
    }
    // A host name is judged by what it resolves to, when it is resolved.
    let err = chat(&deny, &format!("http://localhost:{port}/v1")).await;
    assert_eq!(err, ProviderError::Forbidden(EgressError::Forbidden));
    assert_untouched(&target).await;

    // An allowlist entry opens exactly its host and port.
    let allowed = providers(EgressPolicy::parse(&format!("127.0.0.1:{}", port + 1)).unwrap());
    let err = chat(&allowed, &format!("http://127.0.0.1:{port}/v1")).await;
    assert_eq!(err, ProviderError::Forbidden(EgressError::Forbidden));
    assert_untouched(&target).await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = watched_port().await;
    let internal = format!(
        "http://127.0.0.1:{}/v1/chat/completions",
        target.local_addr().unwrap().port()
    );
    let app = Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let internal = internal.clone();
            async move { (StatusCode::FOUND, [(header::LOCATION, internal)]).into_response() }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Only the redirecting server is allowed, as a public provider would be.
    let providers = providers(EgressPolicy::parse(&redirector.to_string()).unwrap());
    let err = chat(&providers, &format!("http://{redirector}/v1")).await;
    assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
    assert_untouched(&target).await;
}

#[tokio::test]
async fn what_the_other_side_says_never_comes_back_and_answers_are_bounded() {
    let app = Router::new()
        .route(
            "/echo/chat/completions",
            post(|| async {
                (
                    StatusCode::BAD_REQUEST,
                    format!("{{\"error\":{{\"message\":\"bad key {KEY}; internal: redis at 10.0.0.5\"}}}}"),
                )
            }),
        )
        .route(
            "/down/chat/completions",
            post(|| async { (StatusCode::BAD_GATEWAY, format!("<html>{KEY} upstream 10.0.0.5</html>")) }),
        )
        .route(
            "/huge/chat/completions",
            post(|| async { "x".repeat(5 << 20) }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let providers = providers(EgressPolicy::parse(&addr.to_string()).unwrap());

    for path in ["echo", "down"] {
        let err = chat(&providers, &format!("http://{addr}/{path}")).await;
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(!shown.contains("10.0.0.5"), "{shown}");
    }
    let err = chat(&providers, &format!("http://{addr}/huge")).await;
    assert!(
        matches!(err, ProviderError::InvalidResponse(why) if why.contains("4 MiB")),
        "{err:?}"
    );
}
