//! Load harness: the cost of a budget reservation and its settlement as seen
//! by the caller (llm-svc), against a real billing-svc, PostgreSQL and Redis
//! on loopback. 64 concurrent callers on one agent for a bounded time.
//!
//! Run: `cargo bench -p llm-svc --bench budget` (needs PostgreSQL and Redis,
//! as `scripts/up` starts them). Prints p50/p99 per reserve+settle and calls/s.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crewmesh_proto::billing::v1::{
    SetAgentBudgetRequest, billing_internal_service_client::BillingInternalServiceClient,
};
use llm_svc::budget::{BudgetClient, NANOS_PER_USD, Usage};
use mesh_kit::{ServiceId, Shutdown, auth::Keyring, client::CallContext};
use uuid::Uuid;

const CALLERS: usize = 64;
const RUN_FOR: Duration = Duration::from_secs(5);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let database = testkit::fresh_database().await.unwrap();
    let service = testkit::service_config(ServiceId::Billing, &database).unwrap();
    let mut config = billing_svc::config::BillingConfig::from_env(service).unwrap();
    config.events_stream = format!("bench:events:{}", Uuid::new_v4().simple());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::new();
    tokio::spawn(billing_svc::startup::serve_with(
        config,
        listener,
        shutdown.clone(),
    ));
    let channel = mesh_kit::client::lazy_channel(&url).unwrap();

    let (tenant, agent) = (Uuid::now_v7(), Uuid::now_v7());
    let agent_call = CallContext::new(testkit::service_token(ServiceId::Agent).unwrap(), None);
    let mut internal = BillingInternalServiceClient::new(channel.clone());
    testkit::eventually(Duration::from_secs(30), "billing-svc", || {
        let (mut internal, call) = (internal.clone(), agent_call.clone());
        async move {
            internal
                .set_agent_budget(call.request(SetAgentBudgetRequest {
                    tenant_id: tenant.to_string(),
                    agent_id: agent.to_string(),
                    limit_usd: "1000000".into(),
                }))
                .await
                .ok()
        }
    })
    .await
    .unwrap();
    let _ = &mut internal;

    // A $1 slice and calls of at most a tenth of a cent: a lease every ~1000 calls.
    let signer = Keyring::development(ServiceId::Llm).unwrap().signer;
    let client = BudgetClient::new(channel, signer, NANOS_PER_USD);
    tokio::spawn(
        client
            .clone()
            .run_flusher(Duration::from_millis(250), shutdown.clone()),
    );
    let max_cost = NANOS_PER_USD / 1000;

    let started = Instant::now();
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let client: Arc<BudgetClient> = client.clone();
        callers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < RUN_FOR {
                let t = Instant::now();
                let reservation = client.reserve(tenant, agent, max_cost).await.unwrap();
                client
                    .settle(
                        reservation,
                        Usage {
                            call_id: Uuid::now_v7().to_string(),
                            conversation_id: None,
                            model: "openai/gpt-4o-mini".into(),
                            prompt_tokens: 100,
                            completion_tokens: 20,
                            cost: max_cost / 2,
                        },
                    )
                    .await;
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for caller in callers {
        all.extend(caller.await.unwrap());
    }
    let elapsed = started.elapsed();
    client.flush().await;
    shutdown.cancel();
    all.sort();
    println!(
        "budget reserve+settle, {CALLERS} concurrent callers, {:.1} s: {} calls, {:.0} calls/s, p50 {:?}, p99 {:?}, max {:?}",
        elapsed.as_secs_f64(),
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or_default(),
    );
}
