//! Slack's Web API as agent-svc uses it: OAuth v2 (the authorize URL and
//! the `oauth.v2.access` code exchange) and `auth.test`, which says whose a
//! bot token is.
//!
//! <https://api.slack.com/authentication/oauth-v2>: Slack answers HTTP 200
//! with `"ok": false` and an error code on failure; the app authenticates
//! with HTTP Basic (client id and secret), which keeps the secret out of the
//! form body.

use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::{config::SlackApp, webapi};

/// What a completed install gives us.
#[derive(Debug)]
pub struct Installation {
    pub team_id: String,
    pub team_name: String,
    pub bot_token: SecretString,
    pub bot_user_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// The code is unknown, used or expired: the admin should install again.
    #[error("Slack refused the authorization code ({0}); start the install again")]
    BadCode(String),
    /// The app's own credentials or redirect URL are wrong: an operator must fix configuration.
    #[error(
        "Slack refused the app's credentials ({0}); check SLACK_CLIENT_ID, SLACK_CLIENT_SECRET and SLACK_REDIRECT_URI"
    )]
    BadApp(String),
    /// `auth.test` refused the token (`invalid_auth`, `token_revoked`, …),
    /// or it is not a bot's.
    #[error("Slack refused the bot token ({0})")]
    TokenRefused(String),
    #[error("Slack could not be reached: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// Slack is rate limiting or failing, or answered something else than
    /// its documented shape: trying again later may work.
    #[error("Slack answered unexpectedly: {0}")]
    Unexpected(String),
}

/// Who a bot token belongs to, as `auth.test` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotIdentity {
    pub team_id: String,
    /// Enterprise Grid: the organization an org-wide install belongs to.
    pub enterprise_id: Option<String>,
    /// The workspace's name.
    pub team_name: String,
    /// The bot's own user id: mentions of it are stripped and its own
    /// messages are never answered.
    pub user_id: String,
}

#[derive(Debug, Deserialize)]
struct AuthTestResponse {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
    #[serde(default)]
    enterprise_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    bot_id: Option<String>,
}

/// Slack's own trouble, not the token's: <https://api.slack.com/methods/auth.test>.
fn transient(error: &str) -> bool {
    matches!(
        error,
        "ratelimited"
            | "fatal_error"
            | "internal_error"
            | "service_unavailable"
            | "request_timeout"
    )
}

#[derive(Debug, Deserialize)]
struct AccessResponse {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    bot_user_id: Option<String>,
    #[serde(default)]
    team: Option<Team>,
}

#[derive(Debug, Deserialize)]
struct Team {
    id: String,
    #[serde(default)]
    name: String,
}

/// `https://slack.com/api` → `https://slack.com/oauth/v2/authorize`; a local
/// base without `/api` gets the path appended, so fakes serve both.
fn authorize_endpoint(api_base: &str) -> String {
    let base = api_base.trim_end_matches('/');
    let root = base.strip_suffix("/api").unwrap_or(base);
    format!("{root}/oauth/v2/authorize")
}

/// Where the installing admin's browser goes.
pub fn authorize_url(api_base: &str, app: &SlackApp, state: &str) -> Result<String, SlackError> {
    let mut url = Url::parse(&authorize_endpoint(api_base))
        .map_err(|e| SlackError::BadApp(format!("SLACK_API_BASE is not a URL: {e}")))?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("client_id", &app.client_id)
            .append_pair("scope", &app.scopes)
            .append_pair("state", state);
        if let Some(redirect) = &app.redirect_uri {
            query.append_pair("redirect_uri", redirect);
        }
    }
    Ok(url.into())
}

