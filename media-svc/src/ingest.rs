//! Ingest from channels (M2): fetch a WhatsApp or Slack attachment with the
//! channel's credentials and store it under the tenant's prefix.
//!
//! The body is streamed to a temporary file (hashed and counted as it
//! arrives, cut off at the size limit), uploaded from that file, and only
//! then recorded; a failed record removes the object. So a large file is
//! never held in memory, and there is never a row without its bytes.

use std::time::Duration;

use aws_lc_rs::digest;
use mesh_kit::{ErrorCode, db::begin_tenant, db::violated_constraint, error::invalid_field};
use reqwest::{StatusCode, Url, header};
use serde::Deserialize;
use sqlx::PgPool;
use tokio::io::AsyncWriteExt as _;
use tonic::Status;
use uuid::Uuid;

use crate::{
    config::{MediaConfig, Origin},
    content_type::{self, ContentTypeError, MediaType},
    objects::{self, MediaObject, NewObject, Source, Status as ObjectStatus},
    presign::hex,
    storage::{ObjectStore, StorageError},
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Between two reads of a download: a stalled peer fails, a slow one does not.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
const METADATA_TIMEOUT: Duration = Duration::from_secs(15);
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// A Graph media description is a few hundred bytes.
const MAX_METADATA_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    WhatsApp,
    Slack,
}

impl Channel {
    pub fn parse(name: &str) -> Option<Channel> {
        match name {
            "whatsapp" => Some(Channel::WhatsApp),
            "slack" => Some(Channel::Slack),
            _ => None,
        }
    }

    const fn source(self) -> Source {
        match self {
            Channel::WhatsApp => Source::WhatsApp,
            Channel::Slack => Source::Slack,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Channel::WhatsApp => "WhatsApp",
            Channel::Slack => "Slack",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("must be \"whatsapp\" or \"slack\"")]
    InvalidChannel,
    #[error("must be a WhatsApp media id (letters, digits, '_' or '-', at most 128)")]
    InvalidMediaId,
    #[error("must be a Slack file URL on {0}")]
    NotSlackFile(String),
    #[error("is required")]
    MissingToken,
    #[error("is required (the channel's message id makes ingest idempotent)")]
    MissingMessageId,
    #[error("{0}")]
    ExpectedType(ContentTypeError),
    #[error("the {channel} media is {0}", channel = .1.name())]
    ContentType(ContentTypeError, Channel),
    #[error("the {channel} media is {actual}, not the expected {expected}", channel = .channel.name())]
    TypeMismatch {
        channel: Channel,
        expected: &'static str,
        actual: &'static str,
    },
    #[error("the {channel} media is larger than the limit of {max} bytes", channel = .channel.name())]
    TooLarge { channel: Channel, max: u64 },
    #[error("{channel} refused the access token (HTTP {status}): check the channel connection's credentials", channel = .channel.name())]
    TokenRefused { channel: Channel, status: u16 },
    #[error("{channel} redirected the download instead of serving the file: the token was not accepted (a Slack bot needs the files:read scope)", channel = .0.name())]
    Redirected(Channel),
    #[error("{channel} has no such media (WhatsApp media ids expire after 7 days)", channel = .0.name())]
    UpstreamNotFound(Channel),
    #[error("{channel} is unavailable: {detail}", channel = .channel.name())]
    Upstream { channel: Channel, detail: String },
    #[error("staging the download: {0}")]
    Staging(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<IngestError> for Status {
    fn from(err: IngestError) -> Status {
        match err {
            IngestError::InvalidChannel => invalid_field("channel", err.to_string()),
            IngestError::InvalidMediaId | IngestError::NotSlackFile(_) => {
                invalid_field("reference", err.to_string())
            }
            IngestError::MissingToken => invalid_field("access_token", err.to_string()),
            IngestError::MissingMessageId => invalid_field("message_id", err.to_string()),
            IngestError::ExpectedType(_) => invalid_field("expected_mime_type", err.to_string()),
            IngestError::ContentType(..) | IngestError::TypeMismatch { .. } => {
                invalid_field("content_type", err.to_string())
            }
            IngestError::TooLarge { .. } => invalid_field("size_bytes", err.to_string()),
            IngestError::TokenRefused { .. } | IngestError::Redirected(_) => {
                ErrorCode::FailedPrecondition.status(err.to_string())
            }
            IngestError::UpstreamNotFound(_) => ErrorCode::NotFound.status(err.to_string()),
            IngestError::Upstream { .. } => ErrorCode::Unavailable.status(err.to_string()),
            IngestError::Staging(ref e) => mesh_kit::error::internal("staging media", e),
            IngestError::Storage(e) => e.into(),
            IngestError::Database(ref e) => mesh_kit::error::internal("media query failed", e),
        }
    }
}

/// What the caller asks to ingest.
pub struct IngestRequest<'a> {
    pub tenant: Uuid,
    pub channel: &'a str,
    /// WhatsApp media id, or the Slack file's private URL.
    pub reference: &'a str,
    pub access_token: &'a str,
    pub expected_mime_type: &'a str,
    pub message_id: &'a str,
}

impl std::fmt::Debug for IngestRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestRequest")
            .field("tenant", &self.tenant)
            .field("channel", &self.channel)
            .field("reference", &self.reference)
            .field("access_token", &"[REDACTED]")
            .field("expected_mime_type", &self.expected_mime_type)
            .field("message_id", &self.message_id)
            .finish()
    }
}

