//! `POST /webhooks/slack/events`: Slack's Events API.
//!
//! The `X-Slack-Signature` (`v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{raw
//! body}`, keyed with the signing secret) is checked on the raw bytes in
//! constant time, and requests more than five minutes old are refused, before
//! anything is parsed. `url_verification` is answered with its challenge.
//! A message for the agent is resolved to its tenant through agent-svc,
//! normalized and queued durably before the 200; Slack's retries carry the
//! same `event_id`, which the queue drops.

use aws_lc_rs::hmac;
use axum::{Json, body::Bytes, extract::State, http::HeaderMap};
use crewmesh_proto::agent::v1::Channel;
use mesh_kit::ErrorCode;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{configured, decode_hex, required_header, routing::resolve};
use crate::{
    auth::RequestMeta,
    error::{ApiError, ErrorBody},
    inbound::cap_text,
    startup::AppState,
};
use crewmesh_proto::messaging::v1::{
    Attachment, AttachmentKind, InboundMessage, ReplyTarget, SlackTarget, reply_target,
};
use streamq::Enqueued;

/// python-slack-sdk's window: Slack retries within minutes, so an older
/// request is a replay.
pub const TOLERANCE_SECS: i64 = 5 * 60;
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("X-Slack-Request-Timestamp is not a Unix time")]
    BadTimestamp,
    #[error("X-Slack-Signature is not a v0 signature")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the request is more than five minutes old")]
    Stale,
}

/// Checks a request's signature and age at time `now`.
pub fn verify(
    secret: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let expected = signature
        .strip_prefix("v0=")
        .and_then(decode_hex)
        .ok_or(SignatureError::Malformed)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = Vec::with_capacity(body.len() + 16);
    signed.extend_from_slice(b"v0:");
    signed.extend_from_slice(timestamp.trim().as_bytes());
    signed.push(b':');
    signed.extend_from_slice(body);
    hmac::verify(&key, &signed, &expected).map_err(|_| SignatureError::Mismatch)?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    event: Option<Event>,
    /// Who the event is delivered to: for a bot install, the bot's own user.
    #[serde(default)]
    authorizations: Vec<Authorization>,
}

#[derive(Debug, Deserialize)]
struct Authorization {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    is_bot: bool,
}

