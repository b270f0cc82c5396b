//! Slack's Web API for replies: `chat.postMessage` (the placeholder, and
//! replies without one) and `chat.update` (the placeholder becomes the
//! answer).
//!
//! Slack answers HTTP 200 with `"ok": false` and an error code for most
//! failures, and HTTP 429 with `Retry-After` when a method is rate limited
//! for a workspace. A 429's window is stored in Redis per workspace and
//! method, so every replica waits it out before its next call of that
//! method there; `chat.postMessage` is also paced to about one per second
//! per channel across replicas, as Slack asks.

use std::time::Duration;

use crewmesh_proto::messaging::v1::{OutboundMessage, SlackTarget};
use serde::{Deserialize, Serialize};
use serde_json::json;
use streamq::Outcome;
use tokio::time::{Instant, sleep};

use super::{HttpError, HttpReply, Io, Route, SendOutcome, count_send, record_latency, split};

/// Slack truncates messages past 40,000 characters and recommends at most
/// 4,000; parts stay under that with room to spare.
pub const CHUNK_CHARS: usize = 3_900;
/// A replica waits out a rate-limit window or its turn in a channel this
/// long at most; a longer wait goes back to the queue (`Retry` after it),
/// which frees the worker for other conversations.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// A placeholder that cannot go out soon is pointless: the answer would
/// overtake it.
const PLACEHOLDER_MAX_WAIT: Duration = Duration::from_secs(3);
/// Slack's documented pace for `chat.postMessage`: about one per second per channel.
const POST_PACE: Duration = Duration::from_secs(1);
/// When a 429 comes without `Retry-After` (Slack always sends one).
const DEFAULT_WINDOW: Duration = Duration::from_secs(1);

/// The placeholder key's value while the placeholder is being posted.
pub(crate) const PENDING: &str = "pending";
const FAILED: &str = "failed";
/// The reply went out first: no placeholder may follow.
const NONE: &str = "none";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    PostMessage,
    Update,
}

impl Method {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Method::PostMessage => "chat.postMessage",
            Method::Update => "chat.update",
        }
    }
}

/// A message Slack accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Posted {
    pub(crate) channel: String,
    pub(crate) ts: String,
}

/// What became of an inbound message's placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placeholder {
    /// Posted: the reply edits it.
    Posted(Posted),
    /// Not posted (or its post crashed midway): the reply is a new message.
    Failed,
}

impl Placeholder {
    pub(crate) fn encode(&self) -> String {
        match self {
            Placeholder::Posted(posted) => {
                serde_json::to_string(posted).unwrap_or_else(|_| FAILED.to_owned())
            }
            Placeholder::Failed => FAILED.to_owned(),
        }
    }

