//! Agents: every role reads and test-runs its tenant's agents; admins create,
//! change and delete them.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
};
use crewmesh_proto::agent::v1::{
    Agent as ProtoAgent, Channel, CreateAgentFromTemplateRequest, CreateAgentRequest,
    DeleteAgentRequest, EscalationRules as ProtoEscalation, GetAgentRequest, ListAgentsRequest,
    PreviewSystemPromptRequest, UpdateAgentRequest,
};
use crewmesh_proto::llm::v1::{RunAgentRequest, Usage as ProtoUsage};
use mesh_kit::Role;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ADMINS, TenantPageQuery, invalid, non_empty, rfc3339};
use crate::{
    auth::Authenticated,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    startup::AppState,
};

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct Escalation {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub trigger_keywords: Vec<String>,
    /// Escalate when the customer asks for a human.
    #[serde(default)]
    pub on_human_request: bool,
    /// Escalate after this many failed answers in a row; 0 disables it.
    #[serde(default)]
    pub max_consecutive_failures: i32,
}

impl From<Escalation> for ProtoEscalation {
    fn from(e: Escalation) -> ProtoEscalation {
        ProtoEscalation {
            enabled: e.enabled,
            trigger_keywords: e.trigger_keywords,
            on_human_request: e.on_human_request,
            max_consecutive_failures: e.max_consecutive_failures,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub role_title: String,
    pub persona: String,
    pub instructions: String,
    #[schema(example = "openai/gpt-4o-mini")]
    pub model: String,
    pub tools: Vec<String>,
    pub escalation: Escalation,
    pub escalation_assignee: String,
    #[schema(example = "25.00")]
    pub budget_limit_usd: String,
    pub active: bool,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<ProtoAgent> for Agent {
    fn from(a: ProtoAgent) -> Agent {
        let e = a.escalation.unwrap_or_default();
        Agent {
            id: a.id,
            tenant_id: a.tenant_id,
            name: a.name,
            role_title: a.role_title,
            persona: a.persona,
            instructions: a.instructions,
            model: a.model,
            tools: a.tools,
            escalation: Escalation {
                enabled: e.enabled,
                trigger_keywords: e.trigger_keywords,
                on_human_request: e.on_human_request,
                max_consecutive_failures: e.max_consecutive_failures,
            },
            escalation_assignee: a.escalation_assignee,
            budget_limit_usd: a.budget_limit_usd,
            active: a.active,
            created_at: rfc3339(a.created_at),
            updated_at: rfc3339(a.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewAgent {
    pub name: String,
    #[serde(default)]
    pub role_title: String,
    #[serde(default)]
    pub persona: String,
    #[serde(default)]
    pub instructions: String,
    pub model: String,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub escalation: Escalation,
    #[serde(default)]
    pub escalation_assignee: String,
    /// Monthly budget in USD, exact decimal, e.g. "25.00".
    pub budget_limit_usd: String,
    #[serde(default = "yes")]
    pub active: bool,
    pub tenant_id: Option<String>,
}

fn yes() -> bool {
    true
}

/// Only the fields present change.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub role_title: Option<String>,
    pub persona: Option<String>,
    pub instructions: Option<String>,
    pub model: Option<String>,
    pub tools: Option<Vec<String>>,
    pub escalation: Option<Escalation>,
    pub escalation_assignee: Option<String>,
    pub budget_limit_usd: Option<String>,
    pub active: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct FromTemplate {
    #[schema(example = "customer-support")]
    pub slug: String,
    /// Defaults to the template's name.
    pub name: Option<String>,
    pub model: String,
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentPage {
    pub agents: Vec<Agent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PromptQuery {
    /// slack, whatsapp or api.
    pub channel: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SystemPrompt {
    pub channel: String,
    /// Exactly what the model receives.
    pub system_prompt: String,
}

fn idempotency_key(headers: &HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Create an agent; refused when the plan's agent quota is used up.
#[utoipa::path(
    post, path = "/api/v1/agents", tag = "agents",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key returns the first agent")),
    request_body = NewAgent,
    responses(
        (status = 201, body = Agent),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The plan allows no more agents", body = ErrorBody),
        (status = 422, description = "A field is invalid; `field` names it", body = ErrorBody),
    )
)]
pub async fn create_agent(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewAgent>,
) -> Result<(StatusCode, Json<Agent>), ApiError> {
    auth.require(ADMINS)?;
    let agent = ProtoAgent {
        tenant_id: body.tenant_id.unwrap_or_default(),
        name: body.name,
        role_title: body.role_title,
        persona: body.persona,
        instructions: body.instructions,
        model: body.model,
        tools: body.tools,
        escalation: Some(body.escalation.into()),
        escalation_assignee: body.escalation_assignee,
        budget_limit_usd: body.budget_limit_usd,
        active: body.active,
        ..ProtoAgent::default()
    };
    let created = state
        .agents
        .clone()
        .create_agent(auth.call.request(CreateAgentRequest {
            agent: Some(agent),
            request_id: idempotency_key(&headers),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let agent = created.agent.ok_or_else(|| auth.missing("agent"))?;
    Ok((StatusCode::CREATED, Json(Agent::from(agent))))
}

/// Create an agent from a template, then edit it like any other.
#[utoipa::path(
    post, path = "/api/v1/agents/from-template", tag = "agents",
    security(("bearer" = [])),
    request_body = FromTemplate,
    responses(
        (status = 201, body = Agent),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn create_from_template(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    ApiJson(body): ApiJson<FromTemplate>,
) -> Result<(StatusCode, Json<Agent>), ApiError> {
    auth.require(ADMINS)?;
    let created = state
        .agents
        .clone()
        .create_agent_from_template(auth.call.request(CreateAgentFromTemplateRequest {
            slug: body.slug,
            tenant_id: body.tenant_id.unwrap_or_default(),
            name: body.name.unwrap_or_default(),
            model: body.model,
            request_id: idempotency_key(&headers),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let agent = created.agent.ok_or_else(|| auth.missing("agent"))?;
    Ok((StatusCode::CREATED, Json(Agent::from(agent))))
}

/// List the tenant's agents.
#[utoipa::path(
    get, path = "/api/v1/agents", tag = "agents",
    security(("bearer" = [])),
    params(TenantPageQuery),
    responses((status = 200, body = AgentPage), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn list_agents(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<TenantPageQuery>,
) -> Result<Json<AgentPage>, ApiError> {
    auth.require(&Role::ALL)?;
    let page = state
        .agents
        .clone()
        .list_agents(auth.call.request(ListAgentsRequest {
            tenant_id: query.tenant_id.unwrap_or_default(),
            page_size: query.page_size.unwrap_or_default(),
            page_token: query.page_token.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(AgentPage {
        agents: page.agents.into_iter().map(Agent::from).collect(),
        next_page_token: non_empty(page.next_page_token),
    }))
}

/// One agent.
#[utoipa::path(
    get, path = "/api/v1/agents/{id}", tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, body = Agent), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn get_agent(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    auth.require(&Role::ALL)?;
    let found = state
        .agents
        .clone()
        .get_agent(auth.call.request(GetAgentRequest { id }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let agent = found.agent.ok_or_else(|| auth.missing("agent"))?;
    Ok(Json(Agent::from(agent)))
}

/// Change an agent: only the fields sent change.
#[utoipa::path(
    patch, path = "/api/v1/agents/{id}", tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    request_body = AgentPatch,
    responses(
        (status = 200, body = Agent),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn update_agent(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<AgentPatch>,
) -> Result<Json<Agent>, ApiError> {
    auth.require(ADMINS)?;
    let mut mask = Vec::new();
    let mut agent = ProtoAgent {
        id,
        ..ProtoAgent::default()
    };
    macro_rules! set {
        ($field:ident) => {
            if let Some(value) = patch.$field {
                agent.$field = value;
                mask.push(stringify!($field).to_owned());
            }
        };
    }
    set!(name);
    set!(role_title);
    set!(persona);
    set!(instructions);
    set!(model);
    set!(tools);
    set!(escalation_assignee);
    set!(budget_limit_usd);
    set!(active);
    if let Some(escalation) = patch.escalation {
        agent.escalation = Some(escalation.into());
        mask.push("escalation".to_owned());
    }
    if mask.is_empty() {
        return Err(invalid(
            "body",
            "send at least one field to change",
            &auth.meta.request_id,
        ));
    }
    let updated = state
        .agents
        .clone()
        .update_agent(auth.call.request(UpdateAgentRequest {
            agent: Some(agent),
            update_mask: mask,
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let agent = updated.agent.ok_or_else(|| auth.missing("agent"))?;
    Ok(Json(Agent::from(agent)))
}

/// Delete an agent.
#[utoipa::path(
    delete, path = "/api/v1/agents/{id}", tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn delete_agent(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(ADMINS)?;
    state
        .agents
        .clone()
        .delete_agent(auth.call.request(DeleteAgentRequest { id }))
        .await
        .map_err(|s| auth.error(&s))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Exactly the system prompt the model receives on a channel.
#[utoipa::path(
    get, path = "/api/v1/agents/{id}/system-prompt", tag = "agents",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id"), PromptQuery),
    responses((status = 200, body = SystemPrompt), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub async fn system_prompt(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    Query(query): Query<PromptQuery>,
) -> Result<Json<SystemPrompt>, ApiError> {
    auth.require(&Role::ALL)?;
    let channel = match query.channel.as_str() {
        "slack" => Channel::Slack,
        "whatsapp" => Channel::Whatsapp,
        "api" => Channel::Api,
        _ => {
            return Err(invalid(
                "channel",
                "must be slack, whatsapp or api",
                &auth.meta.request_id,
            ));
        }
    };
    let preview = state
        .agents
        .clone()
        .preview_system_prompt(auth.call.request(PreviewSystemPromptRequest {
            agent_id: id,
            channel: channel.into(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(SystemPrompt {
        channel: query.channel,
        system_prompt: preview.system_prompt,
    }))
}

/// How long the edge waits for a run. Deadlines nest: llm-svc gives the
/// provider at most 100 s in all (attempts and pauses,
/// `retry::RUN_PROVIDER_BUDGET`) plus up to 10 s for each call around it,
/// and holds an idempotency key for 150 s (`run::CLAIM_LEASE`); the edge
/// waits a little longer than all of that, so a run it gives up on has
/// really failed, and a retry with the same key finds its answer.
const RUN_DEADLINE: Duration = Duration::from_secs(160);

#[derive(Debug, Deserialize, ToSchema)]
pub struct RunInput {
    /// What the user says to the agent; must not be empty.
    #[schema(example = "Where is my order?")]
    pub text: String,
    /// Continue this conversation; omit to start a new one.
    pub conversation_id: Option<String>,
    /// Platform admins name the tenant; others may omit it (their own).
    pub tenant_id: Option<String>,
}

/// Tokens and cost of one run; zero when no model was called.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Exact decimal USD.
    #[schema(example = "0.000036")]
    pub cost_usd: String,
}

impl From<Option<ProtoUsage>> for RunUsage {
    fn from(u: Option<ProtoUsage>) -> RunUsage {
        let u = u.unwrap_or_default();
        RunUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            // A run without a model call costs nothing; say so rather than "".
            cost_usd: non_empty(u.cost_usd).unwrap_or_else(|| "0".to_owned()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunResult {
    /// Send it back to continue the conversation.
    pub conversation_id: String,
    pub reply: String,
    pub usage: RunUsage,
    /// A human has taken (or now takes) the conversation over.
    pub escalated: bool,
    /// Why no model was called, when none was, e.g. `budget_exceeded`; the
    /// reply then is the polite message the user would see.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "budget_exceeded")]
    pub refusal_reason: Option<String>,
}

/// Run an agent on a message, as the portal's agent test does: the reply, the
/// conversation to continue, and what the call cost.
#[utoipa::path(
    post, path = "/api/v1/agents/{id}/run", tag = "agents",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Agent id"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key returns the first answer without calling the model again"),
    ),
    request_body = RunInput,
    responses(
        (status = 200, description = "The agent answered, or politely refused (see `refusal_reason`, e.g. the budget is spent)", body = RunResult),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The caller's role may not run agents", body = ErrorBody),
        (status = 404, description = "No such agent in the tenant (or the conversation is not this agent's)", body = ErrorBody),
        (status = 409, description = "The tenant has no LLM key for the model's provider, or the provider refused the key", body = ErrorBody),
        (status = 422, description = "A field is invalid, e.g. empty `text`; `field` names it", body = ErrorBody),
        (status = 429, description = "The provider kept rate-limiting the tenant's key through llm-svc's retries; retry later", body = ErrorBody),
        (status = 503, description = "The model provider or a service is unavailable; retry shortly", body = ErrorBody),
        (status = 504, description = "The run outlasted the gateway's deadline", body = ErrorBody),
    )
)]
pub async fn run_agent(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RunInput>,
) -> Result<Json<RunResult>, ApiError> {
    auth.require(&Role::ALL)?;
    let mut call = auth.call.clone();
    call.deadline = RUN_DEADLINE;
    let ran = state
        .llm
        .clone()
        .run_agent(call.request(RunAgentRequest {
            tenant_id: body.tenant_id.unwrap_or_default(),
            agent_id: id,
            conversation_id: body.conversation_id.unwrap_or_default(),
            text: body.text,
            attachments: Vec::new(),
            request_id: idempotency_key(&headers),
        }))
        .await
        .map_err(|s| auth.error(&s).renaming_field("agent_id", "id"))?
        .into_inner();
    Ok(Json(RunResult {
        conversation_id: ran.conversation_id,
        reply: ran.reply,
        usage: RunUsage::from(ran.usage),
        escalated: ran.escalated,
        refusal_reason: non_empty(ran.refusal_reason),
    }))
}
