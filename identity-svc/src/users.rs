//! Users and their membership (I2). A user belongs to at most one tenant, with
//! one role; platform admins belong to none.

use chrono::{DateTime, Utc};
use mesh_kit::{
    Role,
    db::{begin_platform, begin_tenant, violated_constraint},
    error::invalid_field,
};
use secrecy::SecretString;
use sqlx::{PgConnection, PgPool};
use tonic::Status;
use uuid::Uuid;

use crate::{
    config::BootstrapAdmin,
    passwords::{Hasher, PasswordError},
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub tenant_id: Option<Uuid>,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub is_platform_admin: bool,
    pub tenant_id: Option<Uuid>,
    pub role: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl UserRow {
    /// None for an account that is neither staff nor a member of a tenant.
    pub fn into_user(self) -> Option<User> {
        let role = if self.is_platform_admin {
            Role::PlatformAdmin
        } else {
            self.role.as_deref().and_then(Role::parse)?
        };
        Some(User {
            id: self.id,
            email: self.email,
            name: self.name,
            tenant_id: if self.is_platform_admin {
                None
            } else {
                self.tenant_id
            },
            role,
            created_at: self.created_at,
        })
    }
}

/// `SELECT <user columns>` followed by the rest of a query over `users u` and `memberships m`.
macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT u.id, u.email, u.name, u.is_platform_admin, m.tenant_id, m.role, u.created_at",
            $rest
        )
    };
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("email must be an address like name@example.com")]
    InvalidEmail,
    #[error("name must not be blank and at most 200 characters")]
    InvalidName,
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("page_token is not one this service issued")]
    InvalidPageToken,
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<UserError> for Status {
    fn from(err: UserError) -> Status {
        match err {
            UserError::InvalidEmail => invalid_field("email", err.to_string()),
            UserError::InvalidName => invalid_field("name", err.to_string()),
            UserError::Password(e) => e.into(),
            UserError::EmailTaken => mesh_kit::ErrorCode::Conflict.status(err.to_string()),
            UserError::InvalidPageToken => invalid_field("page_token", err.to_string()),
            UserError::Database(ref e) => mesh_kit::error::internal("user query failed", e),
        }
    }
}

/// Lower-cases and checks an email address; full validation is the mail
/// server's job, this catches typos and garbage.
pub fn normalize_email(email: &str) -> Result<String, UserError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
               && !domain.ends_with('.') && !domain.contains('@'));
    if valid {
        Ok(email)
    } else {
        Err(UserError::InvalidEmail)
    }
}

pub fn validate_name(name: &str) -> Result<String, UserError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        Err(UserError::InvalidName)
    } else {
        Ok(name.to_owned())
    }
}

/// The account behind `email` with its password hash, for login (platform scope).
pub(crate) async fn find_for_login(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Option<(UserRow, String)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: UserRow,
        password_hash: String,
    }
    let row: Option<Row> = sqlx::query_as(select_users!(
        ", u.password_hash FROM users u
         LEFT JOIN memberships m ON m.user_id = u.id WHERE u.email = $1"
    ))
    .bind(email)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.user, r.password_hash)))
}

pub(crate) async fn find_by_id(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(select_users!(
        " FROM users u LEFT JOIN memberships m ON m.user_id = u.id WHERE u.id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Inserts a user (and, for tenant roles, the membership) in `conn`'s transaction.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    email: &str,
    name: &str,
    password_hash: &str,
    membership: Option<(Uuid, Role)>,
) -> Result<Uuid, UserError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email, name, password_hash, is_platform_admin) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(email)
    .bind(name)
    .bind(password_hash)
    .bind(membership.is_none())
    .execute(&mut *conn)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("users_email_key") => UserError::EmailTaken,
        _ => UserError::Database(e),
    })?;
    if let Some((tenant, role)) = membership {
        sqlx::query("INSERT INTO memberships (user_id, tenant_id, role) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(tenant)
            .bind(role.as_str())
            .execute(&mut *conn)
            .await?;
    }
    Ok(id)
}

/// Creates the first platform admin from configuration when there is none yet.
/// Returns whether it created one.
pub async fn bootstrap_admin(
    db: &PgPool,
    hasher: &Hasher,
    admin: &BootstrapAdmin,
) -> Result<bool, UserError> {
    let email = normalize_email(&admin.email)?;
    let mut tx = begin_platform(db).await?;
    // Replicas starting together: one creates, the others see it.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('crewmesh.identity.bootstrap', 0))")
        .execute(&mut *tx)
        .await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE is_platform_admin)")
            .fetch_one(&mut *tx)
            .await?;
    if exists {
        return Ok(false);
    }
    let hash = hasher
        .hash(SecretString::from(
            secrecy::ExposeSecret::expose_secret(&admin.password).to_owned(),
        ))
        .await?;
    insert(&mut tx, &email, "Platform admin", &hash, None).await?;
    tx.commit().await?;
    tracing::info!(%email, "created the bootstrap platform admin");
    Ok(true)
}

/// One page of a tenant's users, oldest first.
pub async fn list(
    db: &PgPool,
    tenant: Uuid,
    page_size: i64,
    page_token: &str,
) -> Result<(Vec<User>, Option<String>), UserError> {
    let after = if page_token.is_empty() {
        Uuid::nil()
    } else {
        page_token
            .parse()
            .map_err(|_| UserError::InvalidPageToken)?
    };
    let mut tx = begin_tenant(db, tenant).await?;
    let rows: Vec<UserRow> = sqlx::query_as(select_users!(
        " FROM users u JOIN memberships m ON m.user_id = u.id
         WHERE m.tenant_id = $1 AND u.id > $2 ORDER BY u.id LIMIT $3"
    ))
    .bind(tenant)
    .bind(after)
    .bind(page_size + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut users: Vec<User> = rows.into_iter().filter_map(UserRow::into_user).collect();
    let next = if users.len() as i64 > page_size {
        users.truncate(page_size as usize);
        users.last().map(|u| u.id.to_string())
    } else {
        None
    };
    Ok((users, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email(" Ann@Example.COM ").unwrap(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "ann@example",
            "a b@example.com",
            "a@b@c.com",
            "ann@.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
