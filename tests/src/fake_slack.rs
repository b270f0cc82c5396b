//! A local stand-in for Slack's Web API, speaking its wire format:
//! - `oauth.v2.access`: a form-encoded POST authenticated with HTTP Basic
//!   (client id and secret). Codes are issued by the test, once each, for
//!   one workspace.
//! - `auth.test`: whose a bearer token is — its workspace (team id and
//!   name) and the bot's user id — for tokens the test registered (and
//!   those `oauth.v2.access` issued); `invalid_auth` otherwise,
//!   `token_revoked` once revoked.
//! - `chat.postMessage` and `chat.update`: JSON (or form) bodies with a
//!   bot token as the bearer, checked against the tokens the test
//!   registered; messages are kept so an update of an unknown `ts` fails as
//!   Slack's does. Every call is recorded for assertions, and the test can
//!   revoke a token (`token_revoked`) or answer the next calls of a method
//!   with 429 and `Retry-After: 1`.
//!
//! Slack answers failures with HTTP 200 and `"ok": false` plus an error
//! code; only rate limits are HTTP 429.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Value, json};

use crate::fake_stripe::form_urlencoded_pairs;

pub const CLIENT_ID: &str = "1234567890.0987654321";
pub const CLIENT_SECRET: &str = "fake-slack-client-secret";
pub const REDIRECT_URI: &str = "https://crewmesh.test/oauth/slack/callback";

/// The bot user every fake workspace has.
pub const BOT_USER_ID: &str = "U0BOTUSER1";

/// One `chat.*` call as Slack received it.
#[derive(Debug, Clone)]
pub struct ChatCall {
    /// `chat.postMessage` or `chat.update`.
    pub method: String,
    /// The workspace of the bearer token, when it was one the test registered.
    pub team: Option<String>,
    pub channel: String,
    /// `chat.update`: the message edited. `chat.postMessage`: the new
    /// message's ts when it was accepted.
    pub ts: Option<String>,
    pub thread_ts: Option<String>,
    pub text: String,
    /// None when accepted; otherwise the error code (`ratelimited` for a 429).
    pub error: Option<String>,
    pub at: Instant,
}

impl ChatCall {
    pub fn accepted(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// code → (team id, team name, bot token); removed when used.
    codes: Mutex<HashMap<String, (String, String, String)>>,
    used: Mutex<Vec<String>>,
    exchanges: Mutex<usize>,
    /// bot token → team id.
    bot_tokens: Mutex<HashMap<String, String>>,
    /// bot token → the bot's user id, when not [`BOT_USER_ID`].
    bot_users: Mutex<HashMap<String, String>>,
    /// team id → workspace name, when the test named one.
    team_names: Mutex<HashMap<String, String>>,
    auth_tests: AtomicU64,
    revoked: Mutex<HashSet<String>>,
    /// method → calls still to be answered with 429.
    rate_limited: Mutex<HashMap<String, u32>>,
    /// (channel, ts) → text of the messages posted here.
    messages: Mutex<HashMap<(String, String), String>>,
    calls: Mutex<Vec<ChatCall>>,
    posted: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct FakeSlack {
    /// The `SLACK_API_BASE` to configure, e.g. `http://127.0.0.1:41234/api`.
    pub api_base: String,
    inner: Arc<Inner>,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/api/oauth.v2.access", post(access))
            .route("/api/auth.test", post(auth_test))
            .route("/api/chat.postMessage", post(post_message))
            .route("/api/chat.update", post(update))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_base = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeSlack { api_base, inner }
    }

    /// A code an admin would bring back from Slack's consent page.
    pub fn issue_code(&self, team_id: &str, team_name: &str, bot_token: &str) -> String {
        let code = format!("code-{}", uuid::Uuid::new_v4().simple());
        self.inner.codes.lock().unwrap().insert(
            code.clone(),
            (team_id.into(), team_name.into(), bot_token.into()),
        );
        code
    }

    /// How many exchanges reached Slack, valid or not.
    pub fn exchanges(&self) -> usize {
        *self.inner.exchanges.lock().unwrap()
    }

    /// Accepts `token` as the bot token of workspace `team` (whose bot is
    /// [`BOT_USER_ID`]) for `auth.test` and `chat.*`. Codes issued with
    /// [`FakeSlack::issue_code`] register theirs when used.
    pub fn add_bot_token(&self, token: &str, team: &str) {
        self.inner
            .bot_tokens
            .lock()
            .unwrap()
            .insert(token.into(), team.into());
    }

    /// As [`FakeSlack::add_bot_token`], for a bot whose user id is `bot_user_id`.
    pub fn add_bot(&self, token: &str, team: &str, bot_user_id: &str) {
        self.add_bot_token(token, team);
        self.inner
            .bot_users
            .lock()
            .unwrap()
            .insert(token.into(), bot_user_id.into());
    }

    /// How many `auth.test` calls reached Slack, valid or not.
    pub fn auth_tests(&self) -> u64 {
        self.inner.auth_tests.load(Ordering::Relaxed)
    }

    /// From now on `token` is answered with `token_revoked`.
    pub fn revoke(&self, token: &str) {
        self.inner.revoked.lock().unwrap().insert(token.into());
    }

    /// Answers the next `n` calls of `method` (e.g. `chat.postMessage`) with
    /// HTTP 429 and `Retry-After: 1`.
    pub fn rate_limit_next(&self, method: &str, n: u32) {
        self.inner
            .rate_limited
            .lock()
            .unwrap()
            .insert(method.into(), n);
    }

    /// Deletes a message, as a user could, so editing it fails.
    pub fn delete_message(&self, channel: &str, ts: &str) {
        self.inner
            .messages
            .lock()
            .unwrap()
            .remove(&(channel.to_owned(), ts.to_owned()));
    }

    /// Every `chat.*` call received, oldest first, refused ones included.
    pub fn calls(&self) -> Vec<ChatCall> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// The accepted calls of `method`, oldest first.
    pub fn accepted(&self, method: &str) -> Vec<ChatCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.accepted())
            .collect()
    }

    /// The text of a message as it stands now.
    pub fn message(&self, channel: &str, ts: &str) -> Option<String> {
        self.inner
            .messages
            .lock()
            .unwrap()
            .get(&(channel.to_owned(), ts.to_owned()))
            .cloned()
    }
}

