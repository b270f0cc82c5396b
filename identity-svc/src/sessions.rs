//! Login, refresh and impersonation (I2, I4): what turns credentials into
//! signed access tokens.
//!
//! Access tokens are short-lived EdDSA JWTs every service verifies alone.
//! Refresh tokens are opaque, stored hashed, single-use: each refresh revokes
//! the presented token and issues a new one; presenting a revoked one again
//! revokes every token of that user (a stolen token was used twice).

use std::time::Duration;

use chrono::{DateTime, Utc};
use mesh_kit::{
    ErrorCode, Role,
    auth::{TokenSigner, UserClaims},
    db::begin_platform,
};
use secrecy::SecretString;
use sqlx::{PgConnection, PgPool};
use tonic::Status;
use uuid::Uuid;

use crate::{
    audit::{self, Actor},
    passwords::{Hasher, PasswordError},
    secrets::{self, RandomError},
    throttle::{LoginThrottle, ThrottleError},
    users::{self, User},
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("email or password is wrong")]
    BadCredentials,
    #[error(transparent)]
    Throttle(#[from] ThrottleError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error("the refresh token is invalid, expired or already used; log in again")]
    BadRefreshToken,
    #[error("user not found in that tenant")]
    TargetNotFound,
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("token signing failed")]
    Signing(#[from] mesh_kit::auth::TokenError),
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<SessionError> for Status {
    fn from(err: SessionError) -> Status {
        match err {
            SessionError::BadCredentials | SessionError::BadRefreshToken => {
                ErrorCode::Unauthenticated.status(err.to_string())
            }
            SessionError::Throttle(e) => e.into(),
            SessionError::Password(e) => e.into(),
            SessionError::TargetNotFound => ErrorCode::NotFound.status(err.to_string()),
            SessionError::Random(ref e) => mesh_kit::error::internal("random generator", e),
            SessionError::Signing(ref e) => mesh_kit::error::internal("token signing", e),
            SessionError::Database(ref e) => mesh_kit::error::internal("session query failed", e),
        }
    }
}

/// What issues tokens: the identity signing key and the lifetimes.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub signer: TokenSigner,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub api_key_token_ttl: Duration,
}

#[derive(Debug)]
pub struct Tokens {
    pub access_token: String,
    pub access_expires_at: i64,
    /// None for impersonation, which cannot be extended.
    pub refresh_token: Option<String>,
    pub user: User,
}

impl Issuer {
    pub fn access(
        &self,
        user: &User,
        impersonator: Option<Uuid>,
        api_key_id: Option<Uuid>,
        ttl: Duration,
    ) -> Result<(String, i64), SessionError> {
        let claims = UserClaims {
            user_id: user.id,
            tenant_id: user.tenant_id,
            role: user.role,
            impersonator,
            api_key_id,
        };
        Ok(self.signer.sign_user(&claims, ttl)?)
    }

    /// A new session for `user`: the refresh token is stored in `tx`, which
    /// commits before the tokens are handed out.
    async fn session(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        user: User,
    ) -> Result<Tokens, SessionError> {
        let refresh = self.refresh_token(&mut tx, user.id).await?;
        tx.commit().await?;
        let (access_token, access_expires_at) = self.access(&user, None, None, self.access_ttl)?;
        Ok(Tokens {
            access_token,
            access_expires_at,
            refresh_token: Some(refresh),
            user,
        })
    }

