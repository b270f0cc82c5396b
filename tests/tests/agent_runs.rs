#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Running an agent (L1, L3, L5, L8) through the real gateway, llm-svc,
//! agent-svc and billing-svc, against a local OpenAI-compatible provider: the
//! tenant's own key and base URL, the rendered system prompt, conversation
//! history, idempotent retries, clear errors, budget refusals and the usage
//! that ends up metered.

use std::time::Duration;

use crewmesh_tests::{Mesh, fake_openai::FakeOpenAi, spawn_mesh};
use serde_json::{Value, json};

const KEY: &str = "sk-acme-0123456789abcdef";
/// Settlement to billing-svc runs in background batches.
const SETTLED_WITHIN: Duration = Duration::from_secs(30);

/// A tenant with a customer admin and an operator, both logged in.
struct Tenant {
    admin: String,
    operator: String,
}

async fn tenant(mesh: &Mesh, slug: &str) -> Tenant {
    let (id, admin, _) = mesh.tenant_with_member(slug, "customer_admin").await;
    let email = format!("operator@{slug}.test");
    let (_, invite) = mesh.invite(&admin, &id, &email, "operator").await;
    let (status, user) = mesh.accept_invite(&invite).await;
    assert_eq!(status, 201, "{user}");
    let operator = mesh.login(&email, crewmesh_tests::PASSWORD).await;
    Tenant { admin, operator }
}

async fn store_key(mesh: &Mesh, admin: &str, provider: &str, api_key: &str, base_url: &str) {
    let (status, key) = mesh
        .post_json(
            "/api/v1/llm-keys",
            Some(admin),
            &json!({ "provider": provider, "api_key": api_key, "base_url": base_url }),
        )
        .await;
    assert_eq!(status, 201, "{key}");
}

async fn create_agent(mesh: &Mesh, admin: &str, model: &str, budget: &str) -> String {
    let (status, agent) = mesh
        .post_json(
            "/api/v1/agents",
            Some(admin),
            &json!({ "name": "Ava", "role_title": "Support", "model": model,
                     "budget_limit_usd": budget }),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    agent["id"].as_str().unwrap().to_owned()
}

/// `POST /api/v1/agents/{agent}/run`; returns the status and JSON body.
async fn run(
    mesh: &Mesh,
    token: &str,
    agent: &str,
    body: &Value,
    idempotency_key: Option<&str>,
) -> (u16, Value) {
    let mut request = mesh
        .http
        .post(mesh.url(&format!("/api/v1/agents/{agent}/run")))
        .bearer_auth(token)
        .json(body);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A Chat Completions message's text, whether `content` is a string or a list
/// of content parts (both are valid OpenAI shapes).
fn text_of(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        other => panic!("unexpected content {other}"),
    }
}

/// (role, text) of every message after the system prompt.
fn dialogue(request: &Value) -> Vec<(String, String)> {
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system", "{request}");
    messages[1..]
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), text_of(m)))
        .collect()
}

fn turn(role: &str, text: &str) -> (String, String) {
    (role.to_owned(), text.to_owned())
}

