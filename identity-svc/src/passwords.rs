//! Password hashing with Argon2id (default parameters: 19 MiB, 2 passes),
//! off the async runtime.

use std::sync::OnceLock;

use argon2::{Argon2, password_hash::PasswordHasher as _, password_hash::PasswordVerifier as _};
use secrecy::{ExposeSecret, SecretString};

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be {MIN_LEN} to {MAX_LEN} characters")]
    Invalid,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

pub fn validate(password: &str) -> Result<(), PasswordError> {
    let len = password.chars().count();
    if (MIN_LEN..=MAX_LEN).contains(&len) {
        Ok(())
    } else {
        Err(PasswordError::Invalid)
    }
}

pub async fn hash(password: SecretString) -> Result<String, PasswordError> {
    validate(password.expose_secret())?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hashing(e.to_string()))
    })
    .await
    .map_err(|e| PasswordError::Hashing(e.to_string()))?
}

/// Whether `password` matches `stored`. With no stored hash (unknown account)
/// it still does the same work, so timing does not reveal which emails exist.
pub async fn verify(password: SecretString, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let argon2 = Argon2::default();
        let (hash, known) = match &stored {
            Some(hash) => (hash.as_str(), true),
            None => (dummy_hash(), false),
        };
        let matches = argon2
            .verify_password(password.expose_secret().as_bytes(), hash)
            .is_ok();
        known && matches
    })
    .await
    .unwrap_or(false)
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"crewmesh timing equaliser")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let hash = hash(SecretString::from("correct horse battery".to_owned()))
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify(
                SecretString::from("correct horse battery".to_owned()),
                Some(hash.clone())
            )
            .await
        );
        assert!(
            !verify(
                SecretString::from("wrong horse battery".to_owned()),
                Some(hash)
            )
            .await
        );
        assert!(!verify(SecretString::from("anything at all".to_owned()), None).await);
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(validate("short").is_err());
        assert!(validate("long enough pw").is_ok());
    }
}
