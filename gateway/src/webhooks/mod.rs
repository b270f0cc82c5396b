//! Inbound webhooks: verified on the raw body before anything else happens.

pub mod stripe;

/// Lower-case or upper-case hex to bytes; None if malformed.
pub(crate) fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}