/// The Graph API's description of a media id.
#[derive(Debug, Deserialize)]
struct GraphMedia {
    url: String,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    file_size: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Ingester {
    /// WhatsApp's CDN may redirect; reqwest drops the token on a cross-host hop.
    whatsapp_http: reqwest::Client,
    /// Never follows redirects: Slack answers a refused token with one, to a login page.
    slack_http: reqwest::Client,
    whatsapp_api_base: String,
    slack_files: Origin,
    max_bytes: u64,
}

impl Ingester {
    pub fn new(config: &MediaConfig) -> anyhow::Result<Ingester> {
        let client = |redirects| {
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(READ_TIMEOUT)
                .redirect(redirects)
                .build()
        };
        Ok(Ingester {
            whatsapp_http: client(reqwest::redirect::Policy::limited(3))?,
            slack_http: client(reqwest::redirect::Policy::none())?,
            whatsapp_api_base: config.whatsapp_api_base.trim_end_matches('/').to_owned(),
            slack_files: config.slack_files.clone(),
            max_bytes: config.max_bytes,
        })
    }

    pub async fn ingest(
        &self,
        db: &PgPool,
        store: &ObjectStore,
        request: &IngestRequest<'_>,
    ) -> Result<MediaObject, IngestError> {
        let channel = Channel::parse(request.channel).ok_or(IngestError::InvalidChannel)?;
        if request.access_token.trim().is_empty() {
            return Err(IngestError::MissingToken);
        }
        let message_id = request.message_id.trim();
        if message_id.is_empty() {
            return Err(IngestError::MissingMessageId);
        }
        let expected = match request.expected_mime_type.trim() {
            "" => None,
            raw => Some(content_type::parse(raw).map_err(IngestError::ExpectedType)?),
        };
        let reference = request.reference.trim();
        // Validated before anything is fetched: the reference decides where the token goes.
        let slack_url = match channel {
            Channel::WhatsApp => {
                validate_media_id(reference)?;
                None
            }
            Channel::Slack => Some(self.slack_url(reference)?),
        };

        let mut tx = begin_tenant(db, request.tenant).await?;
        let earlier = objects::by_message(&mut tx, channel.source(), message_id).await?;
        tx.commit().await?;
        if let Some(media) = earlier {
            return Ok(media);
        }

        let fetched = match slack_url {
            Some(url) => {
                self.download(channel, &self.slack_http, url, request, None, expected)
                    .await?
            }
            None => {
                let media = self.describe_whatsapp_media(reference, request).await?;
                let declared = media
                    .mime_type
                    .as_deref()
                    .map(|raw| checked_type(channel, raw, expected))
                    .transpose()?;
                if media.file_size.is_some_and(|size| size > self.max_bytes) {
                    return Err(IngestError::TooLarge {
                        channel,
                        max: self.max_bytes,
                    });
                }
                let url = Url::parse(&media.url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| IngestError::Upstream {
                        channel,
                        detail: "the media description has no valid download URL".into(),
                    })?;
                self.download(
                    channel,
                    &self.whatsapp_http,
                    url,
                    request,
                    declared,
                    expected,
                )
                .await?
            }
        };
        self.store(db, store, request.tenant, channel, message_id, fetched)
            .await
    }

