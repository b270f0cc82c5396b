//! Dead letters: messages that could not be handled (inbound) or delivered
//! (outbound) after their attempts, with the reason. Both queues' consumers
//! write them to the dead-letter stream; this module keeps them in
//! PostgreSQL (tenant-scoped) for admins to list, and puts one back on its
//! queue when an admin retries it — the message as it was, so the usual
//! idempotency makes the retry deliver once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use crewmesh_proto::messaging::v1::{InboundMessage, OutboundMessage};
use mesh_kit::db::{begin_platform, begin_tenant};
use prost::Message as _;
use sqlx::{PgConnection, PgPool};
use streamq::{Delivery, Entry, Handler, Outcome, ProduceError, Producer, dead_letter};
use uuid::Uuid;

/// Which queue a dead letter came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Queue {
    Inbound,
    Outbound,
    /// A queue this service does not know (a misconfigured producer).
    Unknown,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub queue: Queue,
    pub message_id: String,
    pub ordering_key: String,
    pub reason: String,
    pub detail: String,
    pub attempts: i32,
    pub channel: String,
    pub text: String,
    pub payload: Vec<u8>,
    pub failed_at: DateTime<Utc>,
    pub retried_at: Option<DateTime<Utc>>,
    pub retried_by: String,
}

const COLUMNS: &str = "id, tenant_id, queue, message_id, ordering_key, reason, detail, attempts, \
                       channel, text, payload, failed_at, retried_at, retried_by";

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead letter not found")]
    NotFound,
    #[error("this dead letter came from a queue this service does not know; it cannot be retried")]
    UnknownQueue,
    #[error("the queue is unavailable: {0}")]
    Queue(#[from] ProduceError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The queues a dead letter can go back to.
#[derive(Debug, Clone)]
pub struct Requeue {
    pub inbound: Producer,
    pub outbound: Producer,
}

/// Who may see what.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    Tenant(Uuid),
    Platform,
}

/// Stores dead letters from the stream. Idempotent on the stream entry.
#[derive(Debug, Clone)]
pub struct Sink {
    pub db: PgPool,
    pub inbound_queue: String,
    pub outbound_queue: String,
}

fn field(fields: &HashMap<String, Vec<u8>>, name: &str) -> String {
    fields
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// What the payload says about itself: tenant, channel and text.
fn describe(queue: Queue, payload: &[u8]) -> (Option<Uuid>, String, String) {
    match queue {
        Queue::Inbound => match InboundMessage::decode(payload) {
            Ok(m) => (
                m.tenant_id.parse().ok(),
                m.channel().as_str_name().to_owned(),
                m.text,
            ),
            Err(_) => (None, String::new(), String::new()),
        },
        Queue::Outbound => match OutboundMessage::decode(payload) {
            Ok(m) => {
                let channel = if m.conversation.starts_with("slack:") {
                    "CHANNEL_SLACK"
                } else if m.conversation.starts_with("whatsapp:") {
                    "CHANNEL_WHATSAPP"
                } else {
                    ""
                };
                (m.tenant_id.parse().ok(), channel.to_owned(), m.text)
            }
            Err(_) => (None, String::new(), String::new()),
        },
        Queue::Unknown => (None, String::new(), String::new()),
    }
}

/// `CHANNEL_SLACK` → `slack`.
fn channel_name(proto_name: &str) -> String {
    proto_name
        .strip_prefix("CHANNEL_")
        .unwrap_or(proto_name)
        .to_ascii_lowercase()
}

impl Handler for Sink {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let source = field(&delivery.fields, dead_letter::QUEUE);
        let queue = if source == self.inbound_queue {
            Queue::Inbound
        } else if source == self.outbound_queue {
            Queue::Outbound
        } else {
            Queue::Unknown
        };
        let (tenant, channel, text) = describe(queue, &delivery.payload);
        let failed_at = field(&delivery.fields, dead_letter::FAILED_AT)
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or_else(Utc::now);
        let attempts = field(&delivery.fields, dead_letter::ATTEMPTS)
            .parse::<i32>()
            .unwrap_or(0);
        let stored = async {
            let mut tx = begin_platform(&self.db).await?;
            sqlx::query(
                "INSERT INTO dead_letters (id, tenant_id, entry_id, queue, message_id, ordering_key,
                                           reason, detail, attempts, channel, text, payload, failed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (entry_id) DO NOTHING",
            )
            .bind(Uuid::now_v7())
            .bind(tenant)
            .bind(format!("{}/{}", delivery.queue, delivery.entry_id))
            .bind(queue)
            .bind(&delivery.id)
            .bind(&delivery.key)
            .bind(field(&delivery.fields, dead_letter::REASON))
            .bind(field(&delivery.fields, dead_letter::DETAIL))
            .bind(attempts)
            .bind(channel_name(&channel))
            .bind(text)
            .bind(&delivery.payload)
            .bind(failed_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        };
        match stored.await {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::retry(format!("storing a dead letter: {e}")),
        }
    }
}

async fn begin(
    db: &PgPool,
    scope: Scope,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    match scope {
        Scope::Tenant(tenant) => begin_tenant(db, tenant).await,
        Scope::Platform => begin_platform(db).await,
    }
}

/// Newest first, `limit` at most, after the dead letter `after`.
pub async fn list(
    db: &PgPool,
    scope: Scope,
    limit: i64,
    after: Option<Uuid>,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let mut tx = begin(db, scope).await?;
    let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters
          WHERE ($1::uuid IS NULL OR id < $1)
          ORDER BY id DESC LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows)
}

async fn get_for_update(tx: &mut PgConnection, id: Uuid) -> Result<DeadLetter, DeadLetterError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(DeadLetterError::NotFound)
}

/// Puts a dead letter back on its queue and records who did, when.
pub async fn retry(
    db: &PgPool,
    queues: &Requeue,
    scope: Scope,
    id: Uuid,
    by: &str,
) -> Result<DeadLetter, DeadLetterError> {
    let mut tx = begin(db, scope).await?;
    let letter = get_for_update(&mut tx, id).await?;
    let producer = match letter.queue {
        Queue::Inbound => &queues.inbound,
        Queue::Outbound => &queues.outbound,
        Queue::Unknown => return Err(DeadLetterError::UnknownQueue),
    };
    // Queued before the row says so: if the commit fails, the admin's
    // second retry queues it again, which idempotent handling absorbs.
    producer
        .append(&Entry {
            id: &letter.message_id,
            key: &letter.ordering_key,
            payload: &letter.payload,
        })
        .await?;
    let retried: DeadLetter = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE dead_letters SET retried_at = now(), retried_by = $2 WHERE id = $1
         RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(by)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(dead_letter = %id, message = %letter.message_id, by, "dead letter retried");
    Ok(retried)
}
