//! Test-only helpers, used as a dev-dependency: a fresh database per test,
//! development configs and tokens, and polling with a deadline (tests never
//! sleep to wait).

use std::{future::Future, time::Duration};

use anyhow::{Context as _, bail};
use mesh_kit::{
    Role, ServiceId,
    auth::{Keyring, UserClaims},
    config::var,
    service::ServiceConfig,
};
use secrecy::SecretString;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Every test database starts with this, so `scripts/test` can drop leftovers.
pub const TEST_DATABASE_PREFIX: &str = "crewmesh_test_";

/// Server URL without a database: `TEST_DATABASE_URL` or local PostgreSQL.
fn server_url() -> String {
    var("TEST_DATABASE_URL").unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub fn redis_url() -> String {
    var("TEST_REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// Creates an empty database for one test and returns its URL.
pub async fn fresh_database() -> anyhow::Result<SecretString> {
    let server = server_url();
    let name = format!("{TEST_DATABASE_PREFIX}{}", Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .with_context(|| {
            format!("connecting to {server} (is PostgreSQL running? scripts/up starts it)")
        })?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(SecretString::from(format!("{server}/{name}")))
}

/// A development config for `service` against `database_url` and the test Redis.
pub fn service_config(
    service: ServiceId,
    database_url: &SecretString,
) -> anyhow::Result<ServiceConfig> {
    let mut config = ServiceConfig::development(service)?;
    config.common.database_url = database_url.clone();
    config.common.redis_url = SecretString::from(redis_url());
    Ok(config)
}

/// A user token signed with the development identity key, as identity-svc would issue.
pub fn user_token(role: Role, tenant: Option<Uuid>) -> anyhow::Result<(Uuid, String)> {
    let user_id = Uuid::now_v7();
    let keyring = Keyring::development(ServiceId::Identity)?;
    let claims = UserClaims {
        user_id,
        tenant_id: tenant,
        role,
        impersonator: None,
        api_key_id: None,
    };
    let (token, _) = keyring
        .signer
        .sign_user(&claims, Duration::from_secs(600))?;
    Ok((user_id, token))
}

/// A service token signed with `service`'s development key.
pub fn service_token(service: ServiceId) -> anyhow::Result<String> {
    Ok(Keyring::development(service)?.signer.service_token()?)
}

/// Polls `check` until it yields `Some`, failing after `deadline`.
pub async fn eventually<T, F, Fut>(
    deadline: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > until {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
