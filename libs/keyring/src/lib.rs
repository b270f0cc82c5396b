//! Secrets at rest (LLM keys, channel tokens): Fernet tokens under the
//! platform keys of `CREWMESH_ENCRYPTION_KEYS`, newest first, with
//! MultiFernet semantics — encrypt with the newest key, decrypt with any — and
//! rotation (decrypt, then encrypt under the newest key keeping the timestamp).
//!
//! Fernet (<https://github.com/fernet/spec>) is built here on aws-lc-rs
//! (AES-128-CBC/PKCS7, HMAC-SHA256 verified in constant time) rather than on
//! the `fernet` crate: that crate keeps the IV private, so the spec's
//! `generate` vectors could not be checked, and it panics on RNG failure.
//! The tests run every vector of the spec.

use std::fmt;

use aws_lc_rs::{
    cipher::{
        AES_128, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
        PaddedBlockEncryptingKey, UnboundCipherKey,
    },
    hmac,
    iv::FixedLength,
    rand,
};
use base64::{
    Engine as _,
    alphabet::URL_SAFE,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};

const VERSION: u8 = 0x80;
const HEADER_LEN: usize = 1 + 8 + 16;
const MAC_LEN: usize = 32;
/// Tokens from this far in the future are refused when a TTL is checked (as pyca does).
const MAX_CLOCK_SKEW: u64 = 60;

/// base64url, padded on output, either way on input.
const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("CREWMESH_ENCRYPTION_KEYS: key {index} is not a base64url 32-byte Fernet key")]
    InvalidKey { index: usize },
    #[error("CREWMESH_ENCRYPTION_KEYS is empty: generate a key with `crewmesh keygen`")]
    NoKeys,
    /// Deliberately one error for every way a token can be bad, as the spec asks.
    #[error(
        "the token is invalid, tampered with, expired, or from a key that is no longer configured"
    )]
    InvalidToken,
    #[error("the system random generator or cipher failed")]
    Crypto,
}

/// One Fernet key: 16 bytes signing ‖ 16 bytes encryption. Never printed.
#[derive(Clone)]
pub struct Key {
    signing: hmac::Key,
    encryption: [u8; 16],
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key([REDACTED])")
    }
}

impl Key {
    pub fn parse(encoded: &str) -> Option<Key> {
        let bytes = B64.decode(encoded.trim()).ok()?;
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        let mut encryption = [0u8; 16];
        encryption.copy_from_slice(&bytes[16..]);
        Some(Key {
            signing: hmac::Key::new(hmac::HMAC_SHA256, &bytes[..16]),
            encryption,
        })
    }

    /// A new random key, base64url encoded.
    pub fn generate() -> Result<String, KeyringError> {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes).map_err(|_| KeyringError::Crypto)?;
        Ok(B64.encode(bytes))
    }

    fn encrypt_with(
        &self,
        plaintext: &[u8],
        timestamp: u64,
        iv: [u8; 16],
    ) -> Result<String, KeyringError> {
        let key = UnboundCipherKey::new(&AES_128, &self.encryption)
            .and_then(PaddedBlockEncryptingKey::cbc_pkcs7)
            .map_err(|_| KeyringError::Crypto)?;
        let mut ciphertext = plaintext.to_vec();
        key.less_safe_encrypt(
            &mut ciphertext,
            EncryptionContext::Iv128(FixedLength::from(iv)),
        )
        .map_err(|_| KeyringError::Crypto)?;
        let mut token = Vec::with_capacity(HEADER_LEN + ciphertext.len() + MAC_LEN);
        token.push(VERSION);
        token.extend_from_slice(&timestamp.to_be_bytes());
        token.extend_from_slice(&iv);
        token.extend_from_slice(&ciphertext);
        let mac = hmac::sign(&self.signing, &token);
        token.extend_from_slice(mac.as_ref());
        Ok(B64.encode(token))
    }

    fn encrypt_at(&self, plaintext: &[u8], timestamp: u64) -> Result<String, KeyringError> {
        let mut iv = [0u8; 16];
        rand::fill(&mut iv).map_err(|_| KeyringError::Crypto)?;
        self.encrypt_with(plaintext, timestamp, iv)
    }

    /// Verifies in the spec's order: version, TTL, HMAC (constant time), decrypt, unpad.
    fn decrypt_at(
        &self,
        token: &str,
        ttl: Option<u64>,
        now: u64,
    ) -> Result<(Vec<u8>, u64), KeyringError> {
        let bytes = B64.decode(token).map_err(|_| KeyringError::InvalidToken)?;
        if bytes.len() < HEADER_LEN + 16 + MAC_LEN
            || !(bytes.len() - HEADER_LEN - MAC_LEN).is_multiple_of(16)
            || bytes[0] != VERSION
        {
            return Err(KeyringError::InvalidToken);
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&bytes[1..9]);
        let timestamp = u64::from_be_bytes(ts);
        if let Some(ttl) = ttl
            && (timestamp.saturating_add(ttl) < now
                || timestamp > now.saturating_add(MAX_CLOCK_SKEW))
        {
            return Err(KeyringError::InvalidToken);
        }
        let (signed, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        hmac::verify(&self.signing, signed, mac).map_err(|_| KeyringError::InvalidToken)?;
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&signed[9..HEADER_LEN]);
        let key = UnboundCipherKey::new(&AES_128, &self.encryption)
            .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
            .map_err(|_| KeyringError::Crypto)?;
        let mut buffer = signed[HEADER_LEN..].to_vec();
        let plaintext = key
            .decrypt(&mut buffer, DecryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| KeyringError::InvalidToken)?;
        Ok((plaintext.to_vec(), timestamp))
    }
}

