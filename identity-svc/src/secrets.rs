//! Opaque bearer secrets (invite tokens, refresh tokens, API keys): 256 random
//! bits with a type prefix. Only their SHA-256 is stored; with that much
//! entropy a fast hash is enough, and lookups go by the hash.

use aws_lc_rs::{digest, rand};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

#[derive(Debug, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomError;

/// A new secret `<prefix>_<43 base64url chars>` and its hash.
pub fn generate(prefix: &str) -> Result<(String, Vec<u8>), RandomError> {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes).map_err(|_| RandomError)?;
    let secret = format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&secret);
    Ok((secret, hash))
}

pub fn hash(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_unique_and_hashed() {
        let (a, ha) = generate("cmi").unwrap();
        let (b, _) = generate("cmi").unwrap();
        assert!(a.starts_with("cmi_") && a.len() == 4 + 43);
        assert_ne!(a, b);
        assert_eq!(hash(&a), ha);
        assert_eq!(ha.len(), 32);
    }
}