    /// The posted placeholder a stored value describes, if any. `pending`
    /// seen by the reply means a crash mid-post: the two are handled one
    /// after another in the conversation's lane.
    fn posted(value: &str) -> Option<Posted> {
        serde_json::from_str(value).ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// `ok: false` with a code another attempt will not change (an unknown
    /// code included, so nothing loops), or a 4xx.
    #[error("Slack refused {method}: {code}")]
    Refused { method: &'static str, code: String },
    #[error("Slack is rate limiting {method} in this workspace for {retry_after:?}")]
    RateLimited {
        method: &'static str,
        retry_after: Duration,
    },
    #[error("Slack failed {method}: {code}")]
    Transient { method: &'static str, code: String },
    #[error("Slack could not be reached for {method}: {source}")]
    Unreachable {
        method: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("Slack answered {method} unreadably: {detail}")]
    InvalidResponse {
        method: &'static str,
        detail: String,
    },
    #[error("Redis, which paces Slack calls: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Error codes that mean the bot token no longer works (or lacks a right):
/// the route is evicted so a reconnected token is picked up.
fn is_auth_code(code: &str) -> bool {
    matches!(
        code,
        "invalid_auth"
            | "not_authed"
            | "account_inactive"
            | "token_revoked"
            | "token_expired"
            | "no_permission"
            | "missing_scope"
            | "not_allowed_token_type"
            | "team_access_not_granted"
            | "ekm_access_denied"
    )
}

/// Codes another attempt may fix. Slack's codes are an open set, so
/// everything else — auth, permissions, unknown channels, archived ones,
/// oversized text, codes added later — is permanent: dead-lettered with its
/// code, never retried in a loop.
fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "ratelimited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
    )
}

/// `chat.update` cannot edit the placeholder (deleted, or too old to edit):
/// the answer is posted as a new message instead.
fn is_stale_message_code(code: &str) -> bool {
    matches!(
        code,
        "message_not_found" | "cant_update_message" | "edit_window_closed"
    )
}

impl SlackError {
    pub(crate) fn is_auth(&self) -> bool {
        matches!(self, SlackError::Refused { code, .. } if is_auth_code(code))
    }

    fn is_stale_message(&self) -> bool {
        matches!(self, SlackError::Refused { code, .. } if is_stale_message_code(code))
    }

    fn send_outcome(&self) -> SendOutcome {
        match self {
            SlackError::Refused { code, .. } if is_auth_code(code) => SendOutcome::Unauthorized,
            SlackError::Refused { .. } => SendOutcome::Rejected,
            SlackError::RateLimited { .. } => SendOutcome::RateLimited,
            SlackError::Transient { .. }
            | SlackError::Unreachable { .. }
            | SlackError::InvalidResponse { .. }
            | SlackError::Redis(_) => SendOutcome::Retryable,
        }
    }

    pub(crate) fn outcome(&self) -> Outcome {
        match self {
            SlackError::Refused { code, .. } => {
                Outcome::dead_letter(format!("slack:{code}"), self.to_string())
            }
            SlackError::RateLimited { retry_after, .. } => Outcome::Retry {
                reason: "slack:rate_limited".to_owned(),
                after: Some(*retry_after),
            },
            SlackError::Transient { code, .. } => Outcome::retry(format!("slack:{code}")),
            SlackError::Unreachable { .. } => Outcome::retry("slack:unreachable"),
            SlackError::InvalidResponse { .. } => Outcome::retry("slack:invalid_response"),
            SlackError::Redis(_) => Outcome::retry("redis_unavailable"),
        }
    }
}

/// Slack's answer to `chat.postMessage` and `chat.update`.
#[derive(Debug, Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ts: Option<String>,
}

/// What a call's HTTP answer means.
fn interpret(method: Method, reply: &HttpReply) -> Result<Posted, SlackError> {
    let name = method.as_str();
    match reply.status {
        429 => {
            return Err(SlackError::RateLimited {
                method: name,
                retry_after: reply.retry_after.unwrap_or(DEFAULT_WINDOW),
            });
        }
        500..=599 => {
            return Err(SlackError::Transient {
                method: name,
                code: format!("http_{}", reply.status),
            });
        }
        200..=299 => {}
        status => {
            return Err(SlackError::Refused {
                method: name,
                code: format!("http_{status}"),
            });
        }
    }
    let answer: Answer =
        serde_json::from_slice(&reply.body).map_err(|e| SlackError::InvalidResponse {
            method: name,
            detail: format!("not Slack's JSON: {e}"),
        })?;
    if !answer.ok {
        let code = answer.error.unwrap_or_else(|| "unknown_error".to_owned());
        return Err(if is_transient_code(&code) {
            SlackError::Transient { method: name, code }
        } else {
            SlackError::Refused { method: name, code }
        });
    }
    match (answer.channel, answer.ts) {
        (Some(channel), Some(ts)) if !channel.is_empty() && !ts.is_empty() => {
            Ok(Posted { channel, ts })
        }
        _ => Err(SlackError::InvalidResponse {
            method: name,
            detail: "ok without channel and ts".to_owned(),
        }),
    }
}

/// Slack's Web API as the delivery workers use it.
#[derive(Debug, Clone)]
pub struct Slack {
    api_base: String,
    placeholder_text: String,
}

impl Slack {
    pub fn new(api_base: &str, placeholder_text: &str) -> Slack {
        Slack {
            api_base: api_base.trim_end_matches('/').to_owned(),
            placeholder_text: placeholder_text.to_owned(),
        }
    }

    /// Posts the placeholder in the message's thread.
    pub(crate) async fn placeholder(
        &self,
        io: &Io,
        route: &Route,
        target: &SlackTarget,
    ) -> Result<Placeholder, SlackError> {
        let channel = channel_of(target, route);
        let posted = self
            .post(
                io,
                route,
                &target.team_id,
                channel,
                &target.thread_ts,
                &self.placeholder_text,
                PLACEHOLDER_MAX_WAIT,
            )
            .await?;
        Ok(Placeholder::Posted(posted))
    }

