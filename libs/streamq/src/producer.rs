//! Appending to a queue: the entry goes to its key's partition, optionally
//! deduplicated by its id, and refused (not dropped) when the partition is
//! full.

use redis::{Script, aio::ConnectionManager};

use crate::topology::Topology;

/// Field names of every entry.
pub const FIELD_ID: &str = "id";
pub const FIELD_KEY: &str = "key";
pub const FIELD_MESSAGE: &str = "message";

/// One message for the queue.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The message's own id, the same on every retry of it: the dedupe key
    /// here and the idempotency key of whoever handles it.
    pub id: &'a str,
    /// The ordering key: messages with one key are handled one at a time,
    /// in the order they were appended.
    pub key: &'a str,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Appended under this stream entry id.
    Queued(String),
    /// The id was queued before (within the dedupe window): nothing changed.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("the queue is unavailable: {0}")]
    Redis(#[source] redis::RedisError),
    /// Consumers are far behind; the caller should push back (503) rather
    /// than let Redis grow without bound.
    #[error(
        "partition {partition} of queue {queue} holds {max_len} messages; refusing more until consumers catch up"
    )]
    Full {
        queue: String,
        partition: u16,
        max_len: u64,
    },
}

/// Appends first and marks the id seen after: Redis does not undo a
/// script's earlier writes when a later command fails, so a mark written
/// before a failed XADD would make the sender's retry look like a duplicate
/// and lose the message.
const APPEND: &str = r"
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then
    return false
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
    return redis.error_reply('FULL partition is full')
end
local entry = redis.call('XADD', KEYS[1], '*', 'id', ARGV[3], 'key', ARGV[4], 'message', ARGV[5])
if ARGV[6] == '1' then
    redis.call('SET', KEYS[2], entry, 'EX', ARGV[2])
end
return entry
";

/// Sends messages to one queue.
#[derive(Clone)]
pub struct Producer {
    redis: ConnectionManager,
    topology: Topology,
    max_len: u64,
    dedupe_secs: u64,
    script: Script,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("topology", &self.topology)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// `max_len`: entries a partition may hold (unconsumed ones plus those
    /// not trimmed yet) before appends are refused. `dedupe_secs`: how long
    /// an id is remembered by [`Producer::enqueue`].
    pub fn new(
        redis: ConnectionManager,
        topology: Topology,
        max_len: u64,
        dedupe_secs: u64,
    ) -> Producer {
        Producer {
            redis,
            topology,
            max_len,
            dedupe_secs,
            script: Script::new(APPEND),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether Redis answers, for readiness.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut redis = self.redis.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut redis)
            .await
            .map(drop)
    }

    /// Appends `entry` unless its id was enqueued before.
    pub async fn enqueue(&self, entry: &Entry<'_>) -> Result<Enqueued, ProduceError> {
        Ok(self
            .append_with(entry, true)
            .await?
            .map_or(Enqueued::Duplicate, Enqueued::Queued))
    }

    /// Appends `entry` whether or not its id was seen: for messages whose
    /// handling is idempotent downstream (replies, retries of dead letters).
    pub async fn append(&self, entry: &Entry<'_>) -> Result<String, ProduceError> {
        self.append_with(entry, false).await?.ok_or_else(|| {
            ProduceError::Redis(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "the append script returned nothing",
            )))
        })
    }

    async fn append_with(
        &self,
        entry: &Entry<'_>,
        dedupe: bool,
    ) -> Result<Option<String>, ProduceError> {
        let partition = self.topology.partition_of(entry.key);
        let mut redis = self.redis.clone();
        self.script
            .key(self.topology.stream(partition))
            .key(self.topology.seen(partition, entry.id))
            .arg(self.max_len)
            .arg(self.dedupe_secs)
            .arg(entry.id)
            .arg(entry.key)
            .arg(entry.payload)
            .arg(if dedupe { "1" } else { "0" })
            .invoke_async(&mut redis)
            .await
            .map_err(|e| {
                if e.code() == Some("FULL") {
                    ProduceError::Full {
                        queue: self.topology.prefix().to_owned(),
                        partition,
                        max_len: self.max_len,
                    }
                } else {
                    ProduceError::Redis(e)
                }
            })
    }
}
