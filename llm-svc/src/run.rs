//! One agent run — the one pipeline behind the portal's test run, the gRPC
//! API and every channel message: the agent's runtime config and rendered
//! prompt for the channel (agent-svc), the tenant's key (billing-svc), the
//! conversation's memory, the message's files as the model can take them
//! (media-svc), a budget reservation, the provider call, settlement of the
//! real cost, and both messages persisted.
//!
//! No database transaction is held across the provider call: history is
//! read first, and the exchange is written after, under a row lock on the
//! conversation so concurrent runs of one conversation append in order.
//!
//! When a run cannot reach a model — budget spent, no key, agent inactive,
//! provider down after its retries — an API caller is told why (an error;
//! a spent budget is a polite answer with its reason), while a customer on
//! a channel always gets a polite answer and the reason is recorded on it:
//! never silence.

use std::sync::Arc;

use crewmesh_proto::{
    agent::v1::{
        Channel as ProtoChannel, GetRuntimeConfigRequest,
        agent_internal_service_client::AgentInternalServiceClient,
    },
    billing::v1::{
        GetLlmKeySecretRequest, billing_internal_service_client::BillingInternalServiceClient,
    },
    media::v1::{GetDownloadUrlRequest, media_service_client::MediaServiceClient},
};
use mesh_kit::{
    ErrorCode, auth::TokenSigner, client::CallContext, db::begin_tenant, error::invalid_field,
    wire::format_usd,
};
use sqlx::PgPool;
use tonic::{Status, transport::Channel};
use uuid::Uuid;

use crate::{
    budget::{BudgetClient, BudgetError, Usage},
    conversations::{self, Conversation, Exchange, Turn},
    memory::{self, Memory},
    pricing::{PriceTable, estimate_tokens},
    providers::{
        ChatRequest, Message, Part, ProviderError, ProviderKey, Providers, TokenUsage, split_model,
        vision::{AttachmentKind, attachment_part},
    },
};

/// The most a reply may generate; what the budget reserves for output.
pub const MAX_OUTPUT_TOKENS: u32 = 1024;
/// Longest user message accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 16_000;
/// How long the model (and whoever it shows) may fetch a message's files.
const ATTACHMENT_URL_SECS: i64 = 3600;

/// What the customer hears when the agent's budget is spent.
pub const BUDGET_EXCEEDED_REPLY: &str = "I'm sorry, I can't answer right now. \
    A member of our team has been told and will get back to you.";
/// What the customer hears when the agent cannot answer for another reason
/// an admin has to fix (no key, inactive agent, a refused key).
pub const UNAVAILABLE_REPLY: &str = "I'm sorry, I can't answer right now. \
    Please try again later, or reach us another way if it is urgent.";
/// What the customer hears when the model provider is down or overloaded.
pub const PROVIDER_DOWN_REPLY: &str = "I'm sorry, I'm having trouble answering right now. \
    Please try again in a few minutes.";

/// How long an API run holds its idempotency key: longer than a run can
/// take (the provider budget plus the calls around it), so a live run keeps
/// it, and a holder that died lets it go this long after.
pub const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(150);
const CLAIM_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What claiming an idempotency key found.
enum Claimed {
    /// A run with the key answered already: that answer.
    Answered(RunOutput),
    /// This run holds the key.
    Ours,
}

impl From<conversations::Answered> for RunOutput {
    fn from(a: conversations::Answered) -> RunOutput {
        RunOutput {
            conversation: a.conversation_id,
            reply: a.text,
            prompt_tokens: a.prompt_tokens,
            completion_tokens: a.completion_tokens,
            cost_nanos: a.cost_nanos,
            refusal_reason: a.refusal_reason,
        }
    }
}

/// Derives channel conversation ids (UUID v5) from (tenant, agent, key).
const CONVERSATION_NAMESPACE: Uuid = Uuid::from_u128(0x6c0f_1b9e_6f2a_4d5e_9a57_2f8c_41d3_b0e7);

