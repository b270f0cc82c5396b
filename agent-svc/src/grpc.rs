//! The tonic adapters of agent-svc.

use crewmesh_proto::{
    agent::v1::{
        Agent as ProtoAgent, BeginSlackInstallRequest, BeginSlackInstallResponse,
        Channel as ProtoChannel, ChannelConnection as ProtoConnection, CompleteSlackInstallRequest,
        CompleteSlackInstallResponse, CreateAgentFromTemplateRequest,
        CreateAgentFromTemplateResponse, CreateAgentRequest, CreateAgentResponse,
        CreateChannelRequest, CreateChannelResponse, DeleteAgentRequest, DeleteAgentResponse,
        DeleteChannelRequest, DeleteChannelResponse, EscalationRules, GetAgentRequest,
        GetAgentResponse, GetRuntimeConfigRequest, GetRuntimeConfigResponse, GetTemplateRequest,
        GetTemplateResponse, ListAgentsRequest, ListAgentsResponse, ListChannelsRequest,
        ListChannelsResponse, ListTemplatesRequest, ListTemplatesResponse,
        PreviewSystemPromptRequest, PreviewSystemPromptResponse, ResolveChannelRequest,
        ResolveChannelResponse, Template as ProtoTemplate, UpdateAgentRequest, UpdateAgentResponse,
    },
    billing::v1::{
        CheckAgentQuotaRequest, billing_internal_service_client::BillingInternalServiceClient,
    },
};
use keyring::Keyring;
use mesh_kit::{
    ErrorCode, Role, ServiceId,
    auth::{TokenSigner, UserCaller},
    client::CallContext,
    db::{begin_platform, begin_tenant},
    error::invalid_field,
    server::caller,
    wire::{format_usd, parse_id, parse_opt_id, parse_usd, timestamp},
};
use secrecy::ExposeSecret;
use sqlx::{PgPool, Postgres, Transaction};
use std::sync::Arc;
use tonic::{Request, Response, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    agents::{self, Agent, AgentFields},
    budget_outbox::{self, BudgetRelay, Pushed},
    channels::{self, ChannelError, Claim, Connection, Kind, NewConnection},
    config::SlackApp,
    ownership::{OwnershipError, Verifier},
    prompt::{self, AgentText},
    slack::{self, SlackError},
    templates::{self, Escalation, Template},
    whatsapp::GraphError,
};

