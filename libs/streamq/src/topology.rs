//! Where a queue's data lives in Redis: one stream per partition, and the
//! keys that belong to each partition.
//!
//! Every key of partition `p` carries the hash tag `{p}`, so in a Redis
//! Cluster a partition's stream, its dedupe marks and its lease sit in one
//! slot (the enqueue script touches two of them at once), while different
//! partitions spread over the shards.

/// Most partitions a queue may have: each owned partition costs its owner a
/// connection, so thousands would be a mistake rather than a plan.
pub const MAX_PARTITIONS: u16 = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("a queue needs 1 to {MAX_PARTITIONS} partitions, not {0}")]
    Partitions(u16),
    #[error(
        "queue prefix `{0}` must be non-empty and free of braces (they are Redis Cluster hash tags)"
    )]
    Prefix(String),
}

/// A queue: a key prefix and a fixed number of partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    partitions: u16,
}

impl Topology {
    pub fn new(prefix: impl Into<String>, partitions: u16) -> Result<Topology, TopologyError> {
        let prefix = prefix.into();
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(TopologyError::Prefix(prefix));
        }
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(TopologyError::Partitions(partitions));
        }
        Ok(Topology { prefix, partitions })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The partition of an ordering key. FNV-1a: stable across processes,
    /// versions and platforms, which the hasher of `std` does not promise —
    /// a key must land on the same partition from every producer, forever.
    pub fn partition_of(&self, key: &str) -> u16 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        (hash % u64::from(self.partitions)) as u16
    }

    /// The stream of partition `p`.
    pub fn stream(&self, p: u16) -> String {
        format!("{}:{{{p}}}", self.prefix)
    }

    /// The mark that says message `id` was queued (producer-side dedupe).
    pub fn seen(&self, p: u16, id: &str) -> String {
        format!("{}:{{{p}}}:seen:{id}", self.prefix)
    }

    /// Who consumes partition `p` now.
    pub fn owner(&self, p: u16) -> String {
        format!("{}:{{{p}}}:owner", self.prefix)
    }

    /// The live consumers of `group`, scored by their last heartbeat.
    pub fn members(&self, group: &str) -> String {
        format!("{}:members:{group}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_partition_share_its_hash_tag() {
        let t = Topology::new("crewmesh:inbound", 16).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.stream(3), "crewmesh:inbound:{3}");
        assert_eq!(
            t.seen(3, "slack:Ev1"),
            "crewmesh:inbound:{3}:seen:slack:Ev1"
        );
        assert_eq!(t.owner(3), "crewmesh:inbound:{3}:owner");
        assert_eq!(t.members("llm-svc"), "crewmesh:inbound:members:llm-svc");
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        let t = Topology::new("q", 16).unwrap_or_else(|e| panic!("{e}"));
        // Fixed values: a change here would move live conversations between
        // partitions during a rolling upgrade and break their order.
        assert_eq!(
            t.partition_of(""),
            0xcbf2_9ce4_8422_2325_u64.rem_euclid(16) as u16
        );
        assert_eq!(
            t.partition_of("slack:T1:C1:1.2"),
            t.partition_of("slack:T1:C1:1.2")
        );
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            seen[usize::from(t.partition_of(&format!("whatsapp:123:{i}")))] += 1;
        }
        assert!(seen.iter().all(|&n| (50..=150).contains(&n)), "{seen:?}");
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert_eq!(Topology::new("q", 0), Err(TopologyError::Partitions(0)));
        assert!(Topology::new("q", MAX_PARTITIONS + 1).is_err());
        assert!(Topology::new("", 1).is_err());
        assert!(Topology::new("a{b}", 1).is_err());
    }
}
