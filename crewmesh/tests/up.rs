//! The real `crewmesh up` binary: it starts every service, prints where they
//! are, answers readiness through the gateway, and stops cleanly on SIGTERM.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use secrecy::ExposeSecret;

#[tokio::test]
async fn crewmesh_up_serves_the_mesh_and_stops_on_sigterm() {
    let database = testkit::fresh_database().await.unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_crewmesh"));
    command
        .arg("up")
        .env("DATABASE_URL", database.expose_secret())
        .env("REDIS_URL", testkit::redis_url())
        .env("CREWMESH_ENV", "development")
        .env_remove("CREWMESH_TOKEN_SIGNING_KEY")
        .env_remove("CREWMESH_TOKEN_PUBLIC_KEYS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // Port 0 everywhere, so the test never collides with a running Crewmesh.
    for svc in [
        "GATEWAY", "IDENTITY", "AGENT", "LLM", "BILLING", "MEDIA", "METRICS",
    ] {
        command.env(format!("CREWMESH_{svc}_ADDR"), "127.0.0.1:0");
    }
    let mut child = command.spawn().unwrap();

    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut gateway = None;
    let mut metrics = None;
    let mut grpc_lines = 0;
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("crewmesh up said nothing for a minute");
        if line.contains(" grpc ") {
            grpc_lines += 1;
        }
        if line.trim_start().starts_with("gateway") {
            gateway = line.split_whitespace().nth(2).map(str::to_owned);
        }
        if line.trim_start().starts_with("metrics") {
            metrics = line.split_whitespace().nth(2).map(str::to_owned);
        }
        if line.starts_with("Crewmesh is up") {
            break;
        }
    }
    assert_eq!(grpc_lines, 5, "one line per gRPC service");
    let gateway = gateway.expect("the gateway's URL is printed");

    let ready = reqwest::get(format!("{gateway}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    // Prometheus sees the edge's routes by template and every service's RPCs.
    let metrics = metrics.expect("the metrics URL is printed");
    assert!(metrics.ends_with("/metrics"), "{metrics}");
    let missing = reqwest::get(format!("{gateway}/api/v1/agents/123/nope"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let scraped = reqwest::get(&metrics).await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(
        scraped.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = scraped.text().await.unwrap();
    for expected in [
        r#"http_server_requests_total{http_request_method="GET",http_route="/readyz",http_response_status_code="200"}"#,
        r#"http_route="unmatched",http_response_status_code="404"}"#,
        r#"http_server_request_duration_seconds_bucket{http_request_method="GET",http_route="/readyz",le="0.005"}"#,
        r#"grpc_server_handled_total{grpc_service="grpc.health.v1.Health",grpc_method="Check",grpc_code="OK"}"#,
        "grpc_server_handling_seconds_bucket{",
    ] {
        assert!(text.contains(expected), "no {expected} in:\n{text}");
    }
    assert!(
        !text.contains("/api/v1/agents/123"),
        "raw paths never become labels"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = testkit::eventually(Duration::from_secs(15), "crewmesh to exit", || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn rotate_keys_reencrypts_every_secret_and_reports_progress() {
    use keyring::{Key, Keyring};
    use mesh_kit::{ServiceId, service::connect};

    let database = testkit::fresh_database().await.unwrap();
    let config = testkit::service_config(ServiceId::Billing, &database).unwrap();
    let db = connect(&config, &billing_svc::startup::STORAGE)
        .await
        .unwrap()
        .db;
    let (old, new) = (Key::generate().unwrap(), Key::generate().unwrap());
    let before = Keyring::parse(&old).unwrap();
    let tenant = uuid::Uuid::now_v7();
    billing_svc::llm_keys::create(
        &db,
        &before,
        &mesh_kit::egress::EgressPolicy::deny_all(),
        tenant,
        "openai",
        "sk-rotate-me",
        None,
    )
    .await
    .unwrap();
    let agent_config = testkit::service_config(ServiceId::Agent, &database).unwrap();
    let agent_db = connect(&agent_config, &agent_svc::startup::STORAGE)
        .await
        .unwrap()
        .db;
    let agent = uuid::Uuid::now_v7();
    let mut tx = mesh_kit::db::begin_tenant(&agent_db, tenant).await.unwrap();
    sqlx::query(
        "INSERT INTO agents (id, tenant_id, name, model, budget_limit_nanos)
         VALUES ($1, $2, 'Ada', 'openai/gpt-4o-mini', 0)",
    )
    .bind(agent)
    .bind(tenant)
    .execute(&mut *tx)
    .await
    .unwrap();
    let connection = agent_svc::channels::NewConnection {
        agent_id: agent,
        kind: agent_svc::channels::Kind::WhatsApp,
        external_id: "106540352242922".into(),
        token: "EAAG-rotate-me-too".to_owned().into(),
        default_channel: String::new(),
        display_name: String::new(),
        bot_user_id: String::new(),
        reply_template_name: String::new(),
        reply_template_language: String::new(),
    };
    agent_svc::channels::create(&mut tx, &before, tenant, &connection)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_crewmesh"))
        .args(["rotate-keys", "--batch", "1"])
        .env("DATABASE_URL", database.expose_secret())
        .env("REDIS_URL", testkit::redis_url())
        .env("CREWMESH_ENV", "development")
        .env("CREWMESH_ENCRYPTION_KEYS", format!("{new},{old}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("llm_keys: 1/1 scanned, 1 re-encrypted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("channel_connections: 1/1 scanned, 1 re-encrypted"),
        "{stdout}"
    );
    assert!(stdout.contains("done: 1 of 1 LLM keys"), "{stdout}");
    assert!(stdout.contains("done: 1 of 1 channel tokens"), "{stdout}");

    let after = Keyring::parse(&new).unwrap();
    let secret = billing_svc::llm_keys::secret(&db, &after, tenant, "openai")
        .await
        .unwrap();
    assert_eq!(secret.api_key, "sk-rotate-me");
    let resolved = agent_svc::channels::resolve(
        &agent_db,
        &after,
        agent_svc::channels::Kind::WhatsApp,
        "106540352242922",
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resolved.token.expose_secret(), "EAAG-rotate-me-too");
}

#[test]
fn without_crewmesh_env_it_is_production_and_refuses_to_start_without_real_keys() {
    // A deployment that forgets CREWMESH_ENV must not run on keys anyone can
    // derive: it stops at once and names what is missing.
    let output = Command::new(env!("CARGO_BIN_EXE_crewmesh"))
        .arg("up")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/none")
        .env("REDIS_URL", testkit::redis_url())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CREWMESH_TOKEN_SIGNING_KEY")
            || stderr.contains("CREWMESH_ENCRYPTION_KEYS"),
        "{stderr}"
    );
    assert!(stderr.contains("CREWMESH_ENV=development"), "{stderr}");
}
