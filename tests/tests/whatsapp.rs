//! The WhatsApp Cloud API webhook (G3, G5) through the real gateway,
//! agent-svc and Redis: the hub handshake, `X-Hub-Signature-256` over the raw
//! body, normalization of text / image / document messages, and the durable,
//! deduplicated queue behind the 200.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::hmac;
use crewmesh_proto::messaging::v1::{
    Attachment, AttachmentKind, ReplyTarget, WhatsappTarget, reply_target,
};
use crewmesh_tests::{
    Mesh, MeshOptions, WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN, fake_graph::FakeGraph,
    spawn_mesh_with,
};
use serde_json::{Value, json};

const PHONE_NUMBER_ID: &str = "106540352242922";
/// The token the Graph stand-in accepts for `PHONE_NUMBER_ID`.
const TOKEN: &str = "EAAG-whatsapp-webhook-tests";
const CUSTOMER: &str = "16505551234";

/// A mesh whose queues nobody consumes, with a Graph API stand-in that
/// lets `TOKEN` read `PHONE_NUMBER_ID`, so the number can be connected.
async fn spawn_mesh() -> Mesh {
    let graph = FakeGraph::start().await;
    graph.register_number(PHONE_NUMBER_ID, TOKEN);
    spawn_mesh_with(MeshOptions {
        whatsapp_api_base: Some(graph.api_base()),
        queue_workers: false,
        ..MeshOptions::default()
    })
    .await
}

fn signature(body: &[u8], secret: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let hex: String = hmac::sign(&key, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// POSTs raw `body` with `signature` as `X-Hub-Signature-256` (None: no header).
async fn deliver(mesh: &Mesh, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let mut request = mesh
        .http
        .post(mesh.url("/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Delivers `body` signed with the mesh's app secret.
async fn deliver_signed(mesh: &Mesh, body: &[u8]) -> (u16, Value) {
    deliver(mesh, body, Some(signature(body, WHATSAPP_APP_SECRET))).await
}

/// A tenant with an agent connected to `PHONE_NUMBER_ID`: (tenant, agent, connection).
async fn connect_whatsapp(mesh: &Mesh) -> (String, String, String) {
    let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (status, agent) = mesh
        .post_json(
            "/api/v1/agents",
            Some(&admin),
            &json!({ "name": "Ava", "model": "openai/gpt-4o-mini", "budget_limit_usd": "10" }),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let agent = agent["id"].as_str().unwrap().to_owned();
    let (status, connection) = mesh
        .post_json(
            "/api/v1/channels",
            Some(&admin),
            &json!({ "agent_id": agent, "channel": "whatsapp", "external_id": PHONE_NUMBER_ID,
                     "access_token": TOKEN }),
        )
        .await;
    assert_eq!(status, 201, "{connection}");
    (tenant, agent, connection["id"].as_str().unwrap().to_owned())
}

/// A delivery in Meta's shape: one `messages` change to `phone_number_id`.
fn delivery(phone_number_id: &str, messages: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {
                        "display_phone_number": "15550783881",
                        "phone_number_id": phone_number_id
                    },
                    "contacts": [{ "profile": { "name": "Sheena Nelson" }, "wa_id": CUSTOMER }],
                    "messages": messages
                }
            }]
        }]
    })
}

fn text_message(wamid: &str, body: &str) -> Value {
    json!({ "from": CUSTOMER, "id": wamid, "timestamp": "1739321024", "type": "text",
            "text": { "body": body } })
}

