//! Load harness for the whole channel path: WhatsApp webhooks in, replies
//! out. Every message goes through the gateway's webhook (signature,
//! resolution, durable append), an llm-svc worker (history, runtime config,
//! key, budget, a zero-latency OpenAI-compatible provider, the record in
//! PostgreSQL, the memory window) and the gateway's delivery (a Graph API
//! send), with the whole mesh in this process against the real PostgreSQL
//! and Redis.
//!
//! It reports messages per second from the first webhook to the last
//! delivered reply, the webhook-to-delivery latency, and the CPU spent per
//! message by this process, PostgreSQL and Redis (from /proc), so it is
//! plain where the time goes.
//!
//! Run (release; PostgreSQL, Redis and s3s-fs running):
//! `cargo bench -p crewmesh-tests --bench channels_e2e`
//! Knobs: `E2E_MESSAGES` (default 4000), `E2E_CONVERSATIONS` (400),
//! `E2E_SENDERS` (concurrent webhook callers, 32).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crewmesh_tests::{
    MeshOptions,
    fake_graph::FakeGraph,
    fake_openai::FakeOpenAi,
    spawn_mesh_with,
    webhook::{self, whatsapp_delivery, whatsapp_text},
};
use serde_json::json;

const KEY: &str = "sk-bench-0123456789abcdef";
const NUMBER: &str = "106540352242922";

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// User + system CPU seconds of the processes whose command name is `comm`
/// (all of them: PostgreSQL has one per connection).
fn cpu_of(comm: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let path = entry.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if name.trim() != comm {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let utime: f64 = fields[11].parse().unwrap_or(0.0);
        let stime: f64 = fields[12].parse().unwrap_or(0.0);
        total += (utime + stime) / ticks;
    }
    total
}

fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let messages = knob("E2E_MESSAGES", 4000);
    let conversations = knob("E2E_CONVERSATIONS", 400);
    let senders = knob("E2E_SENDERS", 32);

    let graph = FakeGraph::start().await;
    let openai = FakeOpenAi::start(KEY).await;
    openai.echo();
    let mesh = Arc::new(
        spawn_mesh_with(MeshOptions {
            whatsapp_api_base: Some(graph.api_base()),
            ..MeshOptions::default()
        })
        .await,
    );
    let (_, admin, _) = mesh.tenant_with_member("bench", "customer_admin").await;
    let (status, key) = mesh
        .post_json(
            "/api/v1/llm-keys",
            Some(&admin),
            &json!({ "provider": "openai", "api_key": KEY, "base_url": openai.base_url() }),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let (status, agent) = mesh
        .post_json(
            "/api/v1/agents",
            Some(&admin),
            &json!({ "name": "Ava", "model": "openai/gpt-4o-mini", "budget_limit_usd": "1000" }),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let token = "EAAG-bench";
    graph.register_number(NUMBER, token);
    let (status, channel) = mesh
        .post_json(
            "/api/v1/channels",
            Some(&admin),
            &json!({ "agent_id": agent["id"], "channel": "whatsapp", "external_id": NUMBER,
                     "access_token": token }),
        )
        .await;
    assert_eq!(status, 201, "{channel}");

    // Warm up: connections, caches, the first lease of the budget.
    let now = chrono::Utc::now().timestamp();
    let (status, _) = webhook::whatsapp(
        &mesh,
        &whatsapp_delivery(
            NUMBER,
            json!([whatsapp_text("wamid.warm", "1555000", now, "m-warm")]),
        ),
    )
    .await;
    assert_eq!(status, 200);
    testkit::eventually(Duration::from_secs(60), "the warm-up reply", || async {
        (graph.accepted_count(NUMBER) > 0).then_some(())
    })
    .await
    .unwrap();

    let cpu_before = (own_cpu(), cpu_of("postgres"), cpu_of("redis-server"));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (mesh, next) = (mesh.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut acks = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= messages {
                    break;
                }
                let from = format!("1555{:06}", n % conversations);
                let delivery = whatsapp_delivery(
                    NUMBER,
                    json!([whatsapp_text(
                        &format!("wamid.b{n}"),
                        &from,
                        now,
                        &format!("m-{n}")
                    )]),
                );
                let at = Instant::now();
                let (status, ack) = webhook::whatsapp(&mesh, &delivery).await;
                assert_eq!(status, 200, "{ack}");
                acks.push(at.elapsed());
                sent.push((n, at));
            }
            (sent, acks)
        }));
    }
    let mut sent_at = HashMap::new();
    let mut acks = Vec::new();
    for task in tasks {
        let (sent, ack) = task.await.unwrap();
        sent_at.extend(sent);
        acks.extend(ack);
    }
    let queued_in = started.elapsed();
    testkit::eventually(
        Duration::from_secs(600),
        "every reply delivered",
        || async { (graph.accepted_count(NUMBER) > messages).then_some(()) },
    )
    .await
    .unwrap();
    let sends = graph.accepted(NUMBER);
    let last = sends.iter().map(|s| s.at).max().unwrap();
    let elapsed = last - started;
    let cpu_after = (own_cpu(), cpu_of("postgres"), cpu_of("redis-server"));

    let mut latencies: Vec<Duration> = sends
        .iter()
        .filter_map(|s| {
            let n: usize = s.text()?.strip_prefix("You said: m-")?.parse().ok()?;
            Some(s.at - *sent_at.get(&n)?)
        })
        .collect();
    latencies.sort();
    acks.sort();
    let per_message = |cpu: f64| cpu / messages as f64 * 1e3;
    println!(
        "channels end to end: {messages} WhatsApp messages over {conversations} conversations, \
         {senders} webhook callers"
    );
    println!(
        "  webhooks acknowledged in {:.1}s ({:.0}/s): ack p50 {:?}, p99 {:?}",
        queued_in.as_secs_f64(),
        messages as f64 / queued_in.as_secs_f64(),
        percentile(&acks, 0.5),
        percentile(&acks, 0.99),
    );
    println!(
        "  replies delivered: {:.0} messages/s end to end ({:.1}s); webhook→delivery p50 {:?}, p99 {:?}, max {:?}",
        messages as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    println!(
        "  CPU per message: mesh process {:.2} ms (services, gateway, fakes and this harness), \
         PostgreSQL {:.2} ms, Redis {:.2} ms",
        per_message(cpu_after.0 - cpu_before.0),
        per_message(cpu_after.1 - cpu_before.1),
        per_message(cpu_after.2 - cpu_before.2),
    );
    mesh.queues_settled().await;
    assert_eq!(
        graph.accepted_count(NUMBER),
        messages + 1,
        "exactly one reply per message"
    );
}
