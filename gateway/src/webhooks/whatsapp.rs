//! `GET|POST /webhooks/whatsapp`: the WhatsApp Cloud API webhook.
//!
//! GET is Meta's subscription handshake: `hub.verify_token` is compared with
//! `WHATSAPP_VERIFY_TOKEN` in constant time and `hub.challenge` is echoed as
//! plain text.
//!
//! POST carries `X-Hub-Signature-256: sha256=<hex>`, an HMAC-SHA256 of the raw
//! body keyed with the app secret. It is checked on the bytes as received,
//! before anything is parsed: Meta signs its escaped-unicode form, so a
//! re-encoded body would not verify. An unsigned POST is 401 like a badly
//! signed one: Meta always signs, so a missing header means the sender is not
//! Meta, and we say no more than that. The body is bounded by axum's default
//! limit (2 MB, 413 above it); Meta's deliveries are a few KB.
//!
//! Each message of a `messages` change is resolved to its tenant through
//! agent-svc by `metadata.phone_number_id` (nothing cached: a disconnected
//! number stops at once), normalized and queued durably; only then is the
//! answer 200. Meta retries anything else for days, so:
//! - the signature has no timestamp and the wamid dedupe is the only replay
//!   defence: a repeat is counted in `duplicates` and answered 200;
//! - a number with no connection, a status receipt, a message kind we cannot
//!   use and other objects or fields are acknowledged and dropped, because a
//!   retry would not change them;
//! - a Redis or agent-svc failure is 503, so the retry does the work later.
//!
//! Message kinds: `text` (the body), and every kind that carries a media `id`
//! (`image`, `document`, and also `audio`, `video`, `sticker`): an attachment
//! of that kind whose reference is the media id, with the caption as text, so
//! a voice note still gets an answer. Kinds without media (location, contacts,
//! reaction, interactive, …) are skipped with a debug log.
//!
//! The whole delivery is parsed before anything is queued: a body that is not
//! JSON, not an envelope, or has a message without its wamid or sender is 422
//! as a whole, rather than half-queued.

use aws_lc_rs::{constant_time, digest, hmac};
use axum::{
    Json,
    body::Bytes,
    extract::{Query, State, rejection::QueryRejection},
    http::HeaderMap,
};
use crewmesh_proto::agent::v1::{Channel, ResolveChannelResponse};
use mesh_kit::ErrorCode;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{configured, decode_hex, required_header, routing::resolve};
use crate::{
    auth::RequestMeta,
    error::{ApiError, ErrorBody},
    inbound::cap_text,
    startup::AppState,
};
use crewmesh_proto::messaging::v1::{
    Attachment, AttachmentKind, InboundMessage, ReplyTarget, WhatsappTarget, reply_target,
};
use streamq::Enqueued;

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The envelope `object` of WhatsApp Business deliveries.
pub const OBJECT: &str = "whatsapp_business_account";
const MESSAGES_FIELD: &str = "messages";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("X-Hub-Signature-256 is not `sha256=<hex>`")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks an `X-Hub-Signature-256` header against the raw body.
pub fn verify_signature(app_secret: &str, header: &str, body: &[u8]) -> Result<(), SignatureError> {
    let signature = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(decode_hex)
        .ok_or(SignatureError::Malformed)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, app_secret.as_bytes());
    hmac::verify(&key, body, &signature).map_err(|_| SignatureError::Mismatch)
}

/// Constant-time equality of the presented and configured verify tokens.
/// Comparing digests keeps the time independent of the tokens' lengths too.
pub fn tokens_match(presented: &str, expected: &str) -> bool {
    let presented = digest::digest(&digest::SHA256, presented.as_bytes());
    let expected = digest::digest(&digest::SHA256, expected.as_bytes());
    constant_time::verify_slices_are_equal(presented.as_ref(), expected.as_ref()).is_ok()
}