impl Envelope {
    /// The bot's user id: from the connection when it was installed through
    /// OAuth, else from the envelope's authorization of the bot (a token
    /// connected by hand does not tell us who the bot is).
    fn bot_user_id<'a>(&'a self, stored: &'a str) -> &'a str {
        if !stored.is_empty() {
            return stored;
        }
        self.authorizations
            .iter()
            .find(|a| a.is_bot)
            .and_then(|a| a.user_id.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    subtype: Option<String>,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    channel_type: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    bot_id: Option<String>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    ts: String,
    #[serde(default)]
    thread_ts: Option<String>,
    #[serde(default)]
    files: Vec<File>,
}

#[derive(Debug, Deserialize)]
struct File {
    #[serde(default)]
    name: String,
    #[serde(default)]
    mimetype: String,
    #[serde(default)]
    url_private: Option<String>,
}

/// What a message for the agent looks like once its workspace is resolved.
struct Incoming<'a> {
    event_id: &'a str,
    team_id: &'a str,
    event: &'a Event,
    user: &'a str,
    bot_user_id: &'a str,
}

/// Messages the agent answers: mentions anywhere, and direct messages. A
/// mention in a channel also arrives as a plain `message`, so channel
/// messages are taken only as `app_mention` — one reply, never two. Edits,
/// deletions and bots (the agent itself included) are not conversations.
fn addressed_to_agent(event: &Event) -> bool {
    if event.bot_id.is_some() {
        return false;
    }
    match event.subtype.as_deref() {
        None | Some("file_share" | "thread_broadcast") => {}
        Some(_) => return false,
    }
    match event.kind.as_str() {
        "app_mention" => true,
        "message" => event.channel_type.as_deref() == Some("im"),
        _ => false,
    }
}

/// The text without the mention that addressed the bot.
fn without_mention(text: &str, bot_user_id: &str) -> String {
    if bot_user_id.is_empty() {
        return text.trim().to_owned();
    }
    text.replace(&format!("<@{bot_user_id}>"), "")
        .trim()
        .to_owned()
}

fn normalize(
    incoming: &Incoming<'_>,
    resolved: &crewmesh_proto::agent::v1::ResolveChannelResponse,
    meta: &RequestMeta,
) -> InboundMessage {
    let event = incoming.event;
    let thread = event.thread_ts.clone().unwrap_or_else(|| event.ts.clone());
    let mut text = without_mention(&event.text, incoming.bot_user_id);
    let truncated = cap_text(&mut text);
    InboundMessage {
        id: format!("slack:{}", incoming.event_id),
        tenant_id: resolved.tenant_id.clone(),
        agent_id: resolved.agent_id.clone(),
        connection_id: resolved.connection_id.clone(),
        channel: Channel::Slack.into(),
        conversation: format!("slack:{}:{}:{thread}", incoming.team_id, event.channel),
        sender: incoming.user.to_owned(),
        sender_name: String::new(),
        text,
        attachments: event
            .files
            .iter()
            .filter_map(|f| {
                let kind = if f.mimetype.starts_with("image/") {
                    AttachmentKind::Image
                } else {
                    AttachmentKind::Document
                };
                Some(Attachment {
                    kind: kind.into(),
                    reference: f.url_private.clone()?,
                    mime_type: f.mimetype.clone(),
                    filename: f.name.clone(),
                    caption: String::new(),
                })
            })
            .collect(),
        // `ts` is `<unix seconds>.<sequence>`.
        sent_at: event
            .ts
            .split('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default(),
        reply_to: Some(ReplyTarget {
            target: Some(reply_target::Target::Slack(SlackTarget {
                team_id: incoming.team_id.to_owned(),
                channel: event.channel.clone(),
                thread_ts: thread,
            })),
        }),
        received_at_ms: chrono::Utc::now().timestamp_millis(),
        traceparent: meta.traceparent.clone().unwrap_or_default(),
        truncated,
    }
}

/// The answer Slack gets; it reads only the status, except for the challenge.
#[derive(Debug, Serialize, ToSchema)]
pub struct Acknowledged {
    /// The `url_verification` challenge, echoed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// The event became a message for an agent and is queued.
    pub queued: bool,
    /// The event was delivered before (a Slack retry); nothing changed.
    pub duplicate: bool,
}

impl Acknowledged {
    fn ignored() -> Acknowledged {
        Acknowledged {
            challenge: None,
            queued: false,
            duplicate: false,
        }
    }
}

/// Slack Events API endpoint: mentions and direct messages for the agents.
#[utoipa::path(
    post, path = "/webhooks/slack/events", tag = "webhooks",
    params(
        ("X-Slack-Signature" = String, Header, description = "v0=<hex HMAC-SHA256 of v0:{timestamp}:{body}>"),
        ("X-Slack-Request-Timestamp" = String, Header, description = "Unix seconds; at most five minutes old"),
    ),
    request_body(content = String, description = "The event envelope, as Slack sent it", content_type = "application/json"),
    responses(
        (status = 200, description = "Acknowledged: queued, a retry, ignored, or the url_verification challenge", body = Acknowledged),
        (status = 401, description = "Bad or stale signature", body = ErrorBody),
        (status = 422, description = "Missing signature headers, or not an event envelope", body = ErrorBody),
        (status = 503, description = "SLACK_SIGNING_SECRET is not configured, or the queue or agent-svc is unavailable (Slack retries)", body = ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Acknowledged>, ApiError> {
    let fail = |code: ErrorCode, message: String| ApiError::new(code, message, &meta.request_id);
    let secret = configured(
        state.slack_signing_secret.as_ref(),
        "Slack events",
        "SLACK_SIGNING_SECRET",
        &meta,
    )?;
    let signature = required_header(&headers, SIGNATURE_HEADER, &meta)?;
    let timestamp = required_header(&headers, TIMESTAMP_HEADER, &meta)?;
    verify(
        secret.expose_secret(),
        timestamp,
        signature,
        &body,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|e| {
        tracing::warn!(error = %e, "Slack request refused");
        fail(ErrorCode::Unauthenticated, e.to_string())
    })?;
    let envelope: Envelope = serde_json::from_slice(&body).map_err(|e| {
        fail(
            ErrorCode::InvalidArgument,
            format!("not a Slack event envelope: {e}"),
        )
    })?;

    match envelope.kind.as_str() {
        "url_verification" => {
            return Ok(Json(Acknowledged {
                challenge: Some(envelope.challenge.unwrap_or_default()),
                ..Acknowledged::ignored()
            }));
        }
        "event_callback" => {}
        other => {
            tracing::debug!(kind = other, "Slack envelope ignored");
            return Ok(Json(Acknowledged::ignored()));
        }
    }
    let (Some(event_id), Some(team_id), Some(event)) = (
        envelope.event_id.as_deref(),
        envelope.team_id.as_deref(),
        envelope.event.as_ref(),
    ) else {
        return Err(fail(
            ErrorCode::InvalidArgument,
            "an event_callback needs event_id, team_id and event".into(),
        ));
    };
    let user = event.user.as_deref().unwrap_or_default();
    if !addressed_to_agent(event) || user.is_empty() {
        return Ok(Json(Acknowledged::ignored()));
    }

    let Some(resolved) = resolve(&state, &meta, Channel::Slack, team_id).await? else {
        // A workspace that was disconnected: retries would not change that.
        tracing::info!(
            team = team_id,
            "Slack event for a workspace with no connection"
        );
        return Ok(Json(Acknowledged::ignored()));
    };
    let bot_user_id = envelope.bot_user_id(&resolved.bot_user_id);
    if user == bot_user_id {
        return Ok(Json(Acknowledged::ignored()));
    }
    let message = normalize(
        &Incoming {
            event_id,
            team_id,
            event,
            user,
            bot_user_id,
        },
        &resolved,
        &meta,
    );
    let enqueued = state.inbound.enqueue(&message).await.map_err(|e| {
        tracing::error!(error = %e, id = %message.id, "queueing a Slack message failed");
        fail(
            e.code(),
            "the message queue is unavailable; Slack will retry".into(),
        )
    })?;
    let duplicate = enqueued == Enqueued::Duplicate;
    if !duplicate {
        tracing::info!(id = %message.id, tenant = %message.tenant_id, agent = %message.agent_id, "Slack message queued");
    }
    Ok(Json(Acknowledged {
        challenge: None,
        queued: !duplicate,
        duplicate,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slack's documented example (python-slack-sdk's signature tests use it too).
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slacks_documented_example_verifies_at_its_time() {
        assert_eq!(BODY.len(), 362);
        assert_eq!(
            verify(SECRET, TS, SIGNATURE, BODY.as_bytes(), 1_531_420_618),
            Ok(())
        );
        // Inside the window either side; outside it, stale.
        assert_eq!(
            verify(SECRET, TS, SIGNATURE, BODY.as_bytes(), 1_531_420_618 + 300),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, TS, SIGNATURE, BODY.as_bytes(), 1_531_420_618 + 301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(
                SECRET,
                TS,
                SIGNATURE,
                BODY.as_bytes(),
                chrono::Utc::now().timestamp()
            ),
            Err(SignatureError::Stale)
        );
    }

    #[test]
    fn the_sdk_negative_cases_fail() {
        let now = 1_531_420_618;
        let tampered = BODY.replace("roadrunner", "coyote");
        assert_eq!(
            verify(SECRET, TS, SIGNATURE, tampered.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("another-secret", TS, SIGNATURE, BODY.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it breaks the signature.
        assert_eq!(
            verify(SECRET, "1531420619", SIGNATURE, BODY.as_bytes(), now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, "", SIGNATURE, BODY.as_bytes(), now),
            Err(SignatureError::BadTimestamp)
        );
        assert_eq!(
            verify(SECRET, TS, "", BODY.as_bytes(), now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(
                SECRET,
                TS,
                &SIGNATURE.replace("v0=", "v1="),
                BODY.as_bytes(),
                now
            ),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(SECRET, TS, "v0=zz", BODY.as_bytes(), now),
            Err(SignatureError::Malformed)
        );
    }

    fn event(kind: &str, channel_type: &str) -> Event {
        Event {
            kind: kind.into(),
            subtype: None,
            channel: "C1".into(),
            channel_type: Some(channel_type.into()),
            user: Some("U1".into()),
            bot_id: None,
            text: "<@UBOT> hello".into(),
            ts: "1.2".into(),
            thread_ts: None,
            files: vec![],
        }
    }

    #[test]
    fn the_bots_user_id_comes_from_the_connection_else_the_envelope() {
        let envelope: Envelope = serde_json::from_value(serde_json::json!({
            "type": "event_callback",
            "authorizations": [
                { "team_id": "T1", "user_id": "U0HUMAN", "is_bot": false },
                { "team_id": "T1", "user_id": "U0BOT", "is_bot": true },
            ],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(envelope.bot_user_id("U0STORED"), "U0STORED");
        assert_eq!(envelope.bot_user_id(""), "U0BOT");
        let bare: Envelope =
            serde_json::from_value(serde_json::json!({ "type": "event_callback" }))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bare.bot_user_id(""), "");
    }

    #[test]
    fn the_agent_answers_mentions_and_direct_messages_once() {
        assert!(addressed_to_agent(&event("app_mention", "channel")));
        assert!(addressed_to_agent(&event("message", "im")));
        // The plain copy of a mention in a channel is not answered twice.
        assert!(!addressed_to_agent(&event("message", "channel")));
        let bot = Event {
            bot_id: Some("B1".into()),
            ..event("message", "im")
        };
        assert!(!addressed_to_agent(&bot));
        let edited = Event {
            subtype: Some("message_changed".into()),
            ..event("message", "im")
        };
        assert!(!addressed_to_agent(&edited));
        let shared = Event {
            subtype: Some("file_share".into()),
            ..event("message", "im")
        };
        assert!(addressed_to_agent(&shared));
        assert_eq!(
            without_mention("<@UBOT> hello <@U2>", "UBOT"),
            "hello <@U2>"
        );
        assert_eq!(without_mention(" hi ", ""), "hi");
    }
}
