//! Re-encrypts the stored LLM keys under the newest platform key.
//!
//! Operator procedure (README): put the new key first in
//! `CREWMESH_ENCRYPTION_KEYS` and deploy, run `crewmesh rotate-keys`, then
//! remove the old key.

use keyring::Keyring;
use mesh_kit::secrets::{EncryptedColumn, Progress, RotationError, rotate};
use sqlx::PgPool;

pub const LLM_KEYS: EncryptedColumn = EncryptedColumn {
    table: "llm_keys",
    column: "ciphertext",
};

/// Rotates the LLM keys, `batch` rows per transaction, reporting after each batch.
pub async fn rotate_llm_keys(
    db: &PgPool,
    keyring: &Keyring,
    batch: i64,
    report: impl FnMut(Progress),
) -> Result<Progress, RotationError> {
    rotate(db, keyring, LLM_KEYS, batch, report).await
}
