//! Tenant media (M1): upload a file through a presigned PUT, read its
//! metadata, and hand out presigned GETs. The bytes never pass through the
//! edge; storage checks the signatures.
//!
//! Every role of the tenant may do all three: operators work conversations
//! beside the agents and attach and open media there, so media is not an
//! admin-only resource. Another tenant's media is a 404 to everyone but
//! platform admins.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use crewmesh_proto::media::v1::{
    CreateUploadRequest, GetDownloadUrlRequest, GetMediaRequest, MediaObject as ProtoMedia,
};
use mesh_kit::Role;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{api_keys::TenantQuery, invalid, non_empty, rfc3339};
use crate::{
    auth::Authenticated,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    startup::AppState,
};

/// The roles that work with a tenant's media: all of them.
const MEDIA_USERS: &[Role] = &Role::ALL;

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewUpload {
    /// Images, PDF, text, CSV, audio, video and office documents; parameters
    /// such as `charset` are dropped.
    #[schema(example = "image/png")]
    pub content_type: String,
    /// Exactly the number of bytes that will be PUT (25 MiB at most by default).
    #[schema(example = 48213)]
    pub size_bytes: i64,
    /// Shown to people; no path separators.
    #[schema(example = "invoice-march.png")]
    pub filename: Option<String>,
    /// Platform admins name the tenant; everyone else uploads to their own.
    pub tenant_id: Option<String>,
}

/// A stored (or still expected) file. The storage key stays internal.
#[derive(Debug, Serialize, ToSchema)]
pub struct Media {
    pub id: String,
    pub tenant_id: String,
    #[schema(example = "image/png")]
    pub content_type: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the bytes, for media ingested from channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `upload`, `whatsapp` or `slack`.
    #[schema(example = "upload")]
    pub source: String,
    /// `pending` until the uploaded bytes are found in storage, then `ready`.
    #[schema(example = "ready")]
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    pub created_at: Option<String>,
}

impl From<ProtoMedia> for Media {
    fn from(m: ProtoMedia) -> Media {
        Media {
            id: m.id,
            tenant_id: m.tenant_id,
            content_type: m.content_type,
            size_bytes: m.size_bytes,
            sha256: non_empty(m.sha256),
            source: m.source,
            status: m.status,
            filename: non_empty(m.filename),
            created_at: rfc3339(m.created_at),
        }
    }
}

/// The headers the upload URL is signed with: storage refuses a PUT whose
/// headers differ in any way, so send exactly these.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadHeaders {
    /// The normalized type, which may differ from the one requested.
    #[serde(rename = "Content-Type")]
    #[schema(example = "image/png")]
    pub content_type: String,
    #[serde(rename = "Content-Length")]
    #[schema(example = "48213")]
    pub content_length: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Upload {
    /// Pending until the bytes are PUT.
    pub media: Media,
    /// Send the file's bytes here, before `expires_at`, with `upload_method`
    /// and exactly `upload_headers`, and no `Authorization` header.
    pub upload_url: String,
    #[schema(example = "PUT")]
    pub upload_method: String,
    pub upload_headers: UploadHeaders,
    pub expires_at: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DownloadQuery {
    /// Seconds the URL stays valid, 1 to 604800 (7 days); default 3600.
    #[param(value_type = Option<i64>, example = 3600)]
    pub expires_in: Option<String>,
    /// Platform admins may name the tenant; others may omit it (their own).
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DownloadUrl {
    /// A presigned GET; anyone holding it can read the file until `expires_at`.
    pub url: String,
    pub expires_at: Option<String>,
}

/// Start an upload: records the file as pending and returns a presigned PUT
/// valid for 15 minutes. Any role of the tenant may upload.
#[utoipa::path(
    post, path = "/api/v1/media/uploads", tag = "media",
    security(("bearer" = [])),
    request_body = NewUpload,
    responses(
        (status = 201, body = Upload),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The caller is not a tenant's user", body = ErrorBody),
        (status = 404, description = "Another tenant was named", body = ErrorBody),
        (status = 422, description = "`field` names `content_type`, `size_bytes`, `filename` or `tenant_id`", body = ErrorBody),
    )
)]
pub async fn create_upload(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewUpload>,
) -> Result<(StatusCode, Json<Upload>), ApiError> {
    auth.require(MEDIA_USERS)?;
    let created = state
        .media
        .clone()
        .create_upload(auth.call.request(CreateUploadRequest {
            tenant_id: body.tenant_id.unwrap_or_default(),
            content_type: body.content_type,
            size_bytes: body.size_bytes,
            filename: body.filename.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let media = created.media.ok_or_else(|| auth.missing("media"))?;
    // From what was signed, not from the request: the service normalizes the type.
    let upload_headers = UploadHeaders {
        content_type: media.content_type.clone(),
        content_length: media.size_bytes.to_string(),
    };
    Ok((
        StatusCode::CREATED,
        Json(Upload {
            media: media.into(),
            upload_url: created.upload_url,
            upload_method: "PUT".to_owned(),
            upload_headers,
            expires_at: rfc3339(created.expires_at),
        }),
    ))
}

/// A file's metadata. Any role of the tenant may read it.
#[utoipa::path(
    get, path = "/api/v1/media/{id}", tag = "media",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Media id"), TenantQuery),
    responses(
        (status = 200, body = Media),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The caller is not a tenant's user", body = ErrorBody),
        (status = 404, description = "Absent, or another tenant's", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn get_media(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<Media>, ApiError> {
    auth.require(MEDIA_USERS)?;
    let found = state
        .media
        .clone()
        .get_media(auth.call.request(GetMediaRequest {
            id,
            tenant_id: query.tenant_id.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let media = found.media.ok_or_else(|| auth.missing("media"))?;
    Ok(Json(media.into()))
}

/// A presigned download URL for an uploaded file (one hour unless
/// `expires_in` says otherwise). Any role of the tenant may get one.
#[utoipa::path(
    get, path = "/api/v1/media/{id}/url", tag = "media",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Media id"), DownloadQuery),
    responses(
        (status = 200, body = DownloadUrl),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The caller is not a tenant's user", body = ErrorBody),
        (status = 404, description = "Absent, or another tenant's", body = ErrorBody),
        (status = 409, description = "The upload has not completed: PUT the file first", body = ErrorBody),
        (status = 422, description = "`field` names `expires_in`, `id` or `tenant_id`", body = ErrorBody),
        (status = 503, description = "Object storage is unreachable", body = ErrorBody),
    )
)]
pub async fn get_download_url(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    Query(query): Query<DownloadQuery>,
) -> Result<Json<DownloadUrl>, ApiError> {
    auth.require(MEDIA_USERS)?;
    // Parsed here rather than by `Query`, whose rejection is a plain-text 400.
    let expires_in_seconds = match query.expires_in {
        None => 0,
        Some(raw) => raw.trim().parse::<i64>().map_err(|_| {
            invalid(
                "expires_in",
                "must be a whole number of seconds",
                &auth.meta.request_id,
            )
        })?,
    };
    let download = state
        .media
        .clone()
        .get_download_url(auth.call.request(GetDownloadUrlRequest {
            id,
            expires_in_seconds,
            tenant_id: query.tenant_id.unwrap_or_default(),
        }))
        .await
        .map_err(|s| {
            auth.error(&s)
                .renaming_field("expires_in_seconds", "expires_in")
        })?
        .into_inner();
    Ok(Json(DownloadUrl {
        url: download.url,
        expires_at: rfc3339(download.expires_at),
    }))
}
