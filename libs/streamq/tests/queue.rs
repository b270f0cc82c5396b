#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The queue against the real Redis: order per key across replicas, bounded
//! concurrency, take-over of a dead consumer's entries, dead letters,
//! producer dedupe and back-pressure, and trimming.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::Duration,
};

use redis::aio::ConnectionManager;
use streamq::{
    ConsumerConfig, Delivery, Enqueued, Entry, Handler, Outcome, ProduceError, Producer, Topology,
};
use tokio_util::sync::CancellationToken;

fn prefix() -> String {
    format!("test:streamq:{}", uuid::Uuid::new_v4().simple())
}

async fn redis() -> (redis::Client, ConnectionManager) {
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let manager = ConnectionManager::new(client.clone()).await.unwrap();
    (client, manager)
}

fn config(prefix: &str, consumer: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(
        "workers",
        consumer,
        Topology::new(format!("{prefix}:dead"), 1).unwrap(),
    );
    config.concurrency = 8;
    config.heartbeat = Duration::from_millis(100);
    config.lease_ttl = Duration::from_millis(1500);
    config.block = Duration::from_millis(200);
    config.claim_idle = Duration::from_millis(500);
    config.retry_base = Duration::from_millis(10);
    config.drain = Duration::from_millis(500);
    config
}

/// Records what it handled, per key, and checks no key runs twice at once.
#[derive(Default)]
struct Recorder {
    handled: Mutex<HashMap<String, Vec<String>>>,
    by: Mutex<HashMap<String, String>>,
    running: Mutex<HashMap<String, u32>>,
    overlaps: AtomicUsize,
    at_once: AtomicUsize,
    peak: AtomicUsize,
    name: String,
}

struct Named(Arc<Recorder>, String);

impl Handler for Named {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let recorder = &self.0;
        {
            let mut running = recorder.running.lock().unwrap();
            let n = running.entry(delivery.key.clone()).or_default();
            if *n > 0 {
                recorder.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            *n += 1;
        }
        let now = recorder.at_once.fetch_add(1, Ordering::SeqCst) + 1;
        recorder.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(3)).await;
        recorder.at_once.fetch_sub(1, Ordering::SeqCst);
        *recorder
            .running
            .lock()
            .unwrap()
            .get_mut(&delivery.key)
            .unwrap() -= 1;
        recorder
            .handled
            .lock()
            .unwrap()
            .entry(delivery.key.clone())
            .or_default()
            .push(String::from_utf8(delivery.payload.clone()).unwrap());
        recorder
            .by
            .lock()
            .unwrap()
            .insert(delivery.id.clone(), self.1.clone());
        let _ = &recorder.name;
        Outcome::Done
    }
}

#[tokio::test]
async fn two_replicas_keep_each_keys_order_and_share_the_partitions() {
    let prefix = prefix();
    let (client, manager) = redis().await;
    let topology = Topology::new(&prefix, 8).unwrap();
    let producer = Producer::new(manager, topology.clone(), 100_000, 60);
    let recorder = Arc::new(Recorder::default());
    let stop = CancellationToken::new();
    for name in ["a", "b"] {
        let mut config = config(&prefix, name);
        config.concurrency = 4;
        tokio::spawn(streamq::run(
            client.clone(),
            topology.clone(),
            config,
            Arc::new(Named(recorder.clone(), name.to_owned())),
            stop.clone(),
        ));
    }
    let keys = 20;
    let per_key = 15;
    for i in 0..per_key {
        for k in 0..keys {
            let key = format!("conversation-{k}");
            let payload = format!("{i}");
            producer
                .enqueue(&Entry {
                    id: &format!("{key}:{i}"),
                    key: &key,
                    payload: payload.as_bytes(),
                })
                .await
                .unwrap();
        }
    }
    testkit::eventually(Duration::from_secs(30), "every message handled", || async {
        let handled = recorder.handled.lock().unwrap();
        (handled.values().map(Vec::len).sum::<usize>() == keys * per_key).then_some(())
    })
    .await
    .unwrap();
    let handled = recorder.handled.lock().unwrap().clone();
    for (key, order) in &handled {
        let expected: Vec<String> = (0..per_key).map(|i| i.to_string()).collect();
        assert_eq!(order, &expected, "{key} out of order");
    }
    assert_eq!(
        recorder.overlaps.load(Ordering::SeqCst),
        0,
        "a key ran twice at once"
    );
    assert!(
        recorder.peak.load(Ordering::SeqCst) <= 8,
        "concurrency bound per replica"
    );
    let by = recorder.by.lock().unwrap().clone();
    let a = by.values().filter(|n| *n == "a").count();
    assert!(
        a > 0 && a < by.len(),
        "both replicas worked: a handled {a} of {}",
        by.len()
    );
    stop.cancel();
}

