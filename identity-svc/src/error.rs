//! Statuses identity-svc builds beyond `ErrorCode::status`.

use std::time::Duration;

use mesh_kit::{ErrorCode, error::CODE_METADATA_KEY};
use tonic::{Status, metadata::MetadataValue};
use tonic_types::{ErrorDetails, StatusExt as _};

/// A refusal the caller should retry after `after`: the delay travels as a
/// standard `google.rpc.RetryInfo` detail, which the gateway turns into a
/// `Retry-After` header (on 429 and 503 only).
pub fn retry_later(code: ErrorCode, message: impl Into<String>, after: Duration) -> Status {
    let mut status = Status::with_error_details(
        code.grpc_code(),
        message,
        ErrorDetails::with_retry_info(Some(after)),
    );
    status
        .metadata_mut()
        .insert(CODE_METADATA_KEY, MetadataValue::from_static(code.as_str()));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_and_the_code_survive() {
        let status = retry_later(ErrorCode::Unavailable, "busy", Duration::from_secs(3));
        assert_eq!(ErrorCode::of_status(&status), ErrorCode::Unavailable);
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(3))
        );
    }
}
