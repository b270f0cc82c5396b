//! Load harness for the inbound edge: how fast the gateway acknowledges a
//! Slack event — signature check on the raw body, tenant resolution through
//! agent-svc (gRPC, PostgreSQL, token decryption), and the durable append to
//! the Redis Stream — with the whole mesh in this process.
//!
//! Run: `cargo bench -p crewmesh-tests --bench webhook_ack` (release), or
//! with `--profile dev` (PostgreSQL, Redis and s3s-fs running: `scripts/up`
//! or `scripts/test` start them). By default 16 callers send as fast as they
//! are answered; `WEBHOOK_RATE=<events/s>` sends at that fixed rate instead
//! (open loop: a slow answer does not slow the sender, as with Slack).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aws_lc_rs::hmac;
use crewmesh_tests::{MeshOptions, SLACK_SIGNING_SECRET, fake_slack::FakeSlack, spawn_mesh_with};
use serde_json::json;

const CALLERS: usize = 16;
const RUN_FOR: Duration = Duration::from_secs(5);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn sign(ts: i64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, SLACK_SIGNING_SECRET.as_bytes());
    let tag = hmac::sign(&key, format!("v0:{ts}:{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    // Slack's stand-in proves the bench workspace's token when it is connected.
    let slack = FakeSlack::start().await;
    slack.add_bot_token("xoxb-1-2-bench", "T0BENCH001");
    let mesh = Arc::new(
        spawn_mesh_with(MeshOptions {
            slack_api_base: Some(slack.api_base.clone()),
            queue_workers: false,
            ..MeshOptions::default()
        })
        .await,
    );
    let (_, admin, _) = mesh.tenant_with_member("bench", "customer_admin").await;
    let (status, agent) = mesh
        .post_json(
            "/api/v1/agents",
            Some(&admin),
            &json!({ "name": "Ava", "model": "openai/gpt-4o-mini", "budget_limit_usd": "5" }),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let (status, channel) = mesh
        .post_json(
            "/api/v1/channels",
            Some(&admin),
            &json!({ "agent_id": agent["id"], "channel": "slack", "external_id": "T0BENCH001",
                     "access_token": "xoxb-1-2-bench" }),
        )
        .await;
    assert_eq!(status, 201, "{channel}");

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let send = |mesh: Arc<crewmesh_tests::Mesh>, n: usize| async move {
        let body = json!({
            "type": "event_callback", "team_id": "T0BENCH001", "event_id": format!("EvBENCH{n}"),
            "event": { "type": "app_mention", "user": "U0CUSTOMER", "text": "where is my order?",
                       "ts": format!("1700000000.{n:06}"), "channel": format!("C0SUPPORT{}", n % 100) },
        })
        .to_string();
        let ts = chrono::Utc::now().timestamp();
        let sent = Instant::now();
        let response = mesh
            .http
            .post(mesh.url("/webhooks/slack/events"))
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sign(ts, &body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        sent.elapsed()
    };
    let rate: Option<f64> = std::env::var("WEBHOOK_RATE")
        .ok()
        .and_then(|r| r.parse().ok());
    let mut callers = Vec::new();
    match rate {
        Some(rate) => {
            // Open loop: one request every 1/rate seconds, whatever the answers do.
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sends = Vec::new();
            while started.elapsed() < RUN_FOR {
                tick.tick().await;
                let n = next.fetch_add(1, Ordering::Relaxed);
                sends.push(tokio::spawn(send(mesh.clone(), n)));
            }
            callers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for s in sends {
                    latencies.push(s.await.unwrap());
                }
                latencies
            }));
        }
        None => {
            for _ in 0..CALLERS {
                let (mesh, next) = (mesh.clone(), next.clone());
                callers.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while started.elapsed() < RUN_FOR {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        latencies.push(send(mesh.clone(), n).await);
                    }
                    latencies
                }));
            }
        }
    }
    let mut all = Vec::new();
    for caller in callers {
        all.extend(caller.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    let queued = mesh.inbound_messages().await.len();
    let load = match rate {
        Some(rate) => format!("at a fixed {rate}/s"),
        None => format!("with {CALLERS} callers"),
    };
    println!(
        "slack webhook ack: {} events in {:.1}s = {:.0}/s {load}; p50 {:?}, p99 {:?}, max {:?}; {queued} queued",
        all.len(),
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all[all.len() - 1],
    );
    assert_eq!(queued, all.len(), "every acknowledged event is queued once");
}