/// Never finishes: stands for a replica that died mid-message.
struct Hang(Arc<AtomicU32>);

impl Handler for Hang {
    async fn handle(&self, _: &Delivery) -> Outcome {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_dead_consumers_pending_entries_are_claimed_in_order_by_the_next_owner() {
    let prefix = prefix();
    let (client, manager) = redis().await;
    let topology = Topology::new(&prefix, 1).unwrap();
    let producer = Producer::new(manager, topology.clone(), 1000, 60);
    let started = Arc::new(AtomicU32::new(0));
    let dead = CancellationToken::new();
    let mut dying = config(&prefix, "dying");
    dying.drain = Duration::ZERO;
    tokio::spawn(streamq::run(
        client.clone(),
        topology.clone(),
        dying,
        Arc::new(Hang(started.clone())),
        dead.clone(),
    ));
    for i in 0..3 {
        producer
            .enqueue(&Entry {
                id: &format!("m{i}"),
                key: "k",
                payload: format!("{i}").as_bytes(),
            })
            .await
            .unwrap();
    }
    testkit::eventually(
        Duration::from_secs(10),
        "the first message to start",
        || async { (started.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await
    .unwrap();
    // The replica stops renewing its lease with its handler still hung and
    // its entries pending: as good as dead.
    dead.cancel();

    let recorder = Arc::new(Recorder::default());
    let alive = CancellationToken::new();
    tokio::spawn(streamq::run(
        client.clone(),
        topology.clone(),
        config(&prefix, "heir"),
        Arc::new(Named(recorder.clone(), "heir".into())),
        alive.clone(),
    ));
    producer
        .enqueue(&Entry {
            id: "m3",
            key: "k",
            payload: b"3",
        })
        .await
        .unwrap();
    testkit::eventually(
        Duration::from_secs(20),
        "the heir to handle everything",
        || async {
            let handled = recorder.handled.lock().unwrap();
            (handled.get("k").map(Vec::len) == Some(4)).then_some(())
        },
    )
    .await
    .unwrap();
    assert_eq!(
        recorder.handled.lock().unwrap()["k"],
        vec!["0", "1", "2", "3"],
        "claimed entries first, in order"
    );
    alive.cancel();
}

struct Flaky {
    calls: AtomicU32,
    fail: u32,
    attempts: Mutex<Vec<u32>>,
}

impl Handler for Flaky {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        self.attempts.lock().unwrap().push(delivery.attempt);
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if delivery.id == "poison" {
            return Outcome::dead_letter("unreadable", "not a message");
        }
        if n < self.fail {
            Outcome::retry("dependency down")
        } else {
            Outcome::Done
        }
    }
}

async fn dead_letters(
    manager: &mut ConnectionManager,
    stream: &str,
) -> Vec<HashMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(manager)
        .await
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            entry
                .map
                .keys()
                .map(|k| (k.clone(), entry.get::<String>(k).unwrap_or_default()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn failures_are_retried_then_dead_lettered_with_their_reason() {
    let prefix = prefix();
    let (client, mut manager) = redis().await;
    let topology = Topology::new(&prefix, 2).unwrap();
    let producer = Producer::new(manager.clone(), topology.clone(), 1000, 60);
    let handler = Arc::new(Flaky {
        calls: AtomicU32::new(0),
        fail: 100,
        attempts: Mutex::new(vec![]),
    });
    let stop = CancellationToken::new();
    let mut config = config(&prefix, "c");
    config.max_attempts = 3;
    tokio::spawn(streamq::run(
        client,
        topology.clone(),
        config,
        handler.clone(),
        stop.clone(),
    ));
    producer
        .enqueue(&Entry {
            id: "flaky",
            key: "k1",
            payload: b"x",
        })
        .await
        .unwrap();
    producer
        .enqueue(&Entry {
            id: "poison",
            key: "k2",
            payload: b"y",
        })
        .await
        .unwrap();
    let dead_stream = Topology::new(format!("{prefix}:dead"), 1)
        .unwrap()
        .stream(0);
    let letters = testkit::eventually(Duration::from_secs(10), "two dead letters", || {
        let mut manager = manager.clone();
        let dead_stream = dead_stream.clone();
        async move {
            let letters = dead_letters(&mut manager, &dead_stream).await;
            (letters.len() == 2).then_some(letters)
        }
    })
    .await
    .unwrap();
    let flaky = letters.iter().find(|l| l["id"] == "flaky").unwrap();
    assert_eq!(flaky["reason"], "dependency down");
    assert_eq!(flaky["attempts"], "3");
    assert_eq!(flaky["message"], "x");
    assert_eq!(flaky["key"], "k1");
    assert_eq!(flaky["queue"], prefix);
    let poison = letters.iter().find(|l| l["id"] == "poison").unwrap();
    assert_eq!(poison["reason"], "unreadable");
    assert_eq!(
        poison["attempts"], "1",
        "dead-lettered at once, not retried"
    );
    // Acknowledged: nothing left pending.
    testkit::eventually(Duration::from_secs(5), "nothing pending", || {
        let mut manager = manager.clone();
        let topology = topology.clone();
        async move {
            let mut pending = 0;
            for p in 0..2 {
                let summary: redis::Value = redis::cmd("XPENDING")
                    .arg(topology.stream(p))
                    .arg("workers")
                    .query_async(&mut manager)
                    .await
                    .ok()?;
                if let redis::Value::Array(parts) = summary
                    && let Some(redis::Value::Int(n)) = parts.first()
                {
                    pending += n;
                }
            }
            (pending == 0).then_some(())
        }
    })
    .await
    .unwrap();
    let _ = dead_letters(&mut manager, &dead_stream).await;
    stop.cancel();
}

#[tokio::test]
async fn producers_dedupe_ids_and_push_back_when_a_partition_is_full() {
    let prefix = prefix();
    let (_, manager) = redis().await;
    let topology = Topology::new(&prefix, 1).unwrap();
    let producer = Producer::new(manager.clone(), topology, 3, 60);
    let entry = |id: &'static str| Entry {
        id,
        key: "k",
        payload: b"p",
    };
    assert!(matches!(
        producer.enqueue(&entry("a")).await.unwrap(),
        Enqueued::Queued(_)
    ));
    assert_eq!(
        producer.enqueue(&entry("a")).await.unwrap(),
        Enqueued::Duplicate
    );
    producer.append(&entry("a")).await.unwrap();
    producer.enqueue(&entry("b")).await.unwrap();
    let full = producer.enqueue(&entry("c")).await.unwrap_err();
    assert!(
        matches!(full, ProduceError::Full { max_len: 3, .. }),
        "{full}"
    );
    assert!(producer.append(&entry("c")).await.is_err());
    // A refused message was not marked seen: its retry goes through once there is room.
    let mut redis = manager.clone();
    let _: i64 = redis::cmd("XTRIM")
        .arg(producer.topology().stream(0))
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(matches!(
        producer.enqueue(&entry("c")).await.unwrap(),
        Enqueued::Queued(_)
    ));
}

#[tokio::test]
async fn handled_entries_are_trimmed() {
    let prefix = prefix();
    let (client, mut manager) = redis().await;
    let topology = Topology::new(&prefix, 1).unwrap();
    let producer = Producer::new(manager.clone(), topology.clone(), 1000, 60);
    for i in 0..50 {
        producer
            .enqueue(&Entry {
                id: &format!("m{i}"),
                key: "k",
                payload: b"p",
            })
            .await
            .unwrap();
    }
    let recorder = Arc::new(Recorder::default());
    let stop = CancellationToken::new();
    tokio::spawn(streamq::run(
        client,
        topology.clone(),
        config(&prefix, "c"),
        Arc::new(Named(recorder.clone(), "c".into())),
        stop.clone(),
    ));
    testkit::eventually(Duration::from_secs(20), "all handled", || async {
        (recorder.handled.lock().unwrap().get("k").map(Vec::len) == Some(50)).then_some(())
    })
    .await
    .unwrap();
    // The next maintenance pass trims below the last delivered entry.
    producer
        .enqueue(&Entry {
            id: "last",
            key: "k",
            payload: b"p",
        })
        .await
        .unwrap();
    let stream = topology.stream(0);
    testkit::eventually(Duration::from_secs(15), "the stream trimmed", || {
        let mut manager = manager.clone();
        let stream = stream.clone();
        async move {
            let len: i64 = redis::cmd("XLEN")
                .arg(&stream)
                .query_async(&mut manager)
                .await
                .ok()?;
            (len < 50).then_some(())
        }
    })
    .await
    .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut manager)
        .await
        .unwrap();
    stop.cancel();
}
