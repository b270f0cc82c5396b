//! Consuming a queue: partition leases shared out among the live replicas,
//! one reader per owned partition, per-key lanes that keep order, bounded
//! concurrency, retries, dead letters, trimming and metrics.
//!
//! Invariants:
//! - A partition is read by one consumer at a time (its lease holder), and
//!   a new owner reads nothing new until every entry another consumer left
//!   pending has been claimed: so one key's messages are never handled out of
//!   order or by two replicas at once, short of a lease lost to a Redis
//!   outage (then at-least-once still holds and handlers are idempotent).
//! - An entry is acknowledged only after its handler returned `Done` or it
//!   was written to the dead-letter stream.
//! - Trimming removes only entries below both the group's last delivered id
//!   and its oldest pending entry: nothing unhandled is ever trimmed.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::{
    AsyncConnectionConfig, Script, Value,
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, sleep},
};
use tokio_util::sync::CancellationToken;

use crate::{
    dead_letter,
    producer::{FIELD_ID, FIELD_KEY, FIELD_MESSAGE},
    topology::Topology,
};

/// How a consumer behaves. [`ConsumerConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group: one per consuming service.
    pub group: String,
    /// This replica's name in the group. Keep it stable across restarts of
    /// the same replica (the pod name), so a restart takes back its own
    /// pending entries at once instead of after `claim_idle`.
    pub consumer: String,
    /// Messages handled at once by this replica, over all keys.
    pub concurrency: usize,
    /// Entries of one partition read but not yet acknowledged.
    pub read_ahead: usize,
    /// How long another consumer's pending entry must have been idle before
    /// a new owner claims it. Longer than the slowest handling, or work
    /// runs twice.
    pub claim_idle: Duration,
    /// Handling attempts before an entry goes to the dead-letter stream.
    pub max_attempts: u32,
    /// Longest blocking read; the connection's response timeout exceeds it.
    pub block: Duration,
    /// A partition lease lapses this long after its owner's last renewal.
    pub lease_ttl: Duration,
    /// How often leases are renewed and the partitions shared out again.
    pub heartbeat: Duration,
    /// The dead-letter queue: a failed message goes to the partition of
    /// its key there, with its reason.
    pub dead_letters: Topology,
    /// Entries the dead-letter stream keeps (approximately).
    pub dead_letter_max_len: u64,
    /// First retry delay; doubled per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a stopping consumer waits for running handlers.
    pub drain: Duration,
}

impl ConsumerConfig {
    pub fn new(
        group: impl Into<String>,
        consumer: impl Into<String>,
        dead_letters: Topology,
    ) -> ConsumerConfig {
        ConsumerConfig {
            group: group.into(),
            consumer: consumer.into(),
            concurrency: 64,
            read_ahead: 256,
            claim_idle: Duration::from_secs(60),
            max_attempts: 5,
            block: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
            dead_letters,
            dead_letter_max_len: 100_000,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            drain: Duration::from_secs(10),
        }
    }
}

/// One message handed to a [`Handler`].
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue's prefix.
    pub queue: String,
    pub partition: u16,
    /// The stream entry id.
    pub entry_id: String,
    /// The message id (idempotency key).
    pub id: String,
    /// The ordering key.
    pub key: String,
    pub payload: Vec<u8>,
    /// 1 on first delivery; counts redeliveries after crashes and retries.
    pub attempt: u32,
    /// The entry's other fields (a dead letter's reason, …).
    pub fields: HashMap<String, Vec<u8>>,
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: acknowledge it.
    Done,
    /// Failed in a way another attempt may fix (a dependency is down); the
    /// key's later messages wait behind it.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Will never succeed: move it to the dead-letter stream now.
    DeadLetter { reason: String, detail: String },
}

impl Outcome {
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry {
            reason: reason.into(),
            after: None,
        }
    }

    pub fn dead_letter(reason: impl Into<String>, detail: impl Into<String>) -> Outcome {
        Outcome::DeadLetter {
            reason: reason.into(),
            detail: detail.into(),
        }
    }
}

/// Handles one delivery. Must be idempotent on `delivery.id`.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Outcome> + Send;
}

/// Takes partition `KEYS[1]` for `ARGV[1]` (or renews our own lease).
const ACQUIRE: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner == false then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
elseif owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
";