    /// Delivers a reply: its first part replaces the placeholder when there
    /// is one, the rest follow in the thread, each part once.
    pub(crate) async fn reply(
        &self,
        io: &Io,
        route: &Route,
        target: &SlackTarget,
        message: &OutboundMessage,
    ) -> Result<(), SlackError> {
        let team = &target.team_id;
        let channel = channel_of(target, route);
        let placeholder = self.placeholder_of(io, &message.inbound_id).await?;
        for (i, text) in split(&message.text, CHUNK_CHARS).into_iter().enumerate() {
            let mark = io.part(&message.id, i);
            if io.exists(&mark).await? {
                continue;
            }
            let edited = match (&placeholder, i) {
                (Some(posted), 0) => match self.update(io, route, team, posted, text).await {
                    Ok(()) => true,
                    Err(e) if e.is_stale_message() => {
                        tracing::info!(error = %e, "the placeholder cannot be edited; posting the answer instead");
                        false
                    }
                    Err(e) => return Err(e),
                },
                _ => false,
            };
            if !edited {
                self.post(io, route, team, channel, &target.thread_ts, text, MAX_WAIT)
                    .await?;
            }
            io.mark(&mark).await?;
            if i == 0 {
                record_latency("slack", message.received_at_ms);
            }
        }
        Ok(())
    }

    /// The posted placeholder of `inbound_id`, if any. When there is none
    /// yet, `none` is claimed, so a placeholder delivered after the reply
    /// (a late redelivery) is never posted.
    async fn placeholder_of(
        &self,
        io: &Io,
        inbound_id: &str,
    ) -> Result<Option<Posted>, SlackError> {
        if inbound_id.is_empty() {
            return Ok(None);
        }
        let key = io.placeholder(inbound_id);
        if io.claim(&key, NONE).await? {
            return Ok(None);
        }
        Ok(io.get(&key).await?.as_deref().and_then(Placeholder::posted))
    }

    #[allow(clippy::too_many_arguments)]
    async fn post(
        &self,
        io: &Io,
        route: &Route,
        team: &str,
        channel: &str,
        thread_ts: &str,
        text: &str,
        max_wait: Duration,
    ) -> Result<Posted, SlackError> {
        let method = Method::PostMessage;
        wait_window(
            io,
            &io.slack_window(team, method.as_str()),
            method,
            max_wait,
        )
        .await?;
        pace(io, &io.slack_pace(team, channel), max_wait).await?;
        let mut body = json!({ "channel": channel, "text": text });
        if !thread_ts.is_empty() {
            body["thread_ts"] = json!(thread_ts);
        }
        self.call(io, route, team, method, &body).await
    }

    async fn update(
        &self,
        io: &Io,
        route: &Route,
        team: &str,
        placeholder: &Posted,
        text: &str,
    ) -> Result<(), SlackError> {
        let method = Method::Update;
        wait_window(
            io,
            &io.slack_window(team, method.as_str()),
            method,
            MAX_WAIT,
        )
        .await?;
        let body = json!({ "channel": placeholder.channel, "ts": placeholder.ts, "text": text });
        self.call(io, route, team, method, &body).await.map(drop)
    }