/// The id of the conversation a channel key names for an agent: the same on
/// every redelivery, with no lookup.
pub fn channel_conversation_id(tenant: Uuid, agent: Uuid, key: &str) -> Uuid {
    Uuid::new_v5(
        &CONVERSATION_NAMESPACE,
        format!("{tenant}/{agent}/{key}").as_bytes(),
    )
}

/// Where a run's message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunChannel {
    /// The portal's test run and API callers.
    Api,
    Slack,
    Whatsapp,
}

impl RunChannel {
    /// As stored on the conversation.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunChannel::Api => "api",
            RunChannel::Slack => "slack",
            RunChannel::Whatsapp => "whatsapp",
        }
    }

    const fn proto(self) -> ProtoChannel {
        match self {
            RunChannel::Api => ProtoChannel::Api,
            RunChannel::Slack => ProtoChannel::Slack,
            RunChannel::Whatsapp => ProtoChannel::Whatsapp,
        }
    }
}

/// Which conversation a run continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversationRef {
    /// A new one (the first API run).
    New,
    /// One the caller names by id.
    Existing(Uuid),
    /// The conversation of a channel key (Slack thread, WhatsApp sender),
    /// created with its first message.
    Channel(String),
}

/// A file of the message, already in media storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRef {
    pub kind: AttachmentKind,
    pub media_id: Uuid,
    pub filename: String,
    pub caption: String,
}

#[derive(Debug, Clone)]
pub struct RunInput {
    pub tenant: Uuid,
    pub agent: Uuid,
    pub channel: RunChannel,
    pub conversation: ConversationRef,
    pub text: String,
    pub attachments: Vec<AttachmentRef>,
    /// Idempotency key: a repeated run returns the first answer.
    pub request_id: Option<String>,
    /// W3C trace context of the request or message being served.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    pub conversation: Uuid,
    pub reply: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nanos: i64,
    /// Why no model answered, when none did.
    pub refusal_reason: String,
}

/// Why a run answered without a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BudgetExceeded,
    AgentInactive,
    AgentNotFound,
    AgentMisconfigured,
    NoLlmKey,
    ProviderRejectedKey,
    ProviderRejectedRequest,
    ProviderRateLimited,
    ProviderUnavailable,
}

impl Refusal {
    /// Recorded on the reply, for admins.
    pub const fn reason(self) -> &'static str {
        match self {
            Refusal::BudgetExceeded => "budget_exceeded",
            Refusal::AgentInactive => "agent_inactive",
            Refusal::AgentNotFound => "agent_not_found",
            Refusal::AgentMisconfigured => "agent_misconfigured",
            Refusal::NoLlmKey => "no_llm_key",
            Refusal::ProviderRejectedKey => "provider_rejected_key",
            Refusal::ProviderRejectedRequest => "provider_rejected_request",
            Refusal::ProviderRateLimited => "provider_rate_limited",
            Refusal::ProviderUnavailable => "provider_unavailable",
        }
    }

    /// What the customer reads.
    pub const fn reply(self) -> &'static str {
        match self {
            Refusal::BudgetExceeded => BUDGET_EXCEEDED_REPLY,
            Refusal::AgentInactive
            | Refusal::AgentNotFound
            | Refusal::AgentMisconfigured
            | Refusal::NoLlmKey
            | Refusal::ProviderRejectedKey
            | Refusal::ProviderRejectedRequest => UNAVAILABLE_REPLY,
            Refusal::ProviderRateLimited | Refusal::ProviderUnavailable => PROVIDER_DOWN_REPLY,
        }
    }

    /// Provider failures, classed: configuration an admin must fix, or an
    /// outage that outlasted the retries.
    fn of_provider(e: &ProviderError) -> Refusal {
        match e {
            ProviderError::Unauthorized { .. } | ProviderError::InvalidKey => {
                Refusal::ProviderRejectedKey
            }
            ProviderError::UnknownModel(_)
            | ProviderError::BadRequest { .. }
            | ProviderError::Malformed(_)
            | ProviderError::NoBaseUrl(_)
            | ProviderError::Forbidden(_) => Refusal::ProviderRejectedRequest,
            ProviderError::RateLimited { .. } => Refusal::ProviderRateLimited,
            ProviderError::Upstream { .. }
            | ProviderError::Timeout(_)
            | ProviderError::Unreachable(_)
            | ProviderError::InvalidResponse(_) => Refusal::ProviderUnavailable,
        }
    }
}

