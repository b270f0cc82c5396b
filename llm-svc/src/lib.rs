//! llm-svc: running agents: provider calls, tools, memory, budgets, escalation and conversations.

pub mod budget;
pub mod config;
pub mod conversations;
pub mod grpc;
pub mod pricing;
pub mod providers;
pub mod run;
pub mod startup;
