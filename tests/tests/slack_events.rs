//! Slack's Events API through the real gateway: signatures on the raw body,
//! the url_verification handshake, tenant resolution through agent-svc, and
//! exactly one queued message per event however often Slack retries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::hmac;
use crewmesh_proto::messaging::v1::{
    Attachment, AttachmentKind, ReplyTarget, SlackTarget, reply_target,
};
use crewmesh_tests::{
    Mesh, MeshOptions, SLACK_SIGNING_SECRET, fake_slack::FakeSlack, spawn_mesh_with,
};
use serde_json::{Value, json};

/// The bot token `connected_workspace` binds to `T0ACME001`.
const TOKEN: &str = "xoxb-1-2-events";

/// A mesh whose queues nobody consumes, on `slack`.
async fn mesh_on(slack: &FakeSlack) -> Mesh {
    spawn_mesh_with(MeshOptions {
        slack_api_base: Some(slack.api_base.clone()),
        queue_workers: false,
        ..MeshOptions::default()
    })
    .await
}

/// A mesh whose queues nobody consumes, with a Slack stand-in whose
/// `auth.test` says `TOKEN` is `T0ACME001`'s bot, so it can be connected.
async fn spawn_mesh() -> Mesh {
    let slack = FakeSlack::start().await;
    slack.add_bot_token(TOKEN, "T0ACME001");
    mesh_on(&slack).await
}

