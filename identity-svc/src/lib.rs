//! identity-svc: tenants, users, memberships and roles, invites, tokens,
//! impersonation, tenant API keys and the audit log.

pub mod api_keys;
pub mod audit;
pub mod config;
pub mod error;
pub mod grpc;
pub mod invites;
pub mod outbox;
pub mod passwords;
pub mod secrets;
pub mod sessions;
pub mod startup;
pub mod tenants;
pub mod throttle;
pub mod users;