/// A `chat.*` body: Slack takes JSON (with a bearer token) or a form.
fn arguments(headers: &HeaderMap, body: &str) -> HashMap<String, String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return form_urlencoded_pairs(body).into_iter().collect();
    }
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(body) else {
        return HashMap::new();
    };
    fields
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            Value::Number(n) => Some((k, n.to_string())),
            _ => None,
        })
        .collect()
}

fn slack_error(code: &str) -> Response {
    (StatusCode::OK, Json(json!({ "ok": false, "error": code }))).into_response()
}

/// Slack's answer to a refused call: a rate limit is HTTP 429 with
/// `Retry-After`, everything else HTTP 200 with `"ok": false`.
fn refusal(code: &str) -> Response {
    if code == "ratelimited" {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            Json(json!({ "ok": false, "error": code })),
        )
            .into_response();
    }
    slack_error(code)
}

/// Authenticates and applies the switches: the token's workspace, or the
/// error code (recorded) when Slack would refuse before doing anything.
fn admit(
    inner: &Inner,
    method: &str,
    headers: &HeaderMap,
    args: &HashMap<String, String>,
) -> Result<String, &'static str> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let team = token.and_then(|t| inner.bot_tokens.lock().unwrap().get(t).cloned());
    let refuse = |error: &'static str| {
        record(
            inner,
            ChatCall {
                method: method.into(),
                team: team.clone(),
                channel: args.get("channel").cloned().unwrap_or_default(),
                ts: args.get("ts").cloned(),
                thread_ts: args.get("thread_ts").cloned(),
                text: args.get("text").cloned().unwrap_or_default(),
                error: Some(error.into()),
                at: Instant::now(),
            },
        );
        Err(error)
    };
    let Some(token) = token else {
        return refuse("not_authed");
    };
    if inner.revoked.lock().unwrap().contains(token) {
        return refuse("token_revoked");
    }
    let Some(team) = team.clone() else {
        return refuse("invalid_auth");
    };
    if let Some(left) = inner.rate_limited.lock().unwrap().get_mut(method)
        && *left > 0
    {
        *left -= 1;
        return refuse("ratelimited");
    }
    if args.get("channel").is_none_or(String::is_empty) {
        return refuse("channel_not_found");
    }
    Ok(team)
}

fn record(inner: &Inner, call: ChatCall) {
    inner.calls.lock().unwrap().push(call);
}

async fn post_message(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    const METHOD: &str = "chat.postMessage";
    let args = arguments(&headers, &body);
    let team = match admit(&inner, METHOD, &headers, &args) {
        Ok(team) => team,
        Err(code) => return refusal(code),
    };
    let channel = args.get("channel").cloned().unwrap_or_default();
    let text = args.get("text").cloned().unwrap_or_default();
    let thread_ts = args.get("thread_ts").cloned();
    let mut call = ChatCall {
        method: METHOD.into(),
        team: Some(team),
        channel: channel.clone(),
        ts: None,
        thread_ts: thread_ts.clone(),
        text: text.clone(),
        error: None,
        at: Instant::now(),
    };
    if text.is_empty() {
        call.error = Some("no_text".into());
        record(&inner, call);
        return slack_error("no_text");
    }
    if text.chars().count() > 40_000 {
        call.error = Some("msg_too_long".into());
        record(&inner, call);
        return slack_error("msg_too_long");
    }
    let n = inner.posted.fetch_add(1, Ordering::Relaxed) + 1;
    let ts = format!("{}.{:06}", 1_700_000_000 + n, n);
    inner
        .messages
        .lock()
        .unwrap()
        .insert((channel.clone(), ts.clone()), text.clone());
    call.ts = Some(ts.clone());
    record(&inner, call);
    let mut message = json!({
        "type": "message", "subtype": "bot_message", "text": text, "user": BOT_USER_ID,
        "bot_id": "B0BOT00001", "app_id": "A0APP00001", "ts": ts,
    });
    if let Some(thread_ts) = thread_ts {
        message["thread_ts"] = json!(thread_ts);
    }
    Json(json!({ "ok": true, "channel": channel, "ts": ts, "message": message })).into_response()
}