fn db_error(e: &sqlx::Error) -> Status {
    mesh_kit::error::internal("conversation query failed", e)
}

/// A provider failure as an API caller should see it: configuration
/// problems are for an admin to fix (409), outages are worth retrying (503).
fn provider_status(e: &ProviderError) -> Status {
    match e {
        ProviderError::Unauthorized { .. }
        | ProviderError::InvalidKey
        | ProviderError::UnknownModel(_)
        | ProviderError::BadRequest { .. }
        | ProviderError::Malformed(_)
        | ProviderError::NoBaseUrl(_)
        | ProviderError::Forbidden(_) => ErrorCode::FailedPrecondition.status(e.to_string()),
        ProviderError::RateLimited { .. } => ErrorCode::ResourceExhausted.status(e.to_string()),
        ProviderError::Upstream { .. }
        | ProviderError::Timeout(_)
        | ProviderError::Unreachable(_)
        | ProviderError::InvalidResponse(_) => ErrorCode::Unavailable.status(e.to_string()),
    }
}

#[derive(Debug, Clone)]
pub struct Runner {
    pub db: PgPool,
    pub agents: AgentInternalServiceClient<Channel>,
    pub billing: BillingInternalServiceClient<Channel>,
    pub media: MediaServiceClient<Channel>,
    pub signer: TokenSigner,
    pub budget: Arc<BudgetClient>,
    pub providers: Providers,
    pub prices: Arc<PriceTable>,
    pub memory: Memory,
}

/// What a run knows about its conversation before the model is called.
#[derive(Debug)]
struct Context {
    conversation_id: Uuid,
    /// The conversation's message count when its history was read.
    version: i64,
    /// The memory window (not yet cut to the token budget).
    history: Vec<Turn>,
    /// The customer's message as recorded: text plus what was attached.
    recorded_text: String,
}

impl Runner {
    fn as_llm(&self, traceparent: Option<&str>) -> Result<CallContext, Status> {
        let token = self
            .signer
            .service_token()
            .map_err(|e| mesh_kit::error::internal("signing llm-svc's service token", &e))?;
        Ok(CallContext::new(token, traceparent.map(str::to_owned)))
    }

    /// The message text a run works with: required and bounded for API
    /// callers; for a channel, whatever the customer sent (cut to the bound,
    /// and a note when they sent only files or nothing at all).
    fn text_of(input: &RunInput) -> Result<String, Status> {
        let text = input.text.trim();
        match input.channel {
            RunChannel::Api => {
                if text.is_empty() && input.attachments.is_empty() {
                    return Err(invalid_field("text", "is required"));
                }
                if text.chars().count() > MAX_TEXT_CHARS {
                    return Err(invalid_field(
                        "text",
                        format!("must be at most {MAX_TEXT_CHARS} characters"),
                    ));
                }
                Ok(text.to_owned())
            }
            RunChannel::Slack | RunChannel::Whatsapp => {
                let mut text: String = text.chars().take(MAX_TEXT_CHARS).collect();
                if text.is_empty() && input.attachments.is_empty() {
                    text = "[The customer sent an empty message.]".to_owned();
                }
                Ok(text)
            }
        }
    }

