//! Consumes identity-svc's event stream: `tenant.created` opens the tenant's
//! trial. A consumer group spreads entries over replicas; entries are
//! acknowledged after the database write, and the handling is idempotent, so
//! a crash in between only means the entry is handled again: by the same
//! replica after a restart (its consumer name is stable), or by another once
//! the entry has been idle for [`CLAIM_IDLE`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use mesh_kit::{Shutdown, db::begin_tenant};
use redis::{
    AsyncCommands, AsyncConnectionConfig,
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
/// A vanished replica's pending events are claimed after this long idle:
/// far longer than handling one takes (a single upsert).
pub const CLAIM_IDLE: Duration = Duration::from_secs(60);
/// How often other consumers' idle entries are looked for.
const CLAIM_EVERY: Duration = Duration::from_secs(30);

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

/// A connection for blocking reads. A blocking read holds the connection
/// for up to [`BLOCK`]: its response timeout must be longer than that (redis-rs
/// defaults to 500 ms), or every idle read fails, reconnects and warns.
pub async fn blocking_connection(
    client: &redis::Client,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Claims entries other consumers left pending for [`CLAIM_IDLE`]; they
/// join this consumer's pending list. Returns how many were claimed.
pub async fn claim_abandoned(
    redis: &mut MultiplexedConnection,
    stream: &str,
    consumer: &str,
    min_idle: Duration,
) -> Result<usize, redis::RedisError> {
    let mut cursor = "0-0".to_owned();
    let mut claimed = 0;
    loop {
        let reply: redis::Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
            .arg(&cursor)
            .arg("COUNT")
            .arg(BATCH)
            .arg("JUSTID")
            .query_async(redis)
            .await?;
        let redis::Value::Array(parts) = reply else {
            return Ok(claimed);
        };
        if let Some(redis::Value::Array(ids)) = parts.get(1) {
            claimed += ids.len();
        }
        cursor = match parts.first() {
            Some(redis::Value::BulkString(next)) => String::from_utf8_lossy(next).into_owned(),
            Some(redis::Value::SimpleString(next)) => next.clone(),
            _ => return Ok(claimed),
        };
        if cursor == "0-0" {
            return Ok(claimed);
        }
    }
}

/// Connects and consumes until an error: pending entries first (after a
/// crash), then new ones, claiming abandoned entries now and then.
async fn consume(
    db: &PgPool,
    client: &redis::Client,
    stream: &str,
    consumer: &str,
) -> Result<std::convert::Infallible, ConsumeError> {
    let mut redis = blocking_connection(client).await?;
    ensure_group(&mut redis, stream).await?;
    let mut claimed_at = tokio::time::Instant::now() - CLAIM_EVERY;
    loop {
        if claimed_at.elapsed() >= CLAIM_EVERY {
            claimed_at = tokio::time::Instant::now();
            claim_abandoned(&mut redis, stream, consumer, CLAIM_IDLE).await?;
            while consume_once(db, &mut redis, stream, consumer, "0").await? > 0 {}
        }
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
