//! Agents (A1): validation and queries. Creating one asks billing-svc whether
//! the tenant's plan allows another; every save queues the agent's budget
//! for billing-svc in the same transaction (see `budget_outbox`), so a saved
//! budget always reaches billing-svc, after the commit.

use chrono::{DateTime, Utc};
use mesh_kit::error::invalid_field;
use sqlx::{PgConnection, types::Json};
use tonic::Status;
use uuid::Uuid;

use crate::templates::Escalation;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Agent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub role_title: String,
    pub persona: String,
    pub instructions: String,
    pub model: String,
    pub tools: Vec<String>,
    pub escalation: Json<Escalation>,
    pub escalation_assignee: String,
    pub budget_limit_nanos: i64,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The editable fields of an agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentFields {
    pub name: String,
    pub role_title: String,
    pub persona: String,
    pub instructions: String,
    pub model: String,
    pub tools: Vec<String>,
    pub escalation: Escalation,
    pub escalation_assignee: String,
    pub budget_limit_nanos: i64,
    pub active: bool,
}

const MAX_TEXT: usize = 20_000;

fn bounded(field: &str, value: &str, min: usize, max: usize) -> Result<(), Status> {
    let n = value.trim().chars().count();
    if n < min || n > max {
        return Err(invalid_field(
            field,
            format!("must be {min} to {max} characters"),
        ));
    }
    Ok(())
}

/// `provider/model`, e.g. `openai/gpt-4o-mini`.
pub fn validate_model(model: &str) -> Result<(), Status> {
    let valid = model.split_once('/').is_some_and(|(provider, name)| {
        let p = provider.as_bytes();
        (2..=32).contains(&p.len())
            && p[0].is_ascii_lowercase()
            && p.iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
            && !name.is_empty()
            && name.len() <= 100
            && !name.chars().any(char::is_whitespace)
    });
    if valid {
        Ok(())
    } else {
        Err(invalid_field(
            "model",
            "must be provider/model, e.g. openai/gpt-4o-mini",
        ))
    }
}

pub fn validate(fields: &AgentFields) -> Result<(), Status> {
    bounded("name", &fields.name, 1, 100)?;
    bounded("role_title", &fields.role_title, 0, 200)?;
    bounded("persona", &fields.persona, 0, MAX_TEXT)?;
    bounded("instructions", &fields.instructions, 0, MAX_TEXT)?;
    validate_model(&fields.model)?;
    if fields.tools.len() > 32
        || fields.tools.iter().any(|t| {
            t.is_empty()
                || t.len() > 64
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
    {
        return Err(invalid_field(
            "tools",
            "at most 32 tool names of a–z, 0–9 and '_'",
        ));
    }
    if fields.escalation.trigger_keywords.len() > 50
        || fields
            .escalation
            .trigger_keywords
            .iter()
            .any(|k| k.trim().is_empty() || k.len() > 100)
    {
        return Err(invalid_field(
            "escalation.trigger_keywords",
            "at most 50 keywords of 1–100 characters",
        ));
    }
    if !(0..=100).contains(&fields.escalation.max_consecutive_failures) {
        return Err(invalid_field(
            "escalation.max_consecutive_failures",
            "must be 0 to 100",
        ));
    }
    bounded("escalation_assignee", &fields.escalation_assignee, 0, 200)?;
    if fields.escalation.enabled && fields.escalation_assignee.trim().is_empty() {
        return Err(invalid_field(
            "escalation_assignee",
            "is required when escalation is enabled",
        ));
    }
    if fields.budget_limit_nanos < 0 {
        return Err(invalid_field("budget_limit_usd", "must not be negative"));
    }
    Ok(())
}

const COLUMNS: &str = "id, tenant_id, name, role_title, persona, instructions, model, tools, escalation, \
    escalation_assignee, budget_limit_nanos, active, created_at, updated_at";

/// Serialises creates of one tenant, so two at once cannot both fit the last slot.
pub async fn lock_tenant(conn: &mut PgConnection, tenant: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7))")
        .bind(tenant)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM agents")
        .fetch_one(conn)
        .await
}

pub async fn by_request(
    conn: &mut PgConnection,
    request_id: &str,
) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agents WHERE request_id = $1"
    )))
    .bind(request_id)
    .fetch_optional(conn)
    .await
}

pub async fn insert(
    conn: &mut PgConnection,
    tenant: Uuid,
    fields: &AgentFields,
    request_id: Option<&str>,
) -> Result<Agent, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO agents (id, tenant_id, name, role_title, persona, instructions, model, tools, escalation,
                             escalation_assignee, budget_limit_nanos, active, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(fields.name.trim())
    .bind(fields.role_title.trim())
    .bind(&fields.persona)
    .bind(&fields.instructions)
    .bind(&fields.model)
    .bind(&fields.tools)
    .bind(Json(&fields.escalation))
    .bind(fields.escalation_assignee.trim())
    .bind(fields.budget_limit_nanos)
    .bind(fields.active)
    .bind(request_id)
    .fetch_one(conn)
    .await
}

/// The agent, locked until `conn`'s transaction ends: a PATCH merges its
/// fields into what is stored now, not into what another PATCH overwrites.
pub async fn get_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agents WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agents WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn list(
    conn: &mut PgConnection,
    after: Uuid,
    limit: i64,
) -> Result<Vec<Agent>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agents WHERE id > $1 ORDER BY id LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    fields: &AgentFields,
) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE agents SET name = $2, role_title = $3, persona = $4, instructions = $5, model = $6, tools = $7,
                escalation = $8, escalation_assignee = $9, budget_limit_nanos = $10, active = $11, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(fields.name.trim())
    .bind(fields.role_title.trim())
    .bind(&fields.persona)
    .bind(&fields.instructions)
    .bind(&fields.model)
    .bind(&fields.tools)
    .bind(Json(&fields.escalation))
    .bind(fields.escalation_assignee.trim())
    .bind(fields.budget_limit_nanos)
    .bind(fields.active)
    .fetch_optional(conn)
    .await
}

pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM agents WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected()
        == 1)
}

impl Agent {
    pub fn fields(&self) -> AgentFields {
        AgentFields {
            name: self.name.clone(),
            role_title: self.role_title.clone(),
            persona: self.persona.clone(),
            instructions: self.instructions.clone(),
            model: self.model.clone(),
            tools: self.tools.clone(),
            escalation: self.escalation.0.clone(),
            escalation_assignee: self.escalation_assignee.clone(),
            budget_limit_nanos: self.budget_limit_nanos,
            active: self.active,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_need_a_provider_prefix() {
        assert!(validate_model("openai/gpt-4o-mini").is_ok());
        assert!(validate_model("anthropic/claude-3-5-haiku").is_ok());
        assert!(validate_model("ollama/llama3.1:8b").is_ok());
        for bad in ["gpt-4o", "/gpt", "openai/", "OpenAI/gpt", "openai/gpt 4"] {
            assert!(validate_model(bad).is_err(), "{bad}");
        }
    }
}
