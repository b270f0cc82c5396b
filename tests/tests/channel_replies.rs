#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Channels end to end (issue 10): a customer writes in Slack or WhatsApp,
//! the webhook queues the message, llm-svc runs the agent on the tenant's
//! key, and the gateway delivers exactly one reply — through redeliveries,
//! a SIGKILLed llm-svc, a restarted Redis, a revoked token and WhatsApp's
//! 24-hour window. Local servers speak Slack's Web API, the Graph API and
//! OpenAI's Chat Completions; PostgreSQL, Redis and the S3-compatible
//! storage are the real ones.

use std::time::Duration;

use crewmesh_tests::{
    Mesh, MeshOptions,
    fake_graph::FakeGraph,
    fake_openai::FakeOpenAi,
    fake_slack::FakeSlack,
    process::LlmProcess,
    spawn_mesh_with,
    webhook::{self, slack_mention, whatsapp_delivery, whatsapp_image, whatsapp_text},
};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

const KEY: &str = "sk-acme-0123456789abcdef";
const TEAM: &str = "T0ACME001";
const NUMBER: &str = "106540352242922";
const CUSTOMER: &str = "16505551234";
const WAIT: Duration = Duration::from_secs(45);

/// A mesh with Slack, Graph and OpenAI stand-ins, and a tenant whose agent
/// answers on its own key.
struct World {
    mesh: Mesh,
    slack: FakeSlack,
    graph: FakeGraph,
    openai: FakeOpenAi,
    admin: String,
    agent: String,
}