#[tokio::test]
async fn an_operator_runs_an_agent_on_the_tenants_key_and_continues_the_conversation() {
    let mesh = spawn_mesh().await;
    let fake = FakeOpenAi::start(KEY).await;
    let acme = tenant(&mesh, "acme").await;
    let (_, globex_admin, _) = mesh.tenant_with_member("globex", "customer_admin").await;
    store_key(&mesh, &acme.admin, "openai", KEY, &fake.base_url()).await;
    let agent = create_agent(&mesh, &acme.admin, "openai/gpt-4o-mini", "5").await;

    fake.set_reply("Your order shipped yesterday.");
    let (status, first) = run(
        &mesh,
        &acme.operator,
        &agent,
        &json!({ "text": "Where is my order?" }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["reply"], "Your order shipped yesterday.");
    let conversation = first["conversation_id"].as_str().unwrap().to_owned();
    assert!(!conversation.is_empty());
    assert_eq!(first["usage"]["prompt_tokens"], 120);
    assert_eq!(first["usage"]["completion_tokens"], 30);
    // gpt-4o-mini: $0.15/M in, $0.60/M out → 120·0.15e-6 + 30·0.60e-6.
    assert_eq!(first["usage"]["cost_usd"], "0.000036");
    assert_eq!(first["escalated"], false);
    assert!(first.get("refusal_reason").is_none(), "{first}");

    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["model"], "gpt-4o-mini",
        "the provider prefix is stripped"
    );
    let system = text_of(&sent[0]["messages"][0]);
    assert!(
        system.contains(agent_svc::prompt::TRANSPARENCY_CLAUSE),
        "the system prompt lacks the AI-transparency clause: {system}"
    );
    assert_eq!(dialogue(&sent[0]), vec![turn("user", "Where is my order?")]);

    // The same conversation: the first exchange goes along as history.
    fake.set_reply("It arrives tomorrow.");
    let (status, second) = run(
        &mesh,
        &acme.operator,
        &agent,
        &json!({ "text": "When will it arrive?", "conversation_id": conversation }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["reply"], "It arrives tomorrow.");
    assert_eq!(second["conversation_id"], conversation.as_str());
    let sent = fake.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        dialogue(&sent[1]),
        vec![
            turn("user", "Where is my order?"),
            turn("assistant", "Your order shipped yesterday."),
            turn("user", "When will it arrive?"),
        ]
    );

    // A retried request (same Idempotency-Key) gets the first answer; the
    // provider is called once, although it would now answer differently.
    fake.set_reply("First answer.");
    let retry_key = uuid::Uuid::new_v4().to_string();
    let body = json!({ "text": "Do you ship abroad?" });
    let (status, once) = run(&mesh, &acme.operator, &agent, &body, Some(&retry_key)).await;
    assert_eq!(status, 200, "{once}");
    fake.set_reply("Second answer.");
    let (status, again) = run(&mesh, &acme.operator, &agent, &body, Some(&retry_key)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["reply"], "First answer.");
    assert_eq!(again["conversation_id"], once["conversation_id"]);
    assert_eq!(
        fake.requests().len(),
        3,
        "one provider call for the retried run"
    );

    // Another tenant cannot tell the agent exists, and the provider is not called.
    let (status, hidden) = run(
        &mesh,
        &globex_admin,
        &agent,
        &json!({ "text": "Hello?" }),
        None,
    )
    .await;
    assert_eq!(status, 404, "{hidden}");
    assert_eq!(hidden["code"], "not_found");
    assert_eq!(fake.requests().len(), 3);

    // The usage is metered: per conversation and against the agent's budget.
    let rows = testkit::eventually(SETTLED_WITHIN, "the conversation's usage", || async {
        let (status, costs) = mesh
            .get_json("/api/v1/usage/conversations", Some(&acme.admin))
            .await;
        assert_eq!(status, 200, "{costs}");
        let rows = costs["conversations"].as_array().unwrap().clone();
        let settled = rows
            .iter()
            .find(|r| r["conversation_id"] == conversation.as_str())
            .is_some_and(|r| r["calls"] == 2);
        (settled && rows.len() == 2).then_some(rows)
    })
    .await
    .unwrap();
    let row = rows
        .iter()
        .find(|r| r["conversation_id"] == conversation.as_str())
        .unwrap();
    assert_eq!(row["agent_id"], agent.as_str());
    assert_eq!(row["prompt_tokens"], 240);
    assert_eq!(row["completion_tokens"], 60);
    assert_eq!(row["cost_usd"], "0.000072");
    let budget_path = format!("/api/v1/usage/agents/{agent}/budget");
    let budget = testkit::eventually(SETTLED_WITHIN, "the agent's spend", || async {
        let (status, budget) = mesh.get_json(&budget_path, Some(&acme.operator)).await;
        assert_eq!(status, 200, "{budget}");
        (budget["spent_usd"] == "0.000108").then_some(budget)
    })
    .await
    .unwrap();
    assert_eq!(budget["limit_usd"], "5.00");
    assert_eq!(budget["status"], "ok");
}

#[tokio::test]
async fn runs_fail_clearly_without_a_key_on_bad_input_and_when_the_provider_fails() {
    let mesh = spawn_mesh().await;
    let fake = FakeOpenAi::start(KEY).await;
    let acme = tenant(&mesh, "acme").await;
    store_key(&mesh, &acme.admin, "openai", KEY, &fake.base_url()).await;
    let agent = create_agent(&mesh, &acme.admin, "openai/gpt-4o-mini", "5").await;
    let claude = create_agent(&mesh, &acme.admin, "anthropic/claude-3-5-haiku", "5").await;
    let hello = json!({ "text": "Hello" });

    // No key for the model's provider: the admin is told what to add, and where.
    let (status, missing) = run(&mesh, &acme.operator, &claude, &hello, None).await;
    assert_eq!(status, 409, "{missing}");
    assert_eq!(missing["code"], "failed_precondition");
    let message = missing["message"].as_str().unwrap();
    assert!(message.contains("anthropic"), "{message}");
    assert!(message.contains("LLM keys"), "{message}");

    // Empty or absent text is invalid input naming the field.
    for body in [json!({ "text": "" }), json!({})] {
        let (status, invalid) = run(&mesh, &acme.operator, &agent, &body, None).await;
        assert_eq!(status, 422, "{body}: {invalid}");
        assert_eq!(invalid["field"], "text", "{invalid}");
    }
    assert!(fake.requests().is_empty(), "nothing reached the provider");

    // A provider that stays down through llm-svc's bounded retries is a 503.
    fake.fail_next(3);
    let (status, down) = run(&mesh, &acme.operator, &agent, &hello, None).await;
    assert_eq!(status, 503, "{down}");
    assert_eq!(down["code"], "unavailable");
    let attempts = fake.requests().len();
    assert!(
        (2..=3).contains(&attempts),
        "retried, within bounds: {attempts} attempts"
    );
    // Once it is back, runs succeed again.
    let (status, recovered) = run(&mesh, &acme.operator, &agent, &hello, None).await;
    assert_eq!(status, 200, "{recovered}");
    assert_eq!(fake.requests().len(), attempts + 1);

    // A key the provider refuses is the tenant's to fix: 409, not a retry storm.
    let globex = tenant(&mesh, "globex").await;
    store_key(
        &mesh,
        &globex.admin,
        "openai",
        "sk-revoked-key",
        &fake.base_url(),
    )
    .await;
    let theirs = create_agent(&mesh, &globex.admin, "openai/gpt-4o-mini", "5").await;
    let before = fake.requests().len();
    let (status, refused) = run(&mesh, &globex.admin, &theirs, &hello, None).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["code"], "failed_precondition");
    assert_eq!(
        fake.requests().len(),
        before + 1,
        "a refused key is not retried"
    );
}