/// Heartbeat in the member set on Redis's clock (replicas' clocks may
/// differ); returns how many members are live.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZCARD', KEYS[1])
";

struct Scripts {
    acquire: Script,
    renew: Script,
    release: Script,
    heartbeat: Script,
}

/// A read entry waiting for, or being handled in, its key's lane.
struct Job {
    delivery: Delivery,
    /// The partition's read-ahead slot, released when the job is dropped.
    _slot: OwnedSemaphorePermit,
    partition: Arc<PartitionState>,
}

impl Drop for Job {
    fn drop(&mut self) {
        lock(&self.partition.in_flight).remove(&self.delivery.entry_id);
    }
}

/// What the reader of one partition shares with the lanes.
struct PartitionState {
    /// Entry ids dispatched and not yet finished, so re-reading the pending
    /// list after a reconnect does not dispatch an entry twice.
    in_flight: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
}

struct Shared<H> {
    handler: Arc<H>,
    config: ConsumerConfig,
    topology: Topology,
    client: redis::Client,
    control: ConnectionManager,
    scripts: Scripts,
    lanes: Mutex<HashMap<String, VecDeque<Job>>>,
    concurrency: Arc<Semaphore>,
    stopping: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Consumes `topology` until `shutdown`, handing every message to `handler`.
/// Connection failures are retried for as long as the service runs; the
/// function returns once shutdown is requested and running handlers have
/// finished (or `config.drain` has passed).
pub async fn run<H: Handler>(
    client: redis::Client,
    topology: Topology,
    config: ConsumerConfig,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let control = loop {
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(3)));
        match ConnectionManager::new_with_config(client.clone(), manager_config).await {
            Ok(manager) => break manager,
            Err(e) => {
                tracing::warn!(queue = topology.prefix(), error = %e, "queue consumer cannot reach Redis; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let shared = Arc::new(Shared {
        handler,
        concurrency: Arc::new(Semaphore::new(config.concurrency.max(1))),
        config,
        topology,
        client,
        control,
        scripts: Scripts {
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            heartbeat: Script::new(HEARTBEAT),
        },
        lanes: Mutex::new(HashMap::new()),
        stopping: shutdown.clone(),
    });
    tracing::info!(
        queue = shared.topology.prefix(),
        group = %shared.config.group,
        consumer = %shared.config.consumer,
        partitions = shared.topology.partitions(),
        "queue consumer started"
    );
    coordinate(shared).await;
}

/// A partition this replica owns.
struct Owned {
    stop: CancellationToken,
    state: Arc<PartitionState>,
}

impl Owned {
    fn drained(&self, read_ahead: usize) -> bool {
        self.state.slots.available_permits() >= read_ahead
    }
}

/// The lease loop: heartbeat, renew, share out, and on shutdown drain and
/// hand the partitions back.
async fn coordinate<H: Handler>(shared: Arc<Shared<H>>) {
    let mut owned: BTreeMap<u16, Owned> = BTreeMap::new();
    let mut releasing: BTreeMap<u16, Owned> = BTreeMap::new();
    let mut failing_since: Option<Instant> = None;
    loop {
        match round(&shared, &mut owned, &mut releasing).await {
            Ok(()) => failing_since = None,
            Err(e) => {
                // Warn once per outage, not every heartbeat.
                if failing_since.is_none() {
                    tracing::warn!(queue = shared.topology.prefix(), error = %e, "queue leases cannot be renewed");
                }
                let since = *failing_since.get_or_insert_with(Instant::now);
                // Past the lease time someone else may own our partitions:
                // stop reading them (in-flight work finishes; handlers are
                // idempotent).
                if since.elapsed() >= shared.config.lease_ttl {
                    for (p, part) in std::mem::take(&mut owned) {
                        part.stop.cancel();
                        releasing.insert(p, part);
                    }
                }
            }
        }
        metrics::gauge!("crewmesh_queue_partitions_owned", "queue" => shared.topology.prefix().to_owned(), "group" => shared.config.group.clone())
            .set(owned.len() as f64);
        tokio::select! {
            () = shared.stopping.cancelled() => break,
            () = sleep(shared.config.heartbeat) => {}
        }
    }
    // Stop reading, let running handlers finish, then hand the partitions
    // back so the next owner need not wait for the claim time.
    for part in owned.values().chain(releasing.values()) {
        part.stop.cancel();
    }
    let until = Instant::now() + shared.config.drain;
    let read_ahead = shared.config.read_ahead;
    while Instant::now() < until
        && !owned
            .values()
            .chain(releasing.values())
            .all(|p| p.drained(read_ahead))
    {
        sleep(Duration::from_millis(20)).await;
    }
    let mut control = shared.control.clone();
    for (p, part) in owned.iter().chain(releasing.iter()) {
        if part.drained(read_ahead) {
            let _: Result<i64, _> = shared
                .scripts
                .release
                .key(shared.topology.owner(*p))
                .arg(&shared.config.consumer)
                .invoke_async(&mut control)
                .await;
        }
    }
    let _: Result<i64, _> = redis::cmd("ZREM")
        .arg(shared.topology.members(&shared.config.group))
        .arg(&shared.config.consumer)
        .query_async(&mut control)
        .await;
    tracing::info!(queue = shared.topology.prefix(), "queue consumer stopped");
}

async fn round<H: Handler>(
    shared: &Arc<Shared<H>>,
    owned: &mut BTreeMap<u16, Owned>,
    releasing: &mut BTreeMap<u16, Owned>,
) -> Result<(), redis::RedisError> {
    let config = &shared.config;
    let topology = &shared.topology;
    let mut control = shared.control.clone();
    let ttl = millis(config.lease_ttl);
    let live: u64 = shared
        .scripts
        .heartbeat
        .key(topology.members(&config.group))
        .arg(&config.consumer)
        .arg(ttl)
        .invoke_async(&mut control)
        .await?;
    let partitions = u64::from(topology.partitions());
    let target = usize::try_from(partitions.div_ceil(live.max(1))).unwrap_or(usize::MAX);

    let mut lost = Vec::new();
    for p in owned.keys() {
        let renewed: i64 = shared
            .scripts
            .renew
            .key(topology.owner(*p))
            .arg(&config.consumer)
            .arg(ttl)
            .invoke_async(&mut control)
            .await?;
        if renewed == 0 {
            lost.push(*p);
        }
    }
    for p in lost {
        if let Some(part) = owned.remove(&p) {
            tracing::warn!(
                queue = topology.prefix(),
                partition = p,
                "partition lease lost; another consumer owns it now"
            );
            part.stop.cancel();
        }
    }

    // Hand back partitions whose handlers have finished.
    let done: Vec<u16> = releasing
        .iter()
        .filter(|(_, part)| part.drained(config.read_ahead))
        .map(|(p, _)| *p)
        .collect();
    for p in done {
        releasing.remove(&p);
        let _: i64 = shared
            .scripts
            .release
            .key(topology.owner(p))
            .arg(&config.consumer)
            .invoke_async(&mut control)
            .await?;
        tracing::debug!(
            queue = topology.prefix(),
            partition = p,
            "partition handed back"
        );
    }

    // More replicas than before: give the surplus back, highest first.
    while owned.len() > target {
        let Some((p, part)) = owned.pop_last() else {
            break;
        };
        part.stop.cancel();
        releasing.insert(p, part);
    }

    // Fewer: take free partitions, starting at a place of our own so
    // replicas do not all race for partition 0.
    let mut taken = Vec::new();
    if owned.len() < target {
        let start = topology.partition_of(&config.consumer);
        for i in 0..topology.partitions() {
            if owned.len() >= target {
                break;
            }
            let p = (start + i) % topology.partitions();
            if owned.contains_key(&p) || releasing.contains_key(&p) {
                continue;
            }
            let acquired: i64 = shared
                .scripts
                .acquire
                .key(topology.owner(p))
                .arg(&config.consumer)
                .arg(ttl)
                .invoke_async(&mut control)
                .await?;
            if acquired == 1 {
                let part = Owned {
                    stop: shared.stopping.child_token(),
                    state: Arc::new(PartitionState {
                        in_flight: Mutex::new(HashSet::new()),
                        slots: Arc::new(Semaphore::new(config.read_ahead.max(1))),
                    }),
                };
                tokio::spawn(read_partition(
                    shared.clone(),
                    p,
                    part.stop.clone(),
                    part.state.clone(),
                ));
                taken.push(p);
                owned.insert(p, part);
            }
        }
    }
    if !taken.is_empty() {
        // One line per change of ownership, not one per partition.
        tracing::info!(
            queue = topology.prefix(),
            consumer = %config.consumer,
            taken = ?taken,
            owned = owned.len(),
            "partitions taken"
        );
    }
    Ok(())
}

/// Reads one owned partition until `stop`, reconnecting after errors.
async fn read_partition<H: Handler>(
    shared: Arc<Shared<H>>,
    partition: u16,
    stop: CancellationToken,
    state: Arc<PartitionState>,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        match read_loop(&shared, partition, &stop, &state).await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(queue = shared.topology.prefix(), partition, error = %e, "reading the queue failed; reconnecting");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    clear_gauges(&shared, partition);
}

async fn blocking_connection<H>(
    shared: &Shared<H>,
) -> Result<MultiplexedConnection, redis::RedisError> {
    // A blocking read holds the connection for up to `block`: the response
    // timeout must exceed it, or every idle read times out and reconnects.
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(shared.config.block + Duration::from_secs(5)));
    shared
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn read_loop<H: Handler>(
    shared: &Arc<Shared<H>>,
    partition: u16,
    stop: &CancellationToken,
    state: &Arc<PartitionState>,
) -> Result<(), redis::RedisError> {
    let config = &shared.config;
    let stream = shared.topology.stream(partition);
    let mut conn = blocking_connection(shared).await?;
    ensure_group(&mut conn, &stream, &config.group).await?;
    if !take_over(shared, &mut conn, &stream, stop).await? {
        return Ok(());
    }

    // Our own pending entries first, in stream order: a restart of this
    // consumer picks up where it crashed.
    let mut cursor = "0-0".to_owned();
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        let attempts =
            pending_attempts(&mut conn, &stream, &config.group, &config.consumer, &cursor).await?;
        let entries = read_group(&mut conn, &stream, config, &cursor, 100, None).await?;
        let Some(last) = entries.last() else {
            break;
        };
        cursor = last.entry_id.clone();
        for entry in entries {
            if lock(&state.in_flight).contains(&entry.entry_id) {
                continue;
            }
            // History reads count as a delivery; the count before it is
            // the attempts already made.
            let attempt = attempts.get(&entry.entry_id).copied().unwrap_or(0) + 1;
            let slot = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                slot = state.slots.clone().acquire_owned() => slot.map_err(closed)?,
            };
            dispatch(shared, partition, state, entry, attempt, slot).await;
        }
    }

    let mut maintained = Instant::now();
    maintain(shared, partition).await;
    while !stop.is_cancelled() {
        // Wait for a free read-ahead slot, then read as many as are free.
        let first = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            slot = state.slots.clone().acquire_owned() => slot.map_err(closed)?,
        };
        let count = 1 + state.slots.available_permits().min(99);
        // Not cancelled mid-read: entries a read delivered must be
        // dispatched, or they would wait in our pending list.
        let entries =
            read_group(&mut conn, &stream, config, ">", count, Some(config.block)).await?;
        let mut first = Some(first);
        for entry in entries {
            let slot = match first.take() {
                Some(slot) => slot,
                None => state.slots.clone().acquire_owned().await.map_err(closed)?,
            };
            dispatch(shared, partition, state, entry, 1, slot).await;
        }
        if maintained.elapsed() >= Duration::from_secs(5) {
            maintained = Instant::now();
            maintain(shared, partition).await;
        }
    }
    Ok(())
}

