//! The one place where gRPC statuses become HTTP errors.
//!
//! Every error body is `{code, message, request_id}` (plus `field` when a
//! validation error names one), with the stable codes of `ErrorCode`.
//!
//! A 429 or 503 carries `Retry-After` when its cause knows when to retry: the
//! edge's own rate limit, or a service that attached a standard
//! `google.rpc.RetryInfo` detail to its status (identity-svc does when
//! password hashing is at capacity and when a login is throttled). Other
//! statuses never produce the header: a service that is merely down does not
//! know when it will be back.

use std::time::Duration;

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
};
use mesh_kit::{ErrorCode, error::violated_field};
use serde::Serialize;
use tonic_types::StatusExt as _;
use utoipa::ToSchema;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_argument`.
    #[schema(example = "unauthenticated")]
    pub code: &'static str,
    /// What went wrong and, where possible, what to do about it.
    pub message: String,
    /// The request id to quote when reporting a problem.
    pub request_id: String,
    /// The offending input field of a validation error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    field: Option<String>,
    request_id: String,
    /// Sent as `Retry-After` (whole seconds, at least 1).
    retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>, request_id: &str) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            field: None,
            request_id: request_id.to_owned(),
            retry_after: None,
        }
    }

    /// Maps a status from any service. Internal failures keep their detail in
    /// the service's logs, not in the response.
    pub fn from_status(status: &tonic::Status, request_id: &str) -> ApiError {
        let code = ErrorCode::of_status(status);
        let retry_after = match code {
            ErrorCode::ResourceExhausted | ErrorCode::Unavailable => status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay),
            ErrorCode::InvalidArgument
            | ErrorCode::Unauthenticated
            | ErrorCode::PermissionDenied
            | ErrorCode::NotFound
            | ErrorCode::Conflict
            | ErrorCode::FailedPrecondition
            | ErrorCode::DeadlineExceeded
            | ErrorCode::Internal => None,
        };
        let message = match code {
            ErrorCode::Internal => "internal error; quote the request id when reporting it".into(),
            // A service that says when to retry refused on purpose (it is at
            // capacity) and wrote its message for the caller.
            ErrorCode::Unavailable if retry_after.is_some() => status.message().to_owned(),
            ErrorCode::Unavailable => {
                tracing::warn!(grpc = %status, "upstream unavailable");
                "a service is unavailable; retry shortly".into()
            }
            ErrorCode::InvalidArgument
            | ErrorCode::Unauthenticated
            | ErrorCode::PermissionDenied
            | ErrorCode::NotFound
            | ErrorCode::Conflict
            | ErrorCode::FailedPrecondition
            | ErrorCode::ResourceExhausted
            | ErrorCode::DeadlineExceeded => status.message().to_owned(),
        };
        if code == ErrorCode::Internal {
            tracing::error!(grpc = %status, request_id, "upstream internal error");
        }
        ApiError {
            code,
            message,
            field: violated_field(status),
            request_id: request_id.to_owned(),
            retry_after,
        }
    }

    /// Tells the client when to retry (`Retry-After`).
    pub fn with_retry_after(mut self, after: Duration) -> ApiError {
        self.retry_after = Some(after);
        self
    }

    /// Names the offending input field.
    pub fn with_field(mut self, field: Option<String>) -> ApiError {
        self.field = field;
        self
    }

    /// Names the field as the client sent it where a route's parameter and the
    /// service's field differ, so `field` points at something in the request.
    pub fn renaming_field(mut self, service: &str, client: &str) -> ApiError {
        if self.field.as_deref() == Some(service) {
            if let Some(reason) = self
                .message
                .strip_prefix(service)
                .and_then(|rest| rest.strip_prefix(": "))
            {
                self.message = format!("{client}: {reason}");
            }
            self.field = Some(client.to_owned());
        }
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code: self.code.as_str(),
            message: self.message,
            request_id: self.request_id,
            field: self.field,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up: retrying early would be refused again.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

/// The request id the request-id layer assigned (or the client sent).
pub fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_spec_http_codes_and_keep_the_field() {
        let err = ApiError::from_status(
            &mesh_kit::error::invalid_field("email", "is not an address"),
            "r1",
        );
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);

        let renamed = ApiError::from_status(
            &mesh_kit::error::invalid_field("expires_in_seconds", "is too long"),
            "r3",
        )
        .renaming_field("expires_in_seconds", "expires_in");
        assert_eq!(renamed.field.as_deref(), Some("expires_in"));
        assert_eq!(renamed.message, "expires_in: is too long");
        let untouched =
            ApiError::from_status(&mesh_kit::error::invalid_field("id", "is not a UUID"), "r4")
                .renaming_field("expires_in_seconds", "expires_in");
        assert_eq!(untouched.field.as_deref(), Some("id"));

        let hidden = ApiError::from_status(&tonic::Status::internal("db password wrong"), "r2");
        assert!(!hidden.message.contains("password"));
        assert_eq!(
            hidden.into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    fn with_retry_info(code: ErrorCode, after: Duration) -> tonic::Status {
        let mut status = tonic::Status::with_error_details(
            code.grpc_code(),
            "busy",
            tonic_types::ErrorDetails::with_retry_info(Some(after)),
        );
        status.metadata_mut().insert(
            mesh_kit::error::CODE_METADATA_KEY,
            code.as_str().parse().unwrap(),
        );
        status
    }

    #[test]
    fn retry_info_becomes_retry_after_on_429_and_503_only() {
        let busy = ApiError::from_status(
            &with_retry_info(ErrorCode::Unavailable, Duration::from_millis(1500)),
            "r1",
        )
        .into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[RETRY_AFTER], "2");

        let throttled = ApiError::from_status(
            &with_retry_info(ErrorCode::ResourceExhausted, Duration::from_secs(40)),
            "r2",
        )
        .into_response();
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(throttled.headers()[RETRY_AFTER], "40");

        // A refusal of another kind never says when to retry.
        let conflict = ApiError::from_status(
            &with_retry_info(ErrorCode::Conflict, Duration::from_secs(5)),
            "r3",
        )
        .into_response();
        assert!(conflict.headers().get(RETRY_AFTER).is_none());
        // Nor does a service that is simply down.
        let down = ApiError::from_status(&tonic::Status::unavailable("connect refused"), "r4")
            .into_response();
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(down.headers().get(RETRY_AFTER).is_none());
    }
}
