//! The one HTTP client agent-svc talks to Slack's Web API and Meta's Graph
//! API with, and reading their answers within a bound.
//!
//! Every request carries a tenant's bearer token, so the client never
//! follows a redirect (it would carry the token somewhere we did not
//! choose), and an answer is untrusted input read up to
//! [`MAX_RESPONSE_BYTES`].

use std::time::Duration;

use serde::de::DeserializeOwned;

/// Both APIs answer these calls in well under a second; a hung call would
/// otherwise hold an admin's request (or browser, on the OAuth callback).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// `auth.test`, `oauth.v2.access` and a phone number's fields are a few
/// hundred bytes; anything near this is not the answer we asked for.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("crewmesh-agent-svc/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the answer is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("reading the answer failed: {0}")]
    Read(#[source] reqwest::Error),
    #[error("the answer is not the expected JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// The body of `response` as `T`, refused past [`MAX_RESPONSE_BYTES`].
pub async fn json<T: DeserializeOwned>(mut response: reqwest::Response) -> Result<T, BodyError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(BodyError::Json)
}