#[tokio::test]
async fn a_run_on_a_spent_budget_gets_a_polite_refusal_and_no_provider_call() {
    let mesh = spawn_mesh().await;
    let fake = FakeOpenAi::start(KEY).await;
    let acme = tenant(&mesh, "acme").await;
    store_key(&mesh, &acme.admin, "openai", KEY, &fake.base_url()).await;
    let broke = create_agent(&mesh, &acme.admin, "openai/gpt-4o-mini", "0").await;

    let (status, refused) = run(
        &mesh,
        &acme.operator,
        &broke,
        &json!({ "text": "Can you help me?" }),
        None,
    )
    .await;
    assert_eq!(status, 200, "{refused}");
    assert_eq!(refused["refusal_reason"], "budget_exceeded");
    let reply = refused["reply"].as_str().unwrap();
    assert!(!reply.trim().is_empty(), "the user gets a polite reply");
    assert_eq!(refused["usage"]["prompt_tokens"], 0);
    assert_eq!(refused["usage"]["completion_tokens"], 0);
    let cost: f64 = refused["usage"]["cost_usd"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(cost, 0.0, "{refused}");
    assert!(fake.requests().is_empty(), "no provider call");

    // A retried refusal is still a refusal, not an ordinary answer.
    let body = json!({ "text": "Anyone there?" });
    let first = run(
        &mesh,
        &acme.operator,
        &broke,
        &body,
        Some("retry-refusal-1"),
    )
    .await;
    let again = run(
        &mesh,
        &acme.operator,
        &broke,
        &body,
        Some("retry-refusal-1"),
    )
    .await;
    assert_eq!(first.0, 200);
    assert_eq!(again.1["refusal_reason"], "budget_exceeded", "{}", again.1);
    assert_eq!(again.1["conversation_id"], first.1["conversation_id"]);
    assert!(fake.requests().is_empty(), "no provider call");
}

#[tokio::test]
async fn memory_is_rebuilt_from_postgres_when_redis_lost_it_and_a_stale_window_is_never_used() {
    let mesh = spawn_mesh().await;
    let fake = FakeOpenAi::start(KEY).await;
    fake.echo();
    let acme = tenant(&mesh, "acme").await;
    store_key(&mesh, &acme.admin, "openai", KEY, &fake.base_url()).await;
    let agent = create_agent(&mesh, &acme.admin, "openai/gpt-4o-mini", "5").await;
    let say = |text: &'static str, conversation: Option<String>| {
        let (mesh, token, agent) = (&mesh, acme.operator.clone(), agent.clone());
        async move {
            let mut body = json!({ "text": text });
            if let Some(c) = conversation {
                body["conversation_id"] = json!(c);
            }
            let (status, answer) = run(mesh, &token, &agent, &body, None).await;
            assert_eq!(status, 200, "{answer}");
            answer["conversation_id"].as_str().unwrap().to_owned()
        }
    };
    let conversation = say("one", None).await;
    say("two", Some(conversation.clone())).await;
    let window = format!("crewmesh:memory:{conversation}");
    let client = redis::Client::open(mesh.redis_url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let cached: Option<String> = redis::cmd("GET")
        .arg(&window)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        cached.is_some_and(|w| w.contains("You said: two")),
        "the window follows the conversation"
    );

    // Redis lost it: rebuilt from PostgreSQL.
    let _: () = redis::cmd("DEL")
        .arg(&window)
        .query_async(&mut redis)
        .await
        .unwrap();
    say("three", Some(conversation.clone())).await;
    let expected = vec![
        turn("user", "one"),
        turn("assistant", "You said: one"),
        turn("user", "two"),
        turn("assistant", "You said: two"),
        turn("user", "three"),
    ];
    assert_eq!(dialogue(&fake.requests()[2]), expected);

    // A window written for an older state of the conversation (a write it
    // missed) is not served: the record decides.
    let stale = json!({ "version": 4, "turns": [{ "role": "user", "text": "forged" }] });
    let _: () = redis::cmd("SET")
        .arg(&window)
        .arg(stale.to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
    say("four", Some(conversation.clone())).await;
    let sent = dialogue(&fake.requests()[3]);
    assert!(!sent.contains(&turn("user", "forged")), "{sent:?}");
    assert_eq!(sent.len(), 7);
    assert_eq!(sent[6], turn("user", "four"));
}