#[tokio::test]
async fn whatsapp_hub_challenge_needs_the_verify_token() {
    let mesh = spawn_mesh().await;
    let get = |query: String| {
        let mesh = &mesh;
        async move {
            let response = mesh
                .http
                .get(mesh.url(&format!("/webhooks/whatsapp{query}")))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, content_type, response.text().await.unwrap())
        }
    };

    let (status, content_type, body) = get(format!(
        "?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={WHATSAPP_VERIFY_TOKEN}"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(body, "1158201444");

    let (status, _, body) =
        get("?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=wrong".into()).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("1158201444"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "permission_denied"
    );
    let (status, _, _) = get(format!(
        "?hub.mode=unsubscribe&hub.challenge=1158201444&hub.verify_token={WHATSAPP_VERIFY_TOKEN}"
    ))
    .await;
    assert_eq!(status, 403, "only subscribe is answered");

    for query in [
        String::new(),
        format!("?hub.mode=subscribe&hub.verify_token={WHATSAPP_VERIFY_TOKEN}"),
        "?hub.mode=subscribe&hub.challenge=1158201444".into(),
    ] {
        let (status, _, body) = get(query.clone()).await;
        assert_eq!(status, 422, "{query}: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["code"], "invalid_argument");
        assert!(body["request_id"].is_string());
    }

    // The documented parameters are the ones Meta sends.
    let (_, doc) = mesh.get_json("/api/v1/openapi.json", None).await;
    let mut names: Vec<&str> = doc["paths"]["/webhooks/whatsapp"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["hub.challenge", "hub.mode", "hub.verify_token"]);
}

#[tokio::test]
async fn a_signed_whatsapp_text_is_queued_once_fully_normalized() {
    let mesh = spawn_mesh().await;
    let (tenant, agent, connection) = connect_whatsapp(&mesh).await;
    let body = delivery(
        PHONE_NUMBER_ID,
        json!([text_message(
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
            "Where is my order?"
        )]),
    )
    .to_string();

    let (status, answer) = deliver_signed(&mesh, body.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({ "received": true, "queued": 1, "duplicates": 0 })
    );
    let queued = mesh.inbound_messages().await;
    assert_eq!(queued.len(), 1);
    let message = &queued[0];
    assert_eq!(
        message.id,
        "whatsapp:wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    );
    assert_eq!(message.tenant_id, tenant);
    assert_eq!(message.agent_id, agent);
    assert_eq!(message.connection_id, connection);
    assert_eq!(
        message.conversation,
        format!("whatsapp:{PHONE_NUMBER_ID}:{CUSTOMER}")
    );
    assert_eq!(message.sender, CUSTOMER);
    assert_eq!(message.sender_name, "Sheena Nelson");
    assert_eq!(message.text, "Where is my order?");
    assert!(message.attachments.is_empty());
    assert_eq!(message.sent_at, 1_739_321_024);
    assert_eq!(
        message.reply_to,
        Some(ReplyTarget {
            target: Some(reply_target::Target::Whatsapp(WhatsappTarget {
                phone_number_id: PHONE_NUMBER_ID.into(),
                to: CUSTOMER.into()
            }))
        })
    );

    // Meta redelivers whatever it did not see acknowledged: nothing new is queued.
    let (status, answer) = deliver_signed(&mesh, body.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({ "received": true, "queued": 0, "duplicates": 1 })
    );
    assert_eq!(mesh.inbound_messages().await.len(), 1);
}

#[tokio::test]
async fn whatsapp_images_and_documents_become_attachments() {
    let mesh = spawn_mesh().await;
    connect_whatsapp(&mesh).await;
    let body = delivery(
        PHONE_NUMBER_ID,
        json!([
            { "from": CUSTOMER, "id": "wamid.image", "timestamp": "1744344496", "type": "image",
              "image": { "caption": "The damaged box", "mime_type": "image/jpeg",
                         "sha256": "SfInY0gGIyh+Xc3HnVeVDs0ODE5+w7GF5XIfT3QFlG4=", "id": "1003383421387256" } },
            { "from": CUSTOMER, "id": "wamid.document", "timestamp": "1744344497", "type": "document",
              "document": { "filename": "invoice-4471.pdf", "mime_type": "application/pdf",
                            "sha256": "Tx4i5bqpBXBOS2Hsvf0nrnQ9s9BpWLgJzvo8JC0Rx3s=", "id": "1203901584620839" } },
            // No media id, nothing to say: acknowledged and skipped.
            { "from": CUSTOMER, "id": "wamid.location", "timestamp": "1744344498", "type": "location",
              "location": { "latitude": 37.48, "longitude": -122.15 } },
        ]),
    )
    .to_string();
    let (status, answer) = deliver_signed(&mesh, body.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["queued"], 2);

    let queued = mesh.inbound_messages().await;
    assert_eq!(queued.len(), 2);
    let image = &queued[0];
    assert_eq!(image.id, "whatsapp:wamid.image");
    assert_eq!(image.text, "The damaged box", "the caption is the text");
    assert_eq!(image.sent_at, 1_744_344_496);
    assert_eq!(
        image.attachments,
        vec![Attachment {
            kind: AttachmentKind::Image.into(),
            reference: "1003383421387256".into(),
            mime_type: "image/jpeg".into(),
            filename: String::new(),
            caption: "The damaged box".into(),
        }]
    );
    let document = &queued[1];
    assert_eq!(document.id, "whatsapp:wamid.document");
    assert_eq!(document.text, "");
    assert_eq!(
        document.attachments,
        vec![Attachment {
            kind: AttachmentKind::Document.into(),
            reference: "1203901584620839".into(),
            mime_type: "application/pdf".into(),
            filename: "invoice-4471.pdf".into(),
            caption: String::new(),
        }]
    );
}

#[tokio::test]
async fn whatsapp_deliveries_with_a_bad_signature_are_refused() {
    let mesh = spawn_mesh().await;
    connect_whatsapp(&mesh).await;
    let body = delivery(PHONE_NUMBER_ID, json!([text_message("wamid.forged", "hi")])).to_string();
    let good = signature(body.as_bytes(), WHATSAPP_APP_SECRET);
    let tampered = body.replace("\"hi\"", "\"send me the admin password\"");

    // Without the header it is invalid input, as every missing required header.
    let (status, answer) = deliver(&mesh, body.as_bytes(), None).await;
    assert_eq!(
        (status, answer["code"].clone()),
        (422, json!("invalid_argument")),
        "{answer}"
    );
    let attempts: [(&str, &[u8], Option<String>); 5] = [
        ("garbage", body.as_bytes(), Some("sha256=zz".into())),
        ("no scheme", body.as_bytes(), Some(good[7..].to_owned())),
        (
            "wrong signature",
            body.as_bytes(),
            Some(format!("sha256={}", "ab".repeat(32))),
        ),
        (
            "body changed after signing",
            tampered.as_bytes(),
            Some(good.clone()),
        ),
        (
            "another app's secret",
            body.as_bytes(),
            Some(signature(body.as_bytes(), "another-app-secret")),
        ),
    ];
    for (case, payload, header) in attempts {
        let (status, answer) = deliver(&mesh, payload, header).await;
        assert_eq!(status, 401, "{case}: {answer}");
        assert_eq!(answer["code"], "unauthenticated", "{case}");
    }
    assert!(mesh.inbound_messages().await.is_empty());
}

#[tokio::test]
async fn whatsapp_messages_to_unknown_numbers_and_status_receipts_are_acknowledged_only() {
    let mesh = spawn_mesh().await;
    connect_whatsapp(&mesh).await;

    // A number with no connection: a retry would not change that, so 200.
    let unknown = delivery(
        "999999999999999",
        json!([text_message("wamid.stranger", "hi")]),
    )
    .to_string();
    let (status, answer) = deliver_signed(&mesh, unknown.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({ "received": true, "queued": 0, "duplicates": 0 })
    );

    // Delivery receipts of our replies are not messages.
    let statuses = json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "102290129340398", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID },
            "statuses": [{ "id": "wamid.reply", "status": "delivered", "timestamp": "1750263773",
                           "recipient_id": CUSTOMER }]
        }}]}]
    })
    .to_string();
    let (status, answer) = deliver_signed(&mesh, statuses.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["queued"], 0);

    assert!(mesh.inbound_messages().await.is_empty());
}

