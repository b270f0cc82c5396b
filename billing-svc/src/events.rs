//! Consumes identity-svc's event stream: `tenant.created` opens the tenant's
//! trial. A consumer group spreads entries over replicas; entries are
//! acknowledged after the database write, and the handling is idempotent, so
//! a crash in between only means the entry is handled again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mesh_kit::{Shutdown, db::begin_tenant};
use redis::{
    AsyncCommands,
    aio::MultiplexedConnection,
    streams::{StreamReadOptions, StreamReadReply},
};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::subscriptions;

pub const GROUP: &str = "billing-svc";
pub const DEFAULT_STREAM: &str = "crewmesh:events:identity";
const BLOCK: Duration = Duration::from_secs(1);
const BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Handles one entry; Ok(false) for entries this service ignores or cannot parse.
async fn handle(db: &PgPool, topic: &str, payload: &str) -> Result<bool, sqlx::Error> {
    if topic != "tenant.created" {
        return Ok(false);
    }
    let parsed: Option<(Uuid, DateTime<Utc>)> =
        serde_json::from_str::<Value>(payload).ok().and_then(|v| {
            let tenant = v.get("tenant_id")?.as_str()?.parse().ok()?;
            let created = v.get("created_at")?.as_str()?.parse().ok()?;
            Some((tenant, created))
        });
    let Some((tenant, created_at)) = parsed else {
        tracing::warn!(payload, "malformed tenant.created event; skipped");
        return Ok(false);
    };
    let mut tx = begin_tenant(db, tenant).await?;
    subscriptions::ensure_trial(&mut tx, tenant, created_at).await?;
    tx.commit().await?;
    tracing::info!(%tenant, "trial opened");
    Ok(true)
}

/// Reads one batch (`start` "0" for this consumer's pending entries, ">" for
/// new ones), handles and acknowledges it; returns how many entries it read.
pub async fn consume_once(
    db: &PgPool,
    redis: &mut MultiplexedConnection,
    stream: &str,
    consumer: &str,
    start: &str,
) -> Result<usize, ConsumeError> {
    let mut options = StreamReadOptions::default()
        .group(GROUP, consumer)
        .count(BATCH);
    if start == ">" {
        options = options.block(BLOCK.as_millis() as usize);
    }
    let reply: Option<StreamReadReply> = redis.xread_options(&[stream], &[start], &options).await?;
    let entries: Vec<_> = reply
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|k| k.ids)
        .collect();
    for entry in &entries {
        let topic: String = entry.get("topic").unwrap_or_default();
        let payload: String = entry.get("payload").unwrap_or_default();
        handle(db, &topic, &payload).await?;
        let _: i64 = redis.xack(stream, GROUP, &[&entry.id]).await?;
    }
    Ok(entries.len())
}

/// Creates the group (from the stream's start, so no tenant is missed) if needed.
pub async fn ensure_group(
    redis: &mut MultiplexedConnection,
    stream: &str,
) -> Result<(), redis::RedisError> {
    let created: Result<(), redis::RedisError> =
        redis.xgroup_create_mkstream(stream, GROUP, "0").await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Connects and consumes until an error: pending entries first (after a
/// crash), then new ones.
async fn consume(
    db: &PgPool,
    client: &redis::Client,
    stream: &str,
    consumer: &str,
) -> Result<std::convert::Infallible, ConsumeError> {
    let mut redis = client.get_multiplexed_async_connection().await?;
    ensure_group(&mut redis, stream).await?;
    while consume_once(db, &mut redis, stream, consumer, "0").await? > 0 {}
    loop {
        consume_once(db, &mut redis, stream, consumer, ">").await?;
    }
}

/// Consumes until shutdown on its own connection (a blocking read would stall
/// every other command on a shared multiplexed connection).
pub async fn run(
    db: PgPool,
    client: redis::Client,
    stream: String,
    consumer: String,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Err(e) = consume(&db, &client, &stream, &consumer) => {
                tracing::warn!(error = %e, "event consumer failed; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(BLOCK) => {}
        }
    }
}