async fn update(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    const METHOD: &str = "chat.update";
    let args = arguments(&headers, &body);
    let team = match admit(&inner, METHOD, &headers, &args) {
        Ok(team) => team,
        Err(code) => return refusal(code),
    };
    let channel = args.get("channel").cloned().unwrap_or_default();
    let ts = args.get("ts").cloned().unwrap_or_default();
    let text = args.get("text").cloned().unwrap_or_default();
    let mut call = ChatCall {
        method: METHOD.into(),
        team: Some(team),
        channel: channel.clone(),
        ts: Some(ts.clone()),
        thread_ts: None,
        text: text.clone(),
        error: None,
        at: Instant::now(),
    };
    let error = {
        let mut messages = inner.messages.lock().unwrap();
        match messages.get_mut(&(channel.clone(), ts.clone())) {
            None => Some("message_not_found"),
            Some(_) if text.is_empty() => Some("no_text"),
            Some(stored) => {
                *stored = text.clone();
                None
            }
        }
    };
    if let Some(error) = error {
        call.error = Some(error.into());
        record(&inner, call);
        return slack_error(error);
    }
    record(&inner, call);
    Json(json!({
        "ok": true, "channel": channel, "ts": ts, "text": text,
        "message": { "type": "message", "text": text, "user": BOT_USER_ID, "bot_id": "B0BOT00001" },
    }))
    .into_response()
}

async fn auth_test(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    inner.auth_tests.fetch_add(1, Ordering::Relaxed);
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return slack_error("not_authed");
    };
    if inner.revoked.lock().unwrap().contains(token) {
        return slack_error("token_revoked");
    }
    let Some(team) = inner.bot_tokens.lock().unwrap().get(token).cloned() else {
        return slack_error("invalid_auth");
    };
    let user = inner
        .bot_users
        .lock()
        .unwrap()
        .get(token)
        .cloned()
        .unwrap_or_else(|| BOT_USER_ID.to_owned());
    let name = inner
        .team_names
        .lock()
        .unwrap()
        .get(&team)
        .cloned()
        .unwrap_or_else(|| format!("Workspace {team}"));
    let subdomain = team.to_lowercase();
    Json(json!({
        "ok": true, "url": format!("https://{subdomain}.slack.com/"), "team": name,
        "user": "crewmesh", "team_id": team, "user_id": user, "bot_id": "B0BOT00001",
        "is_enterprise_install": false,
    }))
    .into_response()
}

fn failure(error: &str) -> (StatusCode, Json<Value>) {
    // Slack reports OAuth failures in the body, with HTTP 200.
    (StatusCode::OK, Json(json!({ "ok": false, "error": error })))
}

async fn access(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    *inner.exchanges.lock().unwrap() += 1;
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return failure("invalid_client_id");
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return failure("invalid_form_data");
    }
    let form: HashMap<String, String> = form_urlencoded_pairs(&body).into_iter().collect();
    if form.get("redirect_uri").map(String::as_str) != Some(REDIRECT_URI) {
        return failure("bad_redirect_uri");
    }
    let Some(code) = form.get("code") else {
        return failure("invalid_code");
    };
    let Some((team_id, team_name, token)) = inner.codes.lock().unwrap().remove(code) else {
        let used = inner.used.lock().unwrap().contains(code);
        return failure(if used {
            "code_already_used"
        } else {
            "invalid_code"
        });
    };
    inner.used.lock().unwrap().push(code.clone());
    inner
        .bot_tokens
        .lock()
        .unwrap()
        .insert(token.clone(), team_id.clone());
    inner
        .team_names
        .lock()
        .unwrap()
        .insert(team_id.clone(), team_name.clone());
    (
        StatusCode::OK,
        Json(json!({
            "ok": true,
            "access_token": token,
            "token_type": "bot",
            "scope": "chat:write,app_mentions:read",
            "bot_user_id": "U0BOTUSER1",
            "app_id": "A0APP00001",
            "team": { "name": team_name, "id": team_id },
            "enterprise": null,
            "authed_user": { "id": "U0INSTALLER", "scope": "", "access_token": null, "token_type": null },
            "is_enterprise_install": false,
        })),
    )
}
