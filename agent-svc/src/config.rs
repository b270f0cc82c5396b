//! agent-svc's own settings.

use std::{sync::Arc, time::Duration};

use keyring::Keyring;
use mesh_kit::{
    config::{secret_var, var},
    service::ServiceConfig,
};
use secrecy::SecretString;

/// Slack's Web API; tests and staging point `SLACK_API_BASE` at a local server.
pub const DEFAULT_SLACK_API_BASE: &str = "https://slack.com/api";

/// Meta's Graph API with its version; `WHATSAPP_API_BASE` overrides it.
pub const DEFAULT_WHATSAPP_API_BASE: &str = "https://graph.facebook.com/v21.0";

/// What the bot needs to answer in channels and DMs, read files and name users.
pub const DEFAULT_SLACK_SCOPES: &str =
    "app_mentions:read,channels:history,chat:write,files:read,groups:history,im:history,users:read";

/// How often the budget relay looks for budgets billing-svc has not taken yet.
pub const DEFAULT_BUDGET_RELAY_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub service: ServiceConfig,
    /// billing-svc, for quota checks and budget limits (`CREWMESH_BILLING_URL`).
    pub billing_url: String,
    /// Encrypts channel tokens at rest (`CREWMESH_ENCRYPTION_KEYS`, as for LLM keys).
    pub keyring: Arc<Keyring>,
    /// `SLACK_API_BASE`: `auth.test` proves a bot token's workspace before
    /// it is bound, with or without an OAuth app; installs exchange codes here.
    pub slack_api_base: String,
    /// `WHATSAPP_API_BASE`: a phone_number_id is looked up here with its
    /// token before it is bound.
    pub whatsapp_api_base: String,
    /// None without `SLACK_CLIENT_ID` and `SLACK_CLIENT_SECRET`: installs then
    /// say the Slack app is not configured, and manual bot tokens still work.
    pub slack: Option<SlackApp>,
    /// The budget relay's polling period (tests shorten it).
    pub budget_relay_interval: Duration,
}

/// The platform's Slack app, for OAuth v2 installs (under `SLACK_API_BASE`).
#[derive(Debug, Clone)]
pub struct SlackApp {
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
            slack_api_base: var("SLACK_API_BASE")
                .unwrap_or_else(|| DEFAULT_SLACK_API_BASE.to_owned()),
            whatsapp_api_base: var("WHATSAPP_API_BASE")
                .unwrap_or_else(|| DEFAULT_WHATSAPP_API_BASE.to_owned()),
            slack: SlackApp::from_env(),
            budget_relay_interval: DEFAULT_BUDGET_RELAY_INTERVAL,
        })
    }
}