async fn world_with(options: MeshOptions) -> World {
    let slack = FakeSlack::start().await;
    let graph = FakeGraph::start().await;
    let openai = FakeOpenAi::start(KEY).await;
    let mesh = spawn_mesh_with(MeshOptions {
        slack_api_base: Some(slack.api_base.clone()),
        whatsapp_api_base: Some(graph.api_base()),
        ..options
    })
    .await;
    let (_, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (status, key) = mesh
        .post_json(
            "/api/v1/llm-keys",
            Some(&admin),
            &json!({ "provider": "openai", "api_key": KEY, "base_url": openai.base_url() }),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (status, agent) = mesh
        .post_json(
            "/api/v1/agents",
            Some(&admin),
            &json!({ "name": "Ava", "role_title": "Support", "model": "openai/gpt-4o-mini",
                     "budget_limit_usd": "10" }),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    World {
        agent: agent["id"].as_str().unwrap().to_owned(),
        mesh,
        slack,
        graph,
        openai,
        admin,
    }
}

async fn world() -> World {
    world_with(MeshOptions::default()).await
}

impl World {
    async fn connect(&self, body: Value) -> Value {
        let mut body = body;
        body["agent_id"] = json!(self.agent);
        let (status, connection) = self
            .mesh
            .post_json("/api/v1/channels", Some(&self.admin), &body)
            .await;
        assert_eq!(status, 201, "{connection}");
        connection
    }

    async fn connect_slack(&self, token: &str) -> String {
        // The bot the webhook fixtures mention and authorize (`U0BOT`).
        self.slack.add_bot(token, TEAM, "U0BOT");
        let connection = self
            .connect(json!({ "channel": "slack", "external_id": TEAM, "access_token": token }))
            .await;
        connection["id"].as_str().unwrap().to_owned()
    }

    async fn connect_whatsapp(&self, number: &str, extra: Value) {
        let token = format!("EAAG-{number}");
        self.graph.register_number(number, &token);
        let mut body =
            json!({ "channel": "whatsapp", "external_id": number, "access_token": token });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        self.connect(body).await;
    }

    /// Texts the business number as the customer; the webhook must queue it.
    async fn whatsapp(&self, number: &str, messages: Value) {
        let (status, ack) =
            webhook::whatsapp(&self.mesh, &whatsapp_delivery(number, messages)).await;
        assert_eq!(status, 200, "{ack}");
    }

    /// The texts the Graph API accepted for `number`, in order.
    fn whatsapp_texts(&self, number: &str) -> Vec<String> {
        self.graph
            .accepted(number)
            .iter()
            .map(|s| s.text().unwrap_or_default().to_owned())
            .collect()
    }

    async fn wait_for_sends(&self, number: &str, n: usize) -> Vec<String> {
        testkit::eventually(WAIT, &format!("{n} WhatsApp sends"), || async {
            let texts = self.whatsapp_texts(number);
            (texts.len() >= n).then_some(texts)
        })
        .await
        .unwrap()
    }

    async fn patch_agent(&self, body: Value) {
        let response = self
            .mesh
            .http
            .patch(self.mesh.url(&format!("/api/v1/agents/{}", self.agent)))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// (role, text, refusal reason) of every stored message of the tenant,
    /// oldest first, read from the database as its owner.
    async fn stored_messages(&self) -> Vec<(String, String, String)> {
        let db = sqlx::PgPool::connect(self.mesh.database.expose_secret())
            .await
            .unwrap();
        sqlx::query_as(
            "SELECT role, text, refusal_reason FROM llm.messages ORDER BY created_at, id",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    }
}

/// The text of a Chat Completions message, string or content parts.
fn text_of(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

#[tokio::test]
async fn a_slack_mention_gets_one_placeholder_and_one_edit_however_often_slack_delivers_it() {
    let world = world().await;
    world.connect_slack("xoxb-1-2-acme").await;
    world.openai.set_reply("Your order shipped yesterday.");
    let mention = slack_mention(
        "Ev0MENTION1",
        TEAM,
        "C0SUPPORT1",
        "1700000000.000100",
        "<@U0BOT> where is my order?",
    );
    // Slack retries the same event (same event_id) three times in all.
    for _ in 0..3 {
        let (status, ack) = webhook::slack(&world.mesh, &mention).await;
        assert_eq!(status, 200, "{ack}");
    }
    let update = testkit::eventually(WAIT, "the placeholder edited into the answer", || async {
        world.slack.accepted("chat.update").into_iter().next()
    })
    .await
    .unwrap();
    world.mesh.queues_settled().await;

    let posts = world.slack.accepted("chat.postMessage");
    assert_eq!(posts.len(), 1, "one placeholder: {posts:?}");
    let placeholder = &posts[0];
    assert_eq!(placeholder.channel, "C0SUPPORT1");
    assert_eq!(
        placeholder.thread_ts.as_deref(),
        Some("1700000000.000100"),
        "in the message's thread"
    );
    assert_eq!(
        placeholder.text,
        gateway::startup::DEFAULT_SLACK_PLACEHOLDER_TEXT
    );
    let updates = world.slack.accepted("chat.update");
    assert_eq!(updates.len(), 1, "one edit: {updates:?}");
    assert_eq!(
        update.ts, placeholder.ts,
        "the placeholder itself is edited"
    );
    assert_eq!(update.text, "Your order shipped yesterday.");
    assert_eq!(world.openai.requests().len(), 1, "the model is asked once");
    let request = &world.openai.requests()[0];
    assert_eq!(
        text_of(request["messages"].as_array().unwrap().last().unwrap()),
        "where is my order?"
    );

    // The channel shows up in the metrics operators watch.
    let metrics = mesh_kit::metrics::render();
    for series in [
        "crewmesh_reply_latency_seconds_bucket{channel=\"slack\"",
        "crewmesh_queue_length{",
        "crewmesh_queue_pending{",
        "crewmesh_queue_oldest_pending_seconds{",
        "crewmesh_queue_handled_total{",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn a_whatsapp_message_gets_one_send_and_images_reach_vision_models_as_image_urls() {
    let world = world().await;
    world.connect_whatsapp(NUMBER, json!({})).await;
    world.openai.set_reply("Thanks, we will look into it.");
    let now = chrono::Utc::now().timestamp();
    world
        .whatsapp(
            NUMBER,
            json!([whatsapp_text(
                "wamid.T1",
                CUSTOMER,
                now,
                "My box arrived damaged"
            )]),
        )
        .await;
    let texts = world.wait_for_sends(NUMBER, 1).await;
    assert_eq!(texts, ["Thanks, we will look into it."]);
    let send = &world.graph.accepted(NUMBER)[0];
    assert_eq!(send.to(), Some(CUSTOMER));

    // An image to a vision model: an image_url part whose URL serves the bytes.
    let png = b"\x89PNG\r\n\x1a\n fake image bytes for the test".to_vec();
    world.graph.add_media("9001", "image/png", png.clone());
    world
        .whatsapp(
            NUMBER,
            json!([whatsapp_image("wamid.I1", CUSTOMER, "9001", "the box")]),
        )
        .await;
    world.wait_for_sends(NUMBER, 2).await;
    let request = world.openai.requests().last().unwrap().clone();
    let last = request["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let parts = last["content"].as_array().expect("content parts");
    assert_eq!(parts[0], json!({ "type": "text", "text": "the box" }));
    let image = &parts[1];
    assert_eq!(image["type"], "image_url");
    assert_eq!(image["image_url"]["detail"], "auto");
    let url = image["image_url"]["url"].as_str().unwrap();
    let fetched = reqwest::get(url).await.unwrap();
    assert_eq!(fetched.status(), 200, "{url}");
    assert_eq!(
        fetched.bytes().await.unwrap().to_vec(),
        png,
        "the presigned URL serves the same bytes"
    );
    // The history keeps the fact, not the expiring link.
    assert!(
        world
            .stored_messages()
            .await
            .iter()
            .any(|(role, text, _)| role == "user" && text == "the box\n[sent an image]")
    );

    // A model without vision gets a text note instead.
    world
        .patch_agent(json!({ "model": "openai/gpt-3.5-turbo" }))
        .await;
    world.graph.add_media("9002", "image/png", png);
    world
        .whatsapp(
            NUMBER,
            json!([whatsapp_image("wamid.I2", CUSTOMER, "9002", "again")]),
        )
        .await;
    world.wait_for_sends(NUMBER, 3).await;
    let request = world.openai.requests().last().unwrap().clone();
    let last = request["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let text = text_of(&last);
    assert!(text.contains("cannot view"), "{last}");
    assert!(!last.to_string().contains("image_url"), "{last}");
    world.mesh.queues_settled().await;
    assert_eq!(
        world.graph.accepted(NUMBER).len(),
        3,
        "one send per message"
    );
}

#[tokio::test]
async fn two_messages_of_one_conversation_are_answered_in_order_and_the_second_sees_the_first() {
    let world = world().await;
    world.connect_whatsapp(NUMBER, json!({})).await;
    world.openai.echo();
    // Slow enough that answering both at once would finish them out of order.
    world.openai.set_delay(Duration::from_millis(300));
    let now = chrono::Utc::now().timestamp();
    world
        .whatsapp(
            NUMBER,
            json!([whatsapp_text("wamid.A", CUSTOMER, now, "first question")]),
        )
        .await;
    world
        .whatsapp(
            NUMBER,
            json!([whatsapp_text("wamid.B", CUSTOMER, now, "second question")]),
        )
        .await;
    let texts = world.wait_for_sends(NUMBER, 2).await;
    assert_eq!(
        texts,
        ["You said: first question", "You said: second question"]
    );
    let second = world.openai.requests()[1].clone();
    let dialogue: Vec<(String, String)> = second["messages"].as_array().unwrap()[1..]
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), text_of(m)))
        .collect();
    assert_eq!(
        dialogue,
        [
            ("user".to_owned(), "first question".to_owned()),
            (
                "assistant".to_owned(),
                "You said: first question".to_owned()
            ),
            ("user".to_owned(), "second question".to_owned()),
        ]
    );
}

#[tokio::test]
async fn llm_svc_killed_mid_answer_delivers_exactly_one_reply_once_it_is_back() {
    let world = world_with(MeshOptions {
        llm_workers: false,
        ..MeshOptions::default()
    })
    .await;
    world.connect_whatsapp(NUMBER, json!({})).await;
    world.openai.set_reply("Here is your answer.");
    world.openai.hold();
    let mut llm = LlmProcess::start(&world.mesh, "llm-crash-test");
    let now = chrono::Utc::now().timestamp();
    world
        .whatsapp(
            NUMBER,
            json!([whatsapp_text(
                "wamid.CRASH",
                CUSTOMER,
                now,
                "Are you there?"
            )]),
        )
        .await;
    testkit::eventually(WAIT, "the provider to be asked", || async {
        (!world.openai.requests().is_empty()).then_some(())
    })
    .await
    .unwrap();
    // The provider is answering; the process dies as an OOM kill would.
    llm.kill();
    world.openai.release();
    assert!(
        world.graph.accepted(NUMBER).is_empty(),
        "nothing was delivered by the dead process"
    );

    let _restarted = LlmProcess::start(&world.mesh, "llm-crash-test");
    let texts = world.wait_for_sends(NUMBER, 1).await;
    assert_eq!(texts, ["Here is your answer."]);
    world.mesh.queues_settled().await;
    assert_eq!(world.graph.accepted(NUMBER).len(), 1, "exactly one answer");
    assert_eq!(
        world.openai.requests().len(),
        2,
        "asked again only because the first attempt never recorded an answer"
    );
}

/// A redis-server of the test's own, persisting as production must
/// (`appendonly yes`, `appendfsync always`), on a Unix socket.
struct DurableRedis {
    dir: Option<tempfile::TempDir>,
    child: std::process::Child,
}

impl DurableRedis {
    fn socket(&self) -> std::path::PathBuf {
        self.dir.as_ref().unwrap().path().join("redis.sock")
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn start(dir: tempfile::TempDir) -> DurableRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(dir.path().join("redis.sock"))
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/lib/deps.sh installs it)");
        DurableRedis {
            dir: Some(dir),
            child,
        }
    }

    async fn ready(&self) {
        let url = self.url();
        testkit::eventually(Duration::from_secs(20), "redis-server to answer", || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .ok()
            }
        })
        .await
        .unwrap();
    }

    /// SIGKILL: nothing is flushed on the way out; what survives is what
    /// the AOF had when the write was acknowledged.
    fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.socket());
        self.dir.take().unwrap()
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_message_acknowledged_before_redis_restarts_is_answered_after() {
    let redis = DurableRedis::start(tempfile::tempdir().unwrap());
    redis.ready().await;
    let world = world_with(MeshOptions {
        llm_workers: false,
        redis_url: Some(redis.url()),
        ..MeshOptions::default()
    })
    .await;
    world.connect_whatsapp(NUMBER, json!({})).await;
    world.openai.set_reply("Still here.");
    let now = chrono::Utc::now().timestamp();
    world
        .whatsapp(
            NUMBER,
            json!([whatsapp_text("wamid.DURABLE", CUSTOMER, now, "hello?")]),
        )
        .await;
    // The webhook said 200: the message is in Redis, and nobody has read it.
    let dir = redis.kill();
    let redis = DurableRedis::start(dir);
    redis.ready().await;

    let _llm = LlmProcess::start(&world.mesh, "llm-durability-test");
    let texts = world.wait_for_sends(NUMBER, 1).await;
    assert_eq!(texts, ["Still here."]);
    world.mesh.queues_settled().await;
    assert_eq!(world.graph.accepted(NUMBER).len(), 1);
}

#[tokio::test]
async fn a_revoked_slack_token_dead_letters_the_reply_and_a_retry_after_reconnecting_delivers_it_once()
 {
    let world = world().await;
    let connection = world.connect_slack("xoxb-1-2-old").await;
    world.slack.revoke("xoxb-1-2-old");
    world.openai.set_reply("Your refund is on its way.");
    let (status, _) = webhook::slack(
        &world.mesh,
        &slack_mention(
            "Ev0REVOKED1",
            TEAM,
            "C0SUPPORT1",
            "1700000100.000100",
            "<@U0BOT> refund?",
        ),
    )
    .await;
    assert_eq!(status, 200);
    let path = "/api/v1/dead-letters";
    let letter = testkit::eventually(WAIT, "the reply in the dead letters", || async {
        let (status, page) = world.mesh.get_json(path, Some(&world.admin)).await;
        assert_eq!(status, 200, "{page}");
        page["dead_letters"]
            .as_array()?
            .iter()
            .find(|d| d["message_id"] == "slack:Ev0REVOKED1:reply")
            .cloned()
    })
    .await
    .unwrap();
    assert_eq!(letter["reason"], "slack:token_revoked");
    assert_eq!(letter["queue"], "outbound");
    assert_eq!(letter["channel"], "slack");
    assert_eq!(letter["text"], "Your refund is on its way.");
    world.mesh.queues_settled().await;
    let refused = world.slack.calls().iter().filter(|c| !c.accepted()).count();
    assert!(
        mesh_kit::metrics::render().contains("crewmesh_queue_dead_letters_total{"),
        "dead letters are counted"
    );
    assert!(
        refused <= 2,
        "no loop: the placeholder and the reply tried once each"
    );

    // The admin reconnects the workspace with a new token and retries.
    let id = letter["id"].as_str().unwrap();
    let response = world
        .mesh
        .http
        .delete(world.mesh.url(&format!("/api/v1/channels/{connection}")))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    world.connect_slack("xoxb-1-2-new").await;
    let (status, retried) = world
        .mesh
        .post_json(
            &format!("/api/v1/dead-letters/{id}/retry"),
            Some(&world.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{retried}");
    assert!(retried["retried_at"].is_string(), "{retried}");
    let post = testkit::eventually(WAIT, "the reply delivered", || async {
        world.slack.accepted("chat.postMessage").into_iter().next()
    })
    .await
    .unwrap();
    world.mesh.queues_settled().await;
    assert_eq!(
        world.slack.accepted("chat.postMessage").len(),
        1,
        "delivered once"
    );
    assert_eq!(post.text, "Your refund is on its way.");
    assert_eq!(post.thread_ts.as_deref(), Some("1700000100.000100"));
    assert_eq!(
        world.openai.requests().len(),
        1,
        "the retry re-sent the answer, not the question"
    );

    let (status, missing) = world
        .mesh
        .post_json(
            &format!("/api/v1/dead-letters/{}/retry", uuid::Uuid::now_v7()),
            Some(&world.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404, "{missing}");
}

#[tokio::test]
async fn whatsapp_replies_keep_to_the_24_hour_window() {
    let world = world().await;
    const TEMPLATED: &str = "106540352242999";
    world
        .connect_whatsapp(
            TEMPLATED,
            json!({ "reply_template_name": "order_update", "reply_template_language": "en_US" }),
        )
        .await;
    world.connect_whatsapp(NUMBER, json!({})).await;
    world.openai.set_reply("Your order is ready.");
    // Answered inside the window, delivered after it closed.
    world.openai.set_delay(Duration::from_secs(6));
    let almost_a_day_ago = chrono::Utc::now().timestamp() - 24 * 3600 + 4;
    world
        .whatsapp(
            TEMPLATED,
            json!([whatsapp_text(
                "wamid.LATE1",
                CUSTOMER,
                almost_a_day_ago,
                "ready?"
            )]),
        )
        .await;
    world
        .whatsapp(
            NUMBER,
            json!([whatsapp_text(
                "wamid.LATE2",
                CUSTOMER,
                almost_a_day_ago,
                "ready?"
            )]),
        )
        .await;

    let sends = testkit::eventually(WAIT, "the template send", || async {
        let sends = world.graph.accepted(TEMPLATED);
        (!sends.is_empty()).then_some(sends)
    })
    .await
    .unwrap();
    assert_eq!(sends.len(), 1);
    let body = &sends[0].body;
    assert_eq!(body["type"], "template", "{body}");
    assert_eq!(body["template"]["name"], "order_update");
    assert_eq!(body["template"]["language"]["code"], "en_US");
    assert_eq!(
        body["template"]["components"][0]["parameters"][0]["text"],
        "Your order is ready."
    );

    let letter = testkit::eventually(WAIT, "the dead letter", || async {
        let (_, page) = world
            .mesh
            .get_json("/api/v1/dead-letters", Some(&world.admin))
            .await;
        page["dead_letters"]
            .as_array()?
            .iter()
            .find(|d| d["message_id"] == "whatsapp:wamid.LATE2:reply")
            .cloned()
    })
    .await
    .unwrap();
    assert_eq!(letter["reason"], "outside_customer_service_window");
    assert!(
        world.graph.accepted(NUMBER).is_empty(),
        "never a free-form send outside the window"
    );

    // Meta redelivering a message from yesterday: recorded, not answered.
    world.openai.set_delay(Duration::ZERO);
    let asked = world.openai.requests().len();
    let yesterday = chrono::Utc::now().timestamp() - 25 * 3600;
    world
        .whatsapp(
            NUMBER,
            json!([whatsapp_text("wamid.OLD", CUSTOMER, yesterday, "old news")]),
        )
        .await;
    testkit::eventually(WAIT, "the old message recorded", || async {
        world
            .stored_messages()
            .await
            .into_iter()
            .find(|(_, text, _)| text == "old news")
    })
    .await
    .unwrap();
    world.mesh.queues_settled().await;
    assert_eq!(world.openai.requests().len(), asked, "no model call");
    assert!(world.graph.accepted(NUMBER).is_empty(), "no answer");
    let old = world
        .stored_messages()
        .await
        .into_iter()
        .find(|(_, text, _)| text == "old news")
        .unwrap();
    assert_eq!(old.2, "outside_customer_service_window");
}

#[tokio::test]
async fn a_channel_customer_never_meets_silence() {
    let world = world().await;
    world.connect_whatsapp(NUMBER, json!({})).await;
    let now = chrono::Utc::now().timestamp();
    let ask = |wamid: &'static str, from: &'static str| {
        let world = &world;
        async move {
            world
                .whatsapp(NUMBER, json!([whatsapp_text(wamid, from, now, "hello")]))
                .await;
            testkit::eventually(WAIT, wamid, || async {
                world
                    .graph
                    .accepted(NUMBER)
                    .into_iter()
                    .find(|s| s.to() == Some(from))
                    .map(|s| s.text().unwrap_or_default().to_owned())
            })
            .await
            .unwrap()
        }
    };

    // The agent's budget is spent (first: once a replica holds a lease of
    // the budget, it spends that before it asks again).
    world.patch_agent(json!({ "budget_limit_usd": "0" })).await;
    let broke = ask("wamid.BROKE", "16505550003").await;
    assert_eq!(broke, llm_svc::run::BUDGET_EXCEEDED_REPLY);
    world.patch_agent(json!({ "budget_limit_usd": "10" })).await;

    // The provider is down, through every retry.
    world.openai.fail_next(100);
    let down = ask("wamid.DOWN", "16505550001").await;
    assert_eq!(down, llm_svc::run::PROVIDER_DOWN_REPLY);
    world.openai.fail_next(0);

    // The agent was switched off.
    world.patch_agent(json!({ "active": false })).await;
    let off = ask("wamid.OFF", "16505550002").await;
    assert_eq!(off, llm_svc::run::UNAVAILABLE_REPLY);
    world.patch_agent(json!({ "active": true })).await;

    // The tenant's key was deleted.
    let (_, keys) = world
        .mesh
        .get_json("/api/v1/llm-keys", Some(&world.admin))
        .await;
    let key_id = keys["keys"][0]["id"].as_str().unwrap();
    let response = world
        .mesh
        .http
        .delete(world.mesh.url(&format!("/api/v1/llm-keys/{key_id}")))
        .bearer_auth(&world.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let keyless = ask("wamid.NOKEY", "16505550004").await;
    assert_eq!(keyless, llm_svc::run::UNAVAILABLE_REPLY);

    // Each reason is recorded with the reply, for admins.
    let reasons: Vec<String> = world
        .stored_messages()
        .await
        .into_iter()
        .filter(|(role, _, _)| role == "assistant")
        .map(|(_, _, reason)| reason)
        .collect();
    assert_eq!(
        reasons,
        [
            "budget_exceeded",
            "provider_unavailable",
            "agent_inactive",
            "no_llm_key"
        ]
    );
}
