//! Reply delivery (issue 10) through the real gateway, agent-svc and Redis:
//! outbound messages appended to the mesh's outbound queue exactly as
//! llm-svc appends them, delivered to local servers speaking Slack's Web API
//! and Meta's Graph API. Placeholders edited once, redeliveries absorbed,
//! rate limits waited out, permanent errors dead-lettered without a loop,
//! long answers split in order, and WhatsApp's 24-hour window honoured.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crewmesh_proto::messaging::v1::{
    OutboundKind, OutboundMessage, ReplyTarget, SlackTarget, WhatsappTarget, reply_target::Target,
};
use crewmesh_tests::{
    Mesh, MeshOptions,
    fake_graph::{FakeGraph, GraphFailure},
    fake_slack::FakeSlack,
    spawn_mesh_with,
};
use prost::Message as _;
use serde_json::{Value, json};
use streamq::{Entry, Producer};

const TEAM: &str = "T0ACME001";
const PLACEHOLDER: &str = gateway::startup::DEFAULT_SLACK_PLACEHOLDER_TEXT;
const TEMPLATED_NUMBER: &str = "106540352242922";
const PLAIN_NUMBER: &str = "106540352242933";
const WAIT: Duration = Duration::from_secs(30);

/// A mesh with both stand-ins, a tenant and its agent.
struct World {
    mesh: Mesh,
    slack: FakeSlack,
    graph: FakeGraph,
    outbound: Producer,
    tenant: String,
    admin: String,
    agent: String,
}