fn closed(_: tokio::sync::AcquireError) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "the consumer is stopping"))
}

async fn ensure_group(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<(), redis::RedisError> {
    // From the stream's start: messages queued before this service first
    // ran are handled too.
    let created: Result<(), _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Claims every entry other consumers left pending in this partition,
/// waiting until each has been idle for the claim time. Until then nothing
/// new is read, so a key's earlier message is never overtaken. Returns
/// false when stopped first.
async fn take_over<H>(
    shared: &Shared<H>,
    conn: &mut MultiplexedConnection,
    stream: &str,
    stop: &CancellationToken,
) -> Result<bool, redis::RedisError> {
    let config = &shared.config;
    let mut announced = false;
    loop {
        let summary: Value = redis::cmd("XPENDING")
            .arg(stream)
            .arg(&config.group)
            .query_async(conn)
            .await?;
        let others: u64 = pending_consumers(&summary)
            .into_iter()
            .filter(|(name, _)| *name != config.consumer)
            .map(|(_, n)| n)
            .sum();
        if others == 0 {
            return Ok(true);
        }
        if !announced {
            tracing::info!(
                queue = shared.topology.prefix(),
                stream,
                pending = others,
                "claiming entries another consumer left pending"
            );
            announced = true;
        }
        let mut cursor = "0-0".to_owned();
        loop {
            // JUSTID: claiming is not a delivery; the history read after it is.
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(&config.group)
                .arg(&config.consumer)
                .arg(millis(config.claim_idle))
                .arg(&cursor)
                .arg("COUNT")
                .arg(100)
                .arg("JUSTID")
                .query_async(conn)
                .await?;
            cursor = match &reply {
                Value::Array(parts) => parts.first().and_then(as_string).unwrap_or_default(),
                _ => String::new(),
            };
            if cursor.is_empty() || cursor == "0-0" {
                break;
            }
        }
        let step =
            (config.claim_idle / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::select! {
            () = stop.cancelled() => return Ok(false),
            () = sleep(step) => {}
        }
    }
}

/// (consumer, pending count) from an XPENDING summary.
fn pending_consumers(summary: &Value) -> Vec<(String, u64)> {
    let Value::Array(parts) = summary else {
        return Vec::new();
    };
    let Some(Value::Array(consumers)) = parts.get(3) else {
        return Vec::new();
    };
    consumers
        .iter()
        .filter_map(|c| match c {
            Value::Array(pair) => Some((
                pair.first().and_then(as_string)?,
                pair.get(1).and_then(as_string)?.parse().ok()?,
            )),
            _ => None,
        })
        .collect()
}

/// Times delivered of our pending entries after `after`, by entry id.
async fn pending_attempts(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    consumer: &str,
    after: &str,
) -> Result<HashMap<String, u32>, redis::RedisError> {
    let start = if after == "0-0" {
        "-".to_owned()
    } else {
        format!("({after}")
    };
    let reply: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("+")
        .arg(100)
        .arg(consumer)
        .query_async(conn)
        .await?;
    let Value::Array(rows) = reply else {
        return Ok(HashMap::new());
    };
    Ok(rows
        .iter()
        .filter_map(|row| match row {
            Value::Array(f) => Some((
                f.first().and_then(as_string)?,
                u32::try_from(as_int(f.get(3)?)?).ok()?,
            )),
            _ => None,
        })
        .collect())
}

/// An entry as read: `None` fields when it was deleted while pending.
struct Read {
    entry_id: String,
    fields: Option<HashMap<String, Vec<u8>>>,
}

async fn read_group(
    conn: &mut MultiplexedConnection,
    stream: &str,
    config: &ConsumerConfig,
    start: &str,
    count: usize,
    block: Option<Duration>,
) -> Result<Vec<Read>, redis::RedisError> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&config.group)
        .arg(&config.consumer)
        .arg("COUNT")
        .arg(count);
    if let Some(block) = block {
        cmd.arg("BLOCK").arg(millis(block));
    }
    cmd.arg("STREAMS").arg(stream).arg(start);
    let reply: Value = cmd.query_async(conn).await?;
    Ok(parse_read(reply))
}

/// XREADGROUP's reply, RESP2 (arrays) or RESP3 (maps).
fn parse_read(reply: Value) -> Vec<Read> {
    let streams: Vec<Value> = match reply {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let Value::Array(mut parts) = entry else {
                continue;
            };
            if parts.is_empty() {
                continue;
            }
            let fields_value = if parts.len() > 1 { parts.pop() } else { None };
            let Some(entry_id) = parts.first().and_then(as_string) else {
                continue;
            };
            let fields = match fields_value {
                Some(Value::Array(kv)) => {
                    let mut map = HashMap::new();
                    let mut it = kv.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        if let (Some(k), Some(v)) = (as_string(&k), as_bytes(v)) {
                            map.insert(k, v);
                        }
                    }
                    Some(map)
                }
                Some(Value::Map(kv)) => Some(
                    kv.into_iter()
                        .filter_map(|(k, v)| Some((as_string(&k)?, as_bytes(v)?)))
                        .collect(),
                ),
                _ => None,
            };
            out.push(Read { entry_id, fields });
        }
    }
    out
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => as_string(other)?.parse().ok(),
    }
}

