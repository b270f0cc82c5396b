//! `POST /webhooks/stripe`: the `Stripe-Signature` header checked on the raw
//! body (any matching `v1`, HMAC-SHA256 over `"{t}.{body}"` keyed with the
//! whole `whsec_…` secret, compared in constant time, 300 s tolerance), then
//! the event goes to billing-svc, which stores it by id and applies it.

use aws_lc_rs::hmac;
use axum::{Json, body::Bytes, extract::State, http::HeaderMap};
use crewmesh_proto::billing::v1::HandleStripeEventRequest;
use mesh_kit::ErrorCode;
use secrecy::ExposeSecret;
use serde::Serialize;
use utoipa::ToSchema;

use super::{configured, decode_hex, required_header};
use crate::{
    auth::RequestMeta,
    error::{ApiError, ErrorBody},
    startup::AppState,
};

/// Stripe's SDK default.
pub const TOLERANCE_SECS: i64 = 300;
pub const SIGNATURE_HEADER: &str = "stripe-signature";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("Unable to extract timestamp and signatures from header")]
    Malformed,
    #[error("No signatures found with expected scheme v1")]
    NoV1,
    #[error("No signatures found matching the expected signature for payload")]
    NoMatch,
    #[error("Timestamp outside the tolerance zone")]
    Stale,
}

/// Checks a `Stripe-Signature` header against the raw payload at time `now`.
pub fn verify(secret: &str, header: &str, payload: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match key {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            // Other schemes (test mode's fake v0) are ignored, which also blocks downgrades.
            "v1" => v1.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = Vec::with_capacity(payload.len() + 12);
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(payload);
    let matched = v1
        .iter()
        .filter_map(|hex| decode_hex(hex))
        .any(|signature| hmac::verify(&key, &signed, &signature).is_ok());
    if !matched {
        return Err(SignatureError::NoMatch);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Received {
    pub received: bool,
    /// The event was delivered before; nothing changed.
    pub duplicate: bool,
}

/// Stripe webhook endpoint: subscription and invoice events drive the tenant's plan.
#[utoipa::path(
    post, path = "/webhooks/stripe", tag = "webhooks",
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256>")),
    request_body(content = String, description = "The Stripe event, as Stripe sent it", content_type = "application/json"),
    responses(
        (status = 200, body = Received),
        (status = 401, description = "Bad or stale signature", body = ErrorBody),
        (status = 422, description = "No Stripe-Signature header, or not an event", body = ErrorBody),
        (status = 503, description = "STRIPE_WEBHOOK_SECRET is not configured", body = ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    meta: RequestMeta,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Received>, ApiError> {
    let fail = |code: ErrorCode, message: String| ApiError::new(code, message, &meta.request_id);
    let secret = configured(
        state.stripe_webhook_secret.as_ref(),
        "Stripe webhooks",
        "STRIPE_WEBHOOK_SECRET",
        &meta,
    )?;
    let header = required_header(&headers, SIGNATURE_HEADER, &meta)?;
    verify(
        secret.expose_secret(),
        header,
        &body,
        chrono::Utc::now().timestamp(),
    )
    .map_err(|e| {
        tracing::warn!(error = %e, "Stripe webhook refused");
        fail(ErrorCode::Unauthenticated, e.to_string())
    })?;
    let handled = state
        .billing_internal
        .clone()
        .handle_stripe_event(
            meta.as_gateway(&state.signer)?
                .request(HandleStripeEventRequest {
                    payload: body.to_vec(),
                }),
        )
        .await
        .map_err(|s| meta.error(&s))?
        .into_inner();
    Ok(Json(Received {
        received: true,
        duplicate: handled.duplicate,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const PAYLOAD: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;

    fn sign(t: i64, payload: &[u8], secret: &str) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(payload);
        hmac::sign(&key, &signed)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn a_valid_signature_passes() {
        let now = 1_700_000_000;
        let header = format!("t={now},v1={}", sign(now, PAYLOAD, SECRET));
        assert_eq!(verify(SECRET, &header, PAYLOAD, now), Ok(()));
    }

    #[test]
    fn one_good_v1_among_several_passes_and_v0_is_ignored() {
        let now = 1_700_000_000;
        let header = format!(
            "t={now},v1={},v1={},v0={}",
            "00".repeat(32),
            sign(now, PAYLOAD, SECRET),
            "ff".repeat(32)
        );
        assert_eq!(verify(SECRET, &header, PAYLOAD, now), Ok(()));
    }

    #[test]
    fn the_sdk_failure_cases_fail() {
        let now = 1_700_000_000;
        let good = sign(now, PAYLOAD, SECRET);
        assert_eq!(
            verify(SECRET, "i'm not even a real signature header", PAYLOAD, now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(SECRET, &format!("v1={good}"), PAYLOAD, now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(SECRET, &format!("t={now},v0={good}"), PAYLOAD, now),
            Err(SignatureError::NoV1),
            "only a v0 signature"
        );
        assert_eq!(
            verify(
                SECRET,
                &format!("t={now},v1={}", "ab".repeat(32)),
                PAYLOAD,
                now
            ),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(
                SECRET,
                &format!("t={now},v1={good}"),
                br#"{"id":"evt_tampered"}"#,
                now
            ),
            Err(SignatureError::NoMatch),
            "tampered body"
        );
        assert_eq!(
            verify("whsec_other", &format!("t={now},v1={good}"), PAYLOAD, now),
            Err(SignatureError::NoMatch),
            "wrong secret"
        );
        assert_eq!(
            verify(
                SECRET,
                &format!("t={now},v1={good}"),
                PAYLOAD,
                now + TOLERANCE_SECS + 1
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(
                SECRET,
                &format!("t={now},v1={good}"),
                PAYLOAD,
                now + TOLERANCE_SECS
            ),
            Ok(())
        );
    }
}
