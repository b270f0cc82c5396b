//! Invites (I3): an admin invites an email with a role; the invitee accepts
//! with the single-use token, a name and a password, which creates the user
//! and the membership. Only the token's hash is stored.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mesh_kit::{
    ErrorCode, Role,
    config::Environment,
    db::{begin_platform, begin_tenant},
    error::invalid_field,
};
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::{PgConnection, PgPool};
use tonic::Status;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    passwords::{self, Hasher},
    secrets::{self, RandomError},
    users::{self, User, UserError},
};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Invite {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub role: String,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("role must be customer_admin or operator")]
    InvalidRole,
    #[error("is not an invite token (`cmi_…`, as the invite gave it)")]
    MalformedToken,
    #[error("invite not found; it may have been replaced by a newer one")]
    NotFound,
    #[error("this invite was already accepted; log in instead")]
    AlreadyAccepted,
    #[error("this invite expired; ask your admin to resend it")]
    Expired,
    #[error("{0} already has a pending invite to this tenant; resend it instead")]
    AlreadyInvited(String),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<InviteError> for Status {
    fn from(err: InviteError) -> Status {
        match err {
            InviteError::InvalidRole => invalid_field("role", err.to_string()),
            InviteError::MalformedToken => invalid_field("token", err.to_string()),
            InviteError::NotFound => ErrorCode::NotFound.status(err.to_string()),
            InviteError::AlreadyAccepted | InviteError::AlreadyInvited(_) => {
                ErrorCode::Conflict.status(err.to_string())
            }
            InviteError::Expired => ErrorCode::FailedPrecondition.status(err.to_string()),
            InviteError::User(e) => e.into(),
            InviteError::Random(ref e) => mesh_kit::error::internal("random generator", e),
            InviteError::Database(ref e) => mesh_kit::error::internal("invite query failed", e),
        }
    }
}

const INVITE_COLUMNS: &str = "id, tenant_id, email, role, expires_at, accepted_at";

/// The prefix of invite tokens (`cmi_…`).
const TOKEN_PREFIX: &str = "cmi";

/// The role an invite may grant: never platform_admin.
pub fn tenant_role(role: Role) -> Result<Role, InviteError> {
    match role {
        Role::CustomerAdmin | Role::Operator => Ok(role),
        Role::PlatformAdmin => Err(InviteError::InvalidRole),
    }
}

/// Tells the invitee. There is no mail provider yet: development logs the
/// token so a person can try the flow; production logs only that an invite
/// exists (the token goes back to the inviting admin once, never to the logs).
fn notify(environment: Environment, invite: &Invite, token: &str) {
    match environment {
        Environment::Development => {
            tracing::info!(email = %invite.email, invite = %invite.id, %token, "invite ready to accept (development)")
        }
        Environment::Production => {
            tracing::info!(email = %invite.email, invite = %invite.id, "invite created")
        }
    }
}

pub async fn create(
    db: &PgPool,
    environment: Environment,
    actor: &Actor,
    tenant: Uuid,
    email: &str,
    role: Role,
    ttl: Duration,
) -> Result<(Invite, String), InviteError> {
    let role = tenant_role(role)?;
    let email = users::normalize_email(email)?;
    let (token, hash) = secrets::generate(TOKEN_PREFIX)?;
    let mut tx = begin_tenant(db, tenant).await?;
    let pending: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM invites WHERE email = $1 AND accepted_at IS NULL AND expires_at > now())",
    )
    .bind(&email)
    .fetch_one(&mut *tx)
    .await?;
    if pending {
        return Err(InviteError::AlreadyInvited(email));
    }
    let invite: Invite = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO invites (id, tenant_id, email, role, token_hash, expires_at, invited_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {INVITE_COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(&email)
    .bind(role.as_str())
    .bind(hash)
    .bind(Utc::now() + ttl)
    .bind(actor.user_id.unwrap_or_default())
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, tenant, actor, "invite.created", None).await?;
    tx.commit().await?;
    notify(environment, &invite, &token);
    Ok((invite, token))
}

