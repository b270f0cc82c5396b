//! Extractors whose rejections use the JSON error body, so malformed input is
//! a 422 with our code like every other validation error.

use axum::extract::{FromRequest, Request, rejection::JsonRejection};
use mesh_kit::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, request_id};

/// `axum::Json`, answering bad bodies with `invalid_argument` (422).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let id = request_id(req.headers()).to_owned();
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => {
                let message = match &rejection {
                    JsonRejection::MissingJsonContentType(_) => {
                        "send the body as JSON with `Content-Type: application/json`".to_owned()
                    }
                    other => format!(
                        "the body is not valid for this route: {}",
                        other.body_text()
                    ),
                };
                let field = match &rejection {
                    JsonRejection::JsonDataError(e) => field_of(&e.body_text()),
                    _ => None,
                };
                Err(ApiError::new(ErrorCode::InvalidArgument, message, &id).with_field(field))
            }
        }
    }
}

/// The offending field of a deserialization error, so clients can point at
/// it: axum reports `…target type: <path>: <serde message>`, leaving the path
/// out (or `.`) at the top level, where a missing field has its name in
/// backticks.
fn field_of(text: &str) -> Option<String> {
    let detail = text.split_once("target type: ")?.1;
    let (path, message) = match detail.split_once(": ") {
        // Paths hold no spaces; top-level serde messages ("invalid type: …") do.
        Some((path, message)) if !path.contains(char::is_whitespace) => (path, message),
        _ => (".", detail),
    };
    if path != "." {
        return Some(path.to_owned());
    }
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split_once('`')?.0.to_owned())
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn fields_are_named_from_the_error() {
        let prefix = "Failed to deserialize the JSON body into the target type: ";
        assert_eq!(
            field_of(&format!(
                "{prefix}channel: unknown variant `telegram`, expected `slack` or `whatsapp` at line 1 column 9"
            )),
            Some("channel".into())
        );
        assert_eq!(
            field_of(&format!("{prefix}escalation.enabled: invalid type: string")),
            Some("escalation.enabled".into())
        );
        assert_eq!(
            field_of(&format!(
                "{prefix}.: missing field `agent_id` at line 1 column 2"
            )),
            Some("agent_id".into())
        );
        assert_eq!(
            field_of(&format!(
                "{prefix}missing field `content_type` at line 1 column 17"
            )),
            Some("content_type".into())
        );
        assert_eq!(
            field_of(&format!(
                "{prefix}invalid type: sequence, expected struct NewUpload at line 1 column 0"
            )),
            None
        );
        assert_eq!(field_of("Failed to parse the request body as JSON"), None);
    }
}
