//! Channel connections: Slack workspaces and WhatsApp numbers bound to an
//! agent, connected with a token or through Slack's OAuth v2 install.

use aws_lc_rs::rand;
use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{AppendHeaders, Html, IntoResponse, Response},
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
///
/// Ownership is proven, not claimed: Slack's `auth.test` must say the bot
/// token belongs to `external_id` (its bot user id is stored, so the agent
/// never answers itself), and the Graph API must let the token read the
/// `phone_number_id`. Nothing is stored otherwise.
#[utoipa::path(
    post, path = "/api/v1/channels", tag = "channels",
    security(("bearer" = [])),
    request_body = NewChannel,
    responses(
        (status = 201, body = ChannelConnection),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The workspace or number is already connected", body = ErrorBody),
        (status = 422, description = "Invalid input, or ownership not proven: Slack's `auth.test` refused the token (`access_token`) or names another workspace (`external_id`); the Graph API refused the token for the number (`access_token`) or the id is not a phone number (`external_id`)", body = ErrorBody),
        (status = 503, description = "Slack or the Graph API could not be asked; try again", body = ErrorBody),
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

/// Disconnect a channel: the agent stops answering there at once (other
/// gateway replicas stop within their 30-second route cache).
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
    let deleted = state
        .agents
        .clone()
        .delete_channel(auth.call.request(DeleteChannelRequest { id }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    // Webhooks for the workspace or number stop on this replica at once,
    // not when the cached route expires.
    match deleted.channel {
        Some(c) => match ProtoChannel::try_from(c.channel) {
            Ok(channel @ (ProtoChannel::Slack | ProtoChannel::Whatsapp)) => {
                state.routes.evict(channel, &c.external_id);
            }
            Ok(ProtoChannel::Unspecified | ProtoChannel::Api) | Err(_) => {
                tracing::warn!(connection = %c.id, "deleted connection has no channel kind");
            }
        },
        None => tracing::warn!("agent-svc did not return the deleted connection"),
    }
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

/// The cookie binding a Slack install to the browser that started it.
pub const INSTALL_COOKIE: &str = "crewmesh_slack_install";
/// Only the callback needs the cookie back.
const INSTALL_COOKIE_PATH: &str = "/oauth/slack/callback";
/// As long as agent-svc keeps a pending install.
const INSTALL_COOKIE_MAX_AGE_SECS: i64 = 15 * 60;

/// 256 random bits, hex: what the installing browser holds.
fn browser_binding() -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `Set-Cookie` for the binding: HttpOnly (no script reads it), Secure,
/// SameSite=Lax (sent on Slack's top-level redirect back, not on
/// cross-site subrequests), and gone when the install expires.
fn install_cookie(value: &str, max_age_secs: i64) -> String {
    format!(
        "{INSTALL_COOKIE}={value}; Max-Age={max_age_secs}; Path={INSTALL_COOKIE_PATH}; \
         HttpOnly; Secure; SameSite=Lax"
    )
}

/// The binding the browser brought back, if any.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// Start installing the platform's Slack app into a workspace for an agent.
///
/// The answer sets a cookie (`crewmesh_slack_install`: HttpOnly, Secure,
/// SameSite=Lax, path `/oauth/slack/callback`, 15 minutes, like the install
/// itself) that binds the install to this browser: the callback refuses to
/// finish it without that cookie, so an authorize link forwarded to someone
/// else cannot attach their workspace to this tenant. Call it from the
/// browser that will visit `authorize_url`, with credentials (a same-site
/// portal, or `credentials: "include"`). A newer install started in the
/// same browser replaces the cookie of an older one.
#[utoipa::path(
    post, path = "/api/v1/channels/slack/install", tag = "channels",
    security(("bearer" = [])),
    request_body = NewSlackInstall,
    responses(
        (status = 200, body = SlackInstall, headers(
            ("set-cookie" = String, description = "`crewmesh_slack_install=…; Max-Age=900; Path=/oauth/slack/callback; HttpOnly; Secure; SameSite=Lax`: the browser binding the callback requires"),
        )),
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
) -> Result<
    (
        AppendHeaders<[(header::HeaderName, String); 1]>,
        Json<SlackInstall>,
    ),
    ApiError,
> {
    auth.require(ADMINS)?;
    let binding = browser_binding().map_err(|_| {
        auth.error(&ErrorCode::Internal.status("the system random generator failed"))
    })?;
    let begun = state
        .agents
        .clone()
        .begin_slack_install(auth.call.request(BeginSlackInstallRequest {
            tenant_id: body.tenant_id.unwrap_or_default(),
            agent_id: body.agent_id,
            browser_binding: binding.clone(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    // The cookie ends with the install it binds.
    let max_age = begun
        .expires_at
        .as_ref()
        .map(|at| at.seconds - chrono::Utc::now().timestamp())
        .unwrap_or(INSTALL_COOKIE_MAX_AGE_SECS)
        .clamp(0, INSTALL_COOKIE_MAX_AGE_SECS);
    Ok((
        AppendHeaders([(header::SET_COOKIE, install_cookie(&binding, max_age))]),
        Json(SlackInstall {
            authorize_url: begun.authorize_url,
            expires_at: rfc3339(begun.expires_at),
        }),
    ))
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
///
/// The browser must bring back the `crewmesh_slack_install` cookie that
/// `POST /api/v1/channels/slack/install` set for this install; without it
/// (another browser, or after 15 minutes) the install is refused before
/// Slack is asked for the token, and stays open for the browser that holds
/// the cookie.
#[utoipa::path(
    get, path = "/oauth/slack/callback", tag = "channels",
    params(
        SlackCallback,
        ("crewmesh_slack_install" = Option<String>, Cookie, description = "The browser binding set when the install started"),
    ),
    responses(
        (status = 200, description = "Installed; the binding cookie is cleared", content_type = "text/html", body = String),
        (status = 400, description = "Cancelled at Slack", content_type = "text/html", body = String),
        (status = 403, description = "The install was started in another browser, or its cookie expired", content_type = "text/html", body = String),
        (status = 409, description = "The workspace is another tenant's", content_type = "text/html", body = String),
        (status = 422, description = "Missing, unknown, used or expired code or state", content_type = "text/html", body = String),
        (status = 503, description = "Slack is unreachable", content_type = "text/html", body = String),
    )
)]
pub async fn slack_callback(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    Query(query): Query<SlackCallback>,
) -> Response {
    if let Some(error) = query.error {
        return page(
            StatusCode::BAD_REQUEST,
            "Slack was not connected",
            &format!(
                "The installation was cancelled at Slack ({error}). Start it again from the portal when ready."
            ),
        )
        .into_response();
    }
    let (Some(code), Some(oauth_state)) = (query.code, query.state) else {
        return failure(&ApiError::new(
            ErrorCode::InvalidArgument,
            "the code and state query parameters are required; start the install from the portal",
            &meta.request_id,
        ))
        .into_response();
    };
    let call = match meta.as_gateway(&state.signer) {
        Ok(call) => call,
        Err(e) => return failure(&e).into_response(),
    };
    // No cookie is an empty binding, which matches no install.
    let browser_binding = cookie(&headers, INSTALL_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let completed = state
        .agents
        .clone()
        .complete_slack_install(call.request(CompleteSlackInstallRequest {
            code,
            state: oauth_state,
            browser_binding,
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
            let cleared = HeaderValue::from_str(&install_cookie("", 0));
            let mut response = page(
                StatusCode::OK,
                "Slack connected",
                &format!(
                    "The agent now answers in the {workspace} workspace. You can close this tab."
                ),
            )
            .into_response();
            if let Ok(cleared) = cleared {
                response.headers_mut().append(header::SET_COOKIE, cleared);
            }
            response
        }
        Err(status) => failure(&meta.error(&status)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_cookie_is_http_only_secure_lax_and_scoped_to_the_callback() {
        let binding = browser_binding().unwrap();
        assert_eq!(binding.len(), 64);
        assert_ne!(binding, browser_binding().unwrap());
        let set = install_cookie(&binding, 900);
        assert!(set.starts_with(&format!("crewmesh_slack_install={binding}; ")));
        for attribute in [
            "Max-Age=900",
            "Path=/oauth/slack/callback",
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
        ] {
            assert!(
                set.split("; ").any(|a| a == attribute),
                "{attribute}: {set}"
            );
        }
    }

    #[test]
    fn the_binding_is_read_from_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("crewmesh_slack_install=abc; c=3"),
        );
        assert_eq!(cookie(&headers, INSTALL_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "crewmesh"), None);
        assert_eq!(cookie(&HeaderMap::new(), INSTALL_COOKIE), None);
    }
}
