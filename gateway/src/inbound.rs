//! The durable hand-off of inbound channel messages: verified webhooks become
//! normalized messages (`crewmesh.messaging.v1.InboundMessage`) appended to
//! the inbound queue, whose partitions llm-svc workers consume.
//!
//! Each message's id (`slack:<event_id>`, `whatsapp:<wamid>`) is its dedupe
//! key and travels end to end, so every later step can be idempotent. Its
//! conversation is the ordering key: one conversation's messages share a
//! partition and are answered in the order they arrived. The append and the
//! "seen" mark happen in one script, append first: a retry is dropped only
//! if its first copy really was queued.

use crewmesh_proto::messaging::v1::InboundMessage;
use mesh_kit::ErrorCode;
use prost::Message as _;
use streamq::{Enqueued, Entry, ProduceError, Producer};

/// How long a queued message id is remembered here. Slack retries within
/// five minutes; Meta redelivers only what it did not see acknowledged.
/// This mark is the fast path: llm-svc records every message id with its
/// answer, so a copy arriving later is answered from the record, never
/// twice. An hour keeps the marks to ~250 bytes × messages per hour.
pub const SEEN_TTL_SECS: u64 = 3600;

/// Longest text queued, in characters; longer messages are cut (and marked
/// so). The same bound llm-svc puts on a run's text.
pub const MAX_TEXT_CHARS: usize = 16_000;

/// Cuts `text` to [`MAX_TEXT_CHARS`]; true when it did.
pub fn cap_text(text: &mut String) -> bool {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((at, _)) => {
            text.truncate(at);
            true
        }
        None => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error(transparent)]
    Produce(#[from] ProduceError),
}

impl QueueError {
    /// Both are worth the platform's retry: Redis is back soon, or the
    /// workers catch up.
    pub fn code(&self) -> ErrorCode {
        match self {
            QueueError::Produce(ProduceError::Redis(_) | ProduceError::Full { .. }) => {
                ErrorCode::Unavailable
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct InboundQueue {
    producer: Producer,
}

impl InboundQueue {
    pub fn new(producer: Producer) -> InboundQueue {
        InboundQueue { producer }
    }

    /// Whether Redis answers, for readiness.
    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        self.producer.ping().await
    }

    /// Appends `message` unless its id was queued before.
    pub async fn enqueue(&self, message: &InboundMessage) -> Result<Enqueued, QueueError> {
        let payload = message.encode_to_vec();
        Ok(self
            .producer
            .enqueue(&Entry {
                id: &message.id,
                key: &message.conversation,
                payload: &payload,
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let mut short = "héllo".to_owned();
        assert!(!cap_text(&mut short));
        assert_eq!(short, "héllo");
        let mut long = "é".repeat(MAX_TEXT_CHARS + 5);
        assert!(cap_text(&mut long));
        assert_eq!(long.chars().count(), MAX_TEXT_CHARS);
    }
}
