//! LLM keys at rest, against the real PostgreSQL: encrypted in the table (a
//! dump shows no key), and rotation moves every secret to the newest key.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use billing_svc::{llm_keys, rotation};
use keyring::{Key, Keyring};
use mesh_kit::{ServiceId, service::connect};
use secrecy::ExposeSecret;
use sqlx::PgPool;
use uuid::Uuid;

async fn pool() -> (PgPool, String) {
    let url = testkit::fresh_database().await.unwrap();
    let config = testkit::service_config(ServiceId::Billing, &url).unwrap();
    let db = connect(&config, &billing_svc::startup::STORAGE)
        .await
        .unwrap()
        .db;
    (db, url.expose_secret().to_owned())
}

#[tokio::test]
async fn a_database_dump_contains_no_plaintext_key() {
    let (db, url) = pool().await;
    let ring = Keyring::parse(&Key::generate().unwrap()).unwrap();
    let plaintext = format!("sk-live-{}", Uuid::new_v4().simple());
    llm_keys::create(
        &db,
        &ring,
        &mesh_kit::egress::EgressPolicy::deny_all(),
        Uuid::now_v7(),
        "openai",
        &plaintext,
        None,
    )
    .await
    .unwrap();

    let dump = std::process::Command::new("pg_dump")
        .arg("--data-only")
        .arg(&url)
        .output()
        .expect("pg_dump is installed with PostgreSQL");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("llm_keys"), "the dump covers the table");
    assert!(
        !dump.contains(&plaintext),
        "the key is in the dump in plaintext"
    );
    assert!(!dump.contains(&plaintext[..plaintext.len() - 4]));
}

