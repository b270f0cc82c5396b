#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What one tenant must not be able to do to the platform or to others,
//! through the real gateway and services: point its LLM key at our network
//! (or read back what it answers), poison usage settlement with a provider's
//! numbers, or make two concurrent runs with one idempotency key both call
//! the provider.

use std::time::Duration;

use crewmesh_proto::billing::v1::{
    SettleUsageRequest, UsageEvent, billing_internal_service_client::BillingInternalServiceClient,
};
use crewmesh_tests::{Mesh, MeshOptions, fake_openai::FakeOpenAi, spawn_mesh_with};
use mesh_kit::{ServiceId, client::CallContext};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

const KEY: &str = "sk-tenant-0123456789abcdef";

async fn admin_with_agent(mesh: &Mesh, slug: &str) -> (String, String, String) {
    let (tenant, admin, _) = mesh.tenant_with_member(slug, "customer_admin").await;
    let (status, agent) = mesh
        .post_json(
            "/api/v1/agents",
            Some(&admin),
            &json!({ "name": "Ava", "model": "openai/gpt-4o-mini", "budget_limit_usd": "5" }),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    (tenant, admin, agent["id"].as_str().unwrap().to_owned())
}

async fn run(mesh: &Mesh, token: &str, agent: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = mesh
        .http
        .post(mesh.url(&format!("/api/v1/agents/{agent}/run")))
        .bearer_auth(token)
        .json(&json!({ "text": "hello" }));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_llm_key_cannot_point_at_our_network_or_read_it_back() {
    let fake = FakeOpenAi::start(KEY).await;
    let allowed = fake
        .base_url()
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    // Only the stand-in provider is reachable, as a public provider would be.
    let mesh = spawn_mesh_with(MeshOptions {
        egress_allow: allowed,
        ..MeshOptions::default()
    })
    .await;
    let (_, admin, agent) = admin_with_agent(&mesh, "acme").await;
    let identity = mesh.grpc_url(ServiceId::Identity).to_owned();
    for base_url in [
        format!("{identity}/"),
        "http://127.1:6379/".to_owned(),
        "http://2130706433/".to_owned(),
        "http://[::1]:5432/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://localhost:8080/v1".to_owned(),
        "http://user:secret@api.example.com/v1".to_owned(),
    ] {
        let (status, refused) = mesh
            .post_json(
                "/api/v1/llm-keys",
                Some(&admin),
                &json!({ "provider": "vllm", "api_key": KEY, "base_url": base_url }),
            )
            .await;
        assert_eq!(status, 422, "{base_url}: {refused}");
        assert_eq!(refused["field"], "base_url", "{base_url}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("CREWMESH_EGRESS_ALLOW")
                || base_url.contains('@'),
            "{refused}"
        );
    }

    // A key stored when its host was public, whose name now resolves to
    // loopback (DNS rebinding): refused at connect time, nothing reached.
    let (status, key) = mesh
        .post_json(
            "/api/v1/llm-keys",
            Some(&admin),
            &json!({ "provider": "openai", "api_key": KEY, "base_url": "https://api.example.com/v1" }),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let db = sqlx::PgPool::connect(mesh.database.expose_secret())
        .await
        .unwrap();
    let port = fake.base_url().rsplit(':').next().unwrap().to_owned();
    sqlx::query("UPDATE billing.llm_keys SET base_url = $1")
        .bind(format!("http://localhost:{port}"))
        .execute(&db)
        .await
        .unwrap();
    let (status, refused) = run(&mesh, &admin, &agent, None).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("CREWMESH_EGRESS_ALLOW"),
        "{refused}"
    );
    assert!(fake.requests().is_empty(), "no request reached the target");

    // Whatever answers, its error body never comes back to the caller.
    sqlx::query("UPDATE billing.llm_keys SET base_url = $1")
        .bind(fake.base_url())
        .execute(&db)
        .await
        .unwrap();
    fake.fail_next(100);
    let (status, failed) = run(&mesh, &admin, &agent, None).await;
    assert_eq!(status, 503, "{failed}");
    let shown = failed.to_string();
    assert!(
        !shown.contains("overloaded"),
        "the provider's words: {shown}"
    );
    assert!(!shown.contains(KEY), "{shown}");
}

#[tokio::test]
async fn a_provider_reporting_absurd_usage_cannot_stop_anyone_elses_usage_being_recorded() {
    let honest = FakeOpenAi::start(KEY).await;
    let broken = FakeOpenAi::start(KEY).await;
    broken.set_usage(-500, -7);
    let mesh = spawn_mesh_with(MeshOptions::default()).await;
    let mut tenants = Vec::new();
    for (slug, fake) in [("acme", &broken), ("globex", &honest)] {
        let (tenant, admin, agent) = admin_with_agent(&mesh, slug).await;
        let (status, key) = mesh
            .post_json(
                "/api/v1/llm-keys",
                Some(&admin),
                &json!({ "provider": "openai", "api_key": KEY, "base_url": fake.base_url() }),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        let (status, answer) = run(&mesh, &admin, &agent, None).await;
        assert_eq!(status, 200, "{answer}");
        tenants.push((tenant, admin, agent, answer));
    }
    let (_, _, _, broken_answer) = &tenants[0];
    assert_eq!(
        broken_answer["usage"]["prompt_tokens"], 0,
        "negative counts are clamped"
    );
    assert_eq!(broken_answer["usage"]["cost_usd"], "0.00");

    // Both tenants' usage settles (in the background, in one batch).
    for (_, admin, agent, _) in &tenants {
        let path = format!("/api/v1/usage/agents/{agent}/budget");
        testkit::eventually(Duration::from_secs(30), "usage settled", || async {
            let (_, budget) = mesh.get_json("/api/v1/usage/daily", Some(admin)).await;
            let settled = budget["days"].as_array().is_some_and(|d| !d.is_empty());
            let (status, _) = mesh.get_json(&path, Some(admin)).await;
            (settled && status == 200).then_some(())
        })
        .await
        .unwrap();
    }

    // And a batch with a poisoned event still records the rest.
    let channel = mesh_kit::client::lazy_channel(mesh.grpc_url(ServiceId::Billing)).unwrap();
    let mut billing = BillingInternalServiceClient::new(channel);
    let as_llm = CallContext::new(testkit::service_token(ServiceId::Llm).unwrap(), None);
    let (tenant, _, agent, _) = &tenants[1];
    let event = |call: &str, prompt: i64, cost: &str| UsageEvent {
        call_id: call.into(),
        tenant_id: tenant.clone(),
        agent_id: agent.clone(),
        conversation_id: String::new(),
        model: "openai/gpt-4o-mini".into(),
        prompt_tokens: prompt,
        completion_tokens: 1,
        cost_usd: cost.into(),
        lease_id: String::new(),
    };
    let settled = billing
        .settle_usage(as_llm.request(SettleUsageRequest {
            events: vec![
                event("poison-1", -1, "0.01"),
                event("fine-1", 10, "0.01"),
                event("poison-2", 10, "not money"),
                UsageEvent {
                    tenant_id: "not-a-uuid".into(),
                    ..event("poison-3", 10, "0.01")
                },
                event("fine-2", 10, "0.02"),
            ],
            closed_leases: vec![],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(settled.recorded, 2);
    let mut rejected: Vec<String> = settled.rejected.into_iter().map(|r| r.call_id).collect();
    rejected.sort();
    assert_eq!(rejected, ["poison-1", "poison-2", "poison-3"]);
}

#[tokio::test]
async fn concurrent_runs_with_one_idempotency_key_call_the_provider_once_per_agent() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.set_delay(Duration::from_millis(500));
    let mesh = spawn_mesh_with(MeshOptions::default()).await;
    let (_, admin, agent) = admin_with_agent(&mesh, "acme").await;
    let (status, key) = mesh
        .post_json(
            "/api/v1/llm-keys",
            Some(&admin),
            &json!({ "provider": "openai", "api_key": KEY, "base_url": fake.base_url() }),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (status, second_agent) = mesh
        .post_json(
            "/api/v1/agents",
            Some(&admin),
            &json!({ "name": "Bo", "model": "openai/gpt-4o-mini", "budget_limit_usd": "5" }),
        )
        .await;
    assert_eq!(status, 201);
    let second_agent = second_agent["id"].as_str().unwrap().to_owned();

    let answers = futures_util::future::join_all(
        (0..4).map(|_| run(&mesh, &admin, &agent, Some("same-key"))),
    )
    .await;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["conversation_id"], answers[0].1["conversation_id"]);
    }
    assert_eq!(
        fake.requests().len(),
        1,
        "one provider call for four concurrent requests"
    );

    // The key is the agent's: another agent's run with it is its own.
    let (status, other) = run(&mesh, &admin, &second_agent, Some("same-key")).await;
    assert_eq!(status, 200, "{other}");
    assert_ne!(other["conversation_id"], answers[0].1["conversation_id"]);
    assert_eq!(fake.requests().len(), 2);
}
