//! Reply delivery (issue 10; G2, G3, G6): the gateway consumes the outbound
//! queue llm-svc fills and sends each message to Slack or WhatsApp.
//!
//! The queue delivers at least once, so every send is guarded by marks in
//! Redis under the outbound queue's prefix, kept [`MARK_TTL_SECS`] (longer
//! than any redelivery takes: a restart re-reads its pending entries at
//! once, another replica claims them after the claim time, retries back
//! off for minutes at most):
//! - `{prefix}:delivered:{id}`: the whole message went out; a redelivery is
//!   done without a call.
//! - `{prefix}:delivered:{id}:part:{n}` (and `…:part:template`): one part of
//!   a split answer went out, so a redelivery resumes with the next one.
//! - `{prefix}:placeholder:{inbound_id}`: the Slack placeholder — claimed
//!   (`pending`), posted (its channel and ts, as JSON), `failed`, or `none`
//!   (the reply came first, so no placeholder may follow it).
//!
//! Neither Slack nor the Graph API takes an idempotency key: a crash between
//! a platform's answer and the mark is the one window in which a part can go
//! out twice.
//!
//! Permanent platform errors go to the dead-letter stream at once with the
//! platform's code as the reason; transient ones go back to the queue, which
//! retries with backoff (or after `Retry-After`) and dead-letters after its
//! attempts, so nothing loops. Tokens come from agent-svc per connection,
//! stay in memory as secrets and are never logged; a token the platform
//! refuses evicts its route from the cache, so a reconnected one is used on
//! the next attempt.

pub mod slack;
pub mod whatsapp;

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use crewmesh_proto::{
    agent::v1::{
        Channel, ResolveChannelResponse, agent_internal_service_client::AgentInternalServiceClient,
    },
    messaging::v1::{OutboundKind, OutboundMessage, SlackTarget, reply_target::Target},
};
use mesh_kit::{
    ErrorCode,
    auth::{TokenError, TokenSigner},
    client::CallContext,
};
use prost::Message as _;
use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret as _, SecretString};
use streamq::{Delivery, Handler, Outcome};
use tracing::Instrument as _;

use crate::{
    startup::{AppState, Config},
    webhooks::routing::{self, RouteCache},
};

/// How long delivery marks live. Marks cost ~200 bytes each and a reply
/// leaves two, so the hour keeps them to messages-per-hour × 400 bytes
/// (ARCHITECTURE.md has the arithmetic); only a message left pending
/// through a gateway outage of more than an hour could go out twice.
pub const MARK_TTL_SECS: u64 = 3600;
/// A platform's answer is untrusted input: bodies past this are refused.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends outbound messages; the outbound queue's [`Handler`].
pub struct Deliverer {
    io: Io,
    agents: AgentInternalServiceClient<tonic::transport::Channel>,
    routes: RouteCache,
    signer: TokenSigner,
    slack: slack::Slack,
    whatsapp: whatsapp::Graph,
}

