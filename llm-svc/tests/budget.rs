//! Budget leases under concurrency, against the real billing-svc, PostgreSQL
//! and Redis: two llm-svc replicas with 25 concurrent callers each spend one
//! agent's budget, and the settled total never exceeds the limit.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use crewmesh_proto::billing::v1::{
    GetBudgetStatusRequest, SetAgentBudgetRequest,
    billing_internal_service_client::BillingInternalServiceClient,
    billing_service_client::BillingServiceClient,
};
use llm_svc::budget::{BudgetClient, BudgetError, NANOS_PER_USD, Usage};
use mesh_kit::{Role, ServiceId, Shutdown, auth::Keyring, client::CallContext};
use tonic::transport::Channel;
use uuid::Uuid;

const CENT: i64 = NANOS_PER_USD / 100;

/// billing-svc on a random port against a fresh database.
async fn billing() -> Channel {
    let database = testkit::fresh_database().await.unwrap();
    let service = testkit::service_config(ServiceId::Billing, &database).unwrap();
    let mut config = billing_svc::config::BillingConfig::from_env(service).unwrap();
    config.events_stream = format!("test:events:{}", Uuid::new_v4().simple());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(billing_svc::startup::serve_with(
        config,
        listener,
        Shutdown::new(),
    ));
    let channel = mesh_kit::client::lazy_channel(&url).unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    testkit::eventually(Duration::from_secs(20), "billing-svc SERVING", || {
        let mut health = health.clone();
        async move {
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()?
                .into_inner()
                .status();
            (status == tonic_health::pb::health_check_response::ServingStatus::Serving)
                .then_some(())
        }
    })
    .await
    .unwrap();
    channel
}

async fn set_budget(channel: &Channel, tenant: Uuid, agent: Uuid, limit_usd: &str) {
    let call = CallContext::new(testkit::service_token(ServiceId::Agent).unwrap(), None);
    BillingInternalServiceClient::new(channel.clone())
        .set_agent_budget(call.request(SetAgentBudgetRequest {
            tenant_id: tenant.to_string(),
            agent_id: agent.to_string(),
            limit_usd: limit_usd.into(),
        }))
        .await
        .unwrap();
}

async fn spent(channel: &Channel, tenant: Uuid, agent: Uuid) -> (String, String, i32) {
    let (_, token) = testkit::user_token(Role::CustomerAdmin, Some(tenant)).unwrap();
    let status = BillingServiceClient::new(channel.clone())
        .get_budget_status(
            CallContext::new(token, None).request(GetBudgetStatusRequest {
                tenant_id: String::new(),
                agent_id: agent.to_string(),
            }),
        )
        .await
        .unwrap()
        .into_inner();
    (status.spent_usd, status.limit_usd, status.state)
}

fn llm_signer() -> mesh_kit::auth::TokenSigner {
    Keyring::development(ServiceId::Llm).unwrap().signer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_calls_on_two_replicas_never_overspend() {
    let channel = billing().await;
    let (tenant, agent) = (Uuid::now_v7(), Uuid::now_v7());
    let limit = NANOS_PER_USD; // $1.00
    set_budget(&channel, tenant, agent, "1.00").await;

    let slice = 10 * CENT;
    let max_cost = 3 * CENT;
    let replicas = [
        BudgetClient::new(channel.clone(), llm_signer(), slice),
        BudgetClient::new(channel.clone(), llm_signer(), slice),
    ];
    let settled = Arc::new(AtomicI64::new(0));
    let mut callers = Vec::new();
    for i in 0..50 {
        let client = replicas[i % 2].clone();
        let settled = settled.clone();
        callers.push(tokio::spawn(async move {
            let mut n = 0i64;
            loop {
                let reservation = match client.reserve(tenant, agent, max_cost).await {
                    Ok(r) => r,
                    Err(BudgetError::Exceeded) => return,
                    Err(e) => panic!("{e}"),
                };
                // The provider call: real costs vary between 1 and 3 cents.
                tokio::task::yield_now().await;
                n += 1;
                let cost = CENT + (i as i64 * 7 + n * 13) % (2 * CENT + 1);
                settled.fetch_add(cost, Ordering::SeqCst);
                client
                    .settle(
                        reservation,
                        Usage {
                            call_id: Uuid::now_v7().to_string(),
                            conversation_id: None,
                            model: "openai/gpt-4o-mini".into(),
                            prompt_tokens: 100,
                            completion_tokens: 20,
                            cost,
                        },
                    )
                    .await;
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    for replica in &replicas {
        replica.flush().await;
    }

    let total = settled.load(Ordering::SeqCst);
    let (spent_usd, limit_usd, _) = spent(&channel, tenant, agent).await;
    assert_eq!(limit_usd, "1.00");
    assert_eq!(
        mesh_kit::wire::parse_usd(&spent_usd).unwrap(),
        total,
        "billing recorded every settled call"
    );
    assert!(total <= limit, "spent {spent_usd} over the $1.00 limit");
    // The cap is not reached by starving callers: what is left is less than
    // what the two replicas could still hold back.
    assert!(
        total >= limit - 2 * (slice + max_cost),
        "only {spent_usd} of $1.00 was usable"
    );

    // Once what is left cannot cover a call, every further reservation is refused.
    let late = BudgetClient::new(channel.clone(), llm_signer(), slice);
    assert!(matches!(
        late.reserve(tenant, agent, max_cost).await,
        Err(BudgetError::Exceeded)
    ));
}

#[tokio::test]
async fn settlement_is_idempotent_and_unknown_agents_are_refused() {
    let channel = billing().await;
    let (tenant, agent) = (Uuid::now_v7(), Uuid::now_v7());
    let client = BudgetClient::new(channel.clone(), llm_signer(), 10 * CENT);
    assert!(
        matches!(
            client.reserve(tenant, agent, CENT).await,
            Err(BudgetError::Billing(_))
        ),
        "no budget registered: refused, never unlimited"
    );

    set_budget(&channel, tenant, agent, "5").await;
    let reservation = client.reserve(tenant, agent, 2 * CENT).await.unwrap();
    let usage = Usage {
        call_id: "call-1".into(),
        conversation_id: Some(Uuid::now_v7()),
        model: "anthropic/claude-3-5-haiku".into(),
        prompt_tokens: 10,
        completion_tokens: 5,
        cost: CENT,
    };
    client.settle(reservation, usage.clone()).await;
    client.flush().await;
    // A redelivered settlement of the same call id changes nothing.
    let again = client.reserve(tenant, agent, 2 * CENT).await.unwrap();
    client.settle(again, usage).await;
    client.flush().await;
    let (spent_usd, _, state) = spent(&channel, tenant, agent).await;
    assert_eq!(spent_usd, "0.01");
    assert_eq!(state, crewmesh_proto::billing::v1::BudgetState::Ok as i32);
}