fn as_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

async fn dispatch<H: Handler>(
    shared: &Arc<Shared<H>>,
    partition: u16,
    state: &Arc<PartitionState>,
    read: Read,
    attempt: u32,
    slot: OwnedSemaphorePermit,
) {
    let stream = shared.topology.stream(partition);
    let Some(mut fields) = read.fields else {
        // Deleted while pending (trimmed by hand, or a retention policy):
        // nothing left to handle.
        ack(shared, &stream, &read.entry_id).await;
        return;
    };
    let text = |fields: &mut HashMap<String, Vec<u8>>, name: &str| {
        fields
            .remove(name)
            .and_then(|v| String::from_utf8(v).ok())
            .unwrap_or_default()
    };
    let id = text(&mut fields, FIELD_ID);
    let key = text(&mut fields, FIELD_KEY);
    let payload = fields.remove(FIELD_MESSAGE).unwrap_or_default();
    let delivery = Delivery {
        queue: shared.topology.prefix().to_owned(),
        partition,
        entry_id: read.entry_id,
        id,
        key,
        payload,
        attempt,
        fields,
    };
    lock(&state.in_flight).insert(delivery.entry_id.clone());
    let job = Job {
        delivery,
        _slot: slot,
        partition: state.clone(),
    };
    let lane = job.delivery.key.clone();
    let start = {
        let mut lanes = lock(&shared.lanes);
        match lanes.get_mut(&lane) {
            Some(waiting) => {
                waiting.push_back(job);
                None
            }
            None => {
                lanes.insert(lane.clone(), VecDeque::new());
                Some(job)
            }
        }
    };
    if let Some(job) = start {
        tokio::spawn(run_lane(shared.clone(), lane, job));
    }
}

