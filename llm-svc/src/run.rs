//! One agent run (L8): the agent's runtime config and rendered prompt from
//! agent-svc, the tenant's key from billing-svc, the conversation's history,
//! a budget reservation, the provider call, settlement of the real cost, and
//! both messages persisted.
//!
//! No database transaction is held across the provider call: history is
//! read first, and the exchange is written after, under a row lock on the
//! conversation so concurrent runs of one conversation append in order.
//! Tools (L4), escalation (L6) and topics (L7) are not part of a run yet.

use std::sync::Arc;

use crewmesh_proto::{
    agent::v1::{
        Channel as ProtoChannel, GetRuntimeConfigRequest,
        agent_internal_service_client::AgentInternalServiceClient,
    },
    billing::v1::{
        GetLlmKeySecretRequest, billing_internal_service_client::BillingInternalServiceClient,
    },
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
    conversations::{self, Exchange},
    pricing::{PriceTable, estimate_tokens},
    providers::{
        ChatRequest, Message, ProviderError, ProviderKey, Providers, TokenUsage, split_model,
    },
};

/// Turns of history sent with each run.
pub const HISTORY_TURNS: i64 = 20;
/// The most a reply may generate; what the budget reserves for output.
pub const MAX_OUTPUT_TOKENS: u32 = 1024;
/// Longest user message accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 16_000;

/// What the customer hears when the agent's budget is spent.
pub const BUDGET_EXCEEDED_REPLY: &str = "I'm sorry, I can't answer right now. \
    A member of our team has been told and will get back to you.";

#[derive(Debug, Clone)]
pub struct Runner {
    pub db: PgPool,
    pub agents: AgentInternalServiceClient<Channel>,
    pub billing: BillingInternalServiceClient<Channel>,
    pub signer: TokenSigner,
    pub budget: Arc<BudgetClient>,
    pub providers: Providers,
    pub prices: Arc<PriceTable>,
}

#[derive(Debug, Clone)]
pub struct RunInput {
    pub tenant: Uuid,
    pub agent: Uuid,
    pub conversation: Option<Uuid>,
    pub text: String,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    pub conversation: Uuid,
    pub reply: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_nanos: i64,
    /// Why no model was called, when none was.
    pub refusal_reason: String,
}

fn db_error(e: &sqlx::Error) -> Status {
    mesh_kit::error::internal("conversation query failed", e)
}

/// A provider failure as the caller should see it: configuration problems
/// are for an admin to fix (409), outages are worth retrying (503).
fn provider_status(e: &ProviderError) -> Status {
    match e {
        ProviderError::Unauthorized(_)
        | ProviderError::UnknownModel(_)
        | ProviderError::BadRequest(_)
        | ProviderError::NoBaseUrl(_) => ErrorCode::FailedPrecondition.status(e.to_string()),
        ProviderError::RateLimited { .. } => ErrorCode::ResourceExhausted.status(e.to_string()),
        ProviderError::Upstream { .. }
        | ProviderError::Timeout(_)
        | ProviderError::Unreachable(_)
        | ProviderError::InvalidResponse(_) => ErrorCode::Unavailable.status(e.to_string()),
    }
}

impl Runner {
    fn as_llm(&self) -> Result<CallContext, Status> {
        let token = self
            .signer
            .service_token()
            .map_err(|e| mesh_kit::error::internal("signing llm-svc's service token", &e))?;
        Ok(CallContext::new(token, None))
    }

