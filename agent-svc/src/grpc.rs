//! The tonic adapters of agent-svc.
//!
//! The contract is sketched in full; the RPCs of features not built yet answer
//! UNIMPLEMENTED through the generated default methods.

use crewmesh_proto::{
    agent::v1::{
        Agent as ProtoAgent, Channel as ProtoChannel, CreateAgentFromTemplateRequest,
        CreateAgentFromTemplateResponse, CreateAgentRequest, CreateAgentResponse,
        DeleteAgentRequest, DeleteAgentResponse, EscalationRules, GetAgentRequest,
        GetAgentResponse, GetRuntimeConfigRequest, GetRuntimeConfigResponse, GetTemplateRequest,
        GetTemplateResponse, ListAgentsRequest, ListAgentsResponse, ListTemplatesRequest,
        ListTemplatesResponse, PreviewSystemPromptRequest, PreviewSystemPromptResponse,
        Template as ProtoTemplate, UpdateAgentRequest, UpdateAgentResponse,
    },
    billing::v1::{
        CheckAgentQuotaRequest, SetAgentBudgetRequest,
        billing_internal_service_client::BillingInternalServiceClient,
    },
};
use mesh_kit::{
    ErrorCode, Role, ServiceId,
    auth::{TokenSigner, UserCaller},
    client::CallContext,
    db::{begin_platform, begin_tenant},
    error::invalid_field,
    server::caller,
    wire::{format_usd, parse_id, parse_opt_id, parse_usd, timestamp},
};
use sqlx::{PgPool, Postgres, Transaction};
use tonic::{Request, Response, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    agents::{self, Agent, AgentFields},
    prompt::{self, AgentText},
    templates::{self, Escalation, Template},
};

#[derive(Debug, Clone)]
pub struct AgentApi {
    pub db: PgPool,
    pub billing: BillingInternalServiceClient<Channel>,
    pub signer: TokenSigner,
}

const ADMINS: &[Role] = &[Role::PlatformAdmin, Role::CustomerAdmin];

fn proto_agent(a: Agent) -> ProtoAgent {
    let escalation = a.escalation.0;
    ProtoAgent {
        id: a.id.to_string(),
        tenant_id: a.tenant_id.to_string(),
        name: a.name,
        role_title: a.role_title,
        persona: a.persona,
        instructions: a.instructions,
        model: a.model,
        tools: a.tools,
        escalation: Some(EscalationRules {
            enabled: escalation.enabled,
            trigger_keywords: escalation.trigger_keywords,
            on_human_request: escalation.on_human_request,
            max_consecutive_failures: escalation.max_consecutive_failures,
        }),
        escalation_assignee: a.escalation_assignee,
        budget_limit_usd: format_usd(a.budget_limit_nanos),
        active: a.active,
        created_at: Some(timestamp(a.created_at)),
        updated_at: Some(timestamp(a.updated_at)),
    }
}

fn escalation(rules: Option<&EscalationRules>) -> Escalation {
    rules
        .map(|r| Escalation {
            enabled: r.enabled,
            trigger_keywords: r.trigger_keywords.clone(),
            on_human_request: r.on_human_request,
            max_consecutive_failures: r.max_consecutive_failures,
        })
        .unwrap_or_default()
}

fn budget(text: &str) -> Result<i64, Status> {
    parse_usd(text).map_err(|e| invalid_field("budget_limit_usd", e.to_string()))
}

fn fields(agent: &ProtoAgent) -> Result<AgentFields, Status> {
    Ok(AgentFields {
        name: agent.name.clone(),
        role_title: agent.role_title.clone(),
        persona: agent.persona.clone(),
        instructions: agent.instructions.clone(),
        model: agent.model.clone(),
        tools: agent.tools.clone(),
        escalation: escalation(agent.escalation.as_ref()),
        escalation_assignee: agent.escalation_assignee.clone(),
        budget_limit_nanos: budget(&agent.budget_limit_usd)?,
        active: agent.active,
    })
}

fn db_error(e: &sqlx::Error) -> Status {
    mesh_kit::error::internal("agent query failed", e)
}

/// The system prompt of `agent` on `channel`.
fn render(agent: &Agent, channel: prompt::Channel) -> String {
    let escalation = &agent.escalation.0;
    prompt::build(
        &AgentText {
            name: &agent.name,
            role_title: &agent.role_title,
            persona: &agent.persona,
            instructions: &agent.instructions,
            tools: &agent.tools,
            escalation_enabled: escalation.enabled,
            trigger_keywords: &escalation.trigger_keywords,
            on_human_request: escalation.on_human_request,
        },
        channel,
    )
}

