//! The budget ledger against the real PostgreSQL and Redis: a settlement
//! that failed between the PostgreSQL commit and the Redis spend is spent
//! exactly once when it is retried, and bad events are set aside without
//! holding up the good ones.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use billing_svc::{
    budget::Budgets,
    usage::{self, UsageEvent},
};
use mesh_kit::{ServiceId, db::begin_tenant, service::connect};
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use uuid::Uuid;

async fn setup() -> (PgPool, ConnectionManager) {
    let url = testkit::fresh_database().await.unwrap();
    let config = testkit::service_config(ServiceId::Billing, &url).unwrap();
    let resources = connect(&config, &billing_svc::startup::STORAGE)
        .await
        .unwrap();
    (resources.db, resources.redis.unwrap())
}

/// A Redis that is not there: every command fails, as during an outage.
fn dead_redis() -> ConnectionManager {
    // A port that was free a moment ago: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(0)
        .set_connection_timeout(Some(std::time::Duration::from_millis(300)));
    ConnectionManager::new_lazy_with_config(client, config).unwrap()
}

fn event(tenant: Uuid, agent: Uuid, call: &str, cost: i64) -> UsageEvent {
    UsageEvent {
        call_id: call.to_owned(),
        tenant_id: tenant,
        agent_id: agent,
        conversation_id: None,
        model: "openai/gpt-4o-mini".into(),
        prompt_tokens: 100,
        completion_tokens: 10,
        cost_nanos: cost,
    }
}

#[tokio::test]
async fn a_settlement_retried_after_redis_failed_is_spent_exactly_once() {
    let (db, redis) = setup().await;
    let budgets = Budgets::new(db.clone(), redis);
    let (tenant, agent) = (Uuid::now_v7(), Uuid::now_v7());
    budgets.set_limit(tenant, agent, 1_000_000).await.unwrap();
    // The ledger exists once someone leased from it.
    let lease = budgets
        .lease(tenant, agent, &Uuid::now_v7().to_string(), 100_000)
        .await
        .unwrap();
    assert_eq!(lease.granted, 100_000);
    assert_eq!(lease.remaining, 900_000);

    let batch = [
        event(tenant, agent, "call-1", 30_000),
        event(tenant, agent, "call-2", 20_000),
    ];
    // PostgreSQL commits, then Redis fails: the settlement errors.
    let broken = Budgets::new(db.clone(), dead_redis());
    assert!(broken.settle(&batch, &[]).await.is_err());
    let mut tx = begin_tenant(&db, tenant).await.unwrap();
    let recorded = usage::month_to_date(&mut tx, agent, chrono::Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(recorded, 50_000, "the usage is in PostgreSQL");

    // llm-svc retries the same batch: both calls are duplicates for
    // PostgreSQL, and still spent in the ledger — once.
    for _ in 0..2 {
        let settled = budgets.settle(&batch, &[]).await.unwrap();
        assert_eq!((settled.recorded, settled.duplicates), (0, 2));
    }
    let after = budgets
        .lease(tenant, agent, &Uuid::now_v7().to_string(), 1)
        .await
        .unwrap();
    // 1,000,000 limit − 50,000 spent − 100,000 still leased − 1 just leased.
    assert_eq!(after.remaining, 849_999);
}

#[tokio::test]
async fn bad_events_are_set_aside_and_the_rest_of_the_batch_is_recorded() {
    let (db, redis) = setup().await;
    let budgets = Budgets::new(db.clone(), redis);
    let (good_tenant, other_tenant, agent) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let negative = UsageEvent {
        prompt_tokens: -5,
        ..event(other_tenant, agent, "bad-1", 10)
    };
    let absurd = UsageEvent {
        completion_tokens: i64::MAX,
        ..event(other_tenant, agent, "bad-2", 10)
    };
    let priceless = event(other_tenant, agent, "bad-3", i64::MAX);
    let settled = budgets
        .settle(
            &[
                negative,
                event(good_tenant, agent, "good-1", 1_000),
                absurd,
                priceless,
                event(good_tenant, agent, "good-2", 2_000),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(settled.recorded, 2);
    let rejected: Vec<&str> = settled.rejected.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(rejected, ["bad-1", "bad-2", "bad-3"]);
    assert!(settled.rejected.iter().all(|(_, why)| !why.is_empty()));
    let mut tx = begin_tenant(&db, good_tenant).await.unwrap();
    let spent = usage::month_to_date(&mut tx, agent, chrono::Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(spent, 3_000, "every other tenant's usage is recorded");
}
