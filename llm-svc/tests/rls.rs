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
    for tenant in [a, b] {
        let mut tx = begin_tenant(&db, tenant).await.unwrap();
        let conversation =
            conversations::create(&mut tx, Uuid::now_v7(), tenant, Uuid::now_v7(), "api")
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
    let answered = conversations::by_request(&mut tx, "req-1")
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
