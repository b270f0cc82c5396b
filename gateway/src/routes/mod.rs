//! REST routes, one module per area. Each handler authenticates, checks the
//! role, calls one service and maps the answer.

pub mod agents;
pub mod api_keys;
pub mod audit;
pub mod billing;
pub mod channels;
pub mod dead_letters;
pub mod health;
pub mod llm_keys;
pub mod me;
pub mod media;
pub mod sessions;
pub mod templates;
pub mod tenants;
pub mod usage;
pub mod users;

use crewmesh_proto::identity::v1::Role as ProtoRole;
use mesh_kit::Role;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;

/// Roles administering a tenant: platform staff and the tenant's customer admins.
pub(crate) const ADMINS: &[Role] = &[Role::PlatformAdmin, Role::CustomerAdmin];

/// A role a tenant member or API key can hold.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantRole {
    CustomerAdmin,
    Operator,
}

impl TenantRole {
    pub(crate) fn proto(self) -> i32 {
        match self {
            TenantRole::CustomerAdmin => ProtoRole::CustomerAdmin,
            TenantRole::Operator => ProtoRole::Operator,
        }
        .into()
    }
}

/// The JSON name of a role from the wire enum.
pub(crate) fn role_name(role: i32) -> Option<String> {
    match ProtoRole::try_from(role).ok()? {
        ProtoRole::PlatformAdmin => Some(Role::PlatformAdmin.as_str().to_owned()),
        ProtoRole::CustomerAdmin => Some(Role::CustomerAdmin.as_str().to_owned()),
        ProtoRole::Operator => Some(Role::Operator.as_str().to_owned()),
        ProtoRole::Unspecified => None,
    }
}

pub(crate) fn rfc3339(ts: Option<prost_types::Timestamp>) -> Option<String> {
    ts.and_then(|t| {
        chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
    })
    .map(|t| t.to_rfc3339())
}

pub(crate) fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TenantPageQuery {
    /// At most 200; default 50.
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
    /// Platform admins name the tenant; others may omit it (their own).
    pub tenant_id: Option<String>,
}

/// A 422 naming a query or body field, for checks the edge makes itself.
pub(crate) fn invalid(field: &str, message: &str, request_id: &str) -> ApiError {
    ApiError::from_status(&mesh_kit::error::invalid_field(field, message), request_id)
}

/// An optional RFC 3339 query parameter as a protobuf timestamp.
pub(crate) fn timestamp_param(
    field: &str,
    value: Option<String>,
    request_id: &str,
) -> Result<Option<prost_types::Timestamp>, ApiError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
                })
                .map_err(|_| invalid(field, "must be an RFC 3339 time", request_id))
        })
        .transpose()
}