#[derive(Debug, Clone)]
pub struct AgentApi {
    pub db: PgPool,
    pub billing: BillingInternalServiceClient<Channel>,
    pub signer: TokenSigner,
    pub keyring: Arc<Keyring>,
    /// None when the platform has no Slack app configured.
    pub slack: Option<SlackApp>,
    /// Slack's and Meta's APIs, with the one HTTP client: ownership proofs
    /// and OAuth code exchanges.
    pub verifier: Verifier,
    /// Pushes saved budgets to billing-svc after their commit.
    pub budgets: BudgetRelay,
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

fn channel_status(e: ChannelError) -> Status {
    match e {
        ChannelError::Invalid { field, reason } => invalid_field(field, reason),
        ChannelError::AgentNotFound => invalid_field("agent_id", "no such agent in this tenant"),
        e @ ChannelError::AlreadyConnected(_) => ErrorCode::Conflict.status(e.to_string()),
        e @ ChannelError::NotFound => ErrorCode::NotFound.status(e.to_string()),
        ChannelError::Database(e) => db_error(&e),
        e @ (ChannelError::Encryption | ChannelError::Undecryptable | ChannelError::Random) => {
            mesh_kit::error::internal("channel token", &e)
        }
    }
}

fn slack_status(e: SlackError) -> Status {
    match e {
        e @ SlackError::BadCode(_) => invalid_field("code", e.to_string()),
        e @ SlackError::BadApp(_) => ErrorCode::FailedPrecondition.status(e.to_string()),
        e @ SlackError::TokenRefused(_) => invalid_field("access_token", e.to_string()),
        e @ (SlackError::Unreachable(_) | SlackError::Unexpected(_)) => {
            tracing::warn!(error = %e, "a Slack Web API call failed");
            ErrorCode::Unavailable.status(e.to_string())
        }
    }
}

impl From<OwnershipError> for Status {
    fn from(e: OwnershipError) -> Status {
        match e {
            e @ OwnershipError::OtherWorkspace { .. } => {
                invalid_field("external_id", e.to_string())
            }
            e @ OwnershipError::MalformedBotUser => {
                tracing::warn!(error = %e, "Slack's auth.test answer is off its documented shape");
                ErrorCode::Unavailable.status(e.to_string())
            }
            OwnershipError::Slack(e) => slack_status(e),
            OwnershipError::Graph(e) => match e {
                e @ GraphError::Refused { .. } => invalid_field("access_token", e.to_string()),
                e @ GraphError::NotAPhoneNumber => invalid_field("external_id", e.to_string()),
                e @ (GraphError::Unreachable(_) | GraphError::Unexpected(_)) => {
                    tracing::warn!(error = %e, "a Graph API call failed");
                    ErrorCode::Unavailable.status(e.to_string())
                }
            },
        }
    }
}

/// Connections are made for Slack or WhatsApp; the API channel needs none.
fn connection_kind(value: i32) -> Result<Kind, Status> {
    match ProtoChannel::try_from(value) {
        Ok(ProtoChannel::Slack) => Ok(Kind::Slack),
        Ok(ProtoChannel::Whatsapp) => Ok(Kind::WhatsApp),
        _ => Err(invalid_field("channel", "must be slack or whatsapp")),
    }
}

fn proto_connection(c: Connection) -> ProtoConnection {
    let channel = match Kind::parse(&c.channel) {
        Some(Kind::Slack) => ProtoChannel::Slack,
        Some(Kind::WhatsApp) => ProtoChannel::Whatsapp,
        None => ProtoChannel::Unspecified,
    };
    ProtoConnection {
        id: c.id.to_string(),
        tenant_id: c.tenant_id.to_string(),
        agent_id: c.agent_id.to_string(),
        channel: channel.into(),
        external_id: c.external_id,
        default_channel: c.default_channel,
        token_hint: c.token_hint,
        created_at: Some(timestamp(c.created_at)),
        display_name: c.display_name,
        bot_user_id: c.bot_user_id,
        updated_at: Some(timestamp(c.updated_at)),
        reply_template_name: c.reply_template_name,
        reply_template_language: c.reply_template_language,
    }
}

fn slack_app(app: Option<&SlackApp>) -> Result<&SlackApp, Status> {
    app.ok_or_else(|| {
        ErrorCode::FailedPrecondition.status(
            "the Slack app is not configured (set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET); \
             a bot token can still be connected with POST /api/v1/channels",
        )
    })
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

    /// Pushes `agent`'s saved budget to billing-svc now that its save has
    /// committed. Never fails the save: what does not land here, the relay
    /// delivers (see `budget_outbox`).
    async fn push_budget(&self, agent: Uuid) {
        match self.budgets.push(agent).await {
            Ok(Pushed::Landed) => {}
            Ok(outcome @ (Pushed::Deferred | Pushed::Failed)) => {
                tracing::info!(%agent, ?outcome, "agent budget left to the relay");
            }
            Err(e) => {
                tracing::warn!(%agent, error = %e, "agent budget left to the relay");
            }
        }
    }

    /// Validates, checks the plan's quota and inserts the agent with its
    /// budget queued for billing-svc, then pushes the budget.
    ///
    /// billing-svc decides the quota for a count of agents; it is asked
    /// with no database connection held, and the count (and the request id)
    /// are checked again under the tenant's lock, where they cannot change.
    async fn create(
        &self,
        tenant: Uuid,
        fields: AgentFields,
        request_id: &str,
    ) -> Result<Agent, Status> {
        agents::validate(&fields)?;
        let request_id = Some(request_id).filter(|r| !r.is_empty());
        for _ in 0..CREATE_ATTEMPTS {
            // A retry of a create that happened answers with its agent
            // without asking billing-svc, whose quota now counts it.
            let mut tx = begin_tenant(&self.db, tenant)
                .await
                .map_err(|e| db_error(&e))?;
            if let Some(existing) = self.by_request(&mut tx, request_id).await? {
                return Ok(existing);
            }
            let asked = agents::count(&mut tx).await.map_err(|e| db_error(&e))?;
            tx.commit().await.map_err(|e| db_error(&e))?;

            let quota = self
                .billing
                .clone()
                .check_agent_quota(self.as_agent_svc()?.request(CheckAgentQuotaRequest {
                    tenant_id: tenant.to_string(),
                    current_agents: i32::try_from(asked).unwrap_or(i32::MAX),
                }))
                .await?
                .into_inner();

            let mut tx = begin_tenant(&self.db, tenant)
                .await
                .map_err(|e| db_error(&e))?;
            agents::lock_tenant(&mut tx, tenant)
                .await
                .map_err(|e| db_error(&e))?;
            // A concurrent request with the same key may have created the
            // agent since the first look (and filled the quota with it).
            if let Some(existing) = self.by_request(&mut tx, request_id).await? {
                return Ok(existing);
            }
            if !quota.allowed {
                return Err(ErrorCode::FailedPrecondition.status(quota.reason));
            }
            // The quota allows a count below a limit: fewer agents than
            // asked about are allowed too, more must be asked about again.
            if agents::count(&mut tx).await.map_err(|e| db_error(&e))? > asked {
                continue;
            }
            let agent = agents::insert(&mut tx, tenant, &fields, request_id)
                .await
                .map_err(|e| db_error(&e))?;
            budget_outbox::record(&mut tx, tenant, agent.id, agent.budget_limit_nanos)
                .await
                .map_err(|e| db_error(&e))?;
            tx.commit().await.map_err(|e| db_error(&e))?;
            tracing::info!(%tenant, agent = %agent.id, "agent created");
            self.push_budget(agent.id).await;
            return Ok(agent);
        }
        Err(ErrorCode::Unavailable
            .status("agents are being created concurrently for this tenant; try again"))
    }

    async fn by_request(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        request_id: Option<&str>,
    ) -> Result<Option<Agent>, Status> {
        let Some(key) = request_id else {
            return Ok(None);
        };
        agents::by_request(tx, key).await.map_err(|e| db_error(&e))
    }
}

/// Rounds of quota check and insert a create makes while other creates of
/// the tenant keep changing its count.
const CREATE_ATTEMPTS: usize = 3;

/// `fields` with the masked fields of `patch`.
fn merge(fields: &mut AgentFields, patch: &ProtoAgent, mask: &[String]) -> Result<(), Status> {
    for path in mask {
        match path.as_str() {
            "name" => fields.name = patch.name.clone(),
            "role_title" => fields.role_title = patch.role_title.clone(),
            "persona" => fields.persona = patch.persona.clone(),
            "instructions" => fields.instructions = patch.instructions.clone(),
            "model" => fields.model = patch.model.clone(),
            "tools" => fields.tools = patch.tools.clone(),
            "escalation" => fields.escalation = escalation(patch.escalation.as_ref()),
            "escalation_assignee" => fields.escalation_assignee = patch.escalation_assignee.clone(),
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
    Ok(())
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
        // A mask naming nothing editable is refused before any lock is taken.
        merge(&mut AgentFields::default(), patch, &req.update_mask)?;
        let mut tx = self.scope(user).await?;
        // Locked: a concurrent PATCH of other fields waits, then merges
        // into what this one wrote, so neither change is lost.
        let existing = agents::get_for_update(&mut tx, id)
            .await
            .map_err(|e| db_error(&e))?
            .ok_or_else(not_found)?;
        let mut fields = existing.fields();
        merge(&mut fields, patch, &req.update_mask)?;
        agents::validate(&fields)?;
        let updated = agents::update(&mut tx, id, &fields)
            .await
            .map_err(|e| db_error(&e))?
            .ok_or_else(not_found)?;
        let budget_changed = updated.budget_limit_nanos != existing.budget_limit_nanos;
        if budget_changed {
            budget_outbox::record(
                &mut tx,
                updated.tenant_id,
                updated.id,
                updated.budget_limit_nanos,
            )
            .await
            .map_err(|e| db_error(&e))?;
        }
        tx.commit().await.map_err(|e| db_error(&e))?;
        if budget_changed {
            self.push_budget(updated.id).await;
        }
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
        let text = render(&agent, channel);
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

    async fn create_channel(
        &self,
        request: Request<CreateChannelRequest>,
    ) -> Result<Response<CreateChannelResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let req = request.get_ref();
        let tenant = user.tenant_scope(parse_opt_id("tenant_id", &req.tenant_id)?)?;
        let mut new = NewConnection {
            agent_id: parse_id("agent_id", &req.agent_id)?,
            kind: connection_kind(req.channel)?,
            external_id: req.external_id.trim().to_owned(),
            token: req.access_token.trim().to_owned().into(),
            default_channel: req.default_channel.trim().to_owned(),
            display_name: String::new(),
            bot_user_id: String::new(),
            reply_template_name: req.reply_template_name.trim().to_owned(),
            reply_template_language: req.reply_template_language.trim().to_owned(),
        };
        // Cheap checks first: a malformed request never reaches Slack or Meta.
        channels::validate(&new).map_err(channel_status)?;
        // Before any connection is taken: the proof waits on a third party.
        let proof = self
            .verifier
            .prove(new.kind, &new.external_id, &new.token)
            .await?;
        new.bot_user_id = proof.bot_user_id;
        new.display_name = proof.display_name;
        let mut tx = begin_tenant(&self.db, tenant)
            .await
            .map_err(|e| db_error(&e))?;
        let created = channels::create(&mut tx, &self.keyring, tenant, &new)
            .await
            .map_err(channel_status)?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        tracing::info!(%tenant, connection = %created.id, channel = %created.channel, "channel connected");
        Ok(Response::new(CreateChannelResponse {
            channel: Some(proto_connection(created)),
        }))
    }

    async fn list_channels(
        &self,
        request: Request<ListChannelsRequest>,
    ) -> Result<Response<ListChannelsResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let tenant = user.tenant_scope(parse_opt_id("tenant_id", &request.get_ref().tenant_id)?)?;
        let mut tx = begin_tenant(&self.db, tenant)
            .await
            .map_err(|e| db_error(&e))?;
        let listed = channels::list(&mut tx).await.map_err(channel_status)?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        Ok(Response::new(ListChannelsResponse {
            channels: listed.into_iter().map(proto_connection).collect(),
        }))
    }

    async fn delete_channel(
        &self,
        request: Request<DeleteChannelRequest>,
    ) -> Result<Response<DeleteChannelResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let mut tx = self.scope(user).await?;
        let deleted = channels::delete(&mut tx, id)
            .await
            .map_err(channel_status)?
            .ok_or_else(|| channel_status(ChannelError::NotFound))?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        tracing::info!(connection = %id, "channel disconnected");
        Ok(Response::new(DeleteChannelResponse {
            channel: Some(proto_connection(deleted)),
        }))
    }