    fn slack_url(&self, reference: &str) -> Result<Url, IngestError> {
        Url::parse(reference)
            .ok()
            .filter(|url| self.slack_files.contains(url) && url.username().is_empty())
            .ok_or_else(|| IngestError::NotSlackFile(self.slack_files.url()))
    }

    async fn describe_whatsapp_media(
        &self,
        media_id: &str,
        request: &IngestRequest<'_>,
    ) -> Result<GraphMedia, IngestError> {
        let channel = Channel::WhatsApp;
        let response = self
            .whatsapp_http
            .get(format!("{}/{media_id}", self.whatsapp_api_base))
            .bearer_auth(request.access_token.trim())
            .timeout(METADATA_TIMEOUT)
            .send()
            .await
            .map_err(|e| unreachable(channel, e))?;
        check_status(channel, response.status())?;
        let body = read_bounded(channel, response, MAX_METADATA_BYTES).await?;
        serde_json::from_slice(&body).map_err(|e| IngestError::Upstream {
            channel,
            detail: format!("unexpected media description: {e}"),
        })
    }

    /// Streams `url` into a temporary file, enforcing type and size as it goes.
    async fn download(
        &self,
        channel: Channel,
        http: &reqwest::Client,
        url: Url,
        request: &IngestRequest<'_>,
        declared: Option<MediaType>,
        expected: Option<MediaType>,
    ) -> Result<Fetched, IngestError> {
        let mut response = http
            .get(url)
            .bearer_auth(request.access_token.trim())
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|e| unreachable(channel, e))?;
        check_status(channel, response.status())?;
        let media_type = match declared {
            Some(media_type) => media_type,
            None => {
                let raw = response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                checked_type(channel, raw, expected)?
            }
        };
        let too_large = IngestError::TooLarge {
            channel,
            max: self.max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes)
        {
            return Err(too_large);
        }

        // Removed when dropped, on every path out of here and out of `store`.
        let (file, path) = tempfile::Builder::new()
            .prefix("crewmesh-media-")
            .tempfile()?
            .into_parts();
        let mut file = tokio::fs::File::from_std(file);
        let mut hash = digest::Context::new(&digest::SHA256);
        let mut size: u64 = 0;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unreachable(channel, e))?
        {
            size += chunk.len() as u64;
            if size > self.max_bytes {
                return Err(too_large);
            }
            hash.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        Ok(Fetched {
            path,
            media_type,
            size,
            sha256: hex(hash.finish().as_ref()),
        })
    }

