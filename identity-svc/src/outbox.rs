//! The transactional outbox: events other services need (a tenant was
//! created, so billing starts its trial) are inserted in the transaction of
//! the change, then a relay appends them to a Redis Stream.
//!
//! Delivery is at least once: consumers dedupe by the event `id` field.
//! Stream entries carry `id`, `topic` and `payload` (JSON).

use std::time::Duration;

use mesh_kit::{Shutdown, db::begin_platform};
use redis::aio::ConnectionManager;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Topic of the event billing-svc consumes to open a tenant's trial.
pub const TENANT_CREATED: &str = "tenant.created";
pub const DEFAULT_STREAM: &str = "crewmesh:events:identity";
const BATCH: i64 = 100;
const POLL: Duration = Duration::from_millis(500);
/// Bounds the stream; consumers read far faster than this fills.
const STREAM_MAX_LEN: usize = 100_000;

/// Adds an event inside the caller's transaction.
pub async fn add(conn: &mut PgConnection, topic: &str, payload: Value) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (id, topic, payload) VALUES ($1, $2, $3)")
        .bind(Uuid::now_v7())
        .bind(topic)
        .bind(payload)
        .execute(conn)
        .await
        .map(|_| ())
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Publishes one batch; returns how many events went out.
pub async fn relay_once(
    db: &PgPool,
    redis: &ConnectionManager,
    stream: &str,
) -> Result<usize, RelayError> {
    #[derive(sqlx::FromRow)]
    struct Event {
        id: Uuid,
        topic: String,
        payload: Value,
    }
    let mut tx = begin_platform(db).await?;
    // SKIP LOCKED: replicas relay disjoint batches.
    let events: Vec<Event> = sqlx::query_as(
        "SELECT id, topic, payload FROM outbox WHERE published_at IS NULL
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if events.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for event in &events {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAX_LEN)
            .arg("*")
            .arg("id")
            .arg(event.id.to_string())
            .arg("topic")
            .arg(&event.topic)
            .arg("payload")
            .arg(event.payload.to_string())
            .ignore();
    }
    let mut redis = redis.clone();
    pipe.query_async::<()>(&mut redis).await?;
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    // A crash before this commit republishes the batch: consumers dedupe by id.
    tx.commit().await?;
    Ok(events.len())
}

/// Relays until shutdown, logging (not dying on) failures.
pub async fn run_relay(db: PgPool, redis: ConnectionManager, stream: String, shutdown: Shutdown) {
    loop {
        match relay_once(&db, &redis, &stream).await {
            // A full batch means more may be waiting: go again at once.
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox relay failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