/// A new token and expiry for a pending invite; the old token stops working.
pub async fn resend(
    db: &PgPool,
    environment: Environment,
    actor: &Actor,
    tenant: Uuid,
    invite_id: Uuid,
    ttl: Duration,
) -> Result<(Invite, String), InviteError> {
    let (token, hash) = secrets::generate(TOKEN_PREFIX)?;
    let mut tx = begin_tenant(db, tenant).await?;
    let accepted: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT accepted_at FROM invites WHERE id = $1 FOR UPDATE")
            .bind(invite_id)
            .fetch_optional(&mut *tx)
            .await?;
    match accepted {
        None => return Err(InviteError::NotFound),
        Some(Some(_)) => return Err(InviteError::AlreadyAccepted),
        Some(None) => {}
    }
    let invite: Invite = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE invites SET token_hash = $2, expires_at = $3 WHERE id = $1 RETURNING {INVITE_COLUMNS}"
    )))
    .bind(invite_id)
    .bind(hash)
    .bind(Utc::now() + ttl)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, tenant, actor, "invite.resent", None).await?;
    tx.commit().await?;
    notify(environment, &invite, &token);
    Ok((invite, token))
}

/// Accepts an invite: creates the user with exactly the invited role.
///
/// Everything cheap is checked before the password is hashed — the input,
/// the token's shape, then that the token names a pending invite — so only
/// the holder of a real, pending invite can make this service spend 19 MiB
/// and tens of milliseconds of CPU, and even then within the hasher's bound.
pub async fn accept(
    db: &PgPool,
    hasher: &Hasher,
    token: &str,
    name: &str,
    password: SecretString,
) -> Result<User, InviteError> {
    let name = users::validate_name(name)?;
    passwords::validate(password.expose_secret()).map_err(UserError::from)?;
    if !secrets::is_well_formed(TOKEN_PREFIX, token) {
        return Err(InviteError::MalformedToken);
    }
    let token_hash = secrets::hash(token);
    let mut tx = begin_platform(db).await?;
    pending(&mut tx, &token_hash, Lock::No).await?;
    tx.commit().await?;
    // Hashed outside any transaction: no connection or row lock waits on it.
    let password_hash = hasher.hash(password).await.map_err(UserError::from)?;
    let mut tx = begin_platform(db).await?;
    // Checked again under the row lock: a concurrent accept may have won meanwhile.
    let invite = pending(&mut tx, &token_hash, Lock::ForUpdate).await?;
    let role = Role::parse(&invite.role).ok_or(InviteError::InvalidRole)?;
    let user_id = users::insert(
        &mut tx,
        &invite.email,
        &name,
        &password_hash,
        Some((invite.tenant_id, role)),
    )
    .await?;
    sqlx::query("UPDATE invites SET accepted_at = now() WHERE id = $1")
        .bind(invite.id)
        .execute(&mut *tx)
        .await?;
    let actor = Actor {
        user_id: Some(user_id),
        ..Actor::default()
    };
    audit::record(
        &mut tx,
        invite.tenant_id,
        &actor,
        "invite.accepted",
        Some(user_id),
    )
    .await?;
    let user = users::find_by_id(&mut tx, user_id)
        .await?
        .and_then(users::UserRow::into_user)
        .ok_or(InviteError::NotFound)?;
    tx.commit().await?;
    Ok(user)
}

#[derive(Debug, Clone, Copy)]
enum Lock {
    No,
    ForUpdate,
}

/// The pending invite whose token hashes to `token_hash` (platform scope).
async fn pending(
    conn: &mut PgConnection,
    token_hash: &[u8],
    lock: Lock,
) -> Result<Invite, InviteError> {
    let lock = match lock {
        Lock::No => "",
        Lock::ForUpdate => " FOR UPDATE",
    };
    let invite: Invite = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INVITE_COLUMNS} FROM invites WHERE token_hash = $1{lock}"
    )))
    .bind(token_hash)
    .fetch_optional(conn)
    .await?
    .ok_or(InviteError::NotFound)?;
    if invite.accepted_at.is_some() {
        return Err(InviteError::AlreadyAccepted);
    }
    if invite.expires_at <= Utc::now() {
        return Err(InviteError::Expired);
    }
    Ok(invite)
}

/// The tenant of an invite, for platform admins who name only the invite.
pub async fn tenant_of(db: &PgPool, id: Uuid) -> Result<Uuid, InviteError> {
    let mut tx = begin_platform(db).await?;
    let tenant = sqlx::query_scalar("SELECT tenant_id FROM invites WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(InviteError::NotFound)?;
    tx.commit().await?;
    Ok(tenant)
}