    async fn begin_slack_install(
        &self,
        request: Request<BeginSlackInstallRequest>,
    ) -> Result<Response<BeginSlackInstallResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let req = request.get_ref();
        let tenant = user.tenant_scope(parse_opt_id("tenant_id", &req.tenant_id)?)?;
        let agent = parse_id("agent_id", &req.agent_id)?;
        let app = slack_app(self.slack.as_ref())?;
        let mut tx = begin_tenant(&self.db, tenant)
            .await
            .map_err(|e| db_error(&e))?;
        let (state, expires_at) =
            channels::begin_install(&mut tx, tenant, agent, &req.browser_binding)
                .await
                .map_err(channel_status)?;
        let authorize_url = slack::authorize_url(&self.verifier.slack_api_base, app, &state)
            .map_err(slack_status)?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        Ok(Response::new(BeginSlackInstallResponse {
            authorize_url,
            expires_at: Some(timestamp(expires_at)),
        }))
    }

    /// The OAuth callback's second half. The state is consumed before Slack
    /// is called, so a replayed callback can never install twice, and only
    /// with the browser binding its install began with, so a forwarded
    /// authorize link never reaches Slack's code exchange.
    async fn complete_slack_install(
        &self,
        request: Request<CompleteSlackInstallRequest>,
    ) -> Result<Response<CompleteSlackInstallResponse>, Status> {
        caller(&request)?.require_service(&[ServiceId::Gateway])?;
        let app = slack_app(self.slack.as_ref())?;
        let req = request.get_ref();
        if req.code.is_empty() || req.code.len() > 512 {
            return Err(invalid_field("code", "is required"));
        }
        if req.state.is_empty() || req.state.len() > 512 {
            return Err(invalid_field("state", "is required"));
        }
        if req.browser_binding.len() > 512 {
            return Err(invalid_field("browser_binding", "is too long"));
        }
        let (tenant, agent) =
            match channels::take_install(&self.db, &req.state, &req.browser_binding)
                .await
                .map_err(channel_status)?
            {
                Claim::Install { tenant, agent } => (tenant, agent),
                Claim::OtherBrowser => {
                    return Err(ErrorCode::PermissionDenied.status(
                        "this install was started in another browser, or its cookie has expired: \
                         only the admin who started it can finish it, in the same browser \
                         (or start the install again from the portal)",
                    ));
                }
                Claim::Unknown => {
                    return Err(invalid_field(
                        "state",
                        "unknown, used or expired install; start the install again from the portal",
                    ));
                }
            };
        let installation = slack::exchange_code(
            &self.verifier.http,
            &self.verifier.slack_api_base,
            app,
            &req.code,
        )
        .await
        .map_err(slack_status)?;
        let new = NewConnection {
            agent_id: agent,
            kind: Kind::Slack,
            external_id: installation.team_id,
            token: installation.bot_token,
            default_channel: String::new(),
            display_name: installation.team_name,
            bot_user_id: installation.bot_user_id,
            // Slack has no customer service window.
            reply_template_name: String::new(),
            reply_template_language: String::new(),
        };
        let mut tx = begin_tenant(&self.db, tenant)
            .await
            .map_err(|e| db_error(&e))?;
        let connection = channels::install(&mut tx, &self.keyring, tenant, &new)
            .await
            .map_err(channel_status)?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        tracing::info!(%tenant, connection = %connection.id, team = %connection.external_id, "Slack app installed");
        Ok(Response::new(CompleteSlackInstallResponse {
            channel: Some(proto_connection(connection)),
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

    /// Which tenant and agent an inbound event is for, and the token to
    /// answer with. Only the gateway receives inbound events.
    async fn resolve_channel(
        &self,
        request: Request<ResolveChannelRequest>,
    ) -> Result<Response<ResolveChannelResponse>, Status> {
        // The gateway routes webhooks and delivers replies; llm-svc ingests
        // a message's files with the connection's token.
        caller(&request)?.require_service(&[ServiceId::Gateway, ServiceId::Llm])?;
        let req = request.get_ref();
        let kind = connection_kind(req.channel)?;
        if req.external_id.is_empty() {
            return Err(invalid_field("external_id", "is required"));
        }
        let resolved = channels::resolve(&self.db, &self.keyring, kind, &req.external_id)
            .await
            .map_err(channel_status)?
            .ok_or_else(|| {
                ErrorCode::NotFound.status("no channel connection for this identifier")
            })?;
        Ok(Response::new(ResolveChannelResponse {
            tenant_id: resolved.tenant_id.to_string(),
            agent_id: resolved.agent_id.to_string(),
            connection_id: resolved.connection_id.to_string(),
            access_token: resolved.token.expose_secret().to_owned(),
            default_channel: resolved.default_channel,
            bot_user_id: resolved.bot_user_id,
            reply_template_name: resolved.reply_template_name,
            reply_template_language: resolved.reply_template_language,
        }))
    }
}