/// Handles one key's jobs one after another, then retires the lane.
async fn run_lane<H: Handler>(shared: Arc<Shared<H>>, lane: String, mut job: Job) {
    loop {
        if shared.stopping.is_cancelled() {
            // Stopping: what has not started stays pending for the restart
            // (or the next owner) to handle, in order.
            drop(job);
            drop(lock(&shared.lanes).remove(&lane));
            return;
        }
        {
            let Ok(_permit) = shared.concurrency.clone().acquire_owned().await else {
                return;
            };
            process(&shared, &job).await;
        }
        drop(job);
        let next = {
            let mut lanes = lock(&shared.lanes);
            match lanes.get_mut(&lane).and_then(VecDeque::pop_front) {
                Some(next) => Some(next),
                None => {
                    lanes.remove(&lane);
                    None
                }
            }
        };
        match next {
            Some(next) => job = next,
            None => return,
        }
    }
}

async fn process<H: Handler>(shared: &Shared<H>, job: &Job) {
    let config = &shared.config;
    let stream = shared.topology.stream(job.delivery.partition);
    let mut delivery = job.delivery.clone();
    let labels = [
        ("queue", shared.topology.prefix().to_owned()),
        ("group", config.group.clone()),
    ];
    loop {
        let outcome = shared.handler.handle(&delivery).await;
        match outcome {
            Outcome::Done => {
                metrics::counter!(
                    "crewmesh_queue_handled_total",
                    &[&labels[..], &[("outcome", "done".to_owned())]].concat()
                )
                .increment(1);
                ack(shared, &stream, &delivery.entry_id).await;
                return;
            }
            Outcome::DeadLetter { reason, detail } => {
                if dead_letter(shared, &delivery, &reason, &detail).await {
                    ack(shared, &stream, &delivery.entry_id).await;
                }
                return;
            }
            Outcome::Retry { reason, after } => {
                metrics::counter!(
                    "crewmesh_queue_handled_total",
                    &[&labels[..], &[("outcome", "retry".to_owned())]].concat()
                )
                .increment(1);
                if delivery.attempt >= config.max_attempts {
                    let detail = format!("gave up after {} attempts: {reason}", delivery.attempt);
                    if dead_letter(shared, &delivery, &reason, &detail).await {
                        ack(shared, &stream, &delivery.entry_id).await;
                    }
                    return;
                }
                let backoff = after.unwrap_or_else(|| {
                    let exp = 2u32.saturating_pow(delivery.attempt.saturating_sub(1).min(16));
                    config.retry_base.saturating_mul(exp).min(config.retry_max)
                });
                tracing::info!(queue = shared.topology.prefix(), id = %delivery.id, attempt = delivery.attempt, %reason, retry_in = ?backoff, "message will be retried");
                tokio::select! {
                    // Left pending: a restart or the next owner takes it.
                    () = shared.stopping.cancelled() => return,
                    () = sleep(backoff) => {}
                }
                delivery.attempt += 1;
            }
        }
    }
}

