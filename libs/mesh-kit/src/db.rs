//! PostgreSQL the way every service uses it.
//!
//! Each service owns one schema. At start-up it takes an advisory lock, creates
//! the schema and its runtime role, and applies its embedded migrations as the
//! `DATABASE_URL` user (the schema owner). Its pool then drops to the runtime
//! role on every connection: that role owns nothing and has neither SUPERUSER
//! nor BYPASSRLS, so row-level security applies to every query the service
//! runs. The tenant is set per transaction with `set_config(…, true)`, so it
//! ends with the transaction and never leaks to the next user of a pooled
//! connection.

use std::{str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    AssertSqlSafe, Connection, Executor, PgConnection, PgPool, Postgres, Transaction,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    Url(#[source] sqlx::Error),
    #[error("cannot connect to PostgreSQL (is it running? `scripts/up` starts it): {0}")]
    Connect(#[source] sqlx::Error),
    #[error("preparing schema `{schema}` failed: {source}")]
    Prepare {
        schema: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating schema `{schema}` failed: {source}")]
    Migrate {
        schema: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// The runtime role of a service's schema: `crewmesh_<schema>`.
pub fn app_role(schema: &str) -> String {
    format!("crewmesh_{schema}")
}

/// Migrates `schema` and returns a pool whose connections run as its runtime role.
pub async fn prepare(
    database_url: &SecretString,
    schema: &'static str,
    migrator: &Migrator,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    // Schema and role names are spliced into DDL (hence AssertSqlSafe), so they must be plain identifiers.
    debug_assert!(schema.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    let options = PgConnectOptions::from_str(database_url.expose_secret()).map_err(DbError::Url)?;
    migrate(&options, schema, migrator).await?;

    let role = app_role(schema);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _meta| {
            let set = AssertSqlSafe(format!("SET ROLE {role}; SET search_path TO {schema}"));
            Box::pin(async move { conn.execute(set).await.map(|_| ()) })
        })
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

async fn migrate(
    options: &PgConnectOptions,
    schema: &'static str,
    migrator: &Migrator,
) -> Result<(), DbError> {
    let prepare_err = |source| DbError::Prepare { schema, source };
    let mut conn = PgConnection::connect_with(options)
        .await
        .map_err(DbError::Connect)?;
    // Replicas starting together migrate one at a time.
    let lock_key = format!("crewmesh.migrate.{schema}");
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(&lock_key)
        .execute(&mut conn)
        .await
        .map_err(prepare_err)?;

    let result = async {
        let role = app_role(schema);
        conn.execute(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}"
        )))
        .await
        .map_err(prepare_err)?;
        // Roles are cluster-wide: another database (or a test) may create it concurrently.
        conn.execute(AssertSqlSafe(format!(
            "DO $$ BEGIN
               CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$"
        )))
        .await
        .map_err(prepare_err)?;
        conn.execute(AssertSqlSafe(format!(
            "GRANT USAGE ON SCHEMA {schema} TO {role}"
        )))
        .await
        .map_err(prepare_err)?;
        let superuser: bool =
            sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                .fetch_one(&mut conn)
                .await
                .map_err(prepare_err)?;
        if !superuser {
            // A non-superuser owner must be a member of the role to SET ROLE to it.
            conn.execute(AssertSqlSafe(format!("GRANT {role} TO CURRENT_USER")))
                .await
                .map_err(prepare_err)?;
        }
        conn.execute(AssertSqlSafe(format!("SET search_path TO {schema}")))
            .await
            .map_err(prepare_err)?;
        migrator
            // run_direct, not run: run's Acquire bound makes this future non-Send.
            .run_direct(None, &mut conn, false)
            .await
            .map_err(|source| DbError::Migrate { schema, source })
    }
    .await;

    // Closing the connection releases the lock even if the unlock fails.
    let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(&lock_key)
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    result
}

/// A transaction in which row-level security shows only `tenant`'s rows.
pub async fn begin_tenant(
    pool: &PgPool,
    tenant: Uuid,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Liveness of the database for readiness checks.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

/// A transaction that row-level security lets see every tenant's rows, for
/// callers already proven to be platform admins and for system operations
/// (e.g. login before any tenant is known). Policies opt in to it explicitly.
pub async fn begin_platform(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.scope', 'platform', true)")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The name of the constraint a database error violated, if any; domain
/// errors are chosen by constraint name, never by message text.
pub fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    err.as_database_error().and_then(|e| e.constraint())
}