    pub async fn run(&self, input: RunInput) -> Result<RunOutput, Status> {
        let text = input.text.trim();
        if text.is_empty() {
            return Err(invalid_field("text", "is required"));
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(invalid_field(
                "text",
                format!("must be at most {MAX_TEXT_CHARS} characters"),
            ));
        }
        let request_id = input.request_id.as_deref().filter(|r| !r.is_empty());
        // Known before the call, so usage is attributed to the conversation (X4).
        let conversation_id = input.conversation.unwrap_or_else(Uuid::now_v7);

        // History (and a repeated request's first answer), then let go of the database.
        let mut tx = begin_tenant(&self.db, input.tenant)
            .await
            .map_err(|e| db_error(&e))?;
        if let Some(key) = request_id
            && let Some(answered) = conversations::by_request(&mut tx, key)
                .await
                .map_err(|e| db_error(&e))?
        {
            return Ok(RunOutput {
                conversation: answered.conversation_id,
                reply: answered.text,
                prompt_tokens: answered.prompt_tokens,
                completion_tokens: answered.completion_tokens,
                cost_nanos: answered.cost_nanos,
                refusal_reason: answered.refusal_reason,
            });
        }
        let history = match input.conversation {
            Some(id) => {
                let conversation = conversations::get(&mut tx, id)
                    .await
                    .map_err(|e| db_error(&e))?
                    .filter(|c| c.agent_id == input.agent)
                    .ok_or_else(|| ErrorCode::NotFound.status("conversation not found"))?;
                conversations::recent(&mut tx, conversation.id, HISTORY_TURNS)
                    .await
                    .map_err(|e| db_error(&e))?
            }
            None => Vec::new(),
        };
        tx.commit().await.map_err(|e| db_error(&e))?;

        let config = self
            .agents
            .clone()
            .get_runtime_config(self.as_llm()?.request(GetRuntimeConfigRequest {
                tenant_id: input.tenant.to_string(),
                agent_id: input.agent.to_string(),
                channel: ProtoChannel::Api.into(),
            }))
            .await?
            .into_inner();
        let agent = config
            .agent
            .ok_or_else(|| ErrorCode::Internal.status("agent-svc returned no agent"))?;
        if !agent.active {
            return Err(ErrorCode::FailedPrecondition
                .status("the agent is inactive; activate it to run it"));
        }
        let (provider, model) = split_model(&agent.model).ok_or_else(|| {
            ErrorCode::FailedPrecondition.status("the agent's model is not `provider/model`")
        })?;
        let key = self
            .billing
            .clone()
            .get_llm_key_secret(self.as_llm()?.request(GetLlmKeySecretRequest {
                tenant_id: input.tenant.to_string(),
                provider: provider.to_owned(),
            }))
            .await
            .map_err(|status| match ErrorCode::of_status(&status) {
                ErrorCode::NotFound => ErrorCode::FailedPrecondition.status(format!(
                    "the tenant has no {provider} key: add one under LLM keys"
                )),
                _ => status,
            })?
            .into_inner();

        let mut messages: Vec<Message> = history
            .iter()
            .map(|turn| match turn.role.as_str() {
                "assistant" => Message::assistant(turn.text.clone()),
                _ => Message::user(turn.text.clone()),
            })
            .collect();
        messages.push(Message::user(text));
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
                tracing::info!(tenant = %input.tenant, agent = %input.agent, "budget exceeded; no provider call");
                return self
                    .record(
                        &input,
                        conversation_id,
                        &Exchange {
                            user_text: text,
                            reply: BUDGET_EXCEEDED_REPLY,
                            prompt_tokens: 0,
                            completion_tokens: 0,
                            cost_nanos: 0,
                            request_id,
                            refusal_reason: "budget_exceeded",
                        },
                    )
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
        let reply = result.map_err(|e| {
            tracing::warn!(tenant = %input.tenant, agent = %input.agent, error = %e, "provider call failed");
            provider_status(&e)
        })?;
        self.record(
            &input,
            conversation_id,
            &Exchange {
                user_text: text,
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

    /// Writes the exchange, creating the conversation on its first run.
    async fn record(
        &self,
        input: &RunInput,
        conversation_id: Uuid,
        exchange: &Exchange<'_>,
    ) -> Result<RunOutput, Status> {
        let mut tx = begin_tenant(&self.db, input.tenant)
            .await
            .map_err(|e| db_error(&e))?;
        let conversation = match input.conversation {
            None => {
                conversations::create(&mut tx, conversation_id, input.tenant, input.agent, "api")
                    .await
                    .map_err(|e| db_error(&e))?
            }
            Some(id) => conversations::get_for_update(&mut tx, id)
                .await
                .map_err(|e| db_error(&e))?
                .ok_or_else(|| ErrorCode::NotFound.status("conversation not found"))?,
        };
        conversations::append(&mut tx, &conversation, exchange)
            .await
            .map_err(|e| db_error(&e))?;
        tx.commit().await.map_err(|e| db_error(&e))?;
        tracing::info!(
            tenant = %input.tenant, agent = %input.agent, conversation = %conversation.id,
            cost = %format_usd(exchange.cost_nanos), refusal_reason = exchange.refusal_reason,
            "agent run"
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
}
