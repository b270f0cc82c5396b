//! Row-level security on conversations and messages, as llm-svc's runtime role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use llm_svc::conversations::{self, Exchange};
use mesh_kit::{ServiceId, db::begin_tenant, service::connect};
use uuid::Uuid;

#[tokio::test]
async fn conversations_and_messages_are_isolated_per_tenant() {
    let url = testkit::fresh_database().await.unwrap();
    let config = testkit::service_config(ServiceId::Llm, &url).unwrap();
    let mut storage = llm_svc::startup::STORAGE;
    storage.max_db_connections = 1;
    let db = connect(&config, &storage).await.unwrap().db;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut ids = Vec::new();
    let mut agents = Vec::new();
    for tenant in [a, b] {
        let mut tx = begin_tenant(&db, tenant).await.unwrap();
        let agent = Uuid::now_v7();
        agents.push(agent);
        let conversation = conversations::create(&mut tx, Uuid::now_v7(), tenant, agent, "api")
            .await
            .unwrap();
        conversations::append(
            &mut tx,
            &conversation,
            &Exchange {
                user_text: "hello",
                reply: "hi there",
                prompt_tokens: 10,
                completion_tokens: 3,
                cost_nanos: 42,
                request_id: Some("req-1"),
                refusal_reason: "",
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        ids.push(conversation.id);
    }

    let mut tx = begin_tenant(&db, a).await.unwrap();
    assert!(
        conversations::get_for_update(&mut tx, ids[1])
            .await
            .unwrap()
            .is_none(),
        "B's conversation is invisible to A"
    );
    assert!(
        conversations::recent(&mut tx, ids[1], 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The same idempotency key in two tenants names two different runs.
    let answered = conversations::by_request(&mut tx, agents[0], "req-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (answered.conversation_id, answered.text.as_str()),
        (ids[0], "hi there")
    );
    let turns = conversations::recent(&mut tx, ids[0], 10).await.unwrap();
    assert_eq!(
        turns.iter().map(|t| t.role.as_str()).collect::<Vec<_>>(),
        ["user", "assistant"]
    );
    let forged = sqlx::query(
        "INSERT INTO messages (id, tenant_id, conversation_id, role, text) VALUES ($1, $2, $3, 'user', 'x')",
    )
    .bind(Uuid::now_v7())
    .bind(b)
    .bind(ids[1])
    .execute(&mut *tx)
    .await
    .unwrap_err();
    let code = forged
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("42501"), "A cannot write a row for B");
    drop(tx);

    // History is append-only for the runtime role.
    let mut tx = begin_tenant(&db, a).await.unwrap();
    let edit = sqlx::query("UPDATE messages SET text = 'rewritten'")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    let code = edit
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("42501"));
    drop(tx);

    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(none, 0, "no tenant set, no rows");
}

/// A dead letter as the queue consumers write it.
fn dead_letter(queue: &str, entry: &str, payload: Vec<u8>) -> streamq::Delivery {
    let field = |v: &str| v.as_bytes().to_vec();
    streamq::Delivery {
        queue: "test:dead".into(),
        partition: 0,
        entry_id: entry.into(),
        id: format!("slack:{entry}"),
        key: "slack:T1:C1:1.0".into(),
        payload,
        attempt: 1,
        fields: [
            ("reason", field("slack:token_revoked")),
            ("detail", field("the token was revoked")),
            ("attempts", field("1")),
            ("queue", field(queue)),
            ("failed_at", field("1764547200000")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    }
}

#[tokio::test]
async fn dead_letters_are_isolated_per_tenant_and_only_retries_change_them() {
    use llm_svc::dead_letters::{self, DeadLetterError, Requeue, Scope, Sink};
    use prost::Message as _;
    use streamq::Handler as _;

    let url = testkit::fresh_database().await.unwrap();
    let config = testkit::service_config(ServiceId::Llm, &url).unwrap();
    let db = connect(&config, &llm_svc::startup::STORAGE)
        .await
        .unwrap()
        .db;
    let prefix = format!("test:{}", Uuid::new_v4().simple());
    let sink = Sink {
        db: db.clone(),
        inbound_queue: format!("{prefix}:inbound"),
        outbound_queue: format!("{prefix}:outbound"),
    };
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let reply = |tenant: Uuid| {
        crewmesh_proto::messaging::v1::OutboundMessage {
            id: "slack:Ev1:reply".into(),
            tenant_id: tenant.to_string(),
            text: "Your order shipped.".into(),
            conversation: "slack:T1:C1:1.0".into(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let outbound = format!("{prefix}:outbound");
    for (entry, payload) in [("1-0", reply(a)), ("2-0", reply(b))] {
        let delivery = dead_letter(&outbound, entry, payload);
        assert_eq!(sink.handle(&delivery).await, streamq::Outcome::Done);
        // Ingesting the same stream entry again changes nothing.
        assert_eq!(sink.handle(&delivery).await, streamq::Outcome::Done);
    }
    let unreadable = dead_letter(&outbound, "3-0", b"not protobuf \xff".to_vec());
    assert_eq!(sink.handle(&unreadable).await, streamq::Outcome::Done);

    let mine = dead_letters::list(&db, Scope::Tenant(a), 10, None)
        .await
        .unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].tenant_id, Some(a));
    assert_eq!(mine[0].text, "Your order shipped.");
    assert_eq!(mine[0].reason, "slack:token_revoked");
    assert_eq!(mine[0].channel, "slack");
    let all = dead_letters::list(&db, Scope::Platform, 10, None)
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        3,
        "platform admins see every tenant's, and unreadable ones"
    );

    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let manager = redis::aio::ConnectionManager::new(client).await.unwrap();
    let topology = |name: &str| streamq::Topology::new(format!("{prefix}:{name}"), 2).unwrap();
    let requeue = Requeue {
        inbound: streamq::Producer::new(manager.clone(), topology("inbound"), 1000, 1),
        outbound: streamq::Producer::new(manager, topology("outbound"), 1000, 1),
    };
    let refused = dead_letters::retry(&db, &requeue, Scope::Tenant(b), mine[0].id, "u")
        .await
        .unwrap_err();
    assert!(matches!(refused, DeadLetterError::NotFound), "{refused}");
    let retried = dead_letters::retry(&db, &requeue, Scope::Tenant(a), mine[0].id, "admin-1")
        .await
        .unwrap();
    assert_eq!(retried.retried_by, "admin-1");
    assert!(retried.retried_at.is_some());

    // The runtime role may record a retry, nothing else.
    let mut tx = begin_tenant(&db, a).await.unwrap();
    let changed = sqlx::query("UPDATE dead_letters SET reason = 'forged'")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        changed
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("42501")
    );
}
