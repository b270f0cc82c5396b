//! Authentication at the edge: the bearer token becomes a verified caller
//! plus the context forwarded to services (the same token, `traceparent`,
//! a deadline). Deny by default: a route that takes [`Authenticated`] cannot
//! run without a valid token, and [`Authenticated::require`] checks the role.

use axum::{extract::FromRequestParts, http::request::Parts};
use mesh_kit::{
    Caller, ErrorCode, Role,
    auth::{UserCaller, bearer},
    client::CallContext,
};

use crate::{
    error::{ApiError, request_id},
    startup::AppState,
};

#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
    pub call: CallContext,
    pub request_id: String,
}

impl Authenticated {
    /// The user, if their role is one of `roles`; 403 otherwise.
    pub fn require(&self, roles: &[Role]) -> Result<&UserCaller, ApiError> {
        self.caller
            .require_role(roles)
            .map_err(|status| ApiError::from_status(&status, &self.request_id))
    }

    pub fn error(&self, status: &tonic::Status) -> ApiError {
        ApiError::from_status(status, &self.request_id)
    }

    /// A service answered without a field its contract promises: a bug upstream.
    pub fn missing(&self, field: &str) -> ApiError {
        tracing::error!(field, request_id = %self.request_id, "upstream response lacks a required field");
        ApiError::new(
            ErrorCode::Internal,
            "internal error; quote the request id when reporting it",
            &self.request_id,
        )
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let request_id = request_id(&parts.headers).to_owned();
        let unauthenticated =
            |message: &str| ApiError::new(ErrorCode::Unauthenticated, message, &request_id);
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or_else(|| {
                unauthenticated("send `Authorization: Bearer <token>`; log in to get one")
            })?;
        let caller = state
            .verifier
            .verify(token)
            .map_err(|e| unauthenticated(&format!("{e}; log in again")))?;
        let traceparent = parts
            .headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Authenticated {
            caller,
            call: CallContext::new(token.to_owned(), traceparent),
            request_id,
        })
    }
}