/// Acknowledges, retrying briefly; an entry left unacknowledged is handled
/// again later, which idempotent handlers absorb.
async fn ack<H>(shared: &Shared<H>, stream: &str, entry_id: &str) {
    let mut control = shared.control.clone();
    for attempt in 0..5u32 {
        let acked: Result<i64, _> = redis::cmd("XACK")
            .arg(stream)
            .arg(&shared.config.group)
            .arg(entry_id)
            .query_async(&mut control)
            .await;
        match acked {
            Ok(_) => return,
            Err(e) if attempt == 4 => {
                tracing::warn!(stream, entry_id, error = %e, "acknowledging failed; the entry will be handled again");
            }
            Err(_) => sleep(Duration::from_millis(100 << attempt)).await,
        }
    }
}

/// Writes the delivery to the dead-letter stream; false if that failed (the
/// entry then stays pending and is tried again later).
async fn dead_letter<H>(
    shared: &Shared<H>,
    delivery: &Delivery,
    reason: &str,
    detail: &str,
) -> bool {
    let config = &shared.config;
    let mut control = shared.control.clone();
    let stream = config
        .dead_letters
        .stream(config.dead_letters.partition_of(&delivery.key));
    let written: Result<String, _> = redis::cmd("XADD")
        .arg(&stream)
        .arg("MAXLEN")
        .arg("~")
        .arg(config.dead_letter_max_len)
        .arg("*")
        .arg(FIELD_ID)
        .arg(&delivery.id)
        .arg(FIELD_KEY)
        .arg(&delivery.key)
        .arg(FIELD_MESSAGE)
        .arg(&delivery.payload)
        .arg(dead_letter::REASON)
        .arg(reason)
        .arg(dead_letter::DETAIL)
        .arg(detail)
        .arg(dead_letter::ATTEMPTS)
        .arg(delivery.attempt)
        .arg(dead_letter::QUEUE)
        .arg(&delivery.queue)
        .arg(dead_letter::FAILED_AT)
        .arg(now_ms())
        .query_async(&mut control)
        .await;
    match written {
        Ok(_) => {
            tracing::warn!(queue = %delivery.queue, id = %delivery.id, attempts = delivery.attempt, reason, detail, "message moved to the dead-letter stream");
            metrics::counter!("crewmesh_queue_dead_letters_total", "queue" => delivery.queue.clone(), "group" => config.group.clone()).increment(1);
            true
        }
        Err(e) => {
            tracing::error!(queue = %delivery.queue, id = %delivery.id, error = %e, "writing a dead letter failed; the message stays pending");
            false
        }
    }
}

