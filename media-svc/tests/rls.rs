//! Row-level security on media metadata, as media-svc's runtime role.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use media_svc::objects::{self, NewObject, Source, Status};
use mesh_kit::{ServiceId, db::begin_tenant, service::connect};
use sqlx::PgConnection;
use uuid::Uuid;

fn sql_state(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    tenant: Uuid,
    key: &str,
    message_id: &str,
) -> Result<objects::MediaObject, sqlx::Error> {
    objects::insert(
        conn,
        &NewObject {
            id,
            tenant_id: tenant,
            object_key: key,
            content_type: "image/jpeg",
            size_bytes: 10,
            sha256: Some("00"),
            source: Source::WhatsApp,
            status: Status::Pending,
            filename: "",
            message_id: Some(message_id),
        },
    )
    .await
}

#[tokio::test]
async fn media_objects_are_isolated_per_tenant() {
    let url = testkit::fresh_database().await.unwrap();
    let config = testkit::service_config(ServiceId::Media, &url).unwrap();
    let mut storage = media_svc::startup::STORAGE;
    storage.max_db_connections = 1;
    let db = connect(&config, &storage).await.unwrap().db;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut ids = Vec::new();
    for tenant in [a, b] {
        let id = Uuid::now_v7();
        let mut tx = begin_tenant(&db, tenant).await.unwrap();
        insert(
            &mut tx,
            id,
            tenant,
            &objects::object_key(tenant, id, "jpg"),
            "wamid.1",
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        ids.push(id);
    }

    let mut tx = begin_tenant(&db, a).await.unwrap();
    assert!(objects::get(&mut tx, ids[0]).await.unwrap().is_some());
    assert!(
        objects::get(&mut tx, ids[1]).await.unwrap().is_none(),
        "B's object is invisible to A"
    );
    assert_eq!(
        objects::by_message(&mut tx, Source::WhatsApp, "wamid.1")
            .await
            .unwrap()
            .map(|m| m.id),
        Some(ids[0]),
        "the same message id in B does not collide with A's"
    );
    assert!(
        !objects::mark_ready(&mut tx, ids[1]).await.unwrap(),
        "and cannot be changed by A"
    );
    let forged_id = Uuid::now_v7();
    let err = insert(
        &mut tx,
        forged_id,
        b,
        &objects::object_key(b, forged_id, "jpg"),
        "x",
    )
    .await
    .unwrap_err();
    assert_eq!(
        sql_state(&err).as_deref(),
        Some("42501"),
        "A cannot write a row for B"
    );
    drop(tx);

    // A row's key must sit under its own tenant's prefix.
    let mut tx = begin_tenant(&db, a).await.unwrap();
    let id = Uuid::now_v7();
    let err = insert(&mut tx, id, a, &objects::object_key(b, id, "jpg"), "y")
        .await
        .unwrap_err();
    assert_eq!(sql_state(&err).as_deref(), Some("23514"), "{err}");
    drop(tx);

    // Metadata is never deleted by the runtime role.
    let mut tx = begin_tenant(&db, a).await.unwrap();
    let err = sqlx::query("DELETE FROM media_objects WHERE id = $1")
        .bind(ids[0])
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sql_state(&err).as_deref(), Some("42501"));
    drop(tx);

    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM media_objects")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(none, 0, "no tenant set, no rows");

    let (enabled, forced): (bool, bool) = sqlx::query_as(
        "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'media.media_objects'::regclass",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(enabled && forced);
    let bypass: bool = sqlx::query_scalar(
        "SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(!bypass, "the pool runs as the runtime role");
}
