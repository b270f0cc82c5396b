//! Slack OAuth v2: the authorize URL and the `oauth.v2.access` code exchange.
//!
//! <https://api.slack.com/authentication/oauth-v2>: Slack answers HTTP 200
//! with `"ok": false` and an error code on failure; the app authenticates
//! with HTTP Basic (client id and secret), which keeps the secret out of the
//! form body.

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::SlackApp;

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
    #[error("Slack could not be reached: {0}")]
    Unreachable(#[source] reqwest::Error),
    #[error("Slack answered unexpectedly: {0}")]
    Unexpected(String),
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
pub fn authorize_url(app: &SlackApp, state: &str) -> Result<String, SlackError> {
    let mut url = Url::parse(&authorize_endpoint(&app.api_base))
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
    app: &SlackApp,
    code: &str,
) -> Result<Installation, SlackError> {
    let endpoint = format!("{}/oauth.v2.access", app.api_base.trim_end_matches('/'));
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
    let body: AccessResponse = response
        .json()
        .await
        .map_err(|e| SlackError::Unexpected(format!("unreadable oauth.v2.access body: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn app(api_base: &str, redirect: Option<&str>) -> SlackApp {
        SlackApp {
            api_base: api_base.into(),
            client_id: "123.456".into(),
            client_secret: "shh".to_owned().into(),
            redirect_uri: redirect.map(Into::into),
            scopes: "chat:write,app_mentions:read".into(),
        }
    }

    #[test]
    fn the_authorize_url_names_the_app_scopes_state_and_redirect() {
        let url = authorize_url(
            &app(
                "https://slack.com/api",
                Some("https://crewmesh.example/oauth/slack/callback"),
            ),
            "st4te",
        )
        .unwrap();
        assert_eq!(
            url,
            "https://slack.com/oauth/v2/authorize?client_id=123.456&scope=chat%3Awrite%2Capp_mentions%3Aread\
             &state=st4te&redirect_uri=https%3A%2F%2Fcrewmesh.example%2Foauth%2Fslack%2Fcallback"
        );
        let local = authorize_url(&app("http://127.0.0.1:9/", None), "s").unwrap();
        assert!(local.starts_with("http://127.0.0.1:9/oauth/v2/authorize?client_id="));
        assert!(!local.contains("redirect_uri"));
    }
}
