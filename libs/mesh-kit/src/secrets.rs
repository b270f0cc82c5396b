//! Secrets at rest: the platform keyring from the environment, the hint the
//! portal shows instead of a secret, and the re-encryption every service with
//! stored secrets runs under `crewmesh rotate-keys`.

use keyring::Keyring;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    config::{Environment, secret_var},
    db::begin_platform,
};

pub const ENCRYPTION_KEYS_ENV: &str = "CREWMESH_ENCRYPTION_KEYS";

/// A well-known key for development only, so local data survives restarts.
/// Production refuses to start without real keys.
pub const DEVELOPMENT_ENCRYPTION_KEY: &str = "Y3Jld21lc2gtZGV2ZWxvcG1lbnQta2V5LWluc2VjdXI=";

/// The platform keyring from `CREWMESH_ENCRYPTION_KEYS` (newest first).
pub fn keyring_from_env(environment: Environment) -> anyhow::Result<Keyring> {
    match (secret_var(ENCRYPTION_KEYS_ENV), environment) {
        (Some(keys), _) => Ok(Keyring::parse(keys.expose_secret())?),
        (None, Environment::Development) => Ok(Keyring::parse(DEVELOPMENT_ENCRYPTION_KEY)?),
        (None, Environment::Production) => anyhow::bail!(
            "{ENCRYPTION_KEYS_ENV} must be set: production (the default CREWMESH_ENV) needs real \
             keys (`crewmesh keygen` makes one), or set CREWMESH_ENV=development"
        ),
    }
}

/// The last four characters, which the portal shows to tell secrets apart.
pub fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.trim().chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// A table whose rows carry one Fernet token each, keyed by a uuid `id`.
#[derive(Debug, Clone, Copy)]
pub struct EncryptedColumn {
    pub table: &'static str,
    pub column: &'static str,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub scanned: u64,
    pub rotated: u64,
    pub total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(
        "{table} row {id} cannot be decrypted with any configured key; was an old key removed too early?"
    )]
    Undecryptable { table: &'static str, id: Uuid },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Re-encrypts every token of `target` under the newest key, `batch` rows per
/// transaction, reporting after each batch.
///
/// Resumable: a token the newest key already made is skipped, so an
/// interrupted run simply starts again. Rows are locked batch by batch, so
/// the service keeps serving while it runs.
pub async fn rotate(
    db: &PgPool,
    keyring: &Keyring,
    target: EncryptedColumn,
    batch: i64,
    mut report: impl FnMut(Progress),
) -> Result<Progress, RotationError> {
    let EncryptedColumn { table, column } = target;
    let mut progress = Progress::default();
    {
        let mut tx = begin_platform(db).await?;
        let total: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        progress.total = total as u64;
    }
    let mut after = Uuid::nil();
    loop {
        let mut tx = begin_platform(db).await?;
        let rows: Vec<(Uuid, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, {column} FROM {table} WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE"
        )))
        .bind(after)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        after = *last;
        for (id, ciphertext) in &rows {
            let rotated = keyring
                .rotate(ciphertext)
                .map_err(|_| RotationError::Undecryptable { table, id: *id })?;
            if let Some(rotated) = rotated {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {table} SET {column} = $2, rotated_at = now() WHERE id = $1"
                )))
                .bind(id)
                .bind(rotated)
                .execute(&mut *tx)
                .await?;
                progress.rotated += 1;
            }
        }
        tx.commit().await?;
        progress.scanned += rows.len() as u64;
        report(progress);
    }
    Ok(progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_show_at_most_four_characters() {
        assert_eq!(hint("sk-abcdef1234"), "1234");
        assert_eq!(hint("ab"), "ab");
        assert_eq!(hint(" xoxb-1-2-abcd\n"), "abcd");
        assert_eq!(hint(""), "");
    }
}
