//! Re-encrypts every stored secret under the newest platform key, in batches.
//!
//! Resumable: a token the newest key already made is skipped, so an
//! interrupted run simply starts again. Operator procedure (README): put the
//! new key first in `CREWMESH_ENCRYPTION_KEYS` and deploy, run
//! `crewmesh rotate-keys`, then remove the old key.

use keyring::Keyring;
use mesh_kit::db::begin_platform;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub scanned: u64,
    pub rotated: u64,
    pub total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(
        "llm key {0} cannot be decrypted with any configured key; was an old key removed too early?"
    )]
    Undecryptable(Uuid),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Rotates the LLM keys, `batch` rows per transaction, reporting after each batch.
pub async fn rotate_llm_keys(
    db: &PgPool,
    keyring: &Keyring,
    batch: i64,
    mut report: impl FnMut(Progress),
) -> Result<Progress, RotationError> {
    let mut progress = Progress::default();
    {
        let mut tx = begin_platform(db).await?;
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM llm_keys")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        progress.total = total as u64;
    }
    let mut after = Uuid::nil();
    loop {
        let mut tx = begin_platform(db).await?;
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, ciphertext FROM llm_keys WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE",
        )
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
                .map_err(|_| RotationError::Undecryptable(*id))?;
            if let Some(rotated) = rotated {
                sqlx::query(
                    "UPDATE llm_keys SET ciphertext = $2, rotated_at = now() WHERE id = $1",
                )
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
