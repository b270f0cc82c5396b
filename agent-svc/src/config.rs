//! agent-svc's own settings.

use std::sync::Arc;

use keyring::Keyring;
use mesh_kit::{
    config::{secret_var, var},
    service::ServiceConfig,
};
use secrecy::SecretString;

/// Slack's Web API; tests and staging point `SLACK_API_BASE` at a local server.
pub const DEFAULT_SLACK_API_BASE: &str = "https://slack.com/api";

/// What the bot needs to answer in channels and DMs, read files and name users.
pub const DEFAULT_SLACK_SCOPES: &str =
    "app_mentions:read,channels:history,chat:write,files:read,groups:history,im:history,users:read";

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub service: ServiceConfig,
    /// billing-svc, for quota checks and budget limits (`CREWMESH_BILLING_URL`).
    pub billing_url: String,
    /// Encrypts channel tokens at rest (`CREWMESH_ENCRYPTION_KEYS`, as for LLM keys).
    pub keyring: Arc<Keyring>,
    /// None without `SLACK_CLIENT_ID` and `SLACK_CLIENT_SECRET`: installs then
    /// say the Slack app is not configured, and manual bot tokens still work.
    pub slack: Option<SlackApp>,
}

/// The platform's Slack app, for OAuth v2 installs.
#[derive(Debug, Clone)]
pub struct SlackApp {
    /// e.g. `https://slack.com/api`; `oauth.v2.access` is called under it and
    /// the authorize page is derived from it.
    pub api_base: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// `SLACK_REDIRECT_URI`: the gateway's public `/oauth/slack/callback`.
    /// Optional when the app has exactly one redirect URL configured at Slack.
    pub redirect_uri: Option<String>,
    pub scopes: String,
}

impl SlackApp {
    pub fn from_env() -> Option<SlackApp> {
        Some(SlackApp {
            api_base: var("SLACK_API_BASE").unwrap_or_else(|| DEFAULT_SLACK_API_BASE.to_owned()),
            client_id: var("SLACK_CLIENT_ID")?,
            client_secret: secret_var("SLACK_CLIENT_SECRET")?,
            redirect_uri: var("SLACK_REDIRECT_URI"),
            scopes: var("SLACK_SCOPES").unwrap_or_else(|| DEFAULT_SLACK_SCOPES.to_owned()),
        })
    }
}

impl AgentConfig {
    pub fn from_env(service: ServiceConfig) -> anyhow::Result<AgentConfig> {
        let keyring = mesh_kit::secrets::keyring_from_env(service.common.environment)?;
        Ok(AgentConfig {
            service,
            billing_url: var("CREWMESH_BILLING_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50054".to_owned()),
            keyring: Arc::new(keyring),
            slack: SlackApp::from_env(),
        })
    }
}
