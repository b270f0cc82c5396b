//! The closed table of error codes every service and the edge agree on.
//!
//! A code maps to exactly one gRPC code and one HTTP status; the mappings are
//! exhaustive matches so a new code cannot be added without deciding both.
//! The code also travels in the `x-crewmesh-code` metadata so a typed error
//! survives the gRPC hop even where two codes share a gRPC code.

use tonic::{Code, Status, metadata::MetadataValue};
use tonic_types::{ErrorDetails, StatusExt};

/// Metadata key carrying the stable snake_case code across the gRPC hop.
pub const CODE_METADATA_KEY: &str = "x-crewmesh-code";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Input failed validation (HTTP 422).
    InvalidArgument,
    /// No token, or a token that does not verify (HTTP 401).
    Unauthenticated,
    /// The caller's role may not do this (HTTP 403).
    PermissionDenied,
    /// Absent, or another tenant's (HTTP 404; never reveal which).
    NotFound,
    /// A unique resource already exists or a one-time action was already taken (HTTP 409).
    Conflict,
    /// The request is valid but the state forbids it, e.g. an expired invite or a full quota (HTTP 409).
    FailedPrecondition,
    /// Rate or budget limit reached (HTTP 429).
    ResourceExhausted,
    /// A dependency is down; retrying later may work (HTTP 503).
    Unavailable,
    /// The call ran out of time (HTTP 504).
    DeadlineExceeded,
    /// A bug or an unexpected failure; details are in the logs only (HTTP 500).
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::FailedPrecondition,
        ErrorCode::ResourceExhausted,
        ErrorCode::Unavailable,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Internal,
    ];

    /// The stable machine-readable code of the JSON error body.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::Internal => "internal",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|code| code.as_str() == s)
    }

    pub const fn grpc_code(self) -> Code {
        match self {
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::PermissionDenied => Code::PermissionDenied,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::Conflict => Code::AlreadyExists,
            ErrorCode::FailedPrecondition => Code::FailedPrecondition,
            ErrorCode::ResourceExhausted => Code::ResourceExhausted,
            ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::DeadlineExceeded => Code::DeadlineExceeded,
            ErrorCode::Internal => Code::Internal,
        }
    }

    pub const fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 422,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::FailedPrecondition => 409,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::DeadlineExceeded => 504,
            ErrorCode::Internal => 500,
        }
    }

    /// The code for a status from any gRPC peer, ours or not.
    pub const fn from_grpc(code: Code) -> ErrorCode {
        match code {
            Code::InvalidArgument | Code::OutOfRange => ErrorCode::InvalidArgument,
            Code::Unauthenticated => ErrorCode::Unauthenticated,
            Code::PermissionDenied => ErrorCode::PermissionDenied,
            Code::NotFound => ErrorCode::NotFound,
            Code::AlreadyExists | Code::Aborted => ErrorCode::Conflict,
            Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            Code::ResourceExhausted => ErrorCode::ResourceExhausted,
            Code::Unavailable | Code::Cancelled => ErrorCode::Unavailable,
            Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
            Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => {
                ErrorCode::Internal
            }
        }
    }

    /// The code a status stands for: our metadata when present, else its gRPC code.
    pub fn of_status(status: &Status) -> ErrorCode {
        status
            .metadata()
            .get(CODE_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::parse)
            .unwrap_or_else(|| ErrorCode::from_grpc(status.code()))
    }

    /// A status carrying this code and a message for humans.
    pub fn status(self, message: impl Into<String>) -> Status {
        let mut status = Status::new(self.grpc_code(), message);
        status
            .metadata_mut()
            .insert(CODE_METADATA_KEY, MetadataValue::from_static(self.as_str()));
        status
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `InvalidArgument` naming the offending field, as a `BadRequest` detail
/// (google.rpc error model) so clients and the edge can point at it.
pub fn invalid_field(field: &str, reason: impl Into<String>) -> Status {
    let reason = reason.into();
    let details = ErrorDetails::with_bad_request_violation(field, reason.clone());
    let mut status =
        Status::with_error_details(Code::InvalidArgument, format!("{field}: {reason}"), details);
    status.metadata_mut().insert(
        CODE_METADATA_KEY,
        MetadataValue::from_static(ErrorCode::InvalidArgument.as_str()),
    );
    status
}

/// The first field a status names in its `BadRequest` detail, if any.
pub fn violated_field(status: &Status) -> Option<String> {
    status
        .get_details_bad_request()
        .and_then(|br| br.field_violations.into_iter().next())
        .map(|v| v.field)
}

/// An unexpected failure: the cause is logged once here, the caller gets a generic message.
pub fn internal(context: &str, err: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %DisplayChain(err), "{context}");
    ErrorCode::Internal.status("internal error; see the service logs")
}

/// Displays an error with its whole `source()` chain on one line.
#[derive(Debug)]
pub struct DisplayChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_grpc_and_its_name() {
        for code in ErrorCode::ALL {
            let status = code.status("x");
            assert_eq!(ErrorCode::of_status(&status), code);
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
    }

    #[test]
    fn codes_without_metadata_map_from_their_grpc_code() {
        for code in ErrorCode::ALL {
            // Conflict and FailedPrecondition share HTTP 409 but not a gRPC code.
            assert_eq!(ErrorCode::from_grpc(code.grpc_code()), code);
        }
        assert_eq!(
            ErrorCode::from_grpc(Code::Unimplemented),
            ErrorCode::Internal
        );
    }

    #[test]
    fn http_statuses_match_the_spec() {
        assert_eq!(ErrorCode::Unauthenticated.http_status(), 401);
        assert_eq!(ErrorCode::PermissionDenied.http_status(), 403);
        assert_eq!(ErrorCode::NotFound.http_status(), 404);
        assert_eq!(ErrorCode::Conflict.http_status(), 409);
        assert_eq!(ErrorCode::InvalidArgument.http_status(), 422);
        assert_eq!(ErrorCode::ResourceExhausted.http_status(), 429);
    }

    #[test]
    fn invalid_field_names_the_field() {
        let status = invalid_field("slug", "must be lowercase");
        assert_eq!(ErrorCode::of_status(&status), ErrorCode::InvalidArgument);
        assert_eq!(violated_field(&status).as_deref(), Some("slug"));
        assert_eq!(status.message(), "slug: must be lowercase");
    }
}