/// Trims what every consumer is done with, and samples the gauges.
async fn maintain<H>(shared: &Shared<H>, partition: u16) {
    if let Err(e) = try_maintain(shared, partition).await {
        tracing::debug!(partition, error = %e, "queue maintenance skipped");
    }
}

async fn try_maintain<H>(shared: &Shared<H>, partition: u16) -> Result<(), redis::RedisError> {
    let config = &shared.config;
    let stream = shared.topology.stream(partition);
    let mut control = shared.control.clone();
    let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&stream)
        .query_async(&mut control)
        .await?;
    let Some(group) = groups.groups.iter().find(|g| g.name == config.group) else {
        return Ok(());
    };
    let summary: Value = redis::cmd("XPENDING")
        .arg(&stream)
        .arg(&config.group)
        .query_async(&mut control)
        .await?;
    let (pending, oldest) = match &summary {
        Value::Array(parts) => (
            parts.first().and_then(as_int).unwrap_or(0),
            parts.get(1).and_then(as_string),
        ),
        _ => (0, None),
    };
    let threshold = match &oldest {
        Some(oldest) if pending > 0 => min_id(oldest, &group.last_delivered_id),
        _ => group.last_delivered_id.clone(),
    };
    if threshold != "0-0" {
        let _: i64 = redis::cmd("XTRIM")
            .arg(&stream)
            // Exact, not `~`: approximate trimming frees only whole
            // 100-entry nodes, so a quiet partition would never shrink.
            .arg("MINID")
            .arg(&threshold)
            .query_async(&mut control)
            .await?;
    }
    let length: i64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut control)
        .await?;
    let labels = gauge_labels(shared, partition);
    metrics::gauge!("crewmesh_queue_length", &labels).set(length as f64);
    metrics::gauge!("crewmesh_queue_pending", &labels).set(pending as f64);
    metrics::gauge!("crewmesh_queue_lag", &labels).set(group.lag.unwrap_or(0) as f64);
    let age = oldest
        .as_deref()
        .filter(|_| pending > 0)
        .and_then(|id| id.split('-').next()?.parse::<i64>().ok())
        .map_or(0.0, |ms| (now_ms() - ms).max(0) as f64 / 1000.0);
    metrics::gauge!("crewmesh_queue_oldest_pending_seconds", &labels).set(age);
    Ok(())
}

