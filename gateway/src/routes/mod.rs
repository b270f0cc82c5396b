//! REST routes, one module per area. Each handler authenticates, checks the
//! role, calls one service and maps the answer.

pub mod health;
pub mod me;
pub mod tenants;
