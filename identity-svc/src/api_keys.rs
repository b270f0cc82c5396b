//! Tenant API keys (X2): service accounts of a tenant, with a role chosen at
//! creation (never platform_admin). The key is shown once; only its hash is
//! stored, with a visible prefix so admins can tell keys apart.

use chrono::{DateTime, Utc};
use mesh_kit::{
    ErrorCode, Role,
    db::{begin_platform, begin_tenant},
    error::invalid_field,
};
use sqlx::PgPool;
use tonic::Status;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    secrets::{self, RandomError},
    users::User,
};

/// Characters of the key kept visible: the `cmk_` marker and 8 more.
const PREFIX_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("name must not be blank and at most 100 characters")]
    InvalidName,
    #[error("role must be customer_admin or operator")]
    InvalidRole,
    #[error("API key not found")]
    NotFound,
    #[error("the API key is invalid or revoked")]
    Rejected,
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<ApiKeyError> for Status {
    fn from(err: ApiKeyError) -> Status {
        match err {
            ApiKeyError::InvalidName => invalid_field("name", err.to_string()),
            ApiKeyError::InvalidRole => invalid_field("role", err.to_string()),
            ApiKeyError::NotFound => ErrorCode::NotFound.status(err.to_string()),
            ApiKeyError::Rejected => ErrorCode::Unauthenticated.status(err.to_string()),
            ApiKeyError::Random(ref e) => mesh_kit::error::internal("random generator", e),
            ApiKeyError::Database(ref e) => mesh_kit::error::internal("api key query failed", e),
        }
    }
}

const KEY_COLUMNS: &str = "id, tenant_id, name, prefix, role, created_at, revoked_at";

pub async fn create(
    db: &PgPool,
    actor: &Actor,
    tenant: Uuid,
    name: &str,
    role: Role,
) -> Result<(ApiKey, String), ApiKeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiKeyError::InvalidName);
    }
    if role == Role::PlatformAdmin {
        return Err(ApiKeyError::InvalidRole);
    }
    let (secret, hash) = secrets::generate("cmk")?;
    let mut tx = begin_tenant(db, tenant).await?;
    let key: ApiKey = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO api_keys (id, tenant_id, name, prefix, secret_hash, role, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {KEY_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(name)
    .bind(&secret[..PREFIX_LEN])
    .bind(hash)
    .bind(role.as_str())
    .bind(actor.user_id.unwrap_or_default())
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, tenant, actor, "api_key.created", None).await?;
    tx.commit().await?;
    Ok((key, secret))
}

pub async fn list(db: &PgPool, tenant: Uuid) -> Result<Vec<ApiKey>, ApiKeyError> {
    let mut tx = begin_tenant(db, tenant).await?;
    let keys = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
    )))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(keys)
}

/// Revokes a key of `tenant`; another tenant's key is NotFound. Revoking twice is fine.
pub async fn revoke(db: &PgPool, actor: &Actor, tenant: Uuid, id: Uuid) -> Result<(), ApiKeyError> {
    let mut tx = begin_tenant(db, tenant).await?;
    let found =
        sqlx::query("UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if found == 0 {
        return Err(ApiKeyError::NotFound);
    }
    audit::record(&mut tx, tenant, actor, "api_key.revoked", None).await?;
    tx.commit().await?;
    Ok(())
}

/// The service account behind a presented key, as a user of its tenant whose
/// id is the key's id.
pub async fn authenticate(db: &PgPool, secret: &str) -> Result<(User, Uuid), ApiKeyError> {
    let mut tx = begin_platform(db).await?;
    let key: Option<ApiKey> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL"
    )))
    .bind(secrets::hash(secret))
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let key = key.ok_or(ApiKeyError::Rejected)?;
    let role = Role::parse(&key.role).ok_or(ApiKeyError::Rejected)?;
    let user = User {
        id: key.id,
        email: String::new(),
        name: key.name,
        tenant_id: Some(key.tenant_id),
        role,
        created_at: key.created_at,
    };
    Ok((user, key.id))
}

/// The tenant of a key, for platform admins who name only the key.
pub async fn tenant_of(db: &PgPool, id: Uuid) -> Result<Uuid, ApiKeyError> {
    let mut tx = begin_platform(db).await?;
    let tenant = sqlx::query_scalar("SELECT tenant_id FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiKeyError::NotFound)?;
    tx.commit().await?;
    Ok(tenant)
}