impl fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deliverer")
            .field("prefix", &self.io.prefix)
            .field("slack", &self.slack)
            .field("whatsapp", &self.whatsapp)
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    /// Shares the edge's route cache, so a token evicted here is re-read by
    /// webhooks too, and the reverse.
    pub fn new(
        config: &Config,
        state: &AppState,
        redis: ConnectionManager,
    ) -> anyhow::Result<Deliverer> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // Neither API redirects a send; following one would carry the
            // bearer token somewhere we did not choose.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("crewmesh-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client for Slack and the Graph API")?;
        Ok(Deliverer {
            io: Io {
                http,
                redis,
                prefix: config.queues.outbound.prefix().to_owned(),
            },
            agents: state.agents_internal.clone(),
            routes: state.routes.clone(),
            signer: state.signer.clone(),
            slack: slack::Slack::new(&config.slack_api_base, &config.slack_placeholder_text),
            whatsapp: whatsapp::Graph::new(&config.whatsapp_api_base),
        })
    }

    async fn deliver(&self, message: &OutboundMessage) -> Result<(), DeliveryError> {
        let target = message
            .reply_to
            .as_ref()
            .and_then(|r| r.target.as_ref())
            .ok_or(DeliveryError::NoTarget)?;
        let kind = OutboundKind::try_from(message.kind)
            .map_err(|_| DeliveryError::UnknownKind(message.kind))?;
        match (kind, target) {
            (OutboundKind::Unspecified, _) => Err(DeliveryError::UnknownKind(message.kind)),
            (OutboundKind::Placeholder, Target::Slack(target)) => {
                self.placeholder(message, target).await;
                Ok(())
            }
            // WhatsApp has no message a later answer could replace.
            (OutboundKind::Placeholder, Target::Whatsapp(_)) => Ok(()),
            (OutboundKind::Reply, target) => self.reply(message, target).await,
        }
    }

    async fn reply(&self, message: &OutboundMessage, target: &Target) -> Result<(), DeliveryError> {
        let delivered = self.io.delivered(&message.id);
        if self.io.exists(&delivered).await? {
            return Ok(());
        }
        if message.text.trim().is_empty() {
            return Err(DeliveryError::EmptyReply);
        }
        match target {
            Target::Slack(target) => {
                let route = self.route(Channel::Slack, &target.team_id, message).await?;
                let sent = self.slack.reply(&self.io, &route, target, message).await;
                if let Err(e) = &sent
                    && e.is_auth()
                {
                    self.routes.evict(Channel::Slack, &target.team_id);
                }
                sent?;
            }
            Target::Whatsapp(target) => {
                let route = self
                    .route(Channel::Whatsapp, &target.phone_number_id, message)
                    .await?;
                let sent = self
                    .whatsapp
                    .reply(&self.io, &route, target, message, unix_now())
                    .await;
                if let Err(e) = &sent
                    && e.is_auth()
                {
                    self.routes
                        .evict(Channel::Whatsapp, &target.phone_number_id);
                }
                sent?;
            }
        }
        self.io.mark(&delivered).await?;
        Ok(())
    }

    /// A placeholder is cosmetic: whatever fails, it is neither retried nor
    /// dead-lettered — it is marked failed and the reply becomes a new
    /// message. Claiming it first means a redelivery never posts a second.
    async fn placeholder(&self, message: &OutboundMessage, target: &SlackTarget) {
        if message.inbound_id.is_empty() {
            // Its key would be shared with every other such message.
            return;
        }
        let key = self.io.placeholder(&message.inbound_id);
        match self.io.claim(&key, slack::PENDING).await {
            Ok(true) => {}
            // Posted, being posted, failed, or the reply went out first.
            Ok(false) => return,
            Err(e) => {
                // Without the claim a redelivery could post a second one.
                tracing::warn!(error = %e, "Redis unavailable; the placeholder is skipped");
                return;
            }
        }
        let state = match self.post_placeholder(message, target).await {
            Ok(posted) => posted,
            Err(e) => {
                tracing::info!(error = %e, "placeholder not posted; the reply will be a new message");
                slack::Placeholder::Failed
            }
        };
        if let Err(e) = self.io.set(&key, &state.encode()).await {
            tracing::warn!(error = %e, "recording the placeholder failed; the reply will be a new message");
        }
    }

    async fn post_placeholder(
        &self,
        message: &OutboundMessage,
        target: &SlackTarget,
    ) -> Result<slack::Placeholder, DeliveryError> {
        let route = self.route(Channel::Slack, &target.team_id, message).await?;
        let posted = self.slack.placeholder(&self.io, &route, target).await;
        if let Err(e) = &posted
            && e.is_auth()
        {
            self.routes.evict(Channel::Slack, &target.team_id);
        }
        Ok(posted?)
    }

    /// The connection a message goes out on, checked to still belong to the
    /// message's tenant.
    async fn route(
        &self,
        channel: Channel,
        external_id: &str,
        message: &OutboundMessage,
    ) -> Result<Route, DeliveryError> {
        if external_id.is_empty() {
            return Err(DeliveryError::NoTarget);
        }
        let found = match self.routes.cached(channel, external_id) {
            Some(route) => Some(route),
            None => {
                let token = self.signer.service_token()?;
                let traceparent = Some(message.traceparent.clone()).filter(|t| !t.is_empty());
                let call = CallContext::new(token, traceparent);
                routing::fetch(&self.agents, &self.routes, &call, channel, external_id)
                    .await
                    .map_err(DeliveryError::Resolve)?
            }
        };
        let route = found.ok_or(DeliveryError::ConnectionNotFound)?;
        if route.tenant_id != message.tenant_id {
            // Disconnected and connected again by another tenant: this
            // tenant's answer must not go out in their name.
            return Err(DeliveryError::ConnectionMoved);
        }
        Ok(Route::from(route))
    }
}

