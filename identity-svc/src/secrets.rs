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

/// Whether `secret` has the shape [`generate`] gives with `prefix`, so
/// garbage is refused before anything is looked up or computed for it.
pub fn is_well_formed(prefix: &str, secret: &str) -> bool {
    secret
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|body| {
            body.len() == SECRET_CHARS
                && body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// 32 random bytes in base64url without padding.
const SECRET_CHARS: usize = 43;

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

    #[test]
    fn only_generated_shapes_are_well_formed() {
        let (token, _) = generate("cmi").unwrap();
        assert!(is_well_formed("cmi", &token));
        assert!(!is_well_formed("cmr", &token));
        assert!(!is_well_formed("cmi", "cmi_not-a-real-token"));
        assert!(!is_well_formed("cmi", &format!("{token}x")));
        assert!(is_well_formed("cmi", &format!("cmi_{}", "a".repeat(43))));
        assert!(!is_well_formed("cmi", &format!("cmi_{}!", "a".repeat(42))));
    }
}
