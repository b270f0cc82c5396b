//! The HTTP edge of Crewmesh: portal REST under `/api/v1`, health, the
//! OpenAPI document, and (as they land) channel and Stripe webhooks. It owns no
//! data: every route authenticates, checks the role, and calls a service.

pub mod auth;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod webhooks;
