//! Presigned access (M1): uploads through a presigned PUT, downloads through
//! a presigned GET, and metadata reads, all within the caller's tenant.

use chrono::{DateTime, Duration, Utc};
use mesh_kit::{
    ErrorCode,
    db::{begin_platform, begin_tenant},
    error::invalid_field,
};
use sqlx::{PgPool, Postgres, Transaction};
use tonic::Status;
use uuid::Uuid;

use crate::{
    content_type::{self, ContentTypeError},
    objects::{self, MediaObject, NewObject, Source, Status as ObjectStatus},
    presign::MAX_EXPIRES_SECS,
    storage::{ObjectStore, StorageError},
};

/// Long enough for a slow mobile upload, short enough that a leaked URL soon dies.
pub const UPLOAD_URL_TTL_SECS: u64 = 15 * 60;
/// The CLI's default and the product's: one hour.
pub const DEFAULT_DOWNLOAD_TTL_SECS: u64 = 3600;
const MAX_FILENAME_CHARS: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("{0}")]
    ContentType(ContentTypeError),
    #[error("must be at least 1 byte")]
    EmptyUpload,
    #[error("{size} bytes is over the limit of {max} bytes")]
    TooLarge { size: i64, max: u64 },
    #[error(
        "must be at most {MAX_FILENAME_CHARS} characters with no path separators or control characters"
    )]
    InvalidFilename,
    #[error("must be 0 (one hour) or 1 to {MAX_EXPIRES_SECS} seconds (7 days), not {0}")]
    InvalidExpiry(i64),
    #[error("media not found")]
    NotFound,
    #[error("the upload has not completed: PUT the file to the upload URL first")]
    NotUploaded,
    #[error("the uploaded object is {actual} bytes, not the declared {declared}")]
    SizeMismatch { declared: i64, actual: i64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<AccessError> for Status {
    fn from(err: AccessError) -> Status {
        match err {
            AccessError::ContentType(_) => invalid_field("content_type", err.to_string()),
            AccessError::EmptyUpload | AccessError::TooLarge { .. } => {
                invalid_field("size_bytes", err.to_string())
            }
            AccessError::InvalidFilename => invalid_field("filename", err.to_string()),
            AccessError::InvalidExpiry(_) => invalid_field("expires_in_seconds", err.to_string()),
            AccessError::NotFound => ErrorCode::NotFound.status(err.to_string()),
            AccessError::NotUploaded | AccessError::SizeMismatch { .. } => {
                ErrorCode::FailedPrecondition.status(err.to_string())
            }
            AccessError::Storage(e) => e.into(),
            AccessError::Database(ref e) => mesh_kit::error::internal("media query failed", e),
        }
    }
}

/// Which rows a read may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Tenant(Uuid),
    /// Platform admins who named no tenant: any tenant's media by id.
    Platform,
}

async fn begin(db: &PgPool, scope: Scope) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    match scope {
        Scope::Tenant(tenant) => begin_tenant(db, tenant).await,
        Scope::Platform => begin_platform(db).await,
    }
}

#[derive(Debug)]
pub struct Upload {
    pub media: MediaObject,
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy)]
pub struct UploadRequest<'a> {
    pub tenant: Uuid,
    pub content_type: &'a str,
    pub size_bytes: i64,
    pub filename: &'a str,
}

/// Records a pending object and returns the presigned PUT that fills it.
pub async fn create_upload(
    db: &PgPool,
    store: &ObjectStore,
    max_bytes: u64,
    request: UploadRequest<'_>,
    now: DateTime<Utc>,
) -> Result<Upload, AccessError> {
    let UploadRequest {
        tenant,
        content_type,
        size_bytes,
        filename,
    } = request;
    let media_type = content_type::parse(content_type).map_err(AccessError::ContentType)?;
    if size_bytes <= 0 {
        return Err(AccessError::EmptyUpload);
    }
    if u64::try_from(size_bytes).map_or(true, |size| size > max_bytes) {
        return Err(AccessError::TooLarge {
            size: size_bytes,
            max: max_bytes,
        });
    }
    let filename = filename.trim();
    if filename.chars().count() > MAX_FILENAME_CHARS
        || filename
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return Err(AccessError::InvalidFilename);
    }

    let id = Uuid::now_v7();
    let key = objects::object_key(tenant, id, media_type.extension);
    // Signed before the row exists, so a signing failure leaves nothing behind.
    let url = store
        .presigned_put(
            &key,
            media_type.essence,
            size_bytes.unsigned_abs(),
            now,
            UPLOAD_URL_TTL_SECS,
        )
        .map_err(|e| AccessError::InvalidExpiry(e.0 as i64))?;
    let mut tx = begin_tenant(db, tenant).await?;
    let media = objects::insert(
        &mut tx,
        &NewObject {
            id,
            tenant_id: tenant,
            object_key: &key,
            content_type: media_type.essence,
            size_bytes,
            sha256: None,
            source: Source::Upload,
            status: ObjectStatus::Pending,
            filename,
            message_id: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Upload {
        media,
        url,
        expires_at: now + Duration::seconds(UPLOAD_URL_TTL_SECS as i64),
    })
}

pub async fn get(db: &PgPool, scope: Scope, id: Uuid) -> Result<MediaObject, AccessError> {
    let mut tx = begin(db, scope).await?;
    let media = objects::get(&mut tx, id)
        .await?
        .ok_or(AccessError::NotFound)?;
    tx.commit().await?;
    Ok(media)
}

#[derive(Debug)]
pub struct Download {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// A presigned GET for an object whose bytes are in storage. A pending upload
/// turns ready here, the first time storage holds it at the declared size.
pub async fn download_url(
    db: &PgPool,
    store: &ObjectStore,
    scope: Scope,
    id: Uuid,
    expires_in_seconds: i64,
    now: DateTime<Utc>,
) -> Result<Download, AccessError> {
    let ttl = match expires_in_seconds {
        0 => DEFAULT_DOWNLOAD_TTL_SECS,
        n if n > 0 && n.unsigned_abs() <= MAX_EXPIRES_SECS => n.unsigned_abs(),
        n => return Err(AccessError::InvalidExpiry(n)),
    };
    let media = get(db, scope, id).await?;
    // Checked every time: a URL to bytes that are gone (or a store that is
    // down) would only fail later, in the hands of an end customer.
    let head = match store.head(&media.object_key).await {
        Ok(head) => head,
        Err(StorageError::NotFound) if media.is_pending() => {
            return Err(AccessError::NotUploaded);
        }
        Err(e) => return Err(e.into()),
    };
    if media.is_pending() {
        if head.size != media.size_bytes {
            return Err(AccessError::SizeMismatch {
                declared: media.size_bytes,
                actual: head.size,
            });
        }
        let mut tx = begin(db, scope).await?;
        objects::mark_ready(&mut tx, media.id).await?;
        tx.commit().await?;
    }
    let url = store
        .presigned_get(&media.object_key, now, ttl)
        .map_err(|e| AccessError::InvalidExpiry(e.0 as i64))?;
    Ok(Download {
        url,
        expires_at: now + Duration::seconds(ttl as i64),
    })
}
