//! identity-svc: tenants, users, memberships and roles, invites, tokens,
//! impersonation and the audit log.

pub mod grpc;
pub mod startup;
pub mod tenants;
