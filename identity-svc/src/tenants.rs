//! Tenants (I1): create, list and get, with a unique slug.

use chrono::{DateTime, Utc};
use mesh_kit::{
    ErrorCode,
    db::{begin_platform, begin_tenant, violated_constraint},
    error::invalid_field,
};
use sqlx::PgPool;
use tonic::Status;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    outbox,
};

pub const MAX_PAGE_SIZE: i64 = 200;
pub const DEFAULT_PAGE_SIZE: i64 = 50;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(
        "slug must be 3–63 characters of a–z, 0–9 and '-', starting and ending with a letter or digit"
    )]
    InvalidSlug,
    #[error("name must not be blank and at most 200 characters")]
    InvalidName,
    #[error("page_token is not one this service issued")]
    InvalidPageToken,
    #[error("a tenant with slug `{0}` already exists")]
    SlugTaken(String),
    #[error("tenant not found")]
    NotFound,
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<TenantError> for Status {
    fn from(err: TenantError) -> Status {
        match err {
            TenantError::InvalidSlug => invalid_field("slug", err.to_string()),
            TenantError::InvalidName => invalid_field("name", err.to_string()),
            TenantError::InvalidPageToken => invalid_field("page_token", err.to_string()),
            TenantError::SlugTaken(_) => ErrorCode::Conflict.status(err.to_string()),
            TenantError::NotFound => ErrorCode::NotFound.status(err.to_string()),
            TenantError::Database(ref e) => mesh_kit::error::internal("tenant query failed", e),
        }
    }
}

pub fn validate_slug(slug: &str) -> Result<(), TenantError> {
    let bytes = slug.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let ends_ok = |b: Option<&u8>| b.is_some_and(|b| *b != b'-');
    if (3..=63).contains(&bytes.len())
        && bytes.iter().all(allowed)
        && ends_ok(bytes.first())
        && ends_ok(bytes.last())
    {
        Ok(())
    } else {
        Err(TenantError::InvalidSlug)
    }
}

fn validate_name(name: &str) -> Result<(), TenantError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 200 {
        Err(TenantError::InvalidName)
    } else {
        Ok(())
    }
}

/// Creates a tenant. Only for platform admins (the caller checks).
/// With a `request_id`, a retry returns the tenant the first attempt created.
pub async fn create(
    db: &PgPool,
    actor: &Actor,
    slug: &str,
    name: &str,
    request_id: Option<&str>,
) -> Result<Tenant, TenantError> {
    validate_slug(slug)?;
    validate_name(name)?;
    let mut tx = begin_platform(db).await?;
    let inserted = sqlx::query_as::<_, Tenant>(
        "INSERT INTO tenants (id, slug, name, request_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT (request_id) DO NOTHING
         RETURNING id, slug, name, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(slug)
    .bind(name.trim())
    .bind(request_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("tenants_slug_key") => TenantError::SlugTaken(slug.to_owned()),
        _ => TenantError::Database(e),
    })?;
    let tenant = match inserted {
        Some(tenant) => {
            audit::record(&mut tx, tenant.id, actor, "tenant.created", None).await?;
            outbox::add(
                &mut tx,
                outbox::TENANT_CREATED,
                serde_json::json!({
                    "tenant_id": tenant.id,
                    "slug": tenant.slug,
                    "created_at": tenant.created_at,
                }),
            )
            .await?;
            tenant
        }
        // The request id was seen before: answer with that result.
        None => {
            sqlx::query_as::<_, Tenant>(
                "SELECT id, slug, name, created_at FROM tenants WHERE request_id = $1",
            )
            .bind(request_id)
            .fetch_one(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    Ok(tenant)
}

/// One page of every tenant, oldest first. Platform admins only (the caller checks).
pub async fn list(
    db: &PgPool,
    page_size: i32,
    page_token: &str,
) -> Result<(Vec<Tenant>, Option<String>), TenantError> {
    let limit = match i64::from(page_size) {
        n if n <= 0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    // Ids are UUIDv7, so id order is creation order and the last id is the cursor.
    let after = if page_token.is_empty() {
        Uuid::nil()
    } else {
        page_token
            .parse()
            .map_err(|_| TenantError::InvalidPageToken)?
    };
    let mut tx = begin_platform(db).await?;
    let mut tenants = sqlx::query_as::<_, Tenant>(
        "SELECT id, slug, name, created_at FROM tenants WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let next = if tenants.len() as i64 > limit {
        tenants.truncate(limit as usize);
        tenants.last().map(|t| t.id.to_string())
    } else {
        None
    };
    Ok((tenants, next))
}

/// Which rows a read may see.
#[derive(Debug, Clone, Copy)]
pub enum Visibility {
    /// A platform admin: every tenant.
    Platform,
    /// A tenant user: their own tenant alone.
    Tenant(Uuid),
}

pub async fn get(db: &PgPool, id: Uuid, visibility: Visibility) -> Result<Tenant, TenantError> {
    let mut tx = match visibility {
        Visibility::Platform => begin_platform(db).await?,
        Visibility::Tenant(tenant) => begin_tenant(db, tenant).await?,
    };
    let tenant =
        sqlx::query_as::<_, Tenant>("SELECT id, slug, name, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(TenantError::NotFound)?;
    tx.commit().await?;
    Ok(tenant)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for good in ["acme", "acme-corp", "a1b", "x".repeat(63).as_str()] {
            assert!(validate_slug(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ab",
            "-acme",
            "acme-",
            "Acme",
            "ac me",
            "acmé",
            &"x".repeat(64),
        ] {
            assert!(validate_slug(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("Acme Inc.").is_ok());
        assert!(validate_name("   ").is_err());
        assert!(validate_name(&"n".repeat(201)).is_err());
    }
}
