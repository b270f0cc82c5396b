//! Load harness for what llm-svc pays per message: rendering a system prompt,
//! and the GetRuntimeConfig RPC end to end (agent-svc, PostgreSQL, loopback).
//!
//! Run: `cargo bench -p agent-svc --bench runtime_config` (PostgreSQL running).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use agent_svc::{
    agents::{self, AgentFields},
    prompt::{self, AgentText, Channel},
    templates::Escalation,
};
use crewmesh_proto::agent::v1::{
    Channel as ProtoChannel, GetRuntimeConfigRequest,
    agent_internal_service_client::AgentInternalServiceClient,
};
use mesh_kit::{ServiceId, Shutdown, client::CallContext, db::begin_tenant};
use uuid::Uuid;

const CALLERS: usize = 16;
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

fn fields() -> AgentFields {
    AgentFields {
        name: "Ava".into(),
        role_title: "customer support specialist".into(),
        persona: "Warm, patient and precise. ".repeat(10),
        instructions: "Help customers with orders, deliveries and returns.\n".repeat(40),
        model: "openai/gpt-4o-mini".into(),
        tools: vec![
            "order_lookup".into(),
            "create_ticket".into(),
            "knowledge_search".into(),
        ],
        escalation: Escalation {
            enabled: true,
            trigger_keywords: vec!["refund".into(), "lawyer".into()],
            on_human_request: true,
            max_consecutive_failures: 2,
        },
        escalation_assignee: "U123".into(),
        budget_limit_nanos: 25_000_000_000,
        active: true,
    }
}

async fn run() {
    // 1. The pure render.
    let f = fields();
    let text = AgentText {
        name: &f.name,
        role_title: &f.role_title,
        persona: &f.persona,
        instructions: &f.instructions,
        tools: &f.tools,
        escalation_enabled: true,
        trigger_keywords: &f.escalation.trigger_keywords,
        on_human_request: true,
    };
    let rounds = 20_000;
    let started = Instant::now();
    let mut bytes = 0;
    for i in 0..rounds {
        let channel = [Channel::Slack, Channel::WhatsApp, Channel::Api][i % 3];
        bytes += std::hint::black_box(prompt::build(std::hint::black_box(&text), channel)).len();
    }
    let per = started.elapsed() / rounds as u32;
    println!(
        "prompt render: {per:?} per prompt ({} bytes each)",
        bytes / rounds
    );

    // 2. The RPC.
    let database = testkit::fresh_database().await.unwrap();
    let mut config = agent_svc::config::AgentConfig::from_env(
        testkit::service_config(ServiceId::Agent, &database).unwrap(),
    )
    .unwrap();
    config.billing_url = "http://127.0.0.1:9".into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = Shutdown::new();
    tokio::spawn(agent_svc::startup::serve_with(
        config.clone(),
        listener,
        shutdown.clone(),
    ));
    let db = mesh_kit::service::connect(&config.service, &agent_svc::startup::STORAGE)
        .await
        .unwrap()
        .db;
    let tenant = Uuid::now_v7();
    let mut tx = begin_tenant(&db, tenant).await.unwrap();
    let agent = agents::insert(&mut tx, tenant, &fields(), None)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let client = AgentInternalServiceClient::new(mesh_kit::client::lazy_channel(&url).unwrap());
    let call = CallContext::new(testkit::service_token(ServiceId::Llm).unwrap(), None);
    let request = || {
        call.request(GetRuntimeConfigRequest {
            tenant_id: tenant.to_string(),
            agent_id: agent.id.to_string(),
            channel: ProtoChannel::Slack.into(),
        })
    };
    testkit::eventually(Duration::from_secs(30), "agent-svc", || {
        let mut client = client.clone();
        let req = request();
        async move { client.get_runtime_config(req).await.ok() }
    })
    .await
    .unwrap();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let (mut client, call) = (client.clone(), call.clone());
        let (tenant, agent) = (tenant.to_string(), agent.id.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while started.elapsed() < RUN_FOR {
                let t = Instant::now();
                client
                    .get_runtime_config(call.request(GetRuntimeConfigRequest {
                        tenant_id: tenant.clone(),
                        agent_id: agent.clone(),
                        channel: ProtoChannel::Slack.into(),
                    }))
                    .await
                    .unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    all.sort();
    println!(
        "GetRuntimeConfig, {CALLERS} concurrent callers, {:.1} s: {} calls, {:.0} calls/s, p50 {:?}, p99 {:?}",
        elapsed.as_secs_f64(),
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
    );
}