fn gauge_labels<H>(shared: &Shared<H>, partition: u16) -> [(&'static str, String); 3] {
    [
        ("queue", shared.topology.prefix().to_owned()),
        ("group", shared.config.group.clone()),
        ("partition", partition.to_string()),
    ]
}

/// A partition's gauges belong to its owner: a replica that lets go of
/// one stops reporting it, so sums over replicas stay right.
fn clear_gauges<H>(shared: &Shared<H>, partition: u16) {
    let labels = gauge_labels(shared, partition);
    for name in [
        "crewmesh_queue_length",
        "crewmesh_queue_pending",
        "crewmesh_queue_lag",
        "crewmesh_queue_oldest_pending_seconds",
    ] {
        metrics::gauge!(name, &labels).set(0.0);
    }
}

/// The smaller of two stream ids (`ms-seq`).
fn min_id(a: &str, b: &str) -> String {
    let parse = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    if parse(a) <= parse(b) { a } else { b }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_numerically() {
        assert_eq!(min_id("10-0", "9-5"), "9-5");
        assert_eq!(min_id("10-2", "10-10"), "10-2");
        assert_eq!(min_id("0-0", "5-1"), "0-0");
    }

    #[test]
    fn reads_parse_in_both_protocols_and_keep_deleted_entries() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk("q:{0}"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![
                        bulk("id"),
                        bulk("m1"),
                        bulk("message"),
                        Value::BulkString(vec![0, 159]),
                    ]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let reads = parse_read(resp2);
        assert_eq!(reads.len(), 2);
        assert_eq!(reads[0].entry_id, "1-0");
        let fields = reads[0].fields.as_ref().unwrap_or_else(|| panic!("fields"));
        assert_eq!(
            fields.get("message"),
            Some(&vec![0, 159]),
            "binary payloads survive"
        );
        assert!(reads[1].fields.is_none(), "a deleted entry");
        let resp3 = Value::Map(vec![(
            bulk("q:{0}"),
            Value::Array(vec![Value::Array(vec![
                bulk("3-0"),
                Value::Map(vec![(bulk("id"), bulk("m3"))]),
            ])]),
        )]);
        let reads = parse_read(resp3);
        assert_eq!(reads[0].entry_id, "3-0");
        assert!(
            parse_read(Value::Nil).is_empty(),
            "a blocking read that timed out"
        );
    }

    #[test]
    fn pending_summaries_name_their_consumers() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let summary = Value::Array(vec![
            Value::Int(3),
            bulk("1-0"),
            bulk("3-0"),
            Value::Array(vec![
                Value::Array(vec![bulk("a"), bulk("2")]),
                Value::Array(vec![bulk("b"), bulk("1")]),
            ]),
        ]);
        assert_eq!(
            pending_consumers(&summary),
            vec![("a".to_owned(), 2), ("b".to_owned(), 1)]
        );
        assert!(
            pending_consumers(&Value::Array(vec![
                Value::Int(0),
                Value::Nil,
                Value::Nil,
                Value::Nil
            ]))
            .is_empty()
        );
    }
}