/// Exchanges an authorization code for the workspace's bot token.
pub async fn exchange_code(
    http: &reqwest::Client,
    api_base: &str,
    app: &SlackApp,
    code: &str,
) -> Result<Installation, SlackError> {
    let endpoint = format!("{}/oauth.v2.access", api_base.trim_end_matches('/'));
    let mut form = vec![("code", code)];
    if let Some(redirect) = &app.redirect_uri {
        form.push(("redirect_uri", redirect));
    }
    let response = http
        .post(endpoint)
        .basic_auth(&app.client_id, Some(app.client_secret.expose_secret()))
        .form(&form)
        .send()
        .await
        .map_err(SlackError::Unreachable)?;
    let status = response.status();
    if !status.is_success() {
        return Err(SlackError::Unexpected(format!("HTTP {status}")));
    }
    let body: AccessResponse = webapi::json(response)
        .await
        .map_err(|e| SlackError::Unexpected(format!("oauth.v2.access: {e}")))?;
    if !body.ok {
        let error = body.error.unwrap_or_else(|| "unknown_error".to_owned());
        return Err(match error.as_str() {
            "invalid_code" | "code_already_used" | "code_expired" | "invalid_grant_type" => {
                SlackError::BadCode(error)
            }
            _ => SlackError::BadApp(error),
        });
    }
    let (Some(token), Some(team)) = (body.access_token, body.team) else {
        return Err(SlackError::Unexpected(
            "oauth.v2.access returned no bot token or team".to_owned(),
        ));
    };
    if body.token_type.as_deref() != Some("bot") {
        return Err(SlackError::Unexpected(
            "oauth.v2.access returned no bot token: is the app asking for bot scopes?".to_owned(),
        ));
    }
    Ok(Installation {
        team_id: team.id,
        team_name: team.name,
        bot_token: token.into(),
        bot_user_id: body.bot_user_id.unwrap_or_default(),
    })
}

/// Asks Slack whose `token` is. The token goes in the `Authorization`
/// header only, never in a URL or an error.
pub async fn auth_test(
    http: &reqwest::Client,
    api_base: &str,
    token: &SecretString,
) -> Result<BotIdentity, SlackError> {
    let endpoint = format!("{}/auth.test", api_base.trim_end_matches('/'));
    let no_arguments: [(&str, &str); 0] = [];
    let response = http
        .post(endpoint)
        .bearer_auth(token.expose_secret())
        .form(&no_arguments)
        .send()
        .await
        .map_err(SlackError::Unreachable)?;
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(SlackError::Unexpected(
            "auth.test is rate limited; try again shortly".to_owned(),
        ));
    }
    if !status.is_success() {
        return Err(SlackError::Unexpected(format!("auth.test: HTTP {status}")));
    }
    let body: AuthTestResponse = webapi::json(response)
        .await
        .map_err(|e| SlackError::Unexpected(format!("auth.test: {e}")))?;
    if !body.ok {
        let error = body.error.unwrap_or_else(|| "unknown_error".to_owned());
        return Err(if transient(&error) {
            SlackError::Unexpected(format!("auth.test: {error}"))
        } else {
            SlackError::TokenRefused(error)
        });
    }
    if body.bot_id.as_deref().is_none_or(str::is_empty) {
        // A user token would let the agent speak as a person.
        return Err(SlackError::TokenRefused("not_a_bot_token".to_owned()));
    }
    let (Some(team_id), Some(user_id)) = (body.team_id, body.user_id) else {
        return Err(SlackError::Unexpected(
            "auth.test named no team_id or user_id".to_owned(),
        ));
    };
    Ok(BotIdentity {
        team_id,
        enterprise_id: body.enterprise_id.filter(|e| !e.is_empty()),
        team_name: body.team.unwrap_or_default(),
        user_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(redirect: Option<&str>) -> SlackApp {
        SlackApp {
            client_id: "123.456".into(),
            client_secret: "shh".to_owned().into(),
            redirect_uri: redirect.map(Into::into),
            scopes: "chat:write,app_mentions:read".into(),
        }
    }

    #[test]
    fn the_authorize_url_names_the_app_scopes_state_and_redirect() {
        let url = authorize_url(
            "https://slack.com/api",
            &app(Some("https://crewmesh.example/oauth/slack/callback")),
            "st4te",
        )
        .unwrap();
        assert_eq!(
            url,
            "https://slack.com/oauth/v2/authorize?client_id=123.456&scope=chat%3Awrite%2Capp_mentions%3Aread\
             &state=st4te&redirect_uri=https%3A%2F%2Fcrewmesh.example%2Foauth%2Fslack%2Fcallback"
        );
        let local = authorize_url("http://127.0.0.1:9/", &app(None), "s").unwrap();
        assert!(local.starts_with("http://127.0.0.1:9/oauth/v2/authorize?client_id="));
        assert!(!local.contains("redirect_uri"));
    }
}
