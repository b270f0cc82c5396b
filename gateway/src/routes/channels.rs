//! Channel connections: Slack workspaces and WhatsApp numbers bound to an
//! agent, connected with a token or through Slack's OAuth v2 install.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::Html,
};
use crewmesh_proto::agent::v1::{
    BeginSlackInstallRequest, Channel as ProtoChannel, ChannelConnection as ProtoConnection,
    CompleteSlackInstallRequest, CreateChannelRequest, DeleteChannelRequest, ListChannelsRequest,
};
use mesh_kit::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ADMINS, api_keys::TenantQuery, non_empty, rfc3339};
use crate::{
    auth::{Authenticated, RequestMeta},
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    startup::AppState,
};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Slack,
    Whatsapp,
}

impl ChannelKind {
    fn proto(self) -> ProtoChannel {
        match self {
            ChannelKind::Slack => ProtoChannel::Slack,
            ChannelKind::Whatsapp => ProtoChannel::Whatsapp,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewChannel {
    /// The agent that answers on this channel.
    pub agent_id: String,
    pub channel: ChannelKind,
    /// Slack team id (`T…`) or WhatsApp `phone_number_id`.
    #[schema(example = "T0123ABCD")]
    pub external_id: String,
    /// Slack bot token (`xoxb-…`) or WhatsApp Cloud API access token. Stored
    /// encrypted; never returned.
    pub access_token: String,
    /// Slack only: the channel id to post to when no conversation names one.
    pub default_channel: Option<String>,
    /// WhatsApp only: an approved message template a reply is sent as once
    /// Meta's 24-hour customer service window has closed (more than 24 hours
    /// after the customer's last message). Without one, such a reply is not
    /// sent and goes to the dead-letter list with the reason
    /// `outside_customer_service_window`. The template must take exactly one
    /// body variable (`{{1}}`), which receives the reply text cut to 1,024
    /// characters. Lower-case letters, digits and underscores, as Meta names
    /// templates; give `reply_template_language` with it.
    #[schema(example = "order_update", pattern = "^[a-z0-9_]{1,512}$")]
    pub reply_template_name: Option<String>,
    /// The template's language code, e.g. `en_US`; required with
    /// `reply_template_name`, refused without it.
    #[schema(example = "en_US", pattern = "^[a-z]{2,3}(_[A-Z]{2})?$")]
    pub reply_template_language: Option<String>,
    /// Platform admins name the tenant; customer admins connect their own.
    pub tenant_id: Option<String>,
}

/// A connection, redacted: the token's last four characters only.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelConnection {
    pub id: String,
    pub tenant_id: String,
    pub agent_id: String,
    pub channel: ChannelKind,
    pub external_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_channel: Option<String>,
    #[schema(example = "x7Qa")]
    pub token_hint: String,
    /// The Slack workspace's name, for OAuth installs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bot_user_id: Option<String>,
    /// WhatsApp only: the template replies are sent as outside the 24-hour
    /// customer service window (its one body variable, `{{1}}`, receives the
    /// reply text cut to 1,024 characters); absent when none is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "order_update")]
    pub reply_template_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "en_US")]
    pub reply_template_language: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<ProtoConnection> for ChannelConnection {
    fn from(c: ProtoConnection) -> ChannelConnection {
        let channel = match ProtoChannel::try_from(c.channel) {
            Ok(ProtoChannel::Whatsapp) => ChannelKind::Whatsapp,
            _ => ChannelKind::Slack,
        };
        ChannelConnection {
            id: c.id,
            tenant_id: c.tenant_id,
            agent_id: c.agent_id,
            channel,
            external_id: c.external_id,
            default_channel: non_empty(c.default_channel),
            token_hint: c.token_hint,
            display_name: non_empty(c.display_name),
            bot_user_id: non_empty(c.bot_user_id),
            reply_template_name: non_empty(c.reply_template_name),
            reply_template_language: non_empty(c.reply_template_language),
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    pub channels: Vec<ChannelConnection>,
}

/// Connect a Slack workspace or a WhatsApp business number to an agent.
#[utoipa::path(
    post, path = "/api/v1/channels", tag = "channels",
    security(("bearer" = [])),
    request_body = NewChannel,
    responses(
        (status = 201, body = ChannelConnection),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The workspace or number is already connected", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn create_channel(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewChannel>,
) -> Result<(StatusCode, Json<ChannelConnection>), ApiError> {
    auth.require(ADMINS)?;
    let created = state
        .agents
        .clone()
        .create_channel(auth.call.request(CreateChannelRequest {
            tenant_id: body.tenant_id.unwrap_or_default(),
            agent_id: body.agent_id,
            channel: body.channel.proto().into(),
            external_id: body.external_id,
            access_token: body.access_token,
            default_channel: body.default_channel.unwrap_or_default(),
            reply_template_name: body.reply_template_name.unwrap_or_default(),
            reply_template_language: body.reply_template_language.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let channel = created.channel.ok_or_else(|| auth.missing("channel"))?;
    Ok((StatusCode::CREATED, Json(channel.into())))
}

/// A tenant's channel connections, redacted.
#[utoipa::path(
    get, path = "/api/v1/channels", tag = "channels",
    security(("bearer" = [])),
    params(TenantQuery),
    responses(
        (status = 200, body = ChannelList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn list_channels(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<TenantQuery>,
) -> Result<Json<ChannelList>, ApiError> {
    auth.require(ADMINS)?;
    let listed = state
        .agents
        .clone()
        .list_channels(auth.call.request(ListChannelsRequest {
            tenant_id: query.tenant_id.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(ChannelList {
        channels: listed.channels.into_iter().map(Into::into).collect(),
    }))
}

/// Disconnect a channel: the agent stops answering there at once.
#[utoipa::path(
    delete, path = "/api/v1/channels/{id}", tag = "channels",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel connection id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "Absent, or another tenant's (nothing is deleted)", body = ErrorBody),
    )
)]
pub async fn delete_channel(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(ADMINS)?;
    state
        .agents
        .clone()
        .delete_channel(auth.call.request(DeleteChannelRequest { id }))
        .await
        .map_err(|s| auth.error(&s))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewSlackInstall {
    pub agent_id: String,
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlackInstall {
    /// Send the admin's browser here; Slack returns to `/oauth/slack/callback`.
    pub authorize_url: String,
    /// The install must finish before this time.
    pub expires_at: Option<String>,
}

/// Start installing the platform's Slack app into a workspace for an agent.
#[utoipa::path(
    post, path = "/api/v1/channels/slack/install", tag = "channels",
    security(("bearer" = [])),
    request_body = NewSlackInstall,
    responses(
        (status = 200, body = SlackInstall),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The Slack app is not configured", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn begin_slack_install(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewSlackInstall>,
) -> Result<Json<SlackInstall>, ApiError> {
    auth.require(ADMINS)?;
    let begun = state
        .agents
        .clone()
        .begin_slack_install(auth.call.request(BeginSlackInstallRequest {
            tenant_id: body.tenant_id.unwrap_or_default(),
            agent_id: body.agent_id,
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(SlackInstall {
        authorize_url: begun.authorize_url,
        expires_at: rfc3339(begun.expires_at),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SlackCallback {
    /// The authorization code; absent when the admin cancelled.
    pub code: Option<String>,
    /// The state issued by `POST /api/v1/channels/slack/install`.
    pub state: Option<String>,
    /// Set by Slack when the admin declined, e.g. `access_denied`.
    pub error: Option<String>,
}

/// Escapes text for an HTML page: workspace names and messages are not ours.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, detail: &str) -> (StatusCode, Html<String>) {
    (
        status,
        Html(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
             <body><h1>{title}</h1><p>{}</p></body></html>",
            escape(detail)
        )),
    )
}

fn failure(error: &ApiError) -> (StatusCode, Html<String>) {
    let status = StatusCode::from_u16(error.code().http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    page(
        status,
        "Slack was not connected",
        &format!("{} (request id {})", error.message(), error.request_id()),
    )
}

/// Slack's OAuth v2 redirect: exchanges the code and stores the installation.
/// A browser lands here, so the answer is a page, not JSON.
#[utoipa::path(
    get, path = "/oauth/slack/callback", tag = "channels",
    params(SlackCallback),
    responses(
        (status = 200, description = "Installed", content_type = "text/html", body = String),
        (status = 400, description = "Cancelled at Slack", content_type = "text/html", body = String),
        (status = 422, description = "Missing, unknown, used or expired code or state", content_type = "text/html", body = String),
        (status = 503, description = "Slack is unreachable", content_type = "text/html", body = String),
    )
)]
pub async fn slack_callback(
    State(state): State<AppState>,
    meta: RequestMeta,
    Query(query): Query<SlackCallback>,
) -> (StatusCode, Html<String>) {
    if let Some(error) = query.error {
        return page(
            StatusCode::BAD_REQUEST,
            "Slack was not connected",
            &format!(
                "The installation was cancelled at Slack ({error}). Start it again from the portal when ready."
            ),
        );
    }
    let (Some(code), Some(oauth_state)) = (query.code, query.state) else {
        return failure(&ApiError::new(
            ErrorCode::InvalidArgument,
            "the code and state query parameters are required; start the install from the portal",
            &meta.request_id,
        ));
    };
    let call = match meta.as_gateway(&state.signer) {
        Ok(call) => call,
        Err(e) => return failure(&e),
    };
    let completed = state
        .agents
        .clone()
        .complete_slack_install(call.request(CompleteSlackInstallRequest {
            code,
            state: oauth_state,
        }))
        .await;
    match completed {
        Ok(response) => {
            let workspace = response
                .into_inner()
                .channel
                .map(|c| {
                    if c.display_name.is_empty() {
                        c.external_id
                    } else {
                        c.display_name
                    }
                })
                .unwrap_or_default();
            page(
                StatusCode::OK,
                "Slack connected",
                &format!(
                    "The agent now answers in the {workspace} workspace. You can close this tab."
                ),
            )
        }
        Err(status) => failure(&meta.error(&status)),
    }
}
