//! What every Crewmesh service does the same way, and nothing else:
//! configuration and telemetry start-up, the caller identity and its tokens,
//! the closed error-code table, tenant-scoped database transactions, and the
//! gRPC server/client plumbing (auth layer, health, reflection, shutdown).
//!
//! No domain types live here; a service's types live in its own crate.

pub mod auth;
pub mod client;
pub mod config;
pub mod db;
pub mod egress;
pub mod error;
pub mod metrics;
pub mod queues;
pub mod secrets;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod wire;

pub use auth::{Caller, Role, ServiceId};
pub use error::ErrorCode;
pub use shutdown::Shutdown;
pub mod service;
