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
                Err(ApiError::new(ErrorCode::InvalidArgument, message, &id))
            }
        }
    }
}