/// Meta's subscription handshake.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Subscription {
    /// Always `subscribe`.
    #[serde(rename = "hub.mode")]
    pub mode: Option<String>,
    /// Echoed back when the token matches.
    #[serde(rename = "hub.challenge")]
    pub challenge: Option<String>,
    /// The verify token entered in the app's webhook settings.
    #[serde(rename = "hub.verify_token")]
    pub verify_token: Option<String>,
}

/// Meta's subscription handshake: echoes `hub.challenge` when the verify token matches.
#[utoipa::path(
    get, path = "/webhooks/whatsapp", tag = "webhooks",
    params(Subscription),
    responses(
        (status = 200, description = "The challenge, echoed", content_type = "text/plain", body = String),
        (status = 403, description = "Wrong verify token, or a mode other than subscribe", body = ErrorBody),
        (status = 422, description = "A hub.* parameter is missing", body = ErrorBody),
        (status = 503, description = "WHATSAPP_VERIFY_TOKEN is not configured", body = ErrorBody),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    meta: RequestMeta,
    query: Result<Query<Subscription>, QueryRejection>,
) -> Result<String, ApiError> {
    let fail = |code: ErrorCode, message: &str| ApiError::new(code, message, &meta.request_id);
    let expected = configured(
        state.whatsapp_verify_token.as_ref(),
        "WhatsApp webhooks",
        "WHATSAPP_VERIFY_TOKEN",
        &meta,
    )?;
    let required = "hub.mode, hub.challenge and hub.verify_token are required";
    // Our JSON 422 rather than axum's plain-text 400 (e.g. a repeated parameter).
    let Ok(Query(query)) = query else {
        return Err(fail(ErrorCode::InvalidArgument, required));
    };
    let (Some(mode), Some(challenge), Some(token)) =
        (query.mode, query.challenge, query.verify_token)
    else {
        return Err(fail(ErrorCode::InvalidArgument, required));
    };
    // Token first, so a wrong token is refused the same way whatever the mode.
    if !tokens_match(&token, expected.expose_secret()) {
        tracing::warn!("WhatsApp subscription with a wrong verify token");
        return Err(fail(
            ErrorCode::PermissionDenied,
            "the verify token does not match",
        ));
    }
    if mode != "subscribe" {
        return Err(fail(
            ErrorCode::PermissionDenied,
            "hub.mode must be subscribe",
        ));
    }
    Ok(challenge)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WhatsappReceived {
    pub received: bool,
    /// Messages newly queued for the agent.
    pub queued: u32,
    /// Messages queued by an earlier delivery of the same wamid.
    pub duplicates: u32,
}

/// WhatsApp Cloud API deliveries: messages to a connected number are queued for its agent.
#[utoipa::path(
    post, path = "/webhooks/whatsapp", tag = "webhooks",
    params(("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the raw body with the app secret>")),
    request_body(content = String, description = "The delivery, as Meta sent it", content_type = "application/json"),
    responses(
        (status = 200, description = "Every message is queued (or was before)", body = WhatsappReceived),
        (status = 401, description = "Malformed or wrong signature", body = ErrorBody),
        (status = 413, description = "The body is over 2 MB"),
        (status = 422, description = "No X-Hub-Signature-256 header, or signed but not a WhatsApp webhook delivery", body = ErrorBody),
        (status = 503, description = "WHATSAPP_APP_SECRET is not configured, or the queue or agent-svc is unavailable; Meta retries", body = ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WhatsappReceived>, ApiError> {
    let fail = |code: ErrorCode, message: String| ApiError::new(code, message, &meta.request_id);
    let secret = configured(
        state.whatsapp_app_secret.as_ref(),
        "WhatsApp webhooks",
        "WHATSAPP_APP_SECRET",
        &meta,
    )?;
    let header = required_header(&headers, SIGNATURE_HEADER, &meta)?;
    verify_signature(secret.expose_secret(), header, &body).map_err(|e| {
        tracing::warn!(error = %e, "WhatsApp webhook refused");
        fail(ErrorCode::Unauthenticated, e.to_string())
    })?;

    let batches = parse(&body).map_err(|e| {
        fail(
            ErrorCode::InvalidArgument,
            format!("the body is not a WhatsApp webhook delivery: {e}"),
        )
    })?;
    let mut received = WhatsappReceived {
        received: true,
        queued: 0,
        duplicates: 0,
    };
    for batch in batches {
        let Some(route) = resolve(&state, &meta, Channel::Whatsapp, &batch.phone_number_id).await?
        else {
            tracing::info!(
                phone_number_id = %batch.phone_number_id,
                messages = batch.messages.len(),
                "WhatsApp messages for a number with no connection dropped"
            );
            continue;
        };
        for message in batch.messages {
            let Some(mut message) =
                normalize(&batch.phone_number_id, &batch.contacts, message, &route)
            else {
                continue;
            };
            message.received_at_ms = chrono::Utc::now().timestamp_millis();
            message.traceparent = meta.traceparent.clone().unwrap_or_default();
            match state.inbound.enqueue(&message).await {
                Ok(Enqueued::Queued(_)) => received.queued += 1,
                Ok(Enqueued::Duplicate) => received.duplicates += 1,
                Err(e) => {
                    tracing::error!(error = %e, id = %message.id, "queueing a WhatsApp message");
                    return Err(fail(
                        e.code(),
                        "the message could not be queued; the delivery will be retried".into(),
                    ));
                }
            }
        }
    }
    Ok(Json(received))
}

#[derive(Debug, Deserialize)]
struct Envelope {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Debug, Deserialize)]
struct Change {
    #[serde(default)]
    field: String,
    /// Only a `messages` change's value is read; other fields have other shapes.
    #[serde(default)]
    value: Value,
}

#[derive(Debug, Deserialize)]
struct MessagesValue {
    metadata: Option<Metadata>,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    messages: Vec<Message>,
    // `statuses` (delivery receipts of our replies) are not messages: not read.
}

#[derive(Debug, Deserialize)]
struct Metadata {
    phone_number_id: String,
}

#[derive(Debug, Deserialize)]
struct Contact {
    #[serde(default)]
    wa_id: String,
    profile: Option<Profile>,
}

#[derive(Debug, Deserialize)]
struct Profile {
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct Message {
    /// The wamid: the dedupe key.
    id: String,
    from: String,
    #[serde(default, deserialize_with = "string_or_number")]
    timestamp: String,
    #[serde(rename = "type", default)]
    kind: String,
    /// `text`, `image`, `document`, …: the object named by `type`.
    #[serde(flatten)]
    payloads: serde_json::Map<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Media {
    #[serde(default)]
    id: String,
    #[serde(default)]
    mime_type: String,
    #[serde(default)]
    caption: String,
    #[serde(default)]
    filename: String,
}

/// Meta sends Unix times as strings; a number is taken as well rather than
/// refusing a whole delivery over it.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}

/// The messages of one change, all to one business number.
#[derive(Debug)]
struct Batch {
    phone_number_id: String,
    contacts: Vec<Contact>,
    messages: Vec<Message>,
}

/// Reads the whole delivery before anything is queued, so a malformed part
/// is a 422 without half of the delivery queued.
fn parse(body: &[u8]) -> Result<Vec<Batch>, serde_json::Error> {
    let envelope: Envelope = serde_json::from_slice(body)?;
    if envelope.object != OBJECT {
        // The same app can subscribe other objects to this URL; a retry would not help.
        tracing::info!(object = %envelope.object, "webhook delivery for another object ignored");
        return Ok(Vec::new());
    }
    let mut batches = Vec::new();
    for change in envelope.entry.into_iter().flat_map(|e| e.changes) {
        if change.field != MESSAGES_FIELD {
            tracing::debug!(field = %change.field, "WhatsApp change ignored");
            continue;
        }
        let value: MessagesValue = serde_json::from_value(change.value)?;
        if value.messages.is_empty() {
            // Status receipts only.
            continue;
        }
        let Some(Metadata { phone_number_id }) = value.metadata else {
            return Err(serde::de::Error::custom(
                "a messages change without metadata.phone_number_id",
            ));
        };
        batches.push(Batch {
            phone_number_id,
            contacts: value.contacts,
            messages: value.messages,
        });
    }
    Ok(batches)
}

/// Meta's media message kinds as attachments; None for kinds without media.
fn attachment_kind(kind: &str) -> Option<AttachmentKind> {
    match kind {
        "image" => Some(AttachmentKind::Image),
        "document" => Some(AttachmentKind::Document),
        "audio" => Some(AttachmentKind::Audio),
        "video" => Some(AttachmentKind::Video),
        "sticker" => Some(AttachmentKind::Sticker),
        _ => None,
    }
}

/// The normalized message, or None for a kind without text or media.
fn normalize(
    phone_number_id: &str,
    contacts: &[Contact],
    message: Message,
    route: &ResolveChannelResponse,
) -> Option<InboundMessage> {
    let payload = message.payloads.get(&message.kind);
    let (mut text, attachments) = if message.kind == "text" {
        let body = payload
            .and_then(|p| p.get("body"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        (body.to_owned(), Vec::new())
    } else {
        let media = payload
            .and_then(|p| Media::deserialize(p).ok())
            .unwrap_or_default();
        let kind = attachment_kind(&message.kind);
        let Some(kind) = kind.filter(|_| !media.id.is_empty()) else {
            tracing::debug!(kind = %message.kind, id = %message.id, "WhatsApp message without text or media skipped");
            return None;
        };
        let text = media.caption.clone();
        let attachment = Attachment {
            kind: kind.into(),
            reference: media.id,
            mime_type: media.mime_type,
            filename: media.filename,
            caption: media.caption,
        };
        (text, vec![attachment])
    };
    let truncated = cap_text(&mut text);
    let sender_name = contacts
        .iter()
        .find(|c| c.wa_id == message.from)
        .and_then(|c| c.profile.as_ref())
        .map(|p| p.name.clone())
        .unwrap_or_default();
    Some(InboundMessage {
        id: format!("whatsapp:{}", message.id),
        tenant_id: route.tenant_id.clone(),
        agent_id: route.agent_id.clone(),
        connection_id: route.connection_id.clone(),
        channel: Channel::Whatsapp.into(),
        conversation: format!("whatsapp:{phone_number_id}:{}", message.from),
        sender: message.from.clone(),
        sender_name,
        text,
        attachments,
        sent_at: message.timestamp.trim().parse().unwrap_or_default(),
        reply_to: Some(ReplyTarget {
            target: Some(reply_target::Target::Whatsapp(WhatsappTarget {
                phone_number_id: phone_number_id.to_owned(),
                to: message.from,
            })),
        }),
        received_at_ms: 0,
        traceparent: String::new(),
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "app-secret";

    fn sign(body: &[u8], secret: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let hex: String = hmac::sign(&key, body)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256={hex}")
    }

    #[test]
    fn a_signature_over_the_raw_body_passes() {
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        assert_eq!(verify_signature(SECRET, &sign(body, SECRET), body), Ok(()));
        let upper = format!("sha256={}", sign(body, SECRET)[7..].to_uppercase());
        assert_eq!(verify_signature(SECRET, &upper, body), Ok(()), "hex case");
    }

    #[test]
    fn the_raw_bytes_are_signed_not_a_re_encoding() {
        // Meta escapes non-ASCII; the same JSON re-encoded has the emoji raw.
        let escaped = br#"{"text":{"body":"hi \ud83d\udc4b"}}"#;
        let reencoded =
            serde_json::to_vec(&serde_json::from_slice::<Value>(escaped).unwrap()).unwrap();
        assert_ne!(escaped.as_slice(), reencoded.as_slice());
        let header = sign(escaped, SECRET);
        assert_eq!(verify_signature(SECRET, &header, escaped), Ok(()));
        assert_eq!(
            verify_signature(SECRET, &header, &reencoded),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn bad_signatures_fail() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let good = sign(body, SECRET);
        assert_eq!(
            verify_signature(SECRET, &good[7..], body),
            Err(SignatureError::Malformed),
            "no sha256= prefix"
        );
        assert_eq!(
            verify_signature(SECRET, &good.replacen("sha256", "sha1", 1), body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(SECRET, "sha256=not-hex", body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(SECRET, "", body),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_signature(SECRET, &good[..good.len() - 2], body),
            Err(SignatureError::Mismatch),
            "truncated"
        );
        assert_eq!(
            verify_signature(SECRET, &good, br#"{"object":"page"}"#),
            Err(SignatureError::Mismatch),
            "tampered body"
        );
        assert_eq!(
            verify_signature("other-secret", &good, body),
            Err(SignatureError::Mismatch),
            "wrong secret"
        );
    }

    #[test]
    fn verify_tokens_compare_exactly() {
        assert!(tokens_match("meatyhamhock", "meatyhamhock"));
        assert!(!tokens_match("meatyhamhoc", "meatyhamhock"));
        assert!(!tokens_match("meatyhamhockk", "meatyhamhock"));
        assert!(!tokens_match("", "meatyhamhock"));
    }

    fn route() -> ResolveChannelResponse {
        ResolveChannelResponse {
            tenant_id: "t1".into(),
            agent_id: "a1".into(),
            connection_id: "c1".into(),
            ..Default::default()
        }
    }

    fn normalized(body: Value) -> Vec<InboundMessage> {
        let batches = parse(body.to_string().as_bytes()).unwrap();
        batches
            .into_iter()
            .flat_map(|b| {
                let Batch {
                    phone_number_id,
                    contacts,
                    messages,
                } = b;
                messages
                    .into_iter()
                    .filter_map(|m| normalize(&phone_number_id, &contacts, m, &route()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn delivery(contacts: Value, messages: Value) -> Value {
        serde_json::json!({
            "object": OBJECT,
            "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": { "display_phone_number": "15550000000", "phone_number_id": "PN1" },
                "contacts": contacts,
                "messages": messages,
            }}]}]
        })
    }

    #[test]
    fn messages_are_normalized_by_kind() {
        let messages = normalized(delivery(
            serde_json::json!([{ "profile": { "name": "Kerry" }, "wa_id": "16505551234" }]),
            serde_json::json!([
                { "from": "16505551234", "id": "wamid.T", "timestamp": "1700000000", "type": "text",
                  "text": { "body": "hello" } },
                { "from": "16505551234", "id": "wamid.I", "timestamp": 1700000001, "type": "image",
                  "image": { "caption": "receipt", "mime_type": "image/jpeg", "sha256": "x", "id": "M1" } },
                { "from": "16505559999", "id": "wamid.D", "timestamp": "1700000002", "type": "document",
                  "document": { "filename": "a.pdf", "mime_type": "application/pdf", "sha256": "x", "id": "M2" } },
                { "from": "16505551234", "id": "wamid.A", "timestamp": "1700000003", "type": "audio",
                  "audio": { "mime_type": "audio/ogg; codecs=opus", "sha256": "x", "id": "M3", "voice": true } },
                { "from": "16505551234", "id": "wamid.L", "timestamp": "1700000004", "type": "location",
                  "location": { "latitude": 1.0, "longitude": 2.0 } },
                { "from": "16505551234", "id": "wamid.R", "timestamp": "1700000005", "type": "reaction",
                  "reaction": { "message_id": "wamid.T", "emoji": "👍" } },
            ]),
        ));
        assert_eq!(messages.len(), 4, "location and reaction skipped");
        let text = &messages[0];
        assert_eq!(text.id, "whatsapp:wamid.T");
        assert_eq!(text.conversation, "whatsapp:PN1:16505551234");
        assert_eq!(text.sender, "16505551234");
        assert_eq!(text.sender_name, "Kerry");
        assert_eq!(text.text, "hello");
        assert_eq!(text.sent_at, 1_700_000_000);
        assert_eq!(
            (text.tenant_id.as_str(), text.agent_id.as_str()),
            ("t1", "a1")
        );
        assert_eq!(text.connection_id, "c1");
        assert_eq!(
            text.reply_to,
            Some(ReplyTarget {
                target: Some(reply_target::Target::Whatsapp(WhatsappTarget {
                    phone_number_id: "PN1".into(),
                    to: "16505551234".into()
                }))
            })
        );
        assert!(text.attachments.is_empty());

        let image = &messages[1];
        assert_eq!(image.text, "receipt");
        assert_eq!(image.sent_at, 1_700_000_001, "a numeric timestamp is kept");
        assert_eq!(
            image.attachments,
            vec![Attachment {
                kind: AttachmentKind::Image.into(),
                reference: "M1".into(),
                mime_type: "image/jpeg".into(),
                filename: String::new(),
                caption: "receipt".into(),
            }]
        );
        let document = &messages[2];
        assert_eq!(document.sender_name, "", "no contact for this sender");
        assert_eq!(document.text, "");
        assert_eq!(document.attachments[0].kind(), AttachmentKind::Document);
        assert_eq!(document.attachments[0].filename, "a.pdf");
        assert_eq!(document.attachments[0].reference, "M2");
        let audio = &messages[3];
        assert_eq!(audio.text, "");
        assert_eq!(audio.attachments[0].kind(), AttachmentKind::Audio);
        assert_eq!(audio.attachments[0].reference, "M3");
    }

    #[test]
    fn statuses_other_fields_and_other_objects_yield_nothing() {
        let statuses = serde_json::json!({
            "object": OBJECT,
            "entry": [{ "changes": [{ "field": "messages", "value": {
                "metadata": { "phone_number_id": "PN1" },
                "statuses": [{ "id": "wamid.X", "status": "delivered", "timestamp": "1", "recipient_id": "1" }],
            }}]}]
        });
        assert!(parse(statuses.to_string().as_bytes()).unwrap().is_empty());
        let other_field = serde_json::json!({
            "object": OBJECT,
            "entry": [{ "changes": [{ "field": "account_update", "value": { "messages": "not ours" } }]}]
        });
        assert!(
            parse(other_field.to_string().as_bytes())
                .unwrap()
                .is_empty()
        );
        let page = serde_json::json!({ "object": "page", "entry": [{ "messaging": [] }] });
        assert!(parse(page.to_string().as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn malformed_deliveries_are_refused() {
        assert!(parse(b"{not json").is_err());
        assert!(parse(br#"{"entry":[]}"#).is_err(), "no object");
        assert!(parse(br#"{"object":"whatsapp_business_account","entry":"x"}"#).is_err());
        let no_metadata = serde_json::json!({
            "object": OBJECT,
            "entry": [{ "changes": [{ "field": "messages", "value": {
                "messages": [{ "from": "1", "id": "wamid.1", "timestamp": "1", "type": "text", "text": { "body": "x" } }],
            }}]}]
        });
        assert!(parse(no_metadata.to_string().as_bytes()).is_err());
        let no_id = delivery(
            serde_json::json!([]),
            serde_json::json!([{ "from": "1", "timestamp": "1", "type": "text", "text": { "body": "x" } }]),
        );
        assert!(
            parse(no_id.to_string().as_bytes()).is_err(),
            "no wamid to dedupe on"
        );
    }
}
