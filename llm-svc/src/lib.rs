//! llm-svc: running agents: provider calls, tools, memory, budgets, escalation and conversations.

pub mod budget;
pub mod config;
pub mod conversations;
pub mod dead_letters;
pub mod grpc;
pub mod inbound;
pub mod memory;
pub mod pricing;
pub mod providers;
pub mod run;
pub mod startup;