fn channel(value: i32) -> Result<prompt::Channel, Status> {
    match ProtoChannel::try_from(value) {
        Ok(ProtoChannel::Slack) => Ok(prompt::Channel::Slack),
        Ok(ProtoChannel::Whatsapp) => Ok(prompt::Channel::WhatsApp),
        Ok(ProtoChannel::Api) => Ok(prompt::Channel::Api),
        Ok(ProtoChannel::Unspecified) | Err(_) => {
            Err(invalid_field("channel", "must be slack, whatsapp or api"))
        }
    }
}

fn not_found() -> Status {
    ErrorCode::NotFound.status("agent not found")
}

impl AgentApi {
    fn as_agent_svc(&self) -> Result<CallContext, Status> {
        let token = self
            .signer
            .service_token()
            .map_err(|e| mesh_kit::error::internal("signing agent-svc's service token", &e))?;
        Ok(CallContext::new(token, None))
    }

    /// A transaction that sees the agents the caller may act on: platform
    /// admins every tenant's, everyone else their own.
    async fn scope(&self, user: &UserCaller) -> Result<Transaction<'static, Postgres>, Status> {
        match user.role {
            Role::PlatformAdmin => begin_platform(&self.db).await,
            Role::CustomerAdmin | Role::Operator => {
                begin_tenant(&self.db, user.tenant_scope(None)?).await
            }
        }
        .map_err(|e| db_error(&e))
    }

    async fn push_budget(&self, agent: &Agent) -> Result<(), Status> {
        self.billing
            .clone()
            .set_agent_budget(self.as_agent_svc()?.request(SetAgentBudgetRequest {
                tenant_id: agent.tenant_id.to_string(),
                agent_id: agent.id.to_string(),
                limit_usd: format_usd(agent.budget_limit_nanos),
            }))
            .await
            .map(drop)
    }

    /// Validates, checks the plan's quota, inserts and registers the budget,
    /// all in one transaction.
    async fn create(
        &self,
        tenant: Uuid,
        fields: AgentFields,
        request_id: &str,
    ) -> Result<Agent, Status> {
        agents::validate(&fields)?;
        let request_id = Some(request_id).filter(|r| !r.is_empty());
        let mut tx = begin_tenant(&self.db, tenant)
            .await
            .map_err(|e| db_error(&e))?;
        if let Some(key) = request_id
            && let Some(existing) = agents::by_request(&mut tx, key)
                .await
                .map_err(|e| db_error(&e))?
        {
            return Ok(existing);
        }
        agents::lock_tenant(&mut tx, tenant)
            .await
            .map_err(|e| db_error(&e))?;
        let current = agents::count(&mut tx).await.map_err(|e| db_error(&e))?;
        let quota = self
            .billing
            .clone()
            .check_agent_quota(self.as_agent_svc()?.request(CheckAgentQuotaRequest {
                tenant_id: tenant.to_string(),
                current_agents: i32::try_from(current).unwrap_or(i32::MAX),
            }))
            .await?
            .into_inner();
        if !quota.allowed {
            return Err(ErrorCode::FailedPrecondition.status(quota.reason));
        }
        let agent = agents::insert(&mut tx, tenant, &fields, request_id)
            .await
            .map_err(|e| db_error(&e))?;
        self.push_budget(&agent).await?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        tracing::info!(%tenant, agent = %agent.id, "agent created");
        Ok(agent)
    }
}

fn proto_template(t: Template) -> ProtoTemplate {
    let escalation = t.escalation.0;
    ProtoTemplate {
        slug: t.slug,
        name: t.name,
        role_title: t.role_title,
        persona: t.persona,
        instructions: t.instructions,
        suggested_tools: t.suggested_tools,
        escalation: Some(EscalationRules {
            enabled: escalation.enabled,
            trigger_keywords: escalation.trigger_keywords,
            on_human_request: escalation.on_human_request,
            max_consecutive_failures: escalation.max_consecutive_failures,
        }),
    }
}

