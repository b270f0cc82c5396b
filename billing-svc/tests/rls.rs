//! Row-level security on every tenant-scoped billing table, as the runtime role.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_kit::{ServiceId, db::begin_tenant, service::connect};
use sqlx::PgPool;
use uuid::Uuid;

/// Table and an insert of one row for tenant $1 (with a fresh id $2).
const TENANT_TABLES: &[(&str, &str)] = &[
    (
        "tenant_billing",
        "INSERT INTO tenant_billing (tenant_id, subscription_status, plan, agent_quota) VALUES ($1, 'trialing', 'trial', 2)",
    ),
    (
        "llm_keys",
        "INSERT INTO llm_keys (id, tenant_id, provider, ciphertext, key_hint) VALUES ($2, $1, 'openai', 'x', 'abcd')",
    ),
    (
        "usage_events",
        "INSERT INTO usage_events (call_id, tenant_id, agent_id, model, prompt_tokens, completion_tokens, cost_nanos)
         VALUES ($2::text, $1, $2, 'm', 1, 1, 1)",
    ),
    (
        "agent_budgets",
        "INSERT INTO agent_budgets (tenant_id, agent_id, limit_nanos) VALUES ($1, $2, 100)",
    ),
];

async fn pool() -> PgPool {
    let url = testkit::fresh_database().await.unwrap();
    let config = testkit::service_config(ServiceId::Billing, &url).unwrap();
    connect(&config, &billing_svc::startup::STORAGE)
        .await
        .unwrap()
        .db
}

#[tokio::test]
async fn every_tenant_scoped_table_isolates_tenants() {
    let pool = pool().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    for tenant in [a, b] {
        let mut tx = begin_tenant(&pool, tenant).await.unwrap();
        for (table, insert) in TENANT_TABLES {
            sqlx::query(sqlx::AssertSqlSafe(*insert))
                .bind(tenant)
                .bind(Uuid::now_v7())
                .execute(&mut *tx)
                .await
                .unwrap_or_else(|e| panic!("seeding {table}: {e}"));
        }
        tx.commit().await.unwrap();
    }
    for (table, insert) in TENANT_TABLES {
        let select = format!("SELECT DISTINCT tenant_id FROM {table}");
        for tenant in [a, b] {
            let mut tx = begin_tenant(&pool, tenant).await.unwrap();
            let seen: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(select.clone()))
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            assert_eq!(seen, [tenant], "{table} as {tenant}");
        }
        let none: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(select.clone()))
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(none.is_empty(), "{table} without a tenant");
        // Writing a row for another tenant is refused.
        let mut tx = begin_tenant(&pool, a).await.unwrap();
        let err = sqlx::query(sqlx::AssertSqlSafe(*insert))
            .bind(b)
            .bind(Uuid::now_v7())
            .execute(&mut *tx)
            .await
            .unwrap_err();
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{table}");
    }
    // Usage is append-only.
    let mut tx = begin_tenant(&pool, a).await.unwrap();
    let err = sqlx::query("UPDATE usage_events SET cost_nanos = 0")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("42501"));
}
