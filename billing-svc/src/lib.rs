//! billing-svc: Stripe subscriptions, the tenant plan and agent quota, encrypted LLM keys, usage metering and budgets.

pub mod grpc;
pub mod startup;