#[tonic::async_trait]
impl crewmesh_proto::agent::v1::agent_service_server::AgentService for AgentApi {
    async fn create_agent(
        &self,
        request: Request<CreateAgentRequest>,
    ) -> Result<Response<CreateAgentResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let req = request.get_ref();
        let agent = req
            .agent
            .as_ref()
            .ok_or_else(|| invalid_field("agent", "is required"))?;
        let tenant = user.tenant_scope(parse_opt_id("tenant_id", &agent.tenant_id)?)?;
        let created = self.create(tenant, fields(agent)?, &req.request_id).await?;
        Ok(Response::new(CreateAgentResponse {
            agent: Some(proto_agent(created)),
        }))
    }

    async fn create_agent_from_template(
        &self,
        request: Request<CreateAgentFromTemplateRequest>,
    ) -> Result<Response<CreateAgentFromTemplateResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let req = request.get_ref();
        let tenant = user.tenant_scope(parse_opt_id("tenant_id", &req.tenant_id)?)?;
        let template = templates::get(&self.db, &req.slug)
            .await
            .map_err(|e| db_error(&e))?
            .ok_or_else(|| invalid_field("slug", "no template with that slug"))?;
        let fields = AgentFields {
            name: if req.name.is_empty() {
                template.name.clone()
            } else {
                req.name.clone()
            },
            role_title: template.role_title,
            persona: template.persona,
            instructions: template.instructions,
            model: req.model.clone(),
            tools: template.suggested_tools,
            // Escalation needs an assignee, which a template cannot know: it starts off.
            escalation: Escalation {
                enabled: false,
                ..template.escalation.0
            },
            escalation_assignee: String::new(),
            budget_limit_nanos: 0,
            active: true,
        };
        let created = self.create(tenant, fields, &req.request_id).await?;
        Ok(Response::new(CreateAgentFromTemplateResponse {
            agent: Some(proto_agent(created)),
        }))
    }

    async fn get_agent(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<GetAgentResponse>, Status> {
        let user = caller(&request)?.require_role(&Role::ALL)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.scope(user).await?;
        let agent = agents::get(&mut tx, id)
            .await
            .map_err(|e| db_error(&e))?
            .ok_or_else(not_found)?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        Ok(Response::new(GetAgentResponse {
            agent: Some(proto_agent(agent)),
        }))
    }

    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        let user = caller(&request)?.require_role(&Role::ALL)?;
        let req = request.get_ref();
        let tenant = user.tenant_scope(parse_opt_id("tenant_id", &req.tenant_id)?)?;
        let limit = match req.page_size {
            n if n <= 0 => 50,
            n => i64::from(n).min(200),
        };
        let after = parse_opt_id("page_token", &req.page_token)?.unwrap_or(Uuid::nil());
        let mut tx = begin_tenant(&self.db, tenant)
            .await
            .map_err(|e| db_error(&e))?;
        let mut page = agents::list(&mut tx, after, limit + 1)
            .await
            .map_err(|e| db_error(&e))?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        let next = if page.len() as i64 > limit {
            page.truncate(limit as usize);
            page.last().map(|a| a.id.to_string())
        } else {
            None
        };
        Ok(Response::new(ListAgentsResponse {
            agents: page.into_iter().map(proto_agent).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn update_agent(
        &self,
        request: Request<UpdateAgentRequest>,
    ) -> Result<Response<UpdateAgentResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let req = request.get_ref();
        let patch = req
            .agent
            .as_ref()
            .ok_or_else(|| invalid_field("agent", "is required"))?;
        let id = parse_id("agent.id", &patch.id)?;
        let mut tx = self.scope(user).await?;
        let existing = agents::get(&mut tx, id)
            .await
            .map_err(|e| db_error(&e))?
            .ok_or_else(not_found)?;
        let mut fields = existing.fields();
        for path in &req.update_mask {
            match path.as_str() {
                "name" => fields.name = patch.name.clone(),
                "role_title" => fields.role_title = patch.role_title.clone(),
                "persona" => fields.persona = patch.persona.clone(),
                "instructions" => fields.instructions = patch.instructions.clone(),
                "model" => fields.model = patch.model.clone(),
                "tools" => fields.tools = patch.tools.clone(),
                "escalation" => fields.escalation = escalation(patch.escalation.as_ref()),
                "escalation_assignee" => {
                    fields.escalation_assignee = patch.escalation_assignee.clone()
                }
                "budget_limit_usd" => fields.budget_limit_nanos = budget(&patch.budget_limit_usd)?,
                "active" => fields.active = patch.active,
                other => {
                    return Err(invalid_field(
                        "update_mask",
                        format!("`{other}` is not an editable field"),
                    ));
                }
            }
        }
        agents::validate(&fields)?;
        let updated = agents::update(&mut tx, id, &fields)
            .await
            .map_err(|e| db_error(&e))?
            .ok_or_else(not_found)?;
        if updated.budget_limit_nanos != existing.budget_limit_nanos {
            self.push_budget(&updated).await?;
        }
        tx.commit().await.map_err(|e| db_error(&e))?;
        Ok(Response::new(UpdateAgentResponse {
            agent: Some(proto_agent(updated)),
        }))
    }

    async fn delete_agent(
        &self,
        request: Request<DeleteAgentRequest>,
    ) -> Result<Response<DeleteAgentResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.scope(user).await?;
        if !agents::delete(&mut tx, id)
            .await
            .map_err(|e| db_error(&e))?
        {
            return Err(not_found());
        }
        tx.commit().await.map_err(|e| db_error(&e))?;
        Ok(Response::new(DeleteAgentResponse {}))
    }

    async fn preview_system_prompt(
        &self,
        request: Request<PreviewSystemPromptRequest>,
    ) -> Result<Response<PreviewSystemPromptResponse>, Status> {
        let user = caller(&request)?.require_role(&Role::ALL)?;
        let req = request.get_ref();
        let id = parse_id("agent_id", &req.agent_id)?;
        let channel = channel(req.channel)?;
        let mut tx = self.scope(user).await?;
        let agent = agents::get(&mut tx, id)
            .await
            .map_err(|e| db_error(&e))?
            .ok_or_else(not_found)?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        let escalation = &agent.escalation.0;
        let text = prompt::build(
            &AgentText {
                name: &agent.name,
                role_title: &agent.role_title,
                persona: &agent.persona,
                instructions: &agent.instructions,
                tools: &agent.tools,
                escalation_enabled: escalation.enabled,
                trigger_keywords: &escalation.trigger_keywords,
                on_human_request: escalation.on_human_request,
            },
            channel,
        );
        Ok(Response::new(PreviewSystemPromptResponse {
            system_prompt: text,
        }))
    }

    async fn list_templates(
        &self,
        request: Request<ListTemplatesRequest>,
    ) -> Result<Response<ListTemplatesResponse>, Status> {
        // The catalogue is global: every role may read it.
        caller(&request)?.require_role(&Role::ALL)?;
        let all = templates::list(&self.db).await.map_err(|e| db_error(&e))?;
        Ok(Response::new(ListTemplatesResponse {
            templates: all.into_iter().map(proto_template).collect(),
        }))
    }

    async fn get_template(
        &self,
        request: Request<GetTemplateRequest>,
    ) -> Result<Response<GetTemplateResponse>, Status> {
        caller(&request)?.require_role(&Role::ALL)?;
        let template = templates::get(&self.db, &request.get_ref().slug)
            .await
            .map_err(|e| db_error(&e))?
            .ok_or_else(|| ErrorCode::NotFound.status("no template with that slug"))?;
        Ok(Response::new(GetTemplateResponse {
            template: Some(proto_template(template)),
        }))
    }
}

#[tonic::async_trait]
impl crewmesh_proto::agent::v1::agent_internal_service_server::AgentInternalService for AgentApi {
    /// What llm-svc needs per message: the agent and its rendered prompt, one
    /// indexed read and a pure render.
    async fn get_runtime_config(
        &self,
        request: Request<GetRuntimeConfigRequest>,
    ) -> Result<Response<GetRuntimeConfigResponse>, Status> {
        caller(&request)?.require_service(&[ServiceId::Llm])?;
        let req = request.get_ref();
        let tenant = parse_id("tenant_id", &req.tenant_id)?;
        let id = parse_id("agent_id", &req.agent_id)?;
        let channel = channel(req.channel)?;
        let mut tx = begin_tenant(&self.db, tenant)
            .await
            .map_err(|e| db_error(&e))?;
        let agent = agents::get(&mut tx, id)
            .await
            .map_err(|e| db_error(&e))?
            .ok_or_else(not_found)?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        let system_prompt = render(&agent, channel);
        Ok(Response::new(GetRuntimeConfigResponse {
            agent: Some(proto_agent(agent)),
            system_prompt,
        }))
    }
}