async fn world() -> World {
    let slack = FakeSlack::start().await;
    let graph = FakeGraph::start().await;
    let mesh = spawn_mesh_with(MeshOptions {
        slack_api_base: Some(slack.api_base.clone()),
        whatsapp_api_base: Some(graph.api_base()),
        ..MeshOptions::default()
    })
    .await;
    let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (status, agent) = mesh
        .post_json(
            "/api/v1/agents",
            Some(&admin),
            &json!({ "name": "Ava", "model": "openai/gpt-4o-mini", "budget_limit_usd": "10" }),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let redis = redis::aio::ConnectionManager::new(client).await.unwrap();
    World {
        outbound: Producer::new(redis, mesh.queues.outbound.clone(), 100_000, 3600),
        agent: agent["id"].as_str().unwrap().to_owned(),
        mesh,
        slack,
        graph,
        tenant,
        admin,
    }
}

impl World {
    /// Connects a channel through REST; returns the connection.
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

    /// Connects the Slack workspace with bot token `token`.
    async fn connect_slack(&self, token: &str) -> String {
        self.slack.add_bot_token(token, TEAM);
        let connection = self
            .connect(json!({ "channel": "slack", "external_id": TEAM, "access_token": token }))
            .await;
        connection["id"].as_str().unwrap().to_owned()
    }

    async fn disconnect(&self, id: &str) {
        let response = self
            .mesh
            .http
            .delete(self.mesh.url(&format!("/api/v1/channels/{id}")))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }

    /// Appends `message` to the outbound queue as llm-svc does.
    async fn append(&self, message: &OutboundMessage) {
        let payload = message.encode_to_vec();
        self.outbound
            .append(&Entry {
                id: &message.id,
                key: &message.conversation,
                payload: &payload,
            })
            .await
            .unwrap();
    }

    /// The reason `id` was dead-lettered with, once it was: from the
    /// dead-letter stream, or from the admins' list once llm-svc has moved
    /// it there.
    async fn dead_letter(&self, id: &str, key: &str) -> String {
        testkit::eventually(WAIT, &format!("a dead letter for {id}"), || async {
            if let Some(reason) = self.dead_letter_in_stream(id, key).await {
                return Some(reason);
            }
            let (status, page) = self
                .mesh
                .get_json(
                    &format!("/api/v1/dead-letters?tenant_id={}", self.tenant),
                    Some(&self.admin),
                )
                .await;
            (status == 200)
                .then(|| {
                    page["dead_letters"]
                        .as_array()?
                        .iter()
                        .find(|d| d["message_id"] == id)
                        .and_then(|d| d["reason"].as_str().map(str::to_owned))
                })
                .flatten()
        })
        .await
        .unwrap()
    }

    async fn dead_letter_in_stream(&self, id: &str, key: &str) -> Option<String> {
        let client = redis::Client::open(testkit::redis_url()).ok()?;
        let mut redis = client.get_multiplexed_async_connection().await.ok()?;
        let dead = &self.mesh.queues.dead_letters;
        let range: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(dead.stream(dead.partition_of(key)))
            .arg("-")
            .arg("+")
            .query_async(&mut redis)
            .await
            .ok()?;
        range.ids.iter().find_map(|entry| {
            let entry_id: String = entry.get(streamq::producer::FIELD_ID)?;
            (entry_id == id)
                .then(|| entry.get(streamq::dead_letter::REASON))
                .flatten()
        })
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn outbound(
    tenant: &str,
    inbound_id: &str,
    kind: OutboundKind,
    text: &str,
    target: Target,
    conversation: &str,
) -> OutboundMessage {
    let suffix = match kind {
        OutboundKind::Placeholder => "placeholder",
        OutboundKind::Reply | OutboundKind::Unspecified => "reply",
    };
    OutboundMessage {
        id: format!("{inbound_id}:{suffix}"),
        tenant_id: tenant.to_owned(),
        inbound_id: inbound_id.to_owned(),
        kind: kind.into(),
        text: text.to_owned(),
        reply_to: Some(ReplyTarget {
            target: Some(target),
        }),
        conversation: conversation.to_owned(),
        customer_last_message_at: now() - 60,
        received_at_ms: chrono::Utc::now().timestamp_millis() - 1_500,
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        refusal_reason: String::new(),
        conversation_id: String::new(),
    }
}

/// A message of the Slack thread `thread_ts` in `channel`.
fn slack(
    tenant: &str,
    inbound_id: &str,
    kind: OutboundKind,
    text: &str,
    channel: &str,
    thread_ts: &str,
) -> OutboundMessage {
    outbound(
        tenant,
        inbound_id,
        kind,
        text,
        Target::Slack(SlackTarget {
            team_id: TEAM.to_owned(),
            channel: channel.to_owned(),
            thread_ts: thread_ts.to_owned(),
        }),
        &format!("slack:{TEAM}:{channel}:{thread_ts}"),
    )
}

/// A reply from `number` to `customer`.
fn whatsapp(
    tenant: &str,
    inbound_id: &str,
    text: &str,
    number: &str,
    customer: &str,
) -> OutboundMessage {
    outbound(
        tenant,
        inbound_id,
        OutboundKind::Reply,
        text,
        Target::Whatsapp(WhatsappTarget {
            phone_number_id: number.to_owned(),
            to: customer.to_owned(),
        }),
        &format!("whatsapp:{number}:{customer}"),
    )
}

/// Paragraphs of words adding up to about `chars` characters.
fn long_answer(chars: usize) -> String {
    let mut text = String::new();
    let mut paragraph = 0;
    while text.chars().count() < chars {
        paragraph += 1;
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        let words: Vec<String> = (0..60).map(|w| format!("p{paragraph}w{w}")).collect();
        text.push_str(&words.join(" "));
    }
    text
}

/// Words in order, whatever whitespace separated them.
fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// Posts a last reply in the thread and waits for it: the
/// queue handles one conversation in order, so everything appended before
/// it has been handled once it is posted.
async fn settle_slack(world: &World, channel: &str, thread_ts: &str, tag: &str) {
    let text = format!("sentinel {tag}");
    world
        .append(&slack(
            &world.tenant,
            &format!("slack:EvSentinel{tag}"),
            OutboundKind::Reply,
            &text,
            channel,
            thread_ts,
        ))
        .await;
    testkit::eventually(WAIT, "the sentinel to be posted", || async {
        world
            .slack
            .accepted("chat.postMessage")
            .iter()
            .any(|c| c.text == text)
            .then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_slack_placeholder_becomes_the_answer_once_however_often_both_are_redelivered() {
    let world = world().await;
    world.connect_slack("xoxb-1-2-delivery").await;
    let (channel, thread) = ("C0SUPPORT1", "1700000000.000100");
    let placeholder = slack(
        &world.tenant,
        "slack:Ev0001",
        OutboundKind::Placeholder,
        "",
        channel,
        thread,
    );
    let answer = "Your order ships tomorrow.";
    let reply = slack(
        &world.tenant,
        "slack:Ev0001",
        OutboundKind::Reply,
        answer,
        channel,
        thread,
    );
    world.append(&placeholder).await;
    world.append(&reply).await;
    let update = testkit::eventually(WAIT, "the placeholder to be edited", || async {
        world.slack.accepted("chat.update").into_iter().next()
    })
    .await
    .unwrap();

    // Two more deliveries of both, as after crashes or a re-queue.
    for _ in 0..2 {
        world.append(&placeholder).await;
        world.append(&reply).await;
    }
    // A reply without a placeholder, after them in the same thread.
    settle_slack(&world, channel, thread, "1").await;

    let posts = world.slack.accepted("chat.postMessage");
    let placeholders: Vec<_> = posts.iter().filter(|c| c.text == PLACEHOLDER).collect();
    assert_eq!(placeholders.len(), 1, "one placeholder: {posts:#?}");
    assert_eq!(placeholders[0].channel, channel);
    assert_eq!(placeholders[0].thread_ts.as_deref(), Some(thread));
    assert_eq!(placeholders[0].team.as_deref(), Some(TEAM));
    let updates = world.slack.accepted("chat.update");
    assert_eq!(updates.len(), 1, "one edit: {updates:#?}");
    assert_eq!(
        update.ts, placeholders[0].ts,
        "the placeholder itself is edited"
    );
    assert_eq!(update.channel, channel);
    assert_eq!(update.text, answer);
    assert_eq!(
        world
            .slack
            .message(channel, placeholders[0].ts.as_deref().unwrap())
            .as_deref(),
        Some(answer)
    );
    assert!(
        !posts.iter().any(|c| c.text == answer),
        "the answer is not posted a second time"
    );
    // The reply without a placeholder: one new message in the thread.
    let sentinel: Vec<_> = posts.iter().filter(|c| c.text == "sentinel 1").collect();
    assert_eq!(sentinel.len(), 1);
    assert_eq!(sentinel[0].thread_ts.as_deref(), Some(thread));
    assert!(
        world.slack.calls().iter().all(|c| c.accepted()),
        "nothing was refused: {:#?}",
        world.slack.calls()
    );

    // A long answer: the first part replaces the placeholder, the rest
    // follow in the thread, in order, each under Slack's limit.
    let thread = "1700000000.000200";
    let long = long_answer(9_000);
    world
        .append(&slack(
            &world.tenant,
            "slack:Ev0002",
            OutboundKind::Placeholder,
            "",
            channel,
            thread,
        ))
        .await;
    world
        .append(&slack(
            &world.tenant,
            "slack:Ev0002",
            OutboundKind::Reply,
            &long,
            channel,
            thread,
        ))
        .await;
    settle_slack(&world, channel, thread, "2").await;
    let updates = world.slack.accepted("chat.update");
    assert_eq!(updates.len(), 2, "{updates:#?}");
    let edit = &updates[1];
    let second_placeholder = world
        .slack
        .accepted("chat.postMessage")
        .into_iter()
        .find(|c| c.text == PLACEHOLDER && c.thread_ts.as_deref() == Some(thread))
        .expect("the second placeholder was posted");
    assert_eq!(edit.ts, second_placeholder.ts);
    let rest: Vec<_> = world
        .slack
        .accepted("chat.postMessage")
        .into_iter()
        .filter(|c| {
            c.thread_ts.as_deref() == Some(thread)
                && c.text != PLACEHOLDER
                && !c.text.starts_with("sentinel")
        })
        .collect();
    assert_eq!(rest.len(), 2, "9,000 characters in three parts: {rest:#?}");
    let parts: Vec<&str> = std::iter::once(edit.text.as_str())
        .chain(rest.iter().map(|c| c.text.as_str()))
        .collect();
    assert!(parts.iter().all(|p| p.chars().count() <= 3_900));
    assert_eq!(
        words(&parts.join("\n\n")),
        words(&long),
        "in order, nothing lost"
    );
    assert!(rest[0].at <= rest[1].at);

    // Webhook-to-reply latency is recorded per channel.
    let metrics = mesh_kit::metrics::render();
    assert!(
        metrics.contains("crewmesh_reply_latency_seconds_count{channel=\"slack\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "crewmesh_channel_sends_total{channel=\"slack\",method=\"chat.update\",outcome=\"ok\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn slack_rate_limits_are_waited_out_and_a_deleted_placeholder_gives_way_to_a_new_post() {
    let world = world().await;
    world.connect_slack("xoxb-1-2-limits").await;
    let (channel, thread) = ("C0LIMITS01", "1700000001.000100");
    world.slack.rate_limit_next("chat.postMessage", 1);
    let answer = "Thanks for waiting.";
    world
        .append(&slack(
            &world.tenant,
            "slack:Ev0101",
            OutboundKind::Reply,
            answer,
            channel,
            thread,
        ))
        .await;
    let posted = testkit::eventually(WAIT, "the reply to be posted", || async {
        world
            .slack
            .accepted("chat.postMessage")
            .into_iter()
            .find(|c| c.text == answer)
    })
    .await
    .unwrap();
    settle_slack(&world, channel, thread, "limits").await;

    let calls: Vec<_> = world
        .slack
        .calls()
        .into_iter()
        .filter(|c| c.text == answer)
        .collect();
    assert_eq!(calls.len(), 2, "one 429, then one post: {calls:#?}");
    assert_eq!(calls[0].error.as_deref(), Some("ratelimited"));
    assert!(calls[1].accepted());
    assert_eq!(posted.thread_ts.as_deref(), Some(thread));
    let waited = calls[1].at.duration_since(calls[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 was honoured, waited {waited:?}"
    );

    // A placeholder someone deleted cannot be edited (message_not_found):
    // the answer is posted in the thread instead, once.
    let thread = "1700000001.000200";
    world
        .append(&slack(
            &world.tenant,
            "slack:Ev0102",
            OutboundKind::Placeholder,
            "",
            channel,
            thread,
        ))
        .await;
    let placeholder = testkit::eventually(WAIT, "the placeholder", || async {
        world
            .slack
            .accepted("chat.postMessage")
            .into_iter()
            .find(|c| c.thread_ts.as_deref() == Some(thread))
    })
    .await
    .unwrap();
    world
        .slack
        .delete_message(channel, placeholder.ts.as_deref().unwrap());
    let answer = "Posted anew.";
    world
        .append(&slack(
            &world.tenant,
            "slack:Ev0102",
            OutboundKind::Reply,
            answer,
            channel,
            thread,
        ))
        .await;
    settle_slack(&world, channel, thread, "deleted").await;
    let calls: Vec<_> = world
        .slack
        .calls()
        .into_iter()
        .filter(|c| c.text == answer)
        .collect();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(
        (calls[0].method.as_str(), calls[0].error.as_deref()),
        ("chat.update", Some("message_not_found"))
    );
    assert_eq!(
        (calls[1].method.as_str(), calls[1].thread_ts.as_deref()),
        ("chat.postMessage", Some(thread))
    );
    assert!(calls[1].accepted());
}

#[tokio::test]
async fn a_revoked_slack_token_dead_letters_the_reply_once_and_a_reconnect_delivers_it() {
    let world = world().await;
    let connection = world.connect_slack("xoxb-1-2-revoked").await;
    let (channel, thread) = ("C0REVOKE01", "1700000002.000100");
    let answer = "Here is your refund status.";
    let reply = slack(
        &world.tenant,
        "slack:Ev0201",
        OutboundKind::Reply,
        answer,
        channel,
        thread,
    );
    // A successful delivery first, so the route is cached with the old token.
    settle_slack(&world, channel, thread, "before").await;
    world.slack.revoke("xoxb-1-2-revoked");
    world.append(&reply).await;
    let reason = world.dead_letter(&reply.id, &reply.conversation).await;
    assert_eq!(reason, "slack:token_revoked");
    let tried: Vec<_> = world
        .slack
        .calls()
        .into_iter()
        .filter(|c| c.text == answer)
        .collect();
    assert_eq!(
        tried.len(),
        1,
        "a permanent error is not retried: {tried:#?}"
    );
    assert_eq!(tried[0].error.as_deref(), Some("token_revoked"));

    // The admin reconnects the workspace with a new token; the same message
    // is queued again (as a dead-letter retry does) and goes out once.
    world.disconnect(&connection).await;
    world.connect_slack("xoxb-1-2-reconnected").await;
    world.append(&reply).await;
    settle_slack(&world, channel, thread, "after").await;
    let calls: Vec<_> = world
        .slack
        .calls()
        .into_iter()
        .filter(|c| c.text == answer)
        .collect();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls[1].accepted(), "{calls:#?}");
    assert_eq!(calls[1].thread_ts.as_deref(), Some(thread));
    assert_eq!(
        world
            .slack
            .accepted("chat.postMessage")
            .iter()
            .filter(|c| c.text == answer)
            .count(),
        1
    );
}

#[tokio::test]
async fn whatsapp_replies_are_split_in_order_and_keep_to_the_customer_service_window() {
    let world = world().await;
    let templated_token = format!("EAAG{}", uuid::Uuid::new_v4().simple());
    let plain_token = format!("EAAG{}", uuid::Uuid::new_v4().simple());
    world
        .graph
        .register_number(TEMPLATED_NUMBER, &templated_token);
    world.graph.register_number(PLAIN_NUMBER, &plain_token);
    let templated = world
        .connect(json!({
            "channel": "whatsapp", "external_id": TEMPLATED_NUMBER, "access_token": templated_token,
            "reply_template_name": "order_update", "reply_template_language": "en_US",
        }))
        .await;
    assert_eq!(templated["reply_template_name"], "order_update");
    assert_eq!(templated["reply_template_language"], "en_US");
    let plain = world
        .connect(json!({ "channel": "whatsapp", "external_id": PLAIN_NUMBER, "access_token": plain_token }))
        .await;
    assert!(plain.get("reply_template_name").is_none(), "{plain}");

    // 5,000 characters: two sends to the customer, in order.
    let long = long_answer(5_000);
    assert!(long.chars().count() >= 5_000);
    world
        .append(&whatsapp(
            &world.tenant,
            "whatsapp:wamid.LONG",
            &long,
            TEMPLATED_NUMBER,
            "16505550001",
        ))
        .await;
    let sends = testkit::eventually(WAIT, "both parts to be sent", || async {
        let sends = world.graph.accepted(TEMPLATED_NUMBER);
        (sends.len() >= 2).then_some(sends)
    })
    .await
    .unwrap();
    assert_eq!(sends.len(), 2, "{sends:#?}");
    assert!(sends.iter().all(|s| s.to() == Some("16505550001")));
    assert!(sends.iter().all(|s| s.body["type"] == "text"
        && s.body["messaging_product"] == "whatsapp"
        && s.body["recipient_type"] == "individual"
        && s.body["text"]["preview_url"] == false));
    let parts: Vec<&str> = sends.iter().map(|s| s.text().unwrap()).collect();
    assert!(parts.iter().all(|p| p.chars().count() <= 4_096));
    assert_eq!(
        words(&parts.join("\n\n")),
        words(&long),
        "in order, nothing lost"
    );

    // 25 hours after the customer's last message: the configured template,
    // carrying the reply as its one body parameter.
    let mut late = whatsapp(
        &world.tenant,
        "whatsapp:wamid.LATE",
        "Your parcel arrived at the depot.",
        TEMPLATED_NUMBER,
        "16505550002",
    );
    late.customer_last_message_at = now() - 25 * 3600;
    world.append(&late).await;
    let template = testkit::eventually(WAIT, "the template to be sent", || async {
        world
            .graph
            .accepted(TEMPLATED_NUMBER)
            .into_iter()
            .find(|s| s.to() == Some("16505550002"))
    })
    .await
    .unwrap();
    assert_eq!(template.body["type"], "template");
    assert_eq!(template.body["template"]["name"], "order_update");
    assert_eq!(template.body["template"]["language"]["code"], "en_US");
    assert_eq!(
        template.body["template"]["components"],
        json!([{ "type": "body",
                 "parameters": [{ "type": "text", "text": "Your parcel arrived at the depot." }] }])
    );

    // Without a template: a dead letter with the reason, and nothing sent.
    let mut unsendable = whatsapp(
        &world.tenant,
        "whatsapp:wamid.CLOSED",
        "This cannot go out.",
        PLAIN_NUMBER,
        "16505550003",
    );
    unsendable.customer_last_message_at = now() - 25 * 3600;
    world.append(&unsendable).await;
    let reason = world
        .dead_letter(&unsendable.id, &unsendable.conversation)
        .await;
    assert_eq!(reason, "outside_customer_service_window");
    assert!(
        world
            .graph
            .sends()
            .iter()
            .all(|s| s.phone_number_id != PLAIN_NUMBER),
        "no send was attempted: {:#?}",
        world.graph.sends()
    );

    // Meta's own clock closes the window (131047): the template still goes out.
    world.graph.fail_next(GraphFailure::code(131_047));
    world
        .append(&whatsapp(
            &world.tenant,
            "whatsapp:wamid.META",
            "Meta says late.",
            TEMPLATED_NUMBER,
            "16505550004",
        ))
        .await;
    let fallback = testkit::eventually(WAIT, "the template after 131047", || async {
        world
            .graph
            .accepted(TEMPLATED_NUMBER)
            .into_iter()
            .find(|s| s.to() == Some("16505550004"))
    })
    .await
    .unwrap();
    assert_eq!(fallback.body["type"], "template");

    // A token Meta no longer accepts: dead-lettered with Graph's code, once.
    world.graph.fail_next(GraphFailure {
        status: 401,
        code: 190,
        subcode: Some(463),
        message: "Error validating access token: Session has expired".into(),
        retry_after: None,
    });
    let expired = whatsapp(
        &world.tenant,
        "whatsapp:wamid.EXPIRED",
        "Too late.",
        TEMPLATED_NUMBER,
        "16505550005",
    );
    world.append(&expired).await;
    assert_eq!(
        world.dead_letter(&expired.id, &expired.conversation).await,
        "whatsapp:190"
    );
    let tried = world
        .graph
        .sends()
        .into_iter()
        .filter(|s| s.to() == Some("16505550005"))
        .count();
    assert_eq!(tried, 1, "no retry of a refused token");

    let metrics = mesh_kit::metrics::render();
    assert!(
        metrics.contains("crewmesh_reply_latency_seconds_count{channel=\"whatsapp\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn reply_templates_are_whatsapp_only_validated_and_documented() {
    let world = world().await;
    let refused = |body: Value| {
        let world = &world;
        async move {
            let mut body = body;
            body["agent_id"] = json!(world.agent);
            world
                .mesh
                .post_json("/api/v1/channels", Some(&world.admin), &body)
                .await
        }
    };
    let (status, body) = refused(json!({
        "channel": "slack", "external_id": TEAM, "access_token": "xoxb-1-2-tpl",
        "reply_template_name": "order_update", "reply_template_language": "en_US",
    }))
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("reply_template_name")),
        "{body}"
    );
    let (status, body) = refused(json!({
        "channel": "whatsapp", "external_id": TEMPLATED_NUMBER, "access_token": "EAAG-x",
        "reply_template_name": "order_update",
    }))
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("reply_template_language")),
        "{body}"
    );
    let (status, body) = refused(json!({
        "channel": "whatsapp", "external_id": TEMPLATED_NUMBER, "access_token": "EAAG-x",
        "reply_template_name": "Order Update", "reply_template_language": "en_US",
    }))
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("reply_template_name")),
        "{body}"
    );
    let (status, body) = refused(json!({
        "channel": "whatsapp", "external_id": TEMPLATED_NUMBER, "access_token": "EAAG-x",
        "reply_template_name": "order_update", "reply_template_language": "english",
    }))
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("reply_template_language")),
        "{body}"
    );

    // Listed back with the connection.
    world.graph.register_number(TEMPLATED_NUMBER, "EAAG-listed");
    world
        .connect(json!({
            "channel": "whatsapp", "external_id": TEMPLATED_NUMBER, "access_token": "EAAG-listed",
            "reply_template_name": "order_update", "reply_template_language": "pt_BR",
        }))
        .await;
    let (status, list) = world
        .mesh
        .get_json("/api/v1/channels", Some(&world.admin))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["channels"][0]["reply_template_language"], "pt_BR");

    // The OpenAPI document describes both fields on the request and the connection.
    let (_, doc) = world.mesh.get_json("/api/v1/openapi.json", None).await;
    for schema in ["NewChannel", "ChannelConnection"] {
        let properties = &doc["components"]["schemas"][schema]["properties"];
        for field in ["reply_template_name", "reply_template_language"] {
            assert!(
                properties[field].is_object(),
                "{schema}.{field}: {properties}"
            );
        }
    }
    let name = &doc["components"]["schemas"]["NewChannel"]["properties"]["reply_template_name"];
    assert_eq!(name["pattern"], "^[a-z0-9_]{1,512}$");
    assert!(name["description"].as_str().unwrap().contains("{{1}}"));
}
