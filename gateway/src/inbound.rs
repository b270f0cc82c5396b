//! The durable hand-off of inbound channel messages: verified webhooks become
//! normalized messages appended to a Redis Stream, which llm-svc workers read
//! with a consumer group.
//!
//! Each message's id (`slack:<event_id>`, `whatsapp:<wamid>`) is its dedupe
//! key and travels end to end, so every later step can be idempotent. The
//! "seen" mark and the append happen in one Lua script: a retry is dropped
//! only if its first copy really was queued — a mark without a message would
//! lose the message to the next retry.

use redis::{Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

/// The default stream; tests use their own.
pub const DEFAULT_STREAM: &str = "crewmesh:inbound";

/// Slack retries for minutes and Meta for days: a week covers both.
const SEEN_TTL_SECS: u64 = 7 * 24 * 3600;

/// A file that came with a message; media-svc ingests it when the message is
/// processed (`IngestChannelMedia` with `reference`), not while the webhook waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `image`, `document` or `file`; from WhatsApp also the other media
    /// kinds as Meta names them (`audio`, `video`, `sticker`).
    pub kind: String,
    /// WhatsApp media id, or the Slack file's private URL.
    pub reference: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mime_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filename: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub caption: String,
}

/// Where a reply goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ReplyTo {
    /// In the thread of the message (or starting one under it).
    Slack { channel: String, thread_ts: String },
    /// To the sender, from the business number that received the message.
    Whatsapp { phone_number_id: String, to: String },
}

/// A message from a channel, normalized, with its owner resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub id: String,
    pub tenant_id: String,
    pub agent_id: String,
    pub connection_id: String,
    /// Stable per conversation: Slack channel + thread, WhatsApp number + sender.
    pub conversation: String,
    /// Slack user id or WhatsApp `wa_id`.
    pub sender: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sender_name: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// When the channel says it was sent (Unix seconds, as a string as both send it).
    pub sent_at: String,
    pub reply_to: ReplyTo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Appended under this stream entry id.
    Queued(String),
    /// Seen before: a retry or a redelivery.
    Duplicate,
}

#[derive(Clone)]
pub struct InboundQueue {
    redis: ConnectionManager,
    stream: String,
    script: Script,
}

impl std::fmt::Debug for InboundQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundQueue")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the message queue is unavailable: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("encoding the message: {0}")]
    Encode(#[from] serde_json::Error),
}

impl InboundQueue {
    pub fn new(redis: ConnectionManager, stream: String) -> InboundQueue {
        InboundQueue {
            redis,
            stream,
            script: Script::new(
                r"
                if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
                    return redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'message', ARGV[3])
                end
                return false
                ",
            ),
        }
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Whether Redis answers, for readiness.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        let mut redis = self.redis.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut redis)
            .await
            .map(drop)
    }

    /// Appends `message` unless its id was queued before.
    pub async fn enqueue(&self, message: &InboundMessage) -> Result<Enqueued, QueueError> {
        let body = serde_json::to_string(message)?;
        let seen = format!("{}:seen:{}", self.stream, message.id);
        let mut redis = self.redis.clone();
        let entry: Option<String> = self
            .script
            .key(seen)
            .key(&self.stream)
            .arg(SEEN_TTL_SECS)
            .arg(&message.id)
            .arg(body)
            .invoke_async(&mut redis)
            .await?;
        Ok(entry.map_or(Enqueued::Duplicate, Enqueued::Queued))
    }
}
