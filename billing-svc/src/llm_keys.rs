//! Tenants' LLM provider keys (B3): encrypted at rest, listed redacted,
//! readable in plaintext only by llm-svc through the internal RPC.

use chrono::{DateTime, Utc};
use keyring::Keyring;
use mesh_kit::{
    ErrorCode,
    db::{begin_platform, begin_tenant, violated_constraint},
    egress::{EgressError, EgressPolicy},
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
    /// The key's provider will be called at this address on the tenant's
    /// behalf: an internal one would let a tenant reach our network.
    #[error("base_url {0}")]
    ForbiddenBaseUrl(mesh_kit::egress::EgressError),
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
            LlmKeyError::InvalidBaseUrl | LlmKeyError::ForbiddenBaseUrl(_) => {
                invalid_field("base_url", err.to_string())
            }
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

fn validate(
    provider: &str,
    api_key: &str,
    base_url: Option<&str>,
    egress: &EgressPolicy,
) -> Result<(), LlmKeyError> {
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
        // Obviously internal addresses are refused at the door; llm-svc
        // checks every connection again (a name may resolve elsewhere later).
        egress.check_url(url, true).map_err(|e| match e {
            EgressError::NotHttp => LlmKeyError::InvalidBaseUrl,
            EgressError::Userinfo | EgressError::Forbidden | EgressError::InternalName => {
                LlmKeyError::ForbiddenBaseUrl(e)
            }
        })?;
    }
    Ok(())
}

const COLUMNS: &str = "id, tenant_id, provider, key_hint, base_url, created_at";

pub async fn create(
    db: &PgPool,
    keyring: &Keyring,
    egress: &EgressPolicy,
    tenant: Uuid,
    provider: &str,
    api_key: &str,
    base_url: Option<&str>,
) -> Result<LlmKey, LlmKeyError> {
    validate(provider, api_key, base_url, egress)?;
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
        let deny = EgressPolicy::deny_all();
        assert!(validate("openai", "sk-x", None, &deny).is_ok());
        assert!(validate("openai", "sk-x", Some("https://api.example.com/v1"), &deny).is_ok());
        assert!(matches!(
            validate("OpenAI", "k", None, &deny),
            Err(LlmKeyError::InvalidProvider)
        ));
        assert!(matches!(
            validate("openai", "  ", None, &deny),
            Err(LlmKeyError::InvalidApiKey)
        ));
        assert!(matches!(
            validate("openai", "k", Some("ftp://x"), &deny),
            Err(LlmKeyError::InvalidBaseUrl)
        ));
    }

    #[test]
    fn internal_base_urls_are_refused_at_the_door_unless_allowed() {
        let deny = EgressPolicy::deny_all();
        for url in [
            "http://127.0.0.1:50051/",
            "http://127.1:6379/",
            "http://2130706433/",
            "http://[::1]/v1",
            "http://169.254.169.254/latest",
            "http://localhost:11434/v1",
            "http://redis:6379/",
            "http://billing-svc.crewmesh.svc.cluster.local:50054/",
            "https://user:pass@api.example.com/v1",
        ] {
            let refused = validate("ollama", "k", Some(url), &deny).unwrap_err();
            assert!(matches!(refused, LlmKeyError::ForbiddenBaseUrl(_)), "{url}");
            let status = Status::from(refused);
            assert_eq!(
                mesh_kit::error::violated_field(&status).as_deref(),
                Some("base_url"),
                "{url}"
            );
        }
        let allowed = EgressPolicy::parse("ollama.internal:11434,10.0.0.0/8")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            validate(
                "ollama",
                "k",
                Some("http://ollama.internal:11434/v1"),
                &allowed
            )
            .is_ok()
        );
        assert!(validate("vllm", "k", Some("http://10.2.3.4:8000/v1"), &allowed).is_ok());
    }
}