#[tokio::test]
async fn rotation_reencrypts_in_batches_resumably_under_the_newest_key() {
    let (db, _) = pool().await;
    let (old, new) = (Key::generate().unwrap(), Key::generate().unwrap());
    let before = Keyring::parse(&old).unwrap();
    let mut tenants = Vec::new();
    for i in 0..7 {
        let tenant = Uuid::now_v7();
        llm_keys::create(
            &db,
            &before,
            &mesh_kit::egress::EgressPolicy::deny_all(),
            tenant,
            "openai",
            &format!("sk-{i}"),
            None,
        )
        .await
        .unwrap();
        tenants.push(tenant);
    }

    let during = Keyring::parse(&format!("{new},{old}")).unwrap();
    let mut reports = Vec::new();
    let done = rotation::rotate_llm_keys(&db, &during, 3, |p| reports.push(p))
        .await
        .unwrap();
    assert_eq!((done.scanned, done.rotated, done.total), (7, 7, 7));
    assert_eq!(reports.len(), 3, "one progress report per batch of 3");
    assert_eq!(reports[0].scanned, 3);

    // Running again finds nothing to do: an interrupted run just restarts.
    let again = rotation::rotate_llm_keys(&db, &during, 3, |_| {})
        .await
        .unwrap();
    assert_eq!(again.rotated, 0);

    let after = Keyring::parse(&new).unwrap();
    for (i, tenant) in tenants.iter().enumerate() {
        let secret = llm_keys::secret(&db, &after, *tenant, "openai")
            .await
            .unwrap();
        assert_eq!(secret.api_key, format!("sk-{i}"));
        assert!(
            llm_keys::secret(&db, &before, *tenant, "openai")
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn llm_keys_are_isolated_per_tenant_by_rls() {
    let (db, _) = pool().await;
    let ring = Keyring::parse(&Key::generate().unwrap()).unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let key_a = llm_keys::create(
        &db,
        &ring,
        &mesh_kit::egress::EgressPolicy::deny_all(),
        a,
        "openai",
        "sk-a",
        None,
    )
    .await
    .unwrap();
    llm_keys::create(
        &db,
        &ring,
        &mesh_kit::egress::EgressPolicy::deny_all(),
        b,
        "openai",
        "sk-b",
        None,
    )
    .await
    .unwrap();
    let listed = llm_keys::list(&db, a).await.unwrap();
    assert_eq!(listed, std::slice::from_ref(&key_a));
    // B cannot delete A's key: NotFound, and it is still there.
    assert!(matches!(
        llm_keys::delete(&db, b, key_a.id).await,
        Err(llm_keys::LlmKeyError::NotFound)
    ));
    assert_eq!(llm_keys::list(&db, a).await.unwrap().len(), 1);
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM llm_keys")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(none, 0, "no tenant set, no rows");
}

#[tokio::test]
async fn tenant_created_events_open_the_trial_from_the_tenant_creation_time() {
    let (db, _) = pool().await;
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let stream = format!("test:events:{}", Uuid::new_v4().simple());
    let tenant = Uuid::now_v7();
    let payload = serde_json::json!({ "tenant_id": tenant, "slug": "acme", "created_at": "2026-01-01T00:00:00Z" });
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("id")
        .arg("e1")
        .arg("topic")
        .arg("tenant.created")
        .arg("payload")
        .arg(payload.to_string())
        .query_async(&mut redis)
        .await
        .unwrap();

    billing_svc::events::ensure_group(&mut redis, &stream)
        .await
        .unwrap();
    let read = billing_svc::events::consume_once(&db, &mut redis, &stream, "c1", ">")
        .await
        .unwrap();
    assert_eq!(read, 1);
    let state = billing_svc::subscriptions::get(&db, tenant).await.unwrap();
    assert_eq!(state.subscription_status, "trialing");
    assert_eq!(
        state.trial_ends_at.unwrap().to_rfc3339(),
        "2026-01-15T00:00:00+00:00"
    );

    // Acknowledged: nothing is pending for the consumer after a restart.
    let pending = billing_svc::events::consume_once(&db, &mut redis, &stream, "c1", "0")
        .await
        .unwrap();
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn an_idle_blocking_read_waits_on_its_connection_instead_of_timing_out() {
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let stream = format!("test:events:{}", Uuid::new_v4().simple());
    let (db, _) = pool().await;
    // redis-rs's default response timeout (500 ms) is shorter than the
    // one-second block: every idle read would fail and reconnect.
    let mut plain = client.get_multiplexed_async_connection().await.unwrap();
    billing_svc::events::ensure_group(&mut plain, &stream)
        .await
        .unwrap();
    assert!(
        billing_svc::events::consume_once(&db, &mut plain, &stream, "c1", ">")
            .await
            .is_err(),
        "the default connection times out an idle blocking read"
    );
    let mut blocking = billing_svc::events::blocking_connection(&client)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let read = billing_svc::events::consume_once(&db, &mut blocking, &stream, "c1", ">")
        .await
        .unwrap();
    assert_eq!(read, 0);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
}

#[tokio::test]
async fn a_vanished_consumers_events_are_claimed_and_handled() {
    let (db, _) = pool().await;
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let stream = format!("test:events:{}", Uuid::new_v4().simple());
    let tenant = Uuid::now_v7();
    let payload = serde_json::json!({ "tenant_id": tenant, "slug": "acme", "created_at": "2026-01-01T00:00:00Z" });
    billing_svc::events::ensure_group(&mut redis, &stream)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("id")
        .arg("e1")
        .arg("topic")
        .arg("tenant.created")
        .arg("payload")
        .arg(payload.to_string())
        .query_async(&mut redis)
        .await
        .unwrap();
    // A replica reads the event and dies before acknowledging it.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(billing_svc::events::GROUP)
        .arg("gone")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut redis)
        .await
        .unwrap();
    // Another replica's own pending list is empty; the claim brings it over.
    assert_eq!(
        billing_svc::events::consume_once(&db, &mut redis, &stream, "heir", "0")
            .await
            .unwrap(),
        0
    );
    let claimed = billing_svc::events::claim_abandoned(
        &mut redis,
        &stream,
        "heir",
        std::time::Duration::ZERO,
    )
    .await
    .unwrap();
    assert_eq!(claimed, 1);
    assert_eq!(
        billing_svc::events::consume_once(&db, &mut redis, &stream, "heir", "0")
            .await
            .unwrap(),
        1
    );
    let state = billing_svc::subscriptions::get(&db, tenant).await.unwrap();
    assert_eq!(state.subscription_status, "trialing");
}
