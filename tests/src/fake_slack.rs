//! A local stand-in for Slack's Web API `oauth.v2.access`, speaking its wire
//! format: a form-encoded POST authenticated with HTTP Basic (client id and
//! secret), answered with HTTP 200 and `"ok": true` or `"ok": false` plus an
//! error code. Codes are issued by the test, once each, for one workspace.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Value, json};

use crate::fake_stripe::form_urlencoded_pairs;

pub const CLIENT_ID: &str = "1234567890.0987654321";
pub const CLIENT_SECRET: &str = "fake-slack-client-secret";
pub const REDIRECT_URI: &str = "https://crewmesh.test/oauth/slack/callback";

#[derive(Debug, Default)]
struct Inner {
    /// code → (team id, team name, bot token); removed when used.
    codes: Mutex<HashMap<String, (String, String, String)>>,
    used: Mutex<Vec<String>>,
    exchanges: Mutex<usize>,
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
