//! The HTTP edge of Crewmesh: portal REST under `/api/v1`, health, the
//! OpenAPI document, the Slack OAuth callback and the Stripe webhook (channel
//! webhooks as they land). It owns no
//! data: every route authenticates, checks the role, and calls a service.

pub mod auth;
pub mod delivery;
pub mod error;
pub mod extract;
pub mod inbound;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod startup;
pub mod webhooks;
