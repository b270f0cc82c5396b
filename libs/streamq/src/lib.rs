//! Partitioned, ordered, at-least-once work queues on Redis Streams.
//!
//! A queue is `N` streams (partitions); a message goes to the partition of
//! its ordering key (a conversation), so one key's messages stay in one
//! stream, in order. Each partition has one consumer group and, at any
//! moment, one owning consumer — replicas lease partitions and share them out
//! as they come and go — so messages of one key are never handled by two
//! replicas at once, and the owner handles them one after another while
//! different keys run in parallel up to a bound.
//!
//! Delivery is at least once: an entry is acknowledged after its handler
//! finished, so a crash means it is handled again — by the same consumer
//! name after a restart (its pending entries are read back first), or by the
//! next owner once the entries have been idle for the claim time. Handlers
//! must be idempotent on the message id. After the configured number of
//! attempts an entry moves to a dead-letter stream with its reason.
//! Acknowledged entries are trimmed, and producers are refused past a length
//! cap, so Redis holds at most the backlog.

pub mod consumer;
pub mod producer;
pub mod topology;

pub use consumer::{ConsumerConfig, Delivery, Handler, Outcome, run};
pub use producer::{Enqueued, Entry, ProduceError, Producer};
pub use topology::{Topology, TopologyError};

/// Fields of a dead-letter entry, besides the original `id`, `key` and `message`.
pub mod dead_letter {
    /// Machine-readable cause, e.g. `outside_customer_service_window`.
    pub const REASON: &str = "reason";
    /// Human-readable detail; never a secret.
    pub const DETAIL: &str = "detail";
    pub const ATTEMPTS: &str = "attempts";
    /// The queue (its prefix) the message came from.
    pub const QUEUE: &str = "queue";
    /// Unix milliseconds.
    pub const FAILED_AT: &str = "failed_at";
}
