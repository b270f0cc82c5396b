//! agent-svc: agents, the global template catalogue, the system-prompt builder and channel connections.

pub mod agents;
pub mod budget_outbox;
pub mod channels;
pub mod config;
pub mod grpc;
pub mod ownership;
pub mod prompt;
pub mod slack;
pub mod startup;
pub mod templates;
pub mod webapi;
pub mod whatsapp;
