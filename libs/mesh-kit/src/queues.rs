//! The message queues' settings, read the same way by the services that
//! produce to them and consume them: a queue's partition count must agree
//! on both sides, or a conversation's messages would land in two places.

use std::time::Duration;

use streamq::{ConsumerConfig, Topology};

use crate::{
    ServiceId,
    config::{ConfigError, parsed_or, var},
};

pub const DEFAULT_INBOUND: &str = "crewmesh:inbound";
pub const DEFAULT_OUTBOUND: &str = "crewmesh:outbound";
pub const DEFAULT_DEAD_LETTERS: &str = "crewmesh:dead-letters";
pub const DEFAULT_PARTITIONS: u16 = 16;

/// Where the inbound (channel → llm-svc) and outbound (llm-svc → channel)
/// queues live, and how consumers behave.
#[derive(Debug, Clone)]
pub struct Queues {
    /// `CREWMESH_INBOUND_STREAM` (prefix) and `CREWMESH_QUEUE_PARTITIONS`.
    pub inbound: Topology,
    /// `CREWMESH_OUTBOUND_STREAM`, same partition count.
    pub outbound: Topology,
    /// `CREWMESH_DEAD_LETTER_STREAM`: messages that failed for good, with
    /// their reason; llm-svc keeps them for admins to see and retry.
    pub dead_letters: Topology,
    /// `CREWMESH_QUEUE_MAX_LEN`: entries a partition holds before producers
    /// are refused (the webhook answers 503 and the platform retries).
    pub max_len: u64,
    /// `CREWMESH_CONSUMER_NAME`, else the host name (the pod name).
    pub consumer: String,
    /// `CREWMESH_QUEUE_CONCURRENCY`: messages one replica handles at once.
    pub concurrency: usize,
    /// `CREWMESH_QUEUE_CLAIM_IDLE_SECS`: when a vanished replica's messages
    /// are taken over. Longer than the slowest handling.
    pub claim_idle: Duration,
    /// `CREWMESH_QUEUE_MAX_ATTEMPTS`: before a message is dead-lettered.
    pub max_attempts: u32,
    /// `CREWMESH_QUEUE_WORKERS`: whether this process consumes its queues
    /// (llm-svc the inbound one, the gateway the outbound one). Off only to
    /// run an edge that queues and never answers, e.g. in tests of the queue.
    pub workers: bool,
}

fn invalid(name: &'static str, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: e.to_string(),
    }
}

impl Queues {
    pub fn from_env() -> Result<Queues, ConfigError> {
        let partitions = parsed_or("CREWMESH_QUEUE_PARTITIONS", DEFAULT_PARTITIONS)?;
        let topology = |name: &'static str, default: &str| {
            Topology::new(var(name).unwrap_or_else(|| default.to_owned()), partitions)
                .map_err(|e| invalid(name, e))
        };
        Ok(Queues {
            inbound: topology("CREWMESH_INBOUND_STREAM", DEFAULT_INBOUND)?,
            outbound: topology("CREWMESH_OUTBOUND_STREAM", DEFAULT_OUTBOUND)?,
            dead_letters: topology("CREWMESH_DEAD_LETTER_STREAM", DEFAULT_DEAD_LETTERS)?,
            max_len: parsed_or("CREWMESH_QUEUE_MAX_LEN", 100_000)?,
            consumer: consumer_name(),
            concurrency: parsed_or("CREWMESH_QUEUE_CONCURRENCY", 64)?,
            // A run may take three provider attempts of 30 s each and backoff.
            claim_idle: Duration::from_secs(parsed_or("CREWMESH_QUEUE_CLAIM_IDLE_SECS", 120)?),
            max_attempts: parsed_or("CREWMESH_QUEUE_MAX_ATTEMPTS", 5)?,
            workers: parsed_or("CREWMESH_QUEUE_WORKERS", true)?,
        })
    }

    /// Queues under `prefix` (tests give each mesh its own).
    pub fn named(prefix: &str, partitions: u16, consumer: &str) -> Result<Queues, ConfigError> {
        let topology = |suffix: &str| {
            Topology::new(format!("{prefix}:{suffix}"), partitions)
                .map_err(|e| invalid("CREWMESH_QUEUE_PARTITIONS", e))
        };
        Ok(Queues {
            inbound: topology("inbound")?,
            outbound: topology("outbound")?,
            dead_letters: topology("dead-letters")?,
            max_len: 100_000,
            consumer: consumer.to_owned(),
            concurrency: 64,
            claim_idle: Duration::from_secs(120),
            max_attempts: 5,
            workers: true,
        })
    }

    /// How `service` consumes one of these queues.
    pub fn consumer(&self, service: ServiceId) -> ConsumerConfig {
        let mut config = ConsumerConfig::new(
            service.to_string(),
            self.consumer.clone(),
            self.dead_letters.clone(),
        );
        config.concurrency = self.concurrency;
        config.claim_idle = self.claim_idle;
        config.max_attempts = self.max_attempts;
        config
    }
}

/// This replica's name in consumer groups: `CREWMESH_CONSUMER_NAME`, else
/// the host name. Stable across restarts of the same replica, so a restart
/// takes back its own pending entries at once.
pub fn consumer_name() -> String {
    var("CREWMESH_CONSUMER_NAME").unwrap_or_else(host_name)
}

/// The machine's name: the pod name under Kubernetes, which stays the same
/// when a container restarts in its pod.
fn host_name() -> String {
    var("HOSTNAME")
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}
