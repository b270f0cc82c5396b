//! Webhooks as Slack and Meta send them: signed bodies for the mesh's
//! secrets, and the envelopes their messages arrive in.

use aws_lc_rs::hmac;
use serde_json::{Value, json};

use crate::{Mesh, SLACK_SIGNING_SECRET, WHATSAPP_APP_SECRET};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// POSTs a Slack Events API envelope, signed now; returns status and body.
pub async fn slack(mesh: &Mesh, envelope: &Value) -> (u16, Value) {
    let raw = envelope.to_string();
    let ts = chrono::Utc::now().timestamp();
    let key = hmac::Key::new(hmac::HMAC_SHA256, SLACK_SIGNING_SECRET.as_bytes());
    let signature = hex(hmac::sign(&key, format!("v0:{ts}:{raw}").as_bytes()).as_ref());
    let response = mesh
        .http
        .post(mesh.url("/webhooks/slack/events"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", format!("v0={signature}"))
        .body(raw)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// An `app_mention` of the bot in `channel`, at `ts`.
pub fn slack_mention(event_id: &str, team: &str, channel: &str, ts: &str, text: &str) -> Value {
    json!({
        "token": "legacy-verification-token", "team_id": team, "api_app_id": "A0APP00001",
        "type": "event_callback", "event_id": event_id, "event_time": 1_700_000_000,
        "authorizations": [{ "team_id": team, "user_id": "U0BOT", "is_bot": true }],
        "event": { "type": "app_mention", "user": "U0CUSTOMER", "text": text,
                   "ts": ts, "channel": channel, "event_ts": ts },
    })
}

/// POSTs a WhatsApp Cloud API delivery, signed; returns status and body.
pub async fn whatsapp(mesh: &Mesh, delivery: &Value) -> (u16, Value) {
    let raw = delivery.to_string();
    let key = hmac::Key::new(hmac::HMAC_SHA256, WHATSAPP_APP_SECRET.as_bytes());
    let signature = hex(hmac::sign(&key, raw.as_bytes()).as_ref());
    let response = mesh
        .http
        .post(mesh.url("/webhooks/whatsapp"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(raw)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A delivery of `messages` to business number `phone_number_id`.
pub fn whatsapp_delivery(phone_number_id: &str, messages: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA_ID", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": phone_number_id },
            "contacts": [{ "profile": { "name": "Kerry" }, "wa_id": messages[0]["from"] }],
            "messages": messages,
        }}]}]
    })
}

/// A text message from `from`, sent at `timestamp` (Unix seconds).
pub fn whatsapp_text(wamid: &str, from: &str, timestamp: i64, body: &str) -> Value {
    json!({ "from": from, "id": wamid, "timestamp": timestamp.to_string(), "type": "text",
            "text": { "body": body } })
}

/// An image message from `from` whose media id is `media_id`.
pub fn whatsapp_image(wamid: &str, from: &str, media_id: &str, caption: &str) -> Value {
    json!({ "from": from, "id": wamid, "timestamp": chrono::Utc::now().timestamp().to_string(),
            "type": "image",
            "image": { "caption": caption, "mime_type": "image/png", "sha256": "x", "id": media_id } })
}