fn sign(secret: &str, ts: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("v0:{ts}:{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// POSTs `body` as Slack would, signed with `secret` at `ts`.
async fn deliver(mesh: &Mesh, body: &Value, secret: &str, ts: i64) -> (u16, Value) {
    let raw = body.to_string();
    let response = mesh
        .http
        .post(mesh.url("/webhooks/slack/events"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sign(secret, ts, &raw))
        .body(raw)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn send(mesh: &Mesh, body: &Value) -> (u16, Value) {
    deliver(
        mesh,
        body,
        SLACK_SIGNING_SECRET,
        chrono::Utc::now().timestamp(),
    )
    .await
}

fn callback(event_id: &str, team: &str, event: Value) -> Value {
    json!({
        "token": "legacy-verification-token", "team_id": team, "api_app_id": "A0APP00001",
        "event": event, "type": "event_callback", "event_id": event_id,
        "event_time": 1_700_000_000, "authorizations": [{ "team_id": team, "is_bot": true }],
    })
}

/// A new tenant with an agent on `T0ACME001`: (tenant, agent).
async fn connected_workspace(mesh: &Mesh) -> (String, String) {
    let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    (tenant, connect(mesh, &admin).await.0)
}

/// Connects `T0ACME001` with `TOKEN` to a new agent of `admin`'s tenant;
/// returns the connection.
async fn connected_workspace_as(mesh: &Mesh, admin: &str) -> String {
    connect(mesh, admin).await.1
}

/// (agent, connection).
async fn connect(mesh: &Mesh, admin: &str) -> (String, String) {
    let (status, agent) = mesh
        .post_json(
            "/api/v1/agents",
            Some(admin),
            &json!({ "name": "Ava", "model": "openai/gpt-4o-mini", "budget_limit_usd": "5" }),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let agent = agent["id"].as_str().unwrap().to_owned();
    let (status, channel) = mesh
        .post_json(
            "/api/v1/channels",
            Some(admin),
            &json!({ "agent_id": agent, "channel": "slack", "external_id": "T0ACME001",
                     "access_token": TOKEN }),
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    (agent, channel["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_url_verification_handshake_is_signed_and_echoed() {
    let mesh = spawn_mesh().await;
    // The queue is part of readiness: webhooks are acknowledged only once queued.
    let (status, ready) = mesh.get_json("/readyz", None).await;
    assert_eq!(
        (status, ready["services"]["redis"].clone()),
        (200, json!("serving"))
    );
    let handshake = json!({ "token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification" });
    let (status, body) = send(&mesh, &handshake).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    // Signed by someone else, replayed from long ago, or not signed at all.
    let now = chrono::Utc::now().timestamp();
    assert_eq!(
        deliver(&mesh, &handshake, "not-the-secret", now).await.0,
        401
    );
    assert_eq!(
        deliver(&mesh, &handshake, SLACK_SIGNING_SECRET, now - 301)
            .await
            .0,
        401
    );
    let unsigned = mesh
        .http
        .post(mesh.url("/webhooks/slack/events"))
        .json(&handshake)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 422);
    let body: Value = unsigned.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("x-slack-signature")
    );

    // A body changed after signing fails even with fresh headers.
    let raw = handshake.to_string();
    let response = mesh
        .http
        .post(mesh.url("/webhooks/slack/events"))
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", sign(SLACK_SIGNING_SECRET, now, &raw))
        .body(raw.replace("url_verification", "event_callback"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_mention_is_queued_once_for_its_tenant_and_agent_however_often_slack_retries() {
    let mesh = spawn_mesh().await;
    let (tenant, agent) = connected_workspace(&mesh).await;
    let mention = callback(
        "Ev0MENTION1",
        "T0ACME001",
        json!({ "type": "app_mention", "user": "U0CUSTOMER", "text": "<@U0BOT> where is my order?",
                "ts": "1700000000.000100", "channel": "C0SUPPORT1", "event_ts": "1700000000.000100" }),
    );
    let (status, ack) = send(&mesh, &mention).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(
        (ack["queued"].clone(), ack["duplicate"].clone()),
        (json!(true), json!(false))
    );

    // Slack retries with the same event id (X-Slack-Retry-Num): no second message.
    let (status, ack) = send(&mesh, &mention).await;
    assert_eq!(status, 200);
    assert_eq!(ack["duplicate"], true);

    let queued = mesh.inbound_messages().await;
    assert_eq!(queued.len(), 1);
    let message = &queued[0];
    assert_eq!(message.id, "slack:Ev0MENTION1");
    assert_eq!(
        (message.tenant_id.as_str(), message.agent_id.as_str()),
        (tenant.as_str(), agent.as_str())
    );
    assert_eq!(message.sender, "U0CUSTOMER");
    assert_eq!(
        message.conversation,
        "slack:T0ACME001:C0SUPPORT1:1700000000.000100"
    );
    assert_eq!(message.text, "<@U0BOT> where is my order?");
    assert_eq!(message.sent_at, 1_700_000_000);
    assert_eq!(
        message.reply_to,
        Some(ReplyTarget {
            target: Some(reply_target::Target::Slack(SlackTarget {
                team_id: "T0ACME001".into(),
                channel: "C0SUPPORT1".into(),
                thread_ts: "1700000000.000100".into()
            }))
        })
    );

    // A direct message in a thread, with a file: replies stay in the thread.
    let dm = callback(
        "Ev0DM000001",
        "T0ACME001",
        json!({ "type": "message", "subtype": "file_share", "channel_type": "im", "user": "U0CUSTOMER",
                "text": "here is the receipt", "ts": "1700000001.000200", "thread_ts": "1700000000.000100",
                "channel": "D0DIRECT01",
                "files": [{ "id": "F0FILE0001", "name": "receipt.png", "mimetype": "image/png",
                            "url_private": "https://files.slack.com/files-pri/T0ACME001-F0FILE0001/receipt.png" }] }),
    );
    assert_eq!(send(&mesh, &dm).await.0, 200);
    let queued = mesh.inbound_messages().await;
    assert_eq!(queued.len(), 2);
    let dm = &queued[1];
    assert_eq!(
        dm.conversation,
        "slack:T0ACME001:D0DIRECT01:1700000000.000100"
    );
    assert_eq!(
        dm.attachments,
        [Attachment {
            kind: AttachmentKind::Image.into(),
            reference: "https://files.slack.com/files-pri/T0ACME001-F0FILE0001/receipt.png".into(),
            mime_type: "image/png".into(),
            filename: "receipt.png".into(),
            caption: String::new(),
        }]
    );

    // Not for the agent: the channel copy of a mention, bots (itself
    // included), edits, and workspaces nobody connected.
    let ignored = [
        callback(
            "Ev0CHANNEL1",
            "T0ACME001",
            json!({ "type": "message", "channel_type": "channel",
            "user": "U0CUSTOMER", "text": "<@U0BOT> where is my order?", "ts": "1700000000.000100", "channel": "C0SUPPORT1" }),
        ),
        callback(
            "Ev0BOT00001",
            "T0ACME001",
            json!({ "type": "message", "channel_type": "im", "bot_id": "B0BOT00001",
            "user": "U0BOT", "text": "Thinking…", "ts": "1700000002.000300", "channel": "D0DIRECT01" }),
        ),
        callback(
            "Ev0EDIT0001",
            "T0ACME001",
            json!({ "type": "message", "subtype": "message_changed",
            "channel_type": "im", "ts": "1700000003.000400", "channel": "D0DIRECT01" }),
        ),
        callback(
            "Ev0STRANGER",
            "T0NOBODY01",
            json!({ "type": "app_mention", "user": "U0X",
            "text": "hi", "ts": "1700000004.000500", "channel": "C0X" }),
        ),
    ];
    for event in &ignored {
        let (status, ack) = send(&mesh, event).await;
        assert_eq!(
            (status, ack["queued"].clone()),
            (200, json!(false)),
            "{event}"
        );
    }
    assert_eq!(mesh.inbound_messages().await.len(), 2);

    // Two messages from the workspace, one resolution: routes are cached
    // briefly; an unknown workspace is asked about each time (not cached).
    let metrics = mesh_kit::metrics::render();
    let resolutions = |code: &str| {
        format!(
            r#"grpc_server_handled_total{{grpc_service="crewmesh.agent.v1.AgentInternalService",grpc_method="ResolveChannel",grpc_code="{code}"}} "#
        )
    };
    assert!(metrics.contains(&(resolutions("OK") + "1\n")), "{metrics}");
    assert!(
        metrics.contains(&(resolutions("NotFound") + "1\n")),
        "{metrics}"
    );

    // A signed body that is not an envelope is refused, not queued.
    let (status, _) = send(
        &mesh,
        &json!({ "type": "event_callback", "team_id": "T0ACME001" }),
    )
    .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn the_bot_user_id_comes_from_auth_test_and_the_bot_is_never_answered() {
    let slack = FakeSlack::start().await;
    // A bot user id no envelope below names: only auth.test tells it.
    slack.add_bot(TOKEN, "T0ACME001", "U0MYBOT001");
    let mesh = mesh_on(&slack).await;
    let (_, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    connected_workspace_as(&mesh, &admin).await;
    let (_, list) = mesh.get_json("/api/v1/channels", Some(&admin)).await;
    let connection = &list["channels"][0];
    assert_eq!(connection["bot_user_id"], "U0MYBOT001", "{list}");
    assert_eq!(connection["display_name"], "Workspace T0ACME001", "{list}");

    // The mention of the bot is stripped from what the agent reads.
    let mention = callback(
        "Ev0MENTION1",
        "T0ACME001",
        json!({ "type": "app_mention", "user": "U0CUSTOMER", "text": "<@U0MYBOT001> where is my order?",
                "ts": "1700000000.000100", "channel": "C0SUPPORT1" }),
    );
    let (status, ack) = send(&mesh, &mention).await;
    assert_eq!((status, ack["queued"].clone()), (200, json!(true)), "{ack}");
    assert_eq!(mesh.inbound_messages().await[0].text, "where is my order?");

    // A message the bot user wrote itself (no bot_id on it, and an envelope
    // that does not say who the bot is) is not a conversation.
    let own = callback(
        "Ev0OWNMSG01",
        "T0ACME001",
        json!({ "type": "message", "channel_type": "im", "user": "U0MYBOT001",
                "text": "Here is your order status.", "ts": "1700000001.000200", "channel": "D0DIRECT01" }),
    );
    let (status, ack) = send(&mesh, &own).await;
    assert_eq!(
        (status, ack["queued"].clone()),
        (200, json!(false)),
        "{ack}"
    );
    assert_eq!(mesh.inbound_messages().await.len(), 1);
}

#[tokio::test]
async fn a_disconnected_workspace_stops_reaching_the_agent_at_once() {
    let slack = FakeSlack::start().await;
    slack.add_bot_token(TOKEN, "T0ACME001");
    let mesh = mesh_on(&slack).await;
    let (_, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let connection = connected_workspace_as(&mesh, &admin).await;
    let mention = |n: u32| {
        callback(
            &format!("Ev0MENTION{n}"),
            "T0ACME001",
            json!({ "type": "app_mention", "user": "U0CUSTOMER", "text": "hello",
                    "ts": format!("1700000000.00010{n}"), "channel": "C0SUPPORT1" }),
        )
    };
    // The first event caches the workspace's route on this gateway.
    let (status, ack) = send(&mesh, &mention(1)).await;
    assert_eq!((status, ack["queued"].clone()), (200, json!(true)), "{ack}");

    let response = mesh
        .http
        .delete(mesh.url(&format!("/api/v1/channels/{connection}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // Not 30 seconds later, when the cached route would expire: now.
    let (status, ack) = send(&mesh, &mention(2)).await;
    assert_eq!(
        (status, ack["queued"].clone()),
        (200, json!(false)),
        "{ack}"
    );
    assert_eq!(mesh.inbound_messages().await.len(), 1);

    // Reconnected, it works at once again.
    connected_workspace_as(&mesh, &admin).await;
    let (status, ack) = send(&mesh, &mention(3)).await;
    assert_eq!((status, ack["queued"].clone()), (200, json!(true)), "{ack}");
}
