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

#[tokio::test]
async fn channel_connections_are_isolated_per_tenant_and_resolved_across_them() {
    use agent_svc::channels::{self, ChannelError, Kind, NewConnection};
    use keyring::{Key, Keyring};
    use secrecy::ExposeSecret;

    let url = testkit::fresh_database().await.unwrap();
    let config = testkit::service_config(ServiceId::Agent, &url).unwrap();
    let mut storage = agent_svc::startup::STORAGE;
    storage.max_db_connections = 1;
    let db = connect(&config, &storage).await.unwrap().db;
    let ring = Keyring::parse(&Key::generate().unwrap()).unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let number = |n: &str| NewConnection {
        agent_id: Uuid::nil(),
        kind: Kind::WhatsApp,
        external_id: n.into(),
        token: format!("EAAG-{n}").into(),
        default_channel: String::new(),
        display_name: String::new(),
        bot_user_id: String::new(),
        reply_template_name: String::new(),
        reply_template_language: String::new(),
    };
    let mut agents_of = Vec::new();
    for (tenant, n) in [(a, "1000001"), (b, "2000002")] {
        let mut tx = begin_tenant(&db, tenant).await.unwrap();
        let agent = agents::insert(&mut tx, tenant, &fields(n), None)
            .await
            .unwrap()
            .id;
        channels::create(
            &mut tx,
            &ring,
            tenant,
            &NewConnection {
                agent_id: agent,
                ..number(n)
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        agents_of.push(agent);
    }

    let mut tx = begin_tenant(&db, a).await.unwrap();
    let visible = channels::list(&mut tx).await.unwrap();
    assert_eq!(visible.len(), 1);
    assert_eq!(visible[0].external_id, "1000001");
    // Binding A's connection to B's agent fails in the database itself.
    let err = channels::create(
        &mut tx,
        &ring,
        a,
        &NewConnection {
            agent_id: agents_of[1],
            ..number("3000003")
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ChannelError::AgentNotFound), "{err:?}");
    drop(tx);
    let mut tx = begin_tenant(&db, a).await.unwrap();
    let b_row: Uuid =
        sqlx::query_scalar("SELECT id FROM channel_connections WHERE external_id = '2000002'")
            .fetch_optional(&mut *tx)
            .await
            .unwrap()
            .unwrap_or(Uuid::nil());
    assert!(b_row.is_nil(), "B's connection is invisible to A");
    let forged = channels::create(
        &mut tx,
        &ring,
        b,
        &NewConnection {
            agent_id: agents_of[1],
            ..number("4000004")
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&forged, ChannelError::Database(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42501")),
        "A cannot write a row for B: {forged:?}"
    );
    drop(tx);

    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM channel_connections")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(none, 0, "no tenant set, no rows");
    // Inbound resolution reads across tenants, in platform scope only.
    let found = channels::resolve(&db, &ring, Kind::WhatsApp, "2000002")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.tenant_id, found.agent_id), (b, agents_of[1]));
    assert_eq!(found.token.expose_secret(), "EAAG-2000002");
}