    pub async fn run(&self, input: RunInput) -> Result<RunOutput, Status> {
        let text = Self::text_of(&input)?;
        // An API caller's idempotency key is claimed before anything else,
        // so two concurrent requests with it make one provider call: the
        // second waits for the first's answer. A channel message needs no
        // claim: its queue hands one message to one handler at a time.
        let claim = match (input.channel, input.request_id.as_deref()) {
            (RunChannel::Api, Some(key)) if !key.is_empty() => {
                match self.claim(&input, key).await? {
                    Claimed::Answered(output) => return Ok(output),
                    Claimed::Ours => Some(key.to_owned()),
                }
            }
            _ => None,
        };
        let result = self.run_claimed(&input, text).await;
        if let (Err(_), Some(key)) = (&result, claim) {
            // No answer was recorded: a retry with the key may run again.
            self.release(&input, &key).await;
        }
        result
    }

    /// Waits for the key's claim or its answer, as long as a run may take.
    async fn claim(&self, input: &RunInput, key: &str) -> Result<Claimed, Status> {
        let give_up = tokio::time::Instant::now() + CLAIM_LEASE;
        loop {
            let mut tx = begin_tenant(&self.db, input.tenant)
                .await
                .map_err(|e| db_error(&e))?;
            if let Some(answered) = conversations::by_request(&mut tx, input.agent, key)
                .await
                .map_err(|e| db_error(&e))?
            {
                tx.commit().await.map_err(|e| db_error(&e))?;
                return Ok(Claimed::Answered(answered.into()));
            }
            let until = chrono::Utc::now()
                + chrono::Duration::from_std(CLAIM_LEASE).unwrap_or(chrono::Duration::MAX);
            let ours = conversations::claim(&mut tx, input.tenant, input.agent, key, until)
                .await
                .map_err(|e| db_error(&e))?;
            tx.commit().await.map_err(|e| db_error(&e))?;
            if ours {
                return Ok(Claimed::Ours);
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(ErrorCode::Conflict
                    .status("a run with this Idempotency-Key is still in progress; retry later"));
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }

    async fn release(&self, input: &RunInput, key: &str) {
        let released = async {
            let mut tx = begin_tenant(&self.db, input.tenant).await?;
            conversations::release(&mut tx, input.agent, key).await?;
            tx.commit().await
        };
        if let Err(e) = released.await {
            // The claim lapses on its own after CLAIM_LEASE.
            tracing::warn!(error = %e, "releasing a run's idempotency claim failed");
        }
    }

    async fn run_claimed(&self, input: &RunInput, text: String) -> Result<RunOutput, Status> {
        let input = input.clone();
        let request_id = input.request_id.as_deref().filter(|r| !r.is_empty());

        // A repeated request's first answer, the conversation and its
        // history; then let go of the database.
        let mut tx = begin_tenant(&self.db, input.tenant)
            .await
            .map_err(|e| db_error(&e))?;
        if let Some(key) = request_id
            && let Some(answered) = conversations::by_request(&mut tx, input.agent, key)
                .await
                .map_err(|e| db_error(&e))?
        {
            return Ok(answered.into());
        }
        let (conversation_id, conversation) = match &input.conversation {
            // Known before the call, so usage is attributed to it.
            ConversationRef::New => (Uuid::now_v7(), None),
            ConversationRef::Existing(id) => {
                let conversation = conversations::get(&mut tx, *id)
                    .await
                    .map_err(|e| db_error(&e))?
                    .filter(|c| c.agent_id == input.agent)
                    .ok_or_else(|| ErrorCode::NotFound.status("conversation not found"))?;
                (*id, Some(conversation))
            }
            ConversationRef::Channel(key) => {
                let id = channel_conversation_id(input.tenant, input.agent, key);
                let conversation = conversations::get(&mut tx, id)
                    .await
                    .map_err(|e| db_error(&e))?;
                (id, conversation)
            }
        };
        let history = self
            .history(&mut tx, conversation.as_ref())
            .await
            .map_err(|e| db_error(&e))?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        let mut context = Context {
            conversation_id,
            version: conversation.as_ref().map_or(0, |c| c.message_count),
            history,
            recorded_text: with_attachment_notes(&text, &input.attachments),
        };
        let traceparent = input.traceparent.as_deref();

        let config = self
            .agents
            .clone()
            .get_runtime_config(self.as_llm(traceparent)?.request(GetRuntimeConfigRequest {
                tenant_id: input.tenant.to_string(),
                agent_id: input.agent.to_string(),
                channel: input.channel.proto().into(),
            }))
            .await;
        let config = match config {
            Ok(config) => config.into_inner(),
            Err(status) if ErrorCode::of_status(&status) == ErrorCode::NotFound => {
                return self
                    .refuse(&input, &context, Refusal::AgentNotFound, status)
                    .await;
            }
            Err(status) => return Err(status),
        };
        let agent = config
            .agent
            .ok_or_else(|| ErrorCode::Internal.status("agent-svc returned no agent"))?;
        if !agent.active {
            let status = ErrorCode::FailedPrecondition
                .status("the agent is inactive; activate it to run it");
            return self
                .refuse(&input, &context, Refusal::AgentInactive, status)
                .await;
        }
        let Some((provider, model)) = split_model(&agent.model) else {
            let status =
                ErrorCode::FailedPrecondition.status("the agent's model is not `provider/model`");
            return self
                .refuse(&input, &context, Refusal::AgentMisconfigured, status)
                .await;
        };
        let key = self
            .billing
            .clone()
            .get_llm_key_secret(self.as_llm(traceparent)?.request(GetLlmKeySecretRequest {
                tenant_id: input.tenant.to_string(),
                provider: provider.to_owned(),
            }))
            .await;
        let key = match key {
            Ok(key) => key.into_inner(),
            Err(status) if ErrorCode::of_status(&status) == ErrorCode::NotFound => {
                let status = ErrorCode::FailedPrecondition.status(format!(
                    "the tenant has no {provider} key: add one under LLM keys"
                ));
                return self
                    .refuse(&input, &context, Refusal::NoLlmKey, status)
                    .await;
            }
            Err(status) => return Err(status),
        };

        let mut parts = Vec::with_capacity(1 + input.attachments.len());
        if !text.is_empty() {
            parts.push(Part::Text(text.clone()));
        }
        for attachment in &input.attachments {
            let url = self
                .media
                .clone()
                .get_download_url(self.as_llm(traceparent)?.request(GetDownloadUrlRequest {
                    id: attachment.media_id.to_string(),
                    expires_in_seconds: ATTACHMENT_URL_SECS,
                    tenant_id: input.tenant.to_string(),
                }))
                .await?
                .into_inner()
                .url;
            parts.push(attachment_part(
                &agent.model,
                attachment.kind,
                &url,
                &attachment.filename,
                &attachment.caption,
            ));
        }
        let mut messages: Vec<Message> = memory::fit(&context.history, memory::HISTORY_TOKENS)
            .iter()
            .map(|turn| match turn.role.as_str() {
                "assistant" => Message::assistant(turn.text.clone()),
                _ => Message::user(turn.text.clone()),
            })
            .collect();
        let mut current = Message::user(String::new());
        current.parts = parts;
        messages.push(current);
        let request = ChatRequest {
            model: model.to_owned(),
            system: config.system_prompt,
            messages,
            tools: vec![],
            max_tokens: MAX_OUTPUT_TOKENS,
        };
        let prompt_chars = request.system.len()
            + request
                .messages
                .iter()
                .map(|m| m.text().len())
                .sum::<usize>();
        let max_cost = self.prices.max_cost(
            &agent.model,
            estimate_tokens(prompt_chars),
            MAX_OUTPUT_TOKENS,
        );

        let reservation = match self
            .budget
            .reserve(input.tenant, input.agent, max_cost)
            .await
        {
            Ok(reservation) => reservation,
            Err(BudgetError::Exceeded) => {
                let status = ErrorCode::ResourceExhausted.status("the agent's budget is spent");
                return self
                    .refuse(&input, &context, Refusal::BudgetExceeded, status)
                    .await;
            }
            Err(e) => {
                return Err(ErrorCode::Unavailable.status(format!("budget check failed: {e}")));
            }
        };
        let call_id = Uuid::now_v7().to_string();
        // The call and its settlement run as their own task: a caller that
        // gives up (deadline, disconnect) must not strand the reservation,
        // whose lease would otherwise never close.
        let call = {
            let (providers, budget, prices) = (
                self.providers.clone(),
                self.budget.clone(),
                self.prices.clone(),
            );
            let (provider, model_name) = (provider.to_owned(), agent.model.clone());
            let key = ProviderKey {
                api_key: key.api_key.into(),
                base_url: Some(key.base_url).filter(|b| !b.is_empty()),
            };
            tokio::spawn(async move {
                let answer = providers.chat(&provider, &key, &request).await;
                let (usage, cost, result) = match answer {
                    Ok(response) => {
                        let cost = prices.cost(&model_name, response.usage);
                        (response.usage, cost, Ok(response.text))
                    }
                    Err(e) => (TokenUsage::default(), 0, Err(e)),
                };
                // Settled even when the call failed: the reservation is released.
                budget
                    .settle(
                        reservation,
                        Usage {
                            call_id,
                            conversation_id: Some(conversation_id),
                            model: model_name,
                            prompt_tokens: usage.prompt_tokens,
                            completion_tokens: usage.completion_tokens,
                            cost,
                        },
                    )
                    .await;
                (usage, cost, result)
            })
        };
        let (usage, cost, result) = call
            .await
            .map_err(|e| mesh_kit::error::internal("the provider call task", &e))?;
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(tenant = %input.tenant, agent = %input.agent, error = %e, "provider call failed");
                return self
                    .refuse(
                        &input,
                        &context,
                        Refusal::of_provider(&e),
                        provider_status(&e),
                    )
                    .await;
            }
        };
        let recorded_text = std::mem::take(&mut context.recorded_text);
        self.record(
            &input,
            &mut context,
            &Exchange {
                user_text: &recorded_text,
                reply: &reply,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cost_nanos: cost,
                request_id,
                refusal_reason: "",
            },
        )
        .await
    }