    async fn store(
        &self,
        db: &PgPool,
        store: &ObjectStore,
        tenant: Uuid,
        channel: Channel,
        message_id: &str,
        fetched: Fetched,
    ) -> Result<MediaObject, IngestError> {
        let id = Uuid::now_v7();
        let key = objects::object_key(tenant, id, fetched.media_type.extension);
        store
            .put_file(
                &key,
                &fetched.path,
                fetched.media_type.essence,
                fetched.size,
            )
            .await?;
        drop(fetched.path);

        let new = NewObject {
            id,
            tenant_id: tenant,
            object_key: &key,
            content_type: fetched.media_type.essence,
            size_bytes: i64::try_from(fetched.size).unwrap_or(i64::MAX),
            sha256: Some(&fetched.sha256),
            source: channel.source(),
            status: ObjectStatus::Ready,
            filename: "",
            message_id: Some(message_id),
        };
        let recorded = async {
            let mut tx = begin_tenant(db, tenant).await?;
            let media = objects::insert(&mut tx, &new).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(media)
        }
        .await;
        match recorded {
            Ok(media) => Ok(media),
            Err(e) => {
                // No row, so no object either: take back what was just stored.
                if let Err(cleanup) = store.delete(&key).await {
                    tracing::error!(%key, error = %cleanup, "could not remove an unrecorded object");
                }
                if violated_constraint(&e) != Some(objects::MESSAGE_KEY) {
                    return Err(e.into());
                }
                // A concurrent ingest of the same message won the race.
                let mut tx = begin_tenant(db, tenant).await?;
                let earlier = objects::by_message(&mut tx, channel.source(), message_id).await?;
                tx.commit().await?;
                earlier.ok_or(IngestError::Database(e))
            }
        }
    }
}

struct Fetched {
    path: tempfile::TempPath,
    media_type: MediaType,
    size: u64,
    sha256: String,
}

fn validate_media_id(id: &str) -> Result<(), IngestError> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(()).ok_or(IngestError::InvalidMediaId)
}

/// The allowed type `raw` names, which must match `expected` when the caller gave one.
fn checked_type(
    channel: Channel,
    raw: &str,
    expected: Option<MediaType>,
) -> Result<MediaType, IngestError> {
    let actual = content_type::parse(raw).map_err(|e| IngestError::ContentType(e, channel))?;
    match expected {
        Some(expected) if expected != actual => Err(IngestError::TypeMismatch {
            channel,
            expected: expected.essence,
            actual: actual.essence,
        }),
        _ => Ok(actual),
    }
}

fn check_status(channel: Channel, status: StatusCode) -> Result<(), IngestError> {
    match status.as_u16() {
        200..=299 => Ok(()),
        300..=399 => Err(IngestError::Redirected(channel)),
        401 | 403 => Err(IngestError::TokenRefused {
            channel,
            status: status.as_u16(),
        }),
        404 | 410 => Err(IngestError::UpstreamNotFound(channel)),
        _ => Err(IngestError::Upstream {
            channel,
            detail: format!("HTTP {status}"),
        }),
    }
}

/// Transport failures; the URL is dropped, it may carry a CDN signature.
fn unreachable(channel: Channel, err: reqwest::Error) -> IngestError {
    IngestError::Upstream {
        channel,
        detail: mesh_kit::error::DisplayChain(&err.without_url()).to_string(),
    }
}

async fn read_bounded(
    channel: Channel,
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, IngestError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unreachable(channel, e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(IngestError::Upstream {
                channel,
                detail: "the media description is implausibly large".into(),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_cannot_escape_the_graph_path() {
        assert!(validate_media_id("1234567890").is_ok());
        for bad in ["", "../me", "12?fields=x", "1/2", "a b", &"9".repeat(129)] {
            assert!(validate_media_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_expected_type_must_match() {
        let jpeg = content_type::parse("image/jpeg").ok();
        assert!(checked_type(Channel::WhatsApp, "image/jpeg", jpeg).is_ok());
        assert!(matches!(
            checked_type(Channel::WhatsApp, "image/png", jpeg),
            Err(IngestError::TypeMismatch { .. })
        ));
        assert!(matches!(
            checked_type(Channel::Slack, "text/html; charset=utf-8", None),
            Err(IngestError::ContentType(..))
        ));
    }
}
