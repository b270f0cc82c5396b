//! The audit log (I6): append-only rows written inside the transaction of the
//! action they record; listed by platform admins (all) and customer admins
//! (their tenant).

use chrono::{DateTime, Utc};
use mesh_kit::{
    db::{begin_platform, begin_tenant},
    error::invalid_field,
};
use sqlx::{PgConnection, PgPool, QueryBuilder};
use tonic::Status;
use uuid::Uuid;

/// Who did something, as the audit log names them.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    /// The platform admin acting as `user_id`, while impersonating.
    pub impersonator_id: Option<Uuid>,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
}

impl Actor {
    pub fn of(user: &mesh_kit::auth::UserCaller) -> Actor {
        Actor {
            user_id: Some(user.user_id),
            impersonator_id: user.impersonator,
            ..Actor::default()
        }
    }

    pub fn with_client(mut self, addr: &str, agent: &str) -> Actor {
        self.client_addr = Some(addr.to_owned()).filter(|a| !a.is_empty());
        self.user_agent = Some(agent.to_owned()).filter(|a| !a.is_empty());
        self
    }
}

/// Appends one event; call it inside the transaction of the action itself.
pub async fn record(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    actor: &Actor,
    action: &str,
    target_user_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events
           (id, tenant_id, actor_user_id, impersonator_id, action, target_user_id, client_addr, user_agent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(actor.user_id)
    .bind(actor.impersonator_id)
    .bind(action)
    .bind(target_user_id)
    .bind(actor.client_addr.as_deref())
    .bind(actor.user_agent.as_deref())
    .execute(conn)
    .await
    .map(|_| ())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub actor_user_id: Option<Uuid>,
    pub impersonator_id: Option<Uuid>,
    pub action: String,
    pub target_user_id: Option<Uuid>,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Default)]
pub struct Filter {
    /// None: every tenant (platform scope only).
    pub tenant_id: Option<Uuid>,
    pub action: Option<String>,
    pub actor_user_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub page_size: i64,
    /// Events older than this id (newest first paging).
    pub before: Option<Uuid>,
}

#[derive(Debug, Clone, Copy)]
pub enum Scope {
    Platform,
    Tenant(Uuid),
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("page_token is not one this service issued")]
    InvalidPageToken,
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl From<AuditError> for Status {
    fn from(err: AuditError) -> Status {
        match err {
            AuditError::InvalidPageToken => invalid_field("page_token", err.to_string()),
            AuditError::Database(ref e) => mesh_kit::error::internal("audit query failed", e),
        }
    }
}

pub fn parse_page_token(token: &str) -> Result<Option<Uuid>, AuditError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .parse()
        .map(Some)
        .map_err(|_| AuditError::InvalidPageToken)
}

/// One page, newest first, and the token of the next page.
pub async fn list(
    db: &PgPool,
    scope: Scope,
    filter: &Filter,
) -> Result<(Vec<AuditEvent>, Option<String>), AuditError> {
    let mut tx = match scope {
        Scope::Platform => begin_platform(db).await?,
        Scope::Tenant(tenant) => begin_tenant(db, tenant).await?,
    };
    let mut query = QueryBuilder::new(
        "SELECT id, tenant_id, actor_user_id, impersonator_id, action, target_user_id,
                client_addr, user_agent, occurred_at
         FROM audit_events WHERE true",
    );
    if let Some(tenant) = filter.tenant_id {
        query.push(" AND tenant_id = ").push_bind(tenant);
    }
    if let Some(action) = &filter.action {
        query.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(actor) = filter.actor_user_id {
        query.push(" AND (actor_user_id = ").push_bind(actor);
        query
            .push(" OR impersonator_id = ")
            .push_bind(actor)
            .push(")");
    }
    if let Some(since) = filter.since {
        query.push(" AND occurred_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        query.push(" AND occurred_at < ").push_bind(until);
    }
    if let Some(before) = filter.before {
        query.push(" AND id < ").push_bind(before);
    }
    query
        .push(" ORDER BY id DESC LIMIT ")
        .push_bind(filter.page_size + 1);
    let mut events: Vec<AuditEvent> = query.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let next = if events.len() as i64 > filter.page_size {
        events.truncate(filter.page_size as usize);
        events.last().map(|e| e.id.to_string())
    } else {
        None
    };
    Ok((events, next))
}