impl Handler for Deliverer {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let message = match OutboundMessage::decode(delivery.payload.as_slice()) {
            Ok(message) => message,
            Err(e) => return DeliveryError::Malformed(e).outcome(),
        };
        let span = tracing::info_span!(
            "deliver",
            id = %message.id,
            tenant = %message.tenant_id,
            attempt = delivery.attempt,
        );
        match self.deliver(&message).instrument(span).await {
            Ok(()) => Outcome::Done,
            Err(e) => e.outcome(),
        }
    }
}

/// A connection's credentials for one delivery.
pub(crate) struct Route {
    pub(crate) token: SecretString,
    /// WhatsApp: what a reply is sent as outside the customer service window.
    pub(crate) template: Option<Template>,
    /// Slack: where a message that names no channel goes.
    pub(crate) default_channel: String,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("token", &"[REDACTED]")
            .field("template", &self.template)
            .field("default_channel", &self.default_channel)
            .finish()
    }
}

impl From<ResolveChannelResponse> for Route {
    fn from(route: ResolveChannelResponse) -> Route {
        let template = (!route.reply_template_name.is_empty()
            && !route.reply_template_language.is_empty())
        .then_some(Template {
            name: route.reply_template_name,
            language: route.reply_template_language,
        });
        Route {
            token: route.access_token.into(),
            template,
            default_channel: route.default_channel,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) name: String,
    pub(crate) language: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the queue entry is not an OutboundMessage: {0}")]
    Malformed(#[source] prost::DecodeError),
    #[error("the message names no reply target")]
    NoTarget,
    #[error("the message has unknown kind {0}")]
    UnknownKind(i32),
    #[error("the reply has no text")]
    EmptyReply,
    #[error("no channel connection has this workspace or number any more")]
    ConnectionNotFound,
    #[error("the workspace or number is now connected to another tenant")]
    ConnectionMoved,
    #[error("agent-svc could not resolve the connection: {}", .0.message())]
    Resolve(tonic::Status),
    #[error("signing the gateway's service token: {0}")]
    Token(#[from] TokenError),
    #[error("Redis, which holds the delivery marks: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Slack(#[from] slack::SlackError),
    #[error(transparent)]
    WhatsApp(#[from] whatsapp::WhatsAppError),
}

impl DeliveryError {
    /// What the queue does with the message.
    pub fn outcome(&self) -> Outcome {
        let dead = |reason: &str| Outcome::dead_letter(reason, self.to_string());
        match self {
            DeliveryError::Malformed(_)
            | DeliveryError::NoTarget
            | DeliveryError::UnknownKind(_) => dead("malformed_message"),
            DeliveryError::EmptyReply => dead("empty_reply"),
            DeliveryError::ConnectionNotFound => dead("connection_not_found"),
            DeliveryError::ConnectionMoved => dead("connection_moved"),
            DeliveryError::Resolve(status) => match ErrorCode::of_status(status) {
                ErrorCode::NotFound => dead("connection_not_found"),
                // The message's identifier is unusable, or the state will not change.
                ErrorCode::InvalidArgument
                | ErrorCode::Conflict
                | ErrorCode::FailedPrecondition => dead("connection_unresolvable"),
                // agent-svc is down or busy, or refused our service token
                // (keys mid-rotation): another attempt may pass.
                ErrorCode::Unauthenticated
                | ErrorCode::PermissionDenied
                | ErrorCode::ResourceExhausted
                | ErrorCode::Unavailable
                | ErrorCode::DeadlineExceeded
                | ErrorCode::Internal => Outcome::retry("agent_svc_unavailable"),
            },
            DeliveryError::Token(_) => Outcome::retry("service_token"),
            DeliveryError::Redis(_) => Outcome::retry("redis_unavailable"),
            DeliveryError::Slack(e) => e.outcome(),
            DeliveryError::WhatsApp(e) => e.outcome(),
        }
    }
}

/// Why a call to a platform got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("unreachable or timed out: {0}")]
    Network(#[source] reqwest::Error),
    #[error("the response body exceeds {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

/// A platform's answer, its body read within [`MAX_RESPONSE_BYTES`].
#[derive(Debug)]
pub(crate) struct HttpReply {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Vec<u8>,
}

/// What the channel modules share: the HTTP client, Redis and the key names.
pub(crate) struct Io {
    http: reqwest::Client,
    redis: ConnectionManager,
    /// The outbound queue's prefix, which every mark lives under.
    prefix: String,
}

impl Io {
    pub(crate) fn delivered(&self, id: &str) -> String {
        format!("{}:delivered:{id}", self.prefix)
    }

    /// Part `label` (its index, or `template`) of message `id`.
    pub(crate) fn part(&self, id: &str, label: impl fmt::Display) -> String {
        format!("{}:delivered:{id}:part:{label}", self.prefix)
    }

    pub(crate) fn placeholder(&self, inbound_id: &str) -> String {
        format!("{}:placeholder:{inbound_id}", self.prefix)
    }

    /// Slack's rate-limit window for `method` in workspace `team`.
    pub(crate) fn slack_window(&self, team: &str, method: &str) -> String {
        format!("{}:ratelimit:slack:{team}:{method}", self.prefix)
    }

    /// The one-post-per-second slot of a Slack channel.
    pub(crate) fn slack_pace(&self, team: &str, channel: &str) -> String {
        format!("{}:pace:slack:{team}:{channel}", self.prefix)
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool, redis::RedisError> {
        redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut self.redis.clone())
            .await
    }

    /// Records that something was sent.
    pub(crate) async fn mark(&self, key: &str) -> Result<(), redis::RedisError> {
        self.set(key, "1").await
    }

    pub(crate) async fn set(&self, key: &str, value: &str) -> Result<(), redis::RedisError> {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(MARK_TTL_SECS)
            .query_async(&mut self.redis.clone())
            .await
    }

    /// Sets `key` unless it exists; true when this call set it.
    pub(crate) async fn claim(&self, key: &str, value: &str) -> Result<bool, redis::RedisError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("EX")
            .arg(MARK_TTL_SECS)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(set.is_some())
    }

    /// [`Io::claim`] for `window`.
    pub(crate) async fn claim_for(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<bool, redis::RedisError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(millis(window))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(set.is_some())
    }

    pub(crate) async fn set_for(
        &self,
        key: &str,
        window: Duration,
    ) -> Result<(), redis::RedisError> {
        redis::cmd("SET")
            .arg(key)
            .arg("1")
            .arg("PX")
            .arg(millis(window))
            .query_async(&mut self.redis.clone())
            .await
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<String>, redis::RedisError> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.redis.clone())
            .await
    }

    /// How long `key` lives on; zero when it is gone (or never expires,
    /// which no key of ours does).
    pub(crate) async fn time_left(&self, key: &str) -> Result<Duration, redis::RedisError> {
        let ms: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }

    /// POSTs `body` as JSON with `token` as the bearer.
    pub(crate) async fn post_json(
        &self,
        url: &str,
        token: &SecretString,
        body: &serde_json::Value,
    ) -> Result<HttpReply, HttpError> {
        let response = self
            .http
            .post(url)
            .bearer_auth(token.expose_secret())
            // Slack warns about JSON bodies sent without the charset.
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/json; charset=utf-8",
            )
            .body(body.to_string())
            .send()
            .await
            .map_err(HttpError::Network)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = read_capped(response).await?;
        Ok(HttpReply {
            status,
            retry_after,
            body,
        })
    }
}

/// The body, refused past [`MAX_RESPONSE_BYTES`] without reading the rest.
async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, HttpError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(HttpError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(HttpError::Network)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Longest `Retry-After` honoured: a broken or hostile value must not park
/// a conversation for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// `Retry-After` in seconds, as Slack and Meta send it (the HTTP-date form
/// is not used by either and falls back to the queue's backoff).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Splits `text` into parts of at most `max_chars` characters, in order,
/// cutting at the last paragraph break, else line break, else space of each
/// window (preferring one in its second half, so parts are not needlessly
/// short), and only where there is none in the middle of a word — always
/// between characters, never inside one. The separator at a cut is dropped;
/// empty parts are never produced.
pub fn split(text: &str, max_chars: usize) -> Vec<&str> {
    let max_chars = max_chars.max(1);
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let Some((limit, _)) = rest.char_indices().nth(max_chars) else {
            let last = rest.trim_end();
            if !last.trim_start().is_empty() {
                parts.push(last);
            }
            return parts;
        };
        let window = &rest[..limit];
        let (head_end, tail_start) = cut(window).unwrap_or((limit, limit));
        let head = window[..head_end].trim_end();
        if !head.trim_start().is_empty() {
            parts.push(head);
        }
        rest = &rest[tail_start..];
    }
}

/// Where a part may end, best first.
#[derive(Debug, Clone, Copy)]
enum Boundary {
    Paragraph,
    Line,
    Word,
}

impl Boundary {
    const PREFERENCE: [Boundary; 3] = [Boundary::Paragraph, Boundary::Line, Boundary::Word];

    /// The last such boundary in `window`: (its start, its end).
    fn last_in(self, window: &str) -> Option<(usize, usize)> {
        match self {
            Boundary::Paragraph => window.rfind("\n\n").map(|i| (i, i + 2)),
            Boundary::Line => window.rfind('\n').map(|i| (i, i + 1)),
            Boundary::Word => window
                .char_indices()
                .rev()
                .find(|(_, c)| c.is_whitespace())
                .map(|(i, c)| (i, i + c.len_utf8())),
        }
    }
}

/// Where to cut `window`: (end of the part, start of the rest).
fn cut(window: &str) -> Option<(usize, usize)> {
    let half = window.len() / 2;
    let find = |min: usize| {
        Boundary::PREFERENCE
            .iter()
            .find_map(|b| b.last_in(window).filter(|(at, _)| *at >= min))
    };
    find(half).or_else(|| find(1))
}

/// `text` cut to at most `max_chars` characters, ending in `…` when cut.
pub fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some(_) => {
            let keep: String = text.chars().take(max_chars.saturating_sub(1)).collect();
            format!("{}…", keep.trim_end())
        }
    }
}