/// The platform keys, newest first.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Keyring {
    /// Parses a comma-separated list of base64url Fernet keys, newest first.
    pub fn parse(list: &str) -> Result<Keyring, KeyringError> {
        let keys = list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
            .map(|(index, k)| Key::parse(k).ok_or(KeyringError::InvalidKey { index }))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(KeyringError::NoKeys);
        }
        Ok(Keyring { keys })
    }

    /// Encrypts under the newest key.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, KeyringError> {
        self.keys[0].encrypt_at(plaintext, now())
    }

    /// Decrypts with whichever configured key made the token.
    pub fn decrypt(&self, token: &str) -> Result<Vec<u8>, KeyringError> {
        self.decrypt_indexed(token)
            .map(|(plaintext, _, _)| plaintext)
    }

    fn decrypt_indexed(&self, token: &str) -> Result<(Vec<u8>, u64, usize), KeyringError> {
        self.keys
            .iter()
            .enumerate()
            .find_map(|(index, key)| {
                key.decrypt_at(token, None, 0)
                    .ok()
                    .map(|(plaintext, ts)| (plaintext, ts, index))
            })
            .ok_or(KeyringError::InvalidToken)
    }

    /// The token re-encrypted under the newest key (keeping its timestamp), or
    /// None when the newest key already made it — so a rotation run can stop
    /// and resume without redoing work.
    pub fn rotate(&self, token: &str) -> Result<Option<String>, KeyringError> {
        let (plaintext, timestamp, index) = self.decrypt_indexed(token)?;
        if index == 0 {
            return Ok(None);
        }
        self.keys[0].encrypt_at(&plaintext, timestamp).map(Some)
    }

    /// Whether the newest key made this token.
    pub fn is_current(&self, token: &str) -> bool {
        self.keys[0].decrypt_at(token, None, 0).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn vectors(name: &str) -> Vec<Value> {
        // The spec's vectors, copied byte for byte (see SOURCE.md beside them).
        let path = format!(
            "{}/tests/vectors/fernet/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn unix(rfc3339: &Value) -> u64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap())
            .unwrap()
            .timestamp() as u64
    }

    #[test]
    fn spec_generate_vectors() {
        for v in vectors("generate") {
            let key = Key::parse(v["secret"].as_str().unwrap()).unwrap();
            let iv: Vec<u8> = v["iv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            let token = key
                .encrypt_with(
                    v["src"].as_str().unwrap().as_bytes(),
                    unix(&v["now"]),
                    iv.try_into().unwrap(),
                )
                .unwrap();
            assert_eq!(token, v["token"].as_str().unwrap());
        }
    }

    #[test]
    fn spec_verify_vectors() {
        for v in vectors("verify") {
            let key = Key::parse(v["secret"].as_str().unwrap()).unwrap();
            let (plaintext, _) = key
                .decrypt_at(
                    v["token"].as_str().unwrap(),
                    v["ttl_sec"].as_u64(),
                    unix(&v["now"]),
                )
                .unwrap();
            assert_eq!(plaintext, v["src"].as_str().unwrap().as_bytes());
        }
    }

    #[test]
    fn spec_invalid_vectors() {
        let cases = vectors("invalid");
        assert_eq!(cases.len(), 8);
        for v in cases {
            let key = Key::parse(v["secret"].as_str().unwrap()).unwrap();
            let result = key.decrypt_at(
                v["token"].as_str().unwrap(),
                v["ttl_sec"].as_u64(),
                unix(&v["now"]),
            );
            assert_eq!(result, Err(KeyringError::InvalidToken), "{}", v["desc"]);
        }
    }

    #[test]
    fn newest_key_encrypts_any_key_decrypts_and_rotation_moves_to_the_newest() {
        let (old, new) = (Key::generate().unwrap(), Key::generate().unwrap());
        let before = Keyring::parse(&old).unwrap();
        let token = before.encrypt(b"sk-secret").unwrap();

        let during = Keyring::parse(&format!("{new},{old}")).unwrap();
        assert_eq!(during.decrypt(&token).unwrap(), b"sk-secret");
        assert!(!during.is_current(&token));
        let rotated = during.rotate(&token).unwrap().unwrap();
        assert!(during.is_current(&rotated));
        assert_eq!(during.rotate(&rotated).unwrap(), None, "already current");

        let after = Keyring::parse(&new).unwrap();
        assert_eq!(after.decrypt(&rotated).unwrap(), b"sk-secret");
        assert_eq!(
            after.decrypt(&token),
            Err(KeyringError::InvalidToken),
            "unrotated tokens die with the old key"
        );
        // Rotation keeps the original timestamp.
        let ts = |t: &str| B64.decode(t).unwrap()[1..9].to_vec();
        assert_eq!(ts(&token), ts(&rotated));
    }

    #[test]
    fn bad_key_lists_are_refused_and_keys_never_print() {
        assert_eq!(Keyring::parse("").unwrap_err(), KeyringError::NoKeys);
        assert_eq!(
            Keyring::parse(&format!("{},short", Key::generate().unwrap())).unwrap_err(),
            KeyringError::InvalidKey { index: 1 }
        );
        let ring = Keyring::parse(&Key::generate().unwrap()).unwrap();
        assert!(!format!("{ring:?}").contains('='));
    }
}
