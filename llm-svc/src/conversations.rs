//! Conversations and their persisted history (L3), in tenant transactions.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Conversation {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub agent_id: Uuid,
    pub channel: String,
    pub topic: String,
    pub escalated: bool,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nanos: i64,
    pub started_at: DateTime<Utc>,
    pub last_message_at: DateTime<Utc>,
    /// The channel's key (Slack thread, WhatsApp sender); None for the API.
    pub external_key: Option<String>,
    /// Messages written so far: the version of the memory window.
    pub message_count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    pub role: String,
    pub text: String,
}

/// One run's outcome, written as a user and an assistant message.
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    pub user_text: &'a str,
    pub reply: &'a str,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nanos: i64,
    pub request_id: Option<&'a str>,
    pub refusal_reason: &'a str,
}

/// What a run with a given idempotency key answered.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Answered {
    pub conversation_id: Uuid,
    pub text: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nanos: i64,
    pub refusal_reason: String,
}

const COLUMNS: &str = "id, tenant_id, agent_id, channel, topic, escalated, prompt_tokens, \
                       completion_tokens, cost_nanos, started_at, last_message_at, \
                       external_key, message_count";

pub async fn create(
    tx: &mut PgConnection,
    id: Uuid,
    tenant: Uuid,
    agent: Uuid,
    channel: &str,
) -> Result<Conversation, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO conversations (id, tenant_id, agent_id, channel)
         VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(tenant)
    .bind(agent)
    .bind(channel)
    .fetch_one(&mut *tx)
    .await
}

/// The conversation of a channel key, created on its first message, and
/// locked until `tx` commits.
pub async fn open_external(
    tx: &mut PgConnection,
    id: Uuid,
    tenant: Uuid,
    agent: Uuid,
    channel: &str,
    key: &str,
) -> Result<Conversation, sqlx::Error> {
    sqlx::query(
        "INSERT INTO conversations (id, tenant_id, agent_id, channel, external_key)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(tenant)
    .bind(agent)
    .bind(channel)
    .bind(key)
    .execute(&mut *tx)
    .await?;
    get_for_update(tx, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// A conversation visible in `tx`.
pub async fn get(tx: &mut PgConnection, id: Uuid) -> Result<Option<Conversation>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM conversations WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
}

/// A conversation visible in `tx`, locked until it commits, so two runs of
/// one conversation append their exchanges one after the other.
pub async fn get_for_update(
    tx: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Conversation>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM conversations WHERE id = $1 FOR UPDATE"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
}

/// The last `limit` messages, oldest first.
pub async fn recent(
    tx: &mut PgConnection,
    conversation: Uuid,
    limit: i64,
) -> Result<Vec<Turn>, sqlx::Error> {
    let mut turns: Vec<Turn> = sqlx::query_as(
        "SELECT role, text FROM messages WHERE conversation_id = $1
         ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(conversation)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    turns.reverse();
    Ok(turns)
}

/// The answer a run of `agent` with `request_id` already gave.
pub async fn by_request(
    tx: &mut PgConnection,
    agent: Uuid,
    request_id: &str,
) -> Result<Option<Answered>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.conversation_id, m.text, m.prompt_tokens, m.completion_tokens, m.cost_nanos,
                m.refusal_reason
           FROM messages m JOIN conversations c ON c.id = m.conversation_id
          WHERE m.request_id = $1 AND m.role = 'assistant' AND c.agent_id = $2
          ORDER BY m.created_at LIMIT 1",
    )
    .bind(request_id)
    .bind(agent)
    .fetch_optional(&mut *tx)
    .await
}

/// Claims `request_id` for one API run of `agent` until `until`: true when
/// this caller holds it now (it was free, or its holder's claim lapsed).
pub async fn claim(
    tx: &mut PgConnection,
    tenant: Uuid,
    agent: Uuid,
    request_id: &str,
    until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let claimed: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO run_claims (tenant_id, agent_id, request_id, claimed_until)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, agent_id, request_id) DO UPDATE
            SET claimed_until = EXCLUDED.claimed_until
          WHERE run_claims.claimed_until < now()
         RETURNING tenant_id",
    )
    .bind(tenant)
    .bind(agent)
    .bind(request_id)
    .bind(until)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(claimed.is_some())
}

/// Lets go of a claim whose run ended without an answer, so a retry can run.
pub async fn release(
    tx: &mut PgConnection,
    agent: Uuid,
    request_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM run_claims WHERE agent_id = $1 AND request_id = $2")
        .bind(agent)
        .bind(request_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Whether a customer message of `agent` with `request_id` was recorded
/// (answered or not).
pub async fn recorded(
    tx: &mut PgConnection,
    agent: Uuid,
    request_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM messages m JOIN conversations c ON c.id = m.conversation_id
                         WHERE m.request_id = $1 AND m.role = 'user' AND c.agent_id = $2)",
    )
    .bind(request_id)
    .bind(agent)
    .fetch_one(&mut *tx)
    .await
}

/// Records a customer message that gets no answer (e.g. it arrived after
/// the channel's reply window closed).
pub async fn append_unanswered(
    tx: &mut PgConnection,
    conversation: &Conversation,
    text: &str,
    request_id: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO messages (id, tenant_id, conversation_id, role, text, request_id, refusal_reason)
         VALUES ($1, $2, $3, 'user', $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(conversation.tenant_id)
    .bind(conversation.id)
    .bind(text)
    .bind(request_id)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE conversations SET message_count = message_count + 1, last_message_at = now()
          WHERE id = $1",
    )
    .bind(conversation.id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Appends the user's message and the reply, and adds the cost to the
/// conversation's totals.
pub async fn append(
    tx: &mut PgConnection,
    conversation: &Conversation,
    exchange: &Exchange<'_>,
) -> Result<(), sqlx::Error> {
    for (role, text, prompt, completion, cost, refusal) in [
        ("user", exchange.user_text, 0, 0, 0, ""),
        (
            "assistant",
            exchange.reply,
            exchange.prompt_tokens,
            exchange.completion_tokens,
            exchange.cost_nanos,
            exchange.refusal_reason,
        ),
    ] {
        sqlx::query(
            "INSERT INTO messages (id, tenant_id, conversation_id, role, text, prompt_tokens,
                                   completion_tokens, cost_nanos, request_id, refusal_reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(Uuid::now_v7())
        .bind(conversation.tenant_id)
        .bind(conversation.id)
        .bind(role)
        .bind(text)
        .bind(prompt)
        .bind(completion)
        .bind(cost)
        .bind(exchange.request_id)
        .bind(refusal)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE conversations
            SET prompt_tokens = prompt_tokens + $2, completion_tokens = completion_tokens + $3,
                cost_nanos = cost_nanos + $4, last_message_at = now(),
                message_count = message_count + 2
          WHERE id = $1",
    )
    .bind(conversation.id)
    .bind(exchange.prompt_tokens)
    .bind(exchange.completion_tokens)
    .bind(exchange.cost_nanos)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