    /// The answer already recorded for `request_id`, if any.
    pub async fn answered(
        &self,
        tenant: Uuid,
        agent: Uuid,
        request_id: &str,
    ) -> Result<Option<RunOutput>, Status> {
        let mut tx = begin_tenant(&self.db, tenant)
            .await
            .map_err(|e| db_error(&e))?;
        let answered = conversations::by_request(&mut tx, agent, request_id)
            .await
            .map_err(|e| db_error(&e))?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        Ok(answered.map(Into::into))
    }

    /// The conversation's recent turns: the memory window when it is
    /// current, else PostgreSQL (and the window is rebuilt).
    async fn history(
        &self,
        tx: &mut sqlx::PgConnection,
        conversation: Option<&Conversation>,
    ) -> Result<Vec<Turn>, sqlx::Error> {
        let Some(conversation) = conversation else {
            return Ok(Vec::new());
        };
        if let Some(turns) = self
            .memory
            .load(conversation.id, conversation.message_count)
            .await
        {
            return Ok(turns);
        }
        let turns = conversations::recent(
            tx,
            conversation.id,
            i64::try_from(memory::WINDOW_TURNS).unwrap_or(i64::MAX),
        )
        .await?;
        self.memory
            .store(conversation.id, conversation.message_count, &turns)
            .await;
        Ok(turns)
    }

