//! Tenants' LLM provider keys (B3): encrypted at rest, listed redacted,
//! readable in plaintext only by llm-svc through the internal RPC.

use chrono::{DateTime, Utc};
use keyring::Keyring;
use mesh_kit::{
    ErrorCode,
    db::{begin_platform, begin_tenant, violated_constraint},
    error::invalid_field,
};
use sqlx::PgPool;
use tonic::Status;
use uuid::Uuid;

/// What a listing shows: never the key, never the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LlmKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub provider: String,
    pub key_hint: String,
    pub base_url: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A key in plaintext, for llm-svc alone.
pub struct Secret {
    pub api_key: String,
    pub base_url: Option<String>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("api_key", &"[REDACTED]")
            .field("base_url", &self.base_url)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LlmKeyError {
    #[error(
        "provider must be 2–32 characters of a–z, 0–9, '_' and '-', starting with a letter (e.g. openai)"
    )]
    InvalidProvider,
    #[error("api_key must not be empty and at most 4096 characters")]
    InvalidApiKey,
    #[error("base_url must be an http(s) URL")]
    InvalidBaseUrl,
    #[error("this tenant already has a key for {0}; delete it first")]
    Duplicate(String),
    #[error("LLM key not found")]
    NotFound,
    #[error("no {0} key is configured for this tenant")]
    NoKeyForProvider(String),
    #[error("the stored key cannot be decrypted with the configured platform keys")]
    Undecryptable,
    #[error("encryption failed")]
    Encryption,
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<LlmKeyError> for Status {
    fn from(err: LlmKeyError) -> Status {
        match err {
            LlmKeyError::InvalidProvider => invalid_field("provider", err.to_string()),
            LlmKeyError::InvalidApiKey => invalid_field("api_key", err.to_string()),
            LlmKeyError::InvalidBaseUrl => invalid_field("base_url", err.to_string()),
            LlmKeyError::Duplicate(_) => ErrorCode::Conflict.status(err.to_string()),
            LlmKeyError::NotFound | LlmKeyError::NoKeyForProvider(_) => {
                ErrorCode::NotFound.status(err.to_string())
            }
            LlmKeyError::Undecryptable | LlmKeyError::Encryption => {
                tracing::error!(error = %err, "LLM key encryption");
                ErrorCode::Internal.status("internal error; see the service logs")
            }
            LlmKeyError::Database(ref e) => mesh_kit::error::internal("llm key query failed", e),
        }
    }
}

fn validate(provider: &str, api_key: &str, base_url: Option<&str>) -> Result<(), LlmKeyError> {
    let p = provider.as_bytes();
    let provider_ok = (2..=32).contains(&p.len())
        && p[0].is_ascii_lowercase()
        && p.iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
    if !provider_ok {
        return Err(LlmKeyError::InvalidProvider);
    }
    if api_key.trim().is_empty() || api_key.len() > 4096 {
        return Err(LlmKeyError::InvalidApiKey);
    }
    if let Some(url) = base_url {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or(LlmKeyError::InvalidBaseUrl)?;
        if rest.is_empty() || url.len() > 2048 || url.chars().any(char::is_whitespace) {
            return Err(LlmKeyError::InvalidBaseUrl);
        }
    }
    Ok(())
}

const COLUMNS: &str = "id, tenant_id, provider, key_hint, base_url, created_at";

pub async fn create(
    db: &PgPool,
    keyring: &Keyring,
    tenant: Uuid,
    provider: &str,
    api_key: &str,
    base_url: Option<&str>,
) -> Result<LlmKey, LlmKeyError> {
    validate(provider, api_key, base_url)?;
    let ciphertext = keyring
        .encrypt(api_key.trim().as_bytes())
        .map_err(|_| LlmKeyError::Encryption)?;
    let mut tx = begin_tenant(db, tenant).await?;
    let key = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO llm_keys (id, tenant_id, provider, ciphertext, key_hint, base_url)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(provider)
    .bind(ciphertext)
    .bind(mesh_kit::secrets::hint(api_key))
    .bind(base_url)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("llm_keys_tenant_provider_key") => LlmKeyError::Duplicate(provider.to_owned()),
        _ => LlmKeyError::Database(e),
    })?;
    tx.commit().await?;
    Ok(key)
}

pub async fn list(db: &PgPool, tenant: Uuid) -> Result<Vec<LlmKey>, LlmKeyError> {
    let mut tx = begin_tenant(db, tenant).await?;
    let keys = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM llm_keys ORDER BY provider"
    )))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(keys)
}

/// Deletes a key of `tenant`; absent or another tenant's is NotFound and deletes nothing.
pub async fn delete(db: &PgPool, tenant: Uuid, id: Uuid) -> Result<(), LlmKeyError> {
    let mut tx = begin_tenant(db, tenant).await?;
    let deleted = sqlx::query("DELETE FROM llm_keys WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(LlmKeyError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// The tenant of a key, for platform admins who name only the key.
pub async fn tenant_of(db: &PgPool, id: Uuid) -> Result<Uuid, LlmKeyError> {
    let mut tx = begin_platform(db).await?;
    let tenant = sqlx::query_scalar("SELECT tenant_id FROM llm_keys WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(LlmKeyError::NotFound)?;
    tx.commit().await?;
    Ok(tenant)
}

/// The plaintext key of `tenant` for `provider`.
pub async fn secret(
    db: &PgPool,
    keyring: &Keyring,
    tenant: Uuid,
    provider: &str,
) -> Result<Secret, LlmKeyError> {
    let mut tx = begin_tenant(db, tenant).await?;
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT ciphertext, base_url FROM llm_keys WHERE provider = $1")
            .bind(provider)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    let (ciphertext, base_url) =
        row.ok_or_else(|| LlmKeyError::NoKeyForProvider(provider.to_owned()))?;
    let plaintext = keyring
        .decrypt(&ciphertext)
        .map_err(|_| LlmKeyError::Undecryptable)?;
    let api_key = String::from_utf8(plaintext).map_err(|_| LlmKeyError::Undecryptable)?;
    Ok(Secret { api_key, base_url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("openai", "sk-x", None).is_ok());
        assert!(validate("openai", "sk-x", Some("http://localhost:11434/v1")).is_ok());
        assert!(matches!(
            validate("OpenAI", "k", None),
            Err(LlmKeyError::InvalidProvider)
        ));
        assert!(matches!(
            validate("openai", "  ", None),
            Err(LlmKeyError::InvalidApiKey)
        ));
        assert!(matches!(
            validate("openai", "k", Some("ftp://x")),
            Err(LlmKeyError::InvalidBaseUrl)
        ));
    }
}
