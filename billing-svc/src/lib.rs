//! billing-svc: Stripe subscriptions, the tenant plan and agent quota,
//! encrypted LLM keys, usage metering and budgets.

pub mod budget;
pub mod config;
pub mod events;
pub mod grpc;
pub mod llm_keys;
pub mod plans;
pub mod rotation;
pub mod startup;
pub mod stripe_api;
pub mod subscriptions;
pub mod usage;