    /// Answers without a model: an API caller gets the error (a spent
    /// budget excepted, which is a polite answer for everyone); a channel
    /// customer gets a polite answer with the reason recorded.
    async fn refuse(
        &self,
        input: &RunInput,
        context: &Context,
        refusal: Refusal,
        status: Status,
    ) -> Result<RunOutput, Status> {
        if input.channel == RunChannel::Api && refusal != Refusal::BudgetExceeded {
            return Err(status);
        }
        tracing::info!(
            tenant = %input.tenant, agent = %input.agent, reason = refusal.reason(),
            detail = status.message(), "answered without a model"
        );
        let recorded_text = context.recorded_text.clone();
        let mut context = Context {
            conversation_id: context.conversation_id,
            version: context.version,
            history: context.history.clone(),
            recorded_text: String::new(),
        };
        self.record(
            input,
            &mut context,
            &Exchange {
                user_text: &recorded_text,
                reply: refusal.reply(),
                prompt_tokens: 0,
                completion_tokens: 0,
                cost_nanos: 0,
                request_id: input.request_id.as_deref().filter(|r| !r.is_empty()),
                refusal_reason: refusal.reason(),
            },
        )
        .await
    }

    /// The conversation row to append to, locked until `tx` commits.
    async fn open(
        &self,
        tx: &mut sqlx::PgConnection,
        input: &RunInput,
        conversation_id: Uuid,
    ) -> Result<Conversation, Status> {
        match &input.conversation {
            ConversationRef::New => conversations::create(
                tx,
                conversation_id,
                input.tenant,
                input.agent,
                input.channel.as_str(),
            )
            .await
            .map_err(|e| db_error(&e)),
            ConversationRef::Existing(id) => conversations::get_for_update(tx, *id)
                .await
                .map_err(|e| db_error(&e))?
                .ok_or_else(|| ErrorCode::NotFound.status("conversation not found")),
            ConversationRef::Channel(key) => conversations::open_external(
                tx,
                conversation_id,
                input.tenant,
                input.agent,
                input.channel.as_str(),
                key,
            )
            .await
            .map_err(|e| db_error(&e)),
        }
    }