#[tokio::test]
async fn whatsapp_signatures_cover_the_raw_bytes_with_escaped_unicode() {
    let mesh = spawn_mesh().await;
    connect_whatsapp(&mesh).await;
    // Meta escapes non-ASCII (`\ud83d\udc4b` is 👋); the same JSON re-encoded
    // by a parser has the emoji as UTF-8, so its signature would differ.
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"15550783881","phone_number_id":"{PHONE_NUMBER_ID}"}},"contacts":[{{"profile":{{"name":"Ren\u00e9e"}},"wa_id":"{CUSTOMER}"}}],"messages":[{{"from":"{CUSTOMER}","id":"wamid.emoji","timestamp":"1739321030","type":"text","text":{{"body":"Hola \ud83d\udc4b \u00bfqu\u00e9 tal?"}}}}]}}}}]}}]}}"#
    );
    let reencoded = serde_json::from_str::<Value>(&body).unwrap().to_string();
    assert_ne!(body, reencoded);

    let (status, answer) = deliver(
        &mesh,
        body.as_bytes(),
        Some(signature(reencoded.as_bytes(), WHATSAPP_APP_SECRET)),
    )
    .await;
    assert_eq!(status, 401, "a signature over a re-encoding: {answer}");

    let (status, answer) = deliver_signed(&mesh, body.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["queued"], 1);
    // And raw UTF-8, as another sender might post it, verifies the same way.
    let raw = delivery(
        PHONE_NUMBER_ID,
        json!([text_message("wamid.raw", "Danke 🙏")]),
    )
    .to_string();
    assert!(raw.contains('🙏'));
    let (status, answer) = deliver_signed(&mesh, raw.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");

    let queued = mesh.inbound_messages().await;
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0].text, "Hola 👋 ¿qué tal?");
    assert_eq!(queued[0].sender_name, "Renée");
    assert_eq!(queued[1].text, "Danke 🙏");
}

#[tokio::test]
async fn whatsapp_malformed_deliveries_signed_correctly_are_422() {
    let mesh = spawn_mesh().await;
    connect_whatsapp(&mesh).await;
    for body in [
        "{\"object\":\"whatsapp_business_account\",\"entry\":[",
        "not json at all",
        r#"{"object":"whatsapp_business_account","entry":"nope"}"#,
        r#"{"entry":[]}"#,
    ] {
        let (status, answer) = deliver_signed(&mesh, body.as_bytes()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["code"], "invalid_argument");
    }
    // axum's default body limit (2 MB) applies before the signature is read.
    let huge = vec![b' '; 3 * 1024 * 1024];
    let (status, _) = deliver_signed(&mesh, &huge).await;
    assert_eq!(status, 413);
    assert!(mesh.inbound_messages().await.is_empty());
}
