//! Inbound webhooks: verified on the raw body before anything else happens.

pub mod routing;
pub mod slack;
pub mod stripe;
pub mod whatsapp;

use axum::http::HeaderMap;
use mesh_kit::ErrorCode;
use secrecy::SecretString;

use crate::{auth::RequestMeta, error::ApiError};

/// The secret a webhook is verified with; 503 naming the variable to set
/// when the platform has not configured it (the sender will retry).
pub(crate) fn configured<'a>(
    secret: Option<&'a SecretString>,
    what: &str,
    env: &str,
    meta: &RequestMeta,
) -> Result<&'a SecretString, ApiError> {
    secret.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("{what} are not configured: set {env}"),
            &meta.request_id,
        )
    })
}

/// A header the webhook cannot be verified without; its absence is invalid
/// input (422), as for every missing required header.
pub(crate) fn required_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
    meta: &RequestMeta,
) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("the {name} header is required"),
                &meta.request_id,
            )
        })
}

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