    /// Writes the exchange (creating the conversation on its first run) and
    /// moves the memory window forward.
    async fn record(
        &self,
        input: &RunInput,
        context: &mut Context,
        exchange: &Exchange<'_>,
    ) -> Result<RunOutput, Status> {
        let mut tx = begin_tenant(&self.db, input.tenant)
            .await
            .map_err(|e| db_error(&e))?;
        let conversation = self.open(&mut tx, input, context.conversation_id).await?;
        // Under the conversation's lock: a run that lost its claim (it took
        // longer than the lease) must not record a second answer.
        if let Some(key) = exchange.request_id
            && let Some(answered) = conversations::by_request(&mut tx, input.agent, key)
                .await
                .map_err(|e| db_error(&e))?
        {
            tx.commit().await.map_err(|e| db_error(&e))?;
            return Ok(answered.into());
        }
        conversations::append(&mut tx, &conversation, exchange)
            .await
            .map_err(|e| db_error(&e))?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        // The window extends only the history this run read; if another
        // run wrote in between, the next run rebuilds it instead.
        if conversation.message_count == context.version {
            let mut turns = std::mem::take(&mut context.history);
            turns.push(Turn {
                role: "user".into(),
                text: exchange.user_text.to_owned(),
            });
            turns.push(Turn {
                role: "assistant".into(),
                text: exchange.reply.to_owned(),
            });
            self.memory
                .store(conversation.id, conversation.message_count + 2, &turns)
                .await;
        } else {
            self.memory.forget(conversation.id).await;
        }
        tracing::info!(
            tenant = %input.tenant, agent = %input.agent, conversation = %conversation.id,
            channel = input.channel.as_str(), cost = %format_usd(exchange.cost_nanos),
            refusal_reason = exchange.refusal_reason, "agent run"
        );
        Ok(RunOutput {
            conversation: conversation.id,
            reply: exchange.reply.to_owned(),
            prompt_tokens: exchange.prompt_tokens,
            completion_tokens: exchange.completion_tokens,
            cost_nanos: exchange.cost_nanos,
            refusal_reason: exchange.refusal_reason.to_owned(),
        })
    }

