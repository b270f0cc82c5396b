//! Row-level security on agents, as agent-svc's runtime role.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use agent_svc::{
    agents::{self, AgentFields},
    templates::Escalation,
};
use mesh_kit::{ServiceId, db::begin_tenant, service::connect};
use uuid::Uuid;

fn fields(name: &str) -> AgentFields {
    AgentFields {
        name: name.into(),
        role_title: String::new(),
        persona: String::new(),
        instructions: String::new(),
        model: "openai/gpt-4o-mini".into(),
        tools: vec![],
        escalation: Escalation::default(),
        escalation_assignee: String::new(),
        budget_limit_nanos: 0,
        active: true,
    }
}

#[tokio::test]
async fn agents_are_isolated_per_tenant() {
    let url = testkit::fresh_database().await.unwrap();
    let config = testkit::service_config(ServiceId::Agent, &url).unwrap();
    let mut storage = agent_svc::startup::STORAGE;
    storage.max_db_connections = 1;
    let db = connect(&config, &storage).await.unwrap().db;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut ids = Vec::new();
    for (tenant, name) in [(a, "a"), (b, "b")] {
        let mut tx = begin_tenant(&db, tenant).await.unwrap();
        ids.push(
            agents::insert(&mut tx, tenant, &fields(name), None)
                .await
                .unwrap()
                .id,
        );
        tx.commit().await.unwrap();
    }

    let mut tx = begin_tenant(&db, a).await.unwrap();
    assert_eq!(agents::count(&mut tx).await.unwrap(), 1);
    assert!(
        agents::get(&mut tx, ids[1]).await.unwrap().is_none(),
        "B's agent is invisible to A"
    );
    assert!(
        !agents::delete(&mut tx, ids[1]).await.unwrap(),
        "and cannot be deleted by A"
    );
    assert!(
        agents::update(&mut tx, ids[1], &fields("hijacked"))
            .await
            .unwrap()
            .is_none()
    );
    let err = agents::insert(&mut tx, b, &fields("forged"), None)
        .await
        .unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("42501"), "A cannot write a row for B");
    drop(tx);

    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM agents")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(none, 0, "no tenant set, no rows");
    let mut tx = begin_tenant(&db, b).await.unwrap();
    assert_eq!(
        agents::get(&mut tx, ids[1]).await.unwrap().unwrap().name,
        "b"
    );
}
