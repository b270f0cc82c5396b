//! The metadata rows of media objects. Every query runs in a transaction
//! whose tenant (or platform scope) row-level security enforces.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Upload,
    WhatsApp,
    Slack,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Upload => "upload",
            Source::WhatsApp => "whatsapp",
            Source::Slack => "slack",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Ready,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Ready => "ready",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MediaObject {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub object_key: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: Option<String>,
    pub source: String,
    pub status: String,
    pub filename: String,
    pub message_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl MediaObject {
    pub fn is_pending(&self) -> bool {
        self.status == Status::Pending.as_str()
    }
}

/// The key of a new object: under the tenant's prefix, named by its id, with
/// an extension from the allowlist (never from caller input).
pub fn object_key(tenant: Uuid, id: Uuid, extension: &str) -> String {
    format!("tenants/{tenant}/{id}.{extension}")
}

/// What a new row holds.
#[derive(Debug, Clone)]
pub struct NewObject<'a> {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub object_key: &'a str,
    pub content_type: &'a str,
    pub size_bytes: i64,
    pub sha256: Option<&'a str>,
    pub source: Source,
    pub status: Status,
    pub filename: &'a str,
    pub message_id: Option<&'a str>,
}

const COLUMNS: &str = "id, tenant_id, object_key, content_type, size_bytes, sha256, source, \
                       status, filename, message_id, created_at";

/// The unique constraint a repeated ingest of one channel message violates.
pub const MESSAGE_KEY: &str = "media_objects_message_key";

pub async fn insert(
    conn: &mut PgConnection,
    new: &NewObject<'_>,
) -> Result<MediaObject, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO media_objects
           (id, tenant_id, object_key, content_type, size_bytes, sha256, source, status, filename, message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING {COLUMNS}"
    )))
    .bind(new.id)
    .bind(new.tenant_id)
    .bind(new.object_key)
    .bind(new.content_type)
    .bind(new.size_bytes)
    .bind(new.sha256)
    .bind(new.source.as_str())
    .bind(new.status.as_str())
    .bind(new.filename)
    .bind(new.message_id)
    .fetch_one(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<MediaObject>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM media_objects WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The object an earlier ingest of the same channel message stored.
pub async fn by_message(
    conn: &mut PgConnection,
    source: Source,
    message_id: &str,
) -> Result<Option<MediaObject>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM media_objects WHERE source = $1 AND message_id = $2"
    )))
    .bind(source.as_str())
    .bind(message_id)
    .fetch_optional(conn)
    .await
}

/// pending → ready; false when the row is not visible or not pending.
pub async fn mark_ready(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE media_objects SET status = 'ready' WHERE id = $1 AND status = 'pending'",
    )
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(updated == 1)
}