/// The bounded `outcome` label of `crewmesh_channel_sends_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    Ok,
    RateLimited,
    /// Another attempt may succeed: 5xx, a network error, an unreadable answer.
    Retryable,
    /// The platform refused the message for good.
    Rejected,
    /// The token was refused: revoked, expired or lacking a permission.
    Unauthorized,
}

impl SendOutcome {
    const fn as_str(self) -> &'static str {
        match self {
            SendOutcome::Ok => "ok",
            SendOutcome::RateLimited => "rate_limited",
            SendOutcome::Retryable => "retryable",
            SendOutcome::Rejected => "rejected",
            SendOutcome::Unauthorized => "unauthorized",
        }
    }
}

/// Counts one call to a platform.
pub(crate) fn count_send(channel: &'static str, method: &'static str, outcome: SendOutcome) {
    metrics::counter!(
        "crewmesh_channel_sends_total",
        "channel" => channel,
        "method" => method,
        "outcome" => outcome.as_str(),
    )
    .increment(1);
}

/// Records webhook-to-reply latency once a reply's first part is out.
pub(crate) fn record_latency(channel: &'static str, received_at_ms: i64) {
    if received_at_ms <= 0 {
        return;
    }
    let seconds = (unix_now_ms() - received_at_ms).max(0) as f64 / 1000.0;
    metrics::histogram!("crewmesh_reply_latency_seconds", "channel" => channel).record(seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> usize {
        s.chars().count()
    }

    #[test]
    fn short_text_is_one_part_and_blank_text_none() {
        assert_eq!(split("hello", 10), vec!["hello"]);
        assert_eq!(split("0123456789", 10), vec!["0123456789"]);
        assert!(split("", 10).is_empty());
        assert!(split(" \n\n ", 10).is_empty());
    }

    #[test]
    fn parts_break_at_paragraphs_then_lines_then_words() {
        let text = format!("{}\n\n{}", "a".repeat(60), "b".repeat(60));
        assert_eq!(split(&text, 100), vec!["a".repeat(60), "b".repeat(60)]);

        let text = format!("{}\n{}", "a".repeat(60), "b".repeat(60));
        assert_eq!(split(&text, 100), vec!["a".repeat(60), "b".repeat(60)]);

        let text = format!("{} {}", "a".repeat(60), "b".repeat(60));
        assert_eq!(split(&text, 100), vec!["a".repeat(60), "b".repeat(60)]);

        // A paragraph break late in the window wins over a later line break.
        let text = format!(
            "{}\n\n{}\n{}",
            "a".repeat(70),
            "b".repeat(20),
            "c".repeat(50)
        );
        assert_eq!(
            split(&text, 100),
            vec![
                "a".repeat(70),
                format!("{}\n{}", "b".repeat(20), "c".repeat(50))
            ]
        );
        // An early paragraph break loses to a line break in the second half.
        let text = format!(
            "{}\n\n{}\n{}",
            "a".repeat(5),
            "b".repeat(80),
            "c".repeat(50)
        );
        assert_eq!(
            split(&text, 100),
            vec![
                format!("{}\n\n{}", "a".repeat(5), "b".repeat(80)),
                "c".repeat(50)
            ]
        );
    }

    #[test]
    fn words_longer_than_a_part_are_cut_between_characters() {
        let text = "é".repeat(250);
        let parts = split(&text, 100);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| chars(p) <= 100));
        assert_eq!(
            parts.concat(),
            text,
            "nothing lost, nothing split inside a character"
        );
        let emoji = "👋🏽".repeat(30);
        let parts = split(&emoji, 7);
        assert_eq!(parts.concat(), emoji);
        assert!(parts.iter().all(|p| chars(p) <= 7));
    }

    #[test]
    fn every_part_fits_and_order_is_kept() {
        let words: Vec<String> = (0..2000).map(|i| format!("w{i}")).collect();
        let text = words.join(" ");
        for limit in [3_900, 4_096, 50] {
            let parts = split(&text, limit);
            assert!(parts.iter().all(|p| chars(p) <= limit && !p.is_empty()));
            let rejoined: Vec<&str> = parts.iter().flat_map(|p| p.split(' ')).collect();
            assert_eq!(
                rejoined,
                words.iter().map(String::as_str).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn truncation_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate("short", 1024), "short");
        let long = "ü".repeat(2000);
        let cut = truncate(&long, 1024);
        assert_eq!(chars(&cut), 1024);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate(&"x".repeat(1024), 1024), "x".repeat(1024));
    }

    #[test]
    fn retry_after_is_seconds_and_capped() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn routes_keep_a_template_only_when_complete() {
        let route = |name: &str, language: &str| {
            Route::from(ResolveChannelResponse {
                access_token: "EAAG-secret".into(),
                reply_template_name: name.into(),
                reply_template_language: language.into(),
                ..Default::default()
            })
        };
        assert_eq!(
            route("order_update", "en_US").template,
            Some(Template {
                name: "order_update".into(),
                language: "en_US".into()
            })
        );
        assert_eq!(route("order_update", "").template, None);
        assert_eq!(route("", "").template, None);
        assert!(!format!("{:?}", route("", "")).contains("EAAG-secret"));
    }

    #[test]
    fn malformed_and_unroutable_messages_dead_letter_and_outages_retry() {
        let reason = |e: DeliveryError| match e.outcome() {
            Outcome::DeadLetter { reason, .. } => format!("dead:{reason}"),
            Outcome::Retry { reason, .. } => format!("retry:{reason}"),
            Outcome::Done => "done".to_owned(),
        };
        assert_eq!(reason(DeliveryError::NoTarget), "dead:malformed_message");
        assert_eq!(
            reason(DeliveryError::ConnectionNotFound),
            "dead:connection_not_found"
        );
        assert_eq!(
            reason(DeliveryError::ConnectionMoved),
            "dead:connection_moved"
        );
        assert_eq!(reason(DeliveryError::EmptyReply), "dead:empty_reply");
        assert_eq!(
            reason(DeliveryError::Resolve(tonic::Status::unavailable("down"))),
            "retry:agent_svc_unavailable"
        );
        assert_eq!(
            reason(DeliveryError::Resolve(tonic::Status::not_found("gone"))),
            "dead:connection_not_found"
        );
    }
}