    async fn refresh_token(
        &self,
        conn: &mut PgConnection,
        user: Uuid,
    ) -> Result<String, SessionError> {
        let (token, hash) = secrets::generate("cmr")?;
        let expires_at = Utc::now() + self.refresh_ttl;
        sqlx::query("INSERT INTO refresh_tokens (id, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(Uuid::now_v7())
            .bind(user)
            .bind(hash)
            .bind(expires_at)
            .execute(conn)
            .await?;
        Ok(token)
    }
}

/// Password login, throttled per account and per (account, `client`), where
/// `client` is a [`crate::throttle::client_bucket`] the caller may not choose
/// (see `grpc::IdentityApi::login_client`).
pub async fn login(
    db: &PgPool,
    throttle: &LoginThrottle,
    hasher: &Hasher,
    issuer: &Issuer,
    email: &str,
    password: SecretString,
    client: &str,
) -> Result<Tokens, SessionError> {
    // An unparseable email cannot match an account: same answer as a wrong password.
    let email = users::normalize_email(email).map_err(|_| SessionError::BadCredentials)?;
    let attempt = throttle.reserve(&email, client).await?;
    match check_password(db, hasher, &email, password).await {
        Ok(Some(user)) => {
            if let Err(e) = throttle.succeeded(attempt).await {
                // The password was right; a stale counter only expires later.
                tracing::warn!(error = %e, "could not clear login failures");
            }
            issuer.session(begin_platform(db).await?, user).await
        }
        // The reserved attempt stays counted: that is the failure.
        Ok(None) => Err(SessionError::BadCredentials),
        Err(e) => {
            // The password was never checked, so this was no guess.
            if let Err(refund) = throttle.refund(attempt).await {
                tracing::warn!(error = %refund, "could not give back a login attempt");
            }
            Err(e)
        }
    }
}

/// The user `email` and `password` name, if they match. The lookup's
/// transaction ends before hashing, so no pooled connection waits on Argon2.
async fn check_password(
    db: &PgPool,
    hasher: &Hasher,
    email: &str,
    password: SecretString,
) -> Result<Option<User>, SessionError> {
    let mut tx = begin_platform(db).await?;
    let found = users::find_for_login(&mut tx, email).await?;
    tx.commit().await?;
    let (row, hash) = match found {
        Some((row, hash)) => (Some(row), Some(hash)),
        None => (None, None),
    };
    // An unknown email is verified against a dummy hash: same cost, same bound.
    if hasher.verify(password, hash).await? {
        Ok(row.and_then(users::UserRow::into_user))
    } else {
        Ok(None)
    }
}

/// Exchanges a refresh token for new tokens, with the user's current role.
pub async fn refresh(
    db: &PgPool,
    issuer: &Issuer,
    presented: &str,
) -> Result<Tokens, SessionError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        user_id: Uuid,
        expires_at: DateTime<Utc>,
        revoked_at: Option<DateTime<Utc>>,
    }
    let mut tx = begin_platform(db).await?;
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, user_id, expires_at, revoked_at FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(secrets::hash(presented))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(SessionError::BadRefreshToken);
    };
    if row.revoked_at.is_some() {
        // Reuse of a spent token: someone else may hold it. End every session.
        sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(row.user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::warn!(user = %row.user_id, "refresh token reused; revoked all of the user's sessions");
        return Err(SessionError::BadRefreshToken);
    }
    if row.expires_at <= Utc::now() {
        return Err(SessionError::BadRefreshToken);
    }
    sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE id = $1")
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
    let user = users::find_by_id(&mut tx, row.user_id)
        .await?
        .and_then(users::UserRow::into_user)
        .ok_or(SessionError::BadRefreshToken)?;
    issuer.session(tx, user).await
}

/// A platform admin starts acting as a tenant user: an access token naming
/// both, and an audit event in the tenant. The caller checks the role.
pub async fn impersonate(
    db: &PgPool,
    issuer: &Issuer,
    admin: Uuid,
    tenant: Uuid,
    target: Uuid,
    client_addr: &str,
    user_agent: &str,
) -> Result<Tokens, SessionError> {
    let mut tx = begin_platform(db).await?;
    let user = users::find_by_id(&mut tx, target)
        .await?
        .and_then(users::UserRow::into_user)
        .filter(|u| u.tenant_id == Some(tenant) && u.role != Role::PlatformAdmin)
        .ok_or(SessionError::TargetNotFound)?;
    let actor = Actor {
        user_id: Some(admin),
        ..Actor::default()
    }
    .with_client(client_addr, user_agent);
    audit::record(
        &mut tx,
        tenant,
        &actor,
        "impersonation.started",
        Some(user.id),
    )
    .await?;
    tx.commit().await?;
    let (access_token, access_expires_at) =
        issuer.access(&user, Some(admin), None, issuer.access_ttl)?;
    tracing::info!(%admin, %tenant, user = %user.id, "impersonation started");
    Ok(Tokens {
        access_token,
        access_expires_at,
        refresh_token: None,
        user,
    })
}
