//! Meta's Graph API as agent-svc uses it: a WhatsApp business number's
//! fields, read with the token a tenant wants to bind it with.
//!
//! <https://developers.facebook.com/docs/whatsapp/business-management-api/manage-phone-numbers>:
//! `GET /{phone_number_id}` answers `{"verified_name", "display_phone_number",
//! "id", …}`, or an error in Graph's envelope
//! `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`
//! (190: the token is invalid; 100/33: no such object, or the token may
//! not read it).

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::webapi;

/// A business number as Graph describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber {
    pub id: String,
    /// The business name Meta verified for the number.
    pub verified_name: String,
    /// e.g. `+1 555-0100`.
    pub display_phone_number: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The token is invalid, or may not read this number, or the id names
    /// no number. Graph's own message is not repeated: it is not ours to
    /// show, and the code says enough.
    #[error("Meta's Graph API refused the token for this phone_number_id (error {code})")]
    Refused { code: i64 },
    /// The id names something the token can read that is not a phone number.
    #[error("the id is not a WhatsApp business phone_number_id")]
    NotAPhoneNumber,
    #[error("Meta's Graph API could not be reached: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// Rate limited, failing, or off its documented shape: trying again
    /// later may work.
    #[error("Meta's Graph API answered unexpectedly: {0}")]
    Unexpected(String),
}

#[derive(Debug, Deserialize)]
struct Envelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: i64,
}

#[derive(Debug, Deserialize)]
struct NumberBody {
    id: String,
    #[serde(default)]
    verified_name: Option<String>,
    #[serde(default)]
    display_phone_number: Option<String>,
}

/// Graph's rate limits and temporary failures: the number may be fine.
/// <https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes>
fn transient(code: i64) -> bool {
    matches!(code, 1 | 2 | 4 | 17 | 32 | 613 | 80007 | 130429 | 131000)
}

/// Reads `phone_number_id` with `token`; succeeds only when the token may.
/// The token goes in the `Authorization` header only.
pub async fn phone_number(
    http: &reqwest::Client,
    api_base: &str,
    phone_number_id: &str,
    token: &SecretString,
) -> Result<PhoneNumber, GraphError> {
    // The id is digits (validated before this is called): safe in a path.
    let endpoint = format!(
        "{}/{phone_number_id}?fields=id,verified_name,display_phone_number",
        api_base.trim_end_matches('/')
    );
    let response = http
        .get(endpoint)
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .map_err(GraphError::Unreachable)?;
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(GraphError::Unexpected(format!("HTTP {status}")));
    }
    if !status.is_success() {
        let envelope: Envelope = webapi::json(response)
            .await
            .map_err(|e| GraphError::Unexpected(format!("HTTP {status}: {e}")))?;
        let code = envelope.error.code;
        return Err(if transient(code) {
            GraphError::Unexpected(format!("error {code}"))
        } else {
            GraphError::Refused { code }
        });
    }
    let body: NumberBody = webapi::json(response)
        .await
        .map_err(|e| GraphError::Unexpected(e.to_string()))?;
    let Some(display_phone_number) = body.display_phone_number.filter(|d| !d.is_empty()) else {
        return Err(GraphError::NotAPhoneNumber);
    };
    if body.id != phone_number_id {
        return Err(GraphError::Unexpected(
            "the answer is about another object".to_owned(),
        ));
    }
    Ok(PhoneNumber {
        id: body.id,
        verified_name: body.verified_name.unwrap_or_default(),
        display_phone_number,
    })
}