    /// Records a channel message that gets no answer, once; returns false
    /// when it was recorded before.
    pub async fn record_unanswered(&self, input: &RunInput, reason: &str) -> Result<bool, Status> {
        let ConversationRef::Channel(_) = &input.conversation else {
            return Err(ErrorCode::Internal.status("only channel messages go unanswered"));
        };
        let request_id = input
            .request_id
            .as_deref()
            .ok_or_else(|| ErrorCode::Internal.status("a channel message without its id"))?;
        let mut tx = begin_tenant(&self.db, input.tenant)
            .await
            .map_err(|e| db_error(&e))?;
        if conversations::recorded(&mut tx, input.agent, request_id)
            .await
            .map_err(|e| db_error(&e))?
        {
            return Ok(false);
        }
        let id = match &input.conversation {
            ConversationRef::Channel(key) => {
                channel_conversation_id(input.tenant, input.agent, key)
            }
            ConversationRef::New | ConversationRef::Existing(_) => Uuid::nil(),
        };
        let conversation = self.open(&mut tx, input, id).await?;
        let text = with_attachment_notes(input.text.trim(), &input.attachments);
        conversations::append_unanswered(&mut tx, &conversation, &text, request_id, reason)
            .await
            .map_err(|e| db_error(&e))?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        // The window is now one message behind: the next run rebuilds it.
        self.memory.forget(conversation.id).await;
        Ok(true)
    }
}

/// The customer's text as history keeps it: presigned URLs expire, so the
/// files are named, not linked.
fn with_attachment_notes(text: &str, attachments: &[AttachmentRef]) -> String {
    let mut recorded = text.to_owned();
    for attachment in attachments {
        let what = match attachment.kind {
            AttachmentKind::Image => "an image",
            AttachmentKind::Document => "a document",
            AttachmentKind::Audio => "an audio message",
            AttachmentKind::Video => "a video",
        };
        if !recorded.is_empty() {
            recorded.push('\n');
        }
        if attachment.filename.is_empty() {
            recorded.push_str(&format!("[sent {what}]"));
        } else {
            recorded.push_str(&format!("[sent {what}: {}]", attachment.filename));
        }
    }
    recorded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_conversations_have_stable_ids_per_agent() {
        let (t, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let key = "whatsapp:123:456";
        assert_eq!(
            channel_conversation_id(t, a, key),
            channel_conversation_id(t, a, key)
        );
        assert_ne!(
            channel_conversation_id(t, a, key),
            channel_conversation_id(t, b, key)
        );
        assert_ne!(
            channel_conversation_id(t, a, key),
            channel_conversation_id(t, a, "whatsapp:123:457")
        );
    }

    #[test]
    fn history_names_files_without_links() {
        let attachment = |kind, filename: &str| AttachmentRef {
            kind,
            media_id: Uuid::nil(),
            filename: filename.into(),
            caption: String::new(),
        };
        assert_eq!(
            with_attachment_notes(
                "see this",
                &[
                    attachment(AttachmentKind::Image, ""),
                    attachment(AttachmentKind::Document, "a.pdf")
                ]
            ),
            "see this\n[sent an image]\n[sent a document: a.pdf]"
        );
        assert_eq!(with_attachment_notes("hi", &[]), "hi");
    }

    #[test]
    fn every_refusal_has_a_reason_and_a_polite_reply() {
        for refusal in [
            Refusal::BudgetExceeded,
            Refusal::AgentInactive,
            Refusal::AgentNotFound,
            Refusal::AgentMisconfigured,
            Refusal::NoLlmKey,
            Refusal::ProviderRejectedKey,
            Refusal::ProviderRejectedRequest,
            Refusal::ProviderRateLimited,
            Refusal::ProviderUnavailable,
        ] {
            assert!(!refusal.reason().is_empty());
            assert!(refusal.reply().starts_with("I'm sorry"));
        }
    }
}