    async fn call(
        &self,
        io: &Io,
        route: &Route,
        team: &str,
        method: Method,
        body: &serde_json::Value,
    ) -> Result<Posted, SlackError> {
        let name = method.as_str();
        let url = format!("{}/{name}", self.api_base);
        let result = match io.post_json(&url, &route.token, body).await {
            Ok(reply) => interpret(method, &reply),
            Err(HttpError::Network(source)) => Err(SlackError::Unreachable {
                method: name,
                source,
            }),
            Err(e @ HttpError::TooLarge) => Err(SlackError::InvalidResponse {
                method: name,
                detail: e.to_string(),
            }),
        };
        count_send(
            "slack",
            name,
            result
                .as_ref()
                .map_or_else(SlackError::send_outcome, |_| SendOutcome::Ok),
        );
        if let Err(SlackError::RateLimited { retry_after, .. }) = &result {
            // Every replica waits this window out before calling `method`
            // in this workspace again.
            io.set_for(&io.slack_window(team, name), *retry_after)
                .await?;
        }
        result
    }
}

/// The message's channel, else the connection's default one.
fn channel_of<'a>(target: &'a SlackTarget, route: &'a Route) -> &'a str {
    if target.channel.is_empty() {
        &route.default_channel
    } else {
        &target.channel
    }
}

/// Waits out a stored rate-limit window, or hands a long one back to the queue.
async fn wait_window(
    io: &Io,
    key: &str,
    method: Method,
    max_wait: Duration,
) -> Result<(), SlackError> {
    loop {
        let left = io.time_left(key).await?;
        if left.is_zero() {
            return Ok(());
        }
        if left > max_wait {
            return Err(SlackError::RateLimited {
                method: method.as_str(),
                retry_after: left,
            });
        }
        sleep(left).await;
    }
}

/// Takes the channel's one-second posting slot, waiting for it if another
/// post (from any replica) holds it.
async fn pace(io: &Io, key: &str, max_wait: Duration) -> Result<(), SlackError> {
    let until = Instant::now() + max_wait;
    loop {
        if io.claim_for(key, POST_PACE).await? {
            return Ok(());
        }
        let left = io.time_left(key).await?;
        if Instant::now() + left > until {
            return Err(SlackError::RateLimited {
                method: Method::PostMessage.as_str(),
                retry_after: left.max(POST_PACE),
            });
        }
        sleep(left.max(Duration::from_millis(5))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str, retry_after: Option<u64>) -> HttpReply {
        HttpReply {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: body.as_bytes().to_vec(),
        }
    }

    fn outcome(r: &HttpReply) -> Result<Posted, Outcome> {
        interpret(Method::PostMessage, r).map_err(|e| e.outcome())
    }

    fn reason(o: Result<Posted, Outcome>) -> String {
        match o {
            Ok(_) => "ok".to_owned(),
            Err(Outcome::DeadLetter { reason, .. }) => format!("dead:{reason}"),
            Err(Outcome::Retry { reason, after }) => format!("retry:{reason}:{after:?}"),
            Err(Outcome::Done) => "done".to_owned(),
        }
    }

    #[test]
    fn ok_answers_give_channel_and_ts() {
        let r = reply(
            200,
            r#"{"ok":true,"channel":"C1","ts":"1700000000.000100","message":{"text":"hi"}}"#,
            None,
        );
        assert_eq!(
            outcome(&r),
            Ok(Posted {
                channel: "C1".into(),
                ts: "1700000000.000100".into()
            })
        );
        assert_eq!(
            reason(outcome(&reply(200, r#"{"ok":true}"#, None))),
            "retry:slack:invalid_response:None"
        );
        assert_eq!(
            reason(outcome(&reply(200, "<html>", None))),
            "retry:slack:invalid_response:None"
        );
    }

    #[test]
    fn permanent_codes_dead_letter_with_the_code() {
        for code in [
            "invalid_auth",
            "not_authed",
            "account_inactive",
            "token_revoked",
            "token_expired",
            "no_permission",
            "missing_scope",
            "channel_not_found",
            "is_archived",
            "not_in_channel",
            "msg_too_long",
            "restricted_action",
            "team_access_not_granted",
            "some_code_slack_adds_next_year",
        ] {
            let r = reply(200, &format!(r#"{{"ok":false,"error":"{code}"}}"#), None);
            assert_eq!(reason(outcome(&r)), format!("dead:slack:{code}"));
        }
        assert_eq!(
            reason(outcome(&reply(404, "", None))),
            "dead:slack:http_404"
        );
    }

    #[test]
    fn auth_failures_are_told_apart() {
        let refused = |code: &str| SlackError::Refused {
            method: "chat.postMessage",
            code: code.into(),
        };
        assert!(refused("token_revoked").is_auth());
        assert!(refused("invalid_auth").is_auth());
        assert!(!refused("channel_not_found").is_auth());
        assert!(refused("message_not_found").is_stale_message());
        assert!(refused("edit_window_closed").is_stale_message());
        assert!(refused("cant_update_message").is_stale_message());
        assert!(!refused("token_revoked").is_stale_message());
    }

    #[test]
    fn rate_limits_and_outages_retry() {
        assert_eq!(
            reason(outcome(&reply(429, "", Some(7)))),
            "retry:slack:rate_limited:Some(7s)"
        );
        assert_eq!(
            reason(outcome(&reply(429, "", None))),
            "retry:slack:rate_limited:Some(1s)"
        );
        assert_eq!(
            reason(outcome(&reply(503, "", None))),
            "retry:slack:http_503:None"
        );
        for code in [
            "ratelimited",
            "internal_error",
            "fatal_error",
            "service_unavailable",
            "request_timeout",
        ] {
            let r = reply(200, &format!(r#"{{"ok":false,"error":"{code}"}}"#), None);
            assert_eq!(reason(outcome(&r)), format!("retry:slack:{code}:None"));
        }
    }

    #[test]
    fn placeholder_states_round_trip() {
        let posted = Placeholder::Posted(Posted {
            channel: "C1".into(),
            ts: "1.2".into(),
        });
        assert_eq!(
            Placeholder::posted(&posted.encode()),
            Some(Posted {
                channel: "C1".into(),
                ts: "1.2".into()
            })
        );
        for other in [PENDING, FAILED, NONE] {
            assert_eq!(Placeholder::posted(other), None);
        }
    }
}
