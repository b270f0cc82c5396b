//! The tonic adapters of billing-svc: decode, authorize, call the domain, encode.
//!
//! RPCs of features not built yet answer UNIMPLEMENTED through the generated
//! default methods.

use std::sync::Arc;

use crewmesh_proto::billing::v1::{
    BudgetState as ProtoBudgetState, CheckAgentQuotaRequest, CheckAgentQuotaResponse,
    ConversationCost, CreateCheckoutSessionRequest, CreateCheckoutSessionResponse,
    CreateLlmKeyRequest, CreateLlmKeyResponse, CreatePortalSessionRequest,
    CreatePortalSessionResponse, DeleteLlmKeyRequest, DeleteLlmKeyResponse, GetBudgetStatusRequest,
    GetBudgetStatusResponse, GetLlmKeySecretRequest, GetLlmKeySecretResponse,
    GetSubscriptionRequest, GetSubscriptionResponse, GetUsageSeriesRequest, GetUsageSeriesResponse,
    HandleStripeEventRequest, HandleStripeEventResponse, LeaseBudgetRequest, LeaseBudgetResponse,
    ListConversationCostsRequest, ListConversationCostsResponse, ListLlmKeysRequest,
    ListLlmKeysResponse, LlmKey as ProtoLlmKey, RegisterTenantRequest, RegisterTenantResponse,
    RejectedUsage, SetAgentBudgetRequest, SetAgentBudgetResponse, SettleUsageRequest,
    SettleUsageResponse, Subscription, UsagePoint,
    billing_internal_service_server::BillingInternalService,
    billing_service_server::BillingService,
};
use keyring::Keyring;
use mesh_kit::wire::{format_usd, from_timestamp, parse_id, parse_opt_id, parse_usd, timestamp};
use mesh_kit::{Role, ServiceId, auth::UserCaller, error::invalid_field, server::caller};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    budget::Budgets,
    llm_keys::{self, LlmKey},
    stripe_api::{StripeApi, StripeApiError},
    subscriptions::{self, Outcome, TenantBilling},
    usage::{self, BudgetState, UsageEvent},
};

/// Roles that manage a tenant's keys and billing: platform staff and its customer admins.
const ADMINS: &[Role] = &[Role::PlatformAdmin, Role::CustomerAdmin];

#[derive(Debug, Clone)]
pub struct BillingApi {
    pub db: PgPool,
    pub budgets: Budgets,
    pub keyring: Arc<Keyring>,
    pub stripe: Option<StripeApi>,
    /// Where a tenant's base URL may point (`CREWMESH_EGRESS_ALLOW`).
    pub egress: mesh_kit::egress::EgressPolicy,
    /// Which plan each Stripe price is.
    pub plan_prices: subscriptions::PlanPrices,
}

impl BillingApi {
    fn stripe(&self) -> Result<&StripeApi, Status> {
        self.stripe
            .as_ref()
            .ok_or_else(|| StripeApiError::NotConfigured.into())
    }
}

/// The tenant a request acts on, from an optional `tenant_id` field.
fn tenant(user: &UserCaller, tenant_id: &str) -> Result<Uuid, Status> {
    user.tenant_scope(parse_opt_id("tenant_id", tenant_id)?)
}

fn proto_key(key: LlmKey) -> ProtoLlmKey {
    ProtoLlmKey {
        id: key.id.to_string(),
        tenant_id: key.tenant_id.to_string(),
        provider: key.provider,
        key_hint: key.key_hint,
        base_url: key.base_url.unwrap_or_default(),
        created_at: Some(timestamp(key.created_at)),
    }
}

fn amount(field: &'static str, text: &str) -> Result<i64, Status> {
    parse_usd(text).map_err(|e| invalid_field(field, e.to_string()))
}

fn proto_subscription(state: TenantBilling) -> Subscription {
    Subscription {
        tenant_id: state.tenant_id.to_string(),
        stripe_customer_id: state.stripe_customer_id.unwrap_or_default(),
        status: state.subscription_status,
        plan: state.plan,
        agent_quota: state.agent_quota,
        trial_ends_at: state.trial_ends_at.map(timestamp),
    }
}

/// Usage and budget status: every role of the tenant may read them.
const READERS: &[Role] = &Role::ALL;

#[tonic::async_trait]
impl BillingService for BillingApi {
    async fn get_budget_status(
        &self,
        request: Request<GetBudgetStatusRequest>,
    ) -> Result<Response<GetBudgetStatusResponse>, Status> {
        let user = caller(&request)?.require_role(READERS)?;
        let req = request.get_ref();
        let tenant = tenant(user, &req.tenant_id)?;
        let agent = parse_id("agent_id", &req.agent_id)?;
        let status = usage::budget_status(&self.db, tenant, agent).await?;
        let state = match status.state {
            BudgetState::Ok => ProtoBudgetState::Ok,
            BudgetState::Warning => ProtoBudgetState::Warning,
            BudgetState::Exceeded => ProtoBudgetState::Exceeded,
        };
        Ok(Response::new(GetBudgetStatusResponse {
            limit_usd: format_usd(status.limit),
            spent_usd: format_usd(status.spent),
            state: state.into(),
        }))
    }

    async fn get_usage_series(
        &self,
        request: Request<GetUsageSeriesRequest>,
    ) -> Result<Response<GetUsageSeriesResponse>, Status> {
        let user = caller(&request)?.require_role(READERS)?;
        let req = request.get_ref();
        let tenant = tenant(user, &req.tenant_id)?;
        let now = chrono::Utc::now();
        let until = from_timestamp("until", req.until)?.unwrap_or(now);
        let since =
            from_timestamp("since", req.since)?.unwrap_or(until - chrono::Duration::days(30));
        let days = usage::daily(&self.db, tenant, since, until).await?;
        Ok(Response::new(GetUsageSeriesResponse {
            points: days
                .into_iter()
                .map(|d| UsagePoint {
                    day: d.day.to_string(),
                    prompt_tokens: d.prompt_tokens,
                    completion_tokens: d.completion_tokens,
                    cost_usd: format_usd(d.cost_nanos),
                })
                .collect(),
        }))
    }

    async fn list_conversation_costs(
        &self,
        request: Request<ListConversationCostsRequest>,
    ) -> Result<Response<ListConversationCostsResponse>, Status> {
        let user = caller(&request)?.require_role(READERS)?;
        let req = request.get_ref();
        let tenant = tenant(user, &req.tenant_id)?;
        let page_size = match req.page_size {
            n if n <= 0 => 100,
            n => i64::from(n).min(1000),
        };
        let after = parse_opt_id("page_token", &req.page_token)?;
        let mut rows = usage::conversation_costs(&self.db, tenant, page_size + 1, after).await?;
        let next = if rows.len() as i64 > page_size {
            rows.truncate(page_size as usize);
            rows.last().map(|r| r.conversation_id.to_string())
        } else {
            None
        };
        Ok(Response::new(ListConversationCostsResponse {
            costs: rows
                .into_iter()
                .map(|r| ConversationCost {
                    conversation_id: r.conversation_id.to_string(),
                    agent_id: r.agent_id.to_string(),
                    prompt_tokens: r.prompt_tokens,
                    completion_tokens: r.completion_tokens,
                    cost_usd: format_usd(r.cost_nanos),
                    calls: r.calls,
                    last_call_at: Some(timestamp(r.last_call_at)),
                })
                .collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn create_checkout_session(
        &self,
        request: Request<CreateCheckoutSessionRequest>,
    ) -> Result<Response<CreateCheckoutSessionResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let req = request.get_ref();
        let tenant = tenant(user, &req.tenant_id)?;
        let request_id = request
            .metadata()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let url = self
            .stripe()?
            .checkout(
                &self.db,
                tenant,
                &req.plan,
                &req.success_url,
                &req.cancel_url,
                request_id,
            )
            .await?;
        Ok(Response::new(CreateCheckoutSessionResponse { url }))
    }

    async fn create_portal_session(
        &self,
        request: Request<CreatePortalSessionRequest>,
    ) -> Result<Response<CreatePortalSessionResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let req = request.get_ref();
        let tenant = tenant(user, &req.tenant_id)?;
        let url = self
            .stripe()?
            .portal(&self.db, tenant, &req.return_url)
            .await?;
        Ok(Response::new(CreatePortalSessionResponse { url }))
    }

    async fn get_subscription(
        &self,
        request: Request<GetSubscriptionRequest>,
    ) -> Result<Response<GetSubscriptionResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let tenant = tenant(user, &request.get_ref().tenant_id)?;
        let state = subscriptions::get(&self.db, tenant).await?;
        Ok(Response::new(GetSubscriptionResponse {
            subscription: Some(proto_subscription(state)),
        }))
    }

    async fn list_llm_keys(
        &self,
        request: Request<ListLlmKeysRequest>,
    ) -> Result<Response<ListLlmKeysResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let tenant = tenant(user, &request.get_ref().tenant_id)?;
        let keys = llm_keys::list(&self.db, tenant).await?;
        Ok(Response::new(ListLlmKeysResponse {
            keys: keys.into_iter().map(proto_key).collect(),
        }))
    }

    async fn create_llm_key(
        &self,
        request: Request<CreateLlmKeyRequest>,
    ) -> Result<Response<CreateLlmKeyResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let req = request.get_ref();
        let tenant = tenant(user, &req.tenant_id)?;
        let base_url = Some(req.base_url.as_str()).filter(|u| !u.is_empty());
        let key = llm_keys::create(
            &self.db,
            &self.keyring,
            &self.egress,
            tenant,
            &req.provider,
            &req.api_key,
            base_url,
        )
        .await?;
        tracing::info!(%tenant, provider = %key.provider, "LLM key stored");
        Ok(Response::new(CreateLlmKeyResponse {
            key: Some(proto_key(key)),
        }))
    }

    async fn delete_llm_key(
        &self,
        request: Request<DeleteLlmKeyRequest>,
    ) -> Result<Response<DeleteLlmKeyResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let tenant = match user.role {
            Role::PlatformAdmin => llm_keys::tenant_of(&self.db, id).await?,
            Role::CustomerAdmin | Role::Operator => user.tenant_scope(None)?,
        };
        llm_keys::delete(&self.db, tenant, id).await?;
        Ok(Response::new(DeleteLlmKeyResponse {}))
    }
}

#[tonic::async_trait]
impl BillingInternalService for BillingApi {
    async fn set_agent_budget(
        &self,
        request: Request<SetAgentBudgetRequest>,
    ) -> Result<Response<SetAgentBudgetResponse>, Status> {
        caller(&request)?.require_service(&[ServiceId::Agent])?;
        let req = request.get_ref();
        let tenant = parse_id("tenant_id", &req.tenant_id)?;
        let agent = parse_id("agent_id", &req.agent_id)?;
        let limit = amount("limit_usd", &req.limit_usd)?;
        self.budgets.set_limit(tenant, agent, limit).await?;
        Ok(Response::new(SetAgentBudgetResponse {}))
    }

    async fn lease_budget(
        &self,
        request: Request<LeaseBudgetRequest>,
    ) -> Result<Response<LeaseBudgetResponse>, Status> {
        caller(&request)?.require_service(&[ServiceId::Llm])?;
        let req = request.get_ref();
        let tenant = parse_id("tenant_id", &req.tenant_id)?;
        let agent = parse_id("agent_id", &req.agent_id)?;
        let requested = amount("requested_usd", &req.requested_usd)?;
        let lease = self
            .budgets
            .lease(tenant, agent, &req.lease_id, requested)
            .await?;
        Ok(Response::new(LeaseBudgetResponse {
            granted_usd: format_usd(lease.granted),
            remaining_usd: format_usd(lease.remaining.max(0)),
            expires_at_unix: lease.expires_at,
        }))
    }

    async fn settle_usage(
        &self,
        request: Request<SettleUsageRequest>,
    ) -> Result<Response<SettleUsageResponse>, Status> {
        caller(&request)?.require_service(&[ServiceId::Llm])?;
        let req = request.into_inner();
        // An event that cannot even be read is set aside like an invalid
        // one: the rest of the batch must still be recorded.
        let mut events = Vec::with_capacity(req.events.len());
        let mut unreadable = Vec::new();
        for e in req.events {
            let parsed = (|| {
                Ok::<_, Status>(UsageEvent {
                    tenant_id: parse_id("tenant_id", &e.tenant_id)?,
                    agent_id: parse_id("agent_id", &e.agent_id)?,
                    conversation_id: parse_opt_id("conversation_id", &e.conversation_id)?,
                    cost_nanos: amount("cost_usd", &e.cost_usd)?,
                    call_id: e.call_id.clone(),
                    model: e.model.clone(),
                    prompt_tokens: e.prompt_tokens,
                    completion_tokens: e.completion_tokens,
                })
            })();
            match parsed {
                Ok(event) => events.push(event),
                Err(status) => {
                    tracing::warn!(call = %e.call_id, reason = status.message(), "usage event set aside");
                    unreadable.push(RejectedUsage {
                        call_id: e.call_id,
                        reason: status.message().to_owned(),
                    });
                }
            }
        }
        let mut closed = Vec::with_capacity(req.closed_leases.len());
        for c in req.closed_leases {
            match (
                parse_id("tenant_id", &c.tenant_id),
                parse_id("agent_id", &c.agent_id),
            ) {
                (Ok(tenant), Ok(agent)) => closed.push((tenant, agent, c.lease_id)),
                // Unreadable: it lapses on its own after the lease time.
                _ => tracing::warn!(lease = %c.lease_id, "closed lease with malformed ids ignored"),
            }
        }
        let settled = self.budgets.settle(&events, &closed).await?;
        let mut rejected = unreadable;
        rejected.extend(
            settled
                .rejected
                .into_iter()
                .map(|(call_id, reason)| RejectedUsage { call_id, reason }),
        );
        Ok(Response::new(SettleUsageResponse {
            recorded: i32::try_from(settled.recorded).unwrap_or(i32::MAX),
            duplicates: i32::try_from(settled.duplicates).unwrap_or(i32::MAX),
            rejected,
        }))
    }

    async fn register_tenant(
        &self,
        request: Request<RegisterTenantRequest>,
    ) -> Result<Response<RegisterTenantResponse>, Status> {
        caller(&request)?.require_service(&[ServiceId::Identity])?;
        let tenant = parse_id("tenant_id", &request.get_ref().tenant_id)?;
        subscriptions::get(&self.db, tenant).await?;
        Ok(Response::new(RegisterTenantResponse {}))
    }

    async fn check_agent_quota(
        &self,
        request: Request<CheckAgentQuotaRequest>,
    ) -> Result<Response<CheckAgentQuotaResponse>, Status> {
        caller(&request)?.require_service(&[ServiceId::Agent])?;
        let req = request.get_ref();
        let tenant = parse_id("tenant_id", &req.tenant_id)?;
        if req.current_agents < 0 {
            return Err(invalid_field("current_agents", "must not be negative"));
        }
        let state = subscriptions::get(&self.db, tenant).await?;
        let decision = subscriptions::decide(&state, req.current_agents, chrono::Utc::now());
        Ok(Response::new(CheckAgentQuotaResponse {
            allowed: decision.allowed,
            agent_quota: decision.agent_quota,
            reason: decision.reason.unwrap_or_default(),
        }))
    }

    async fn handle_stripe_event(
        &self,
        request: Request<HandleStripeEventRequest>,
    ) -> Result<Response<HandleStripeEventResponse>, Status> {
        // The gateway verified the signature on the raw body; only it may hand events over.
        caller(&request)?.require_service(&[ServiceId::Gateway])?;
        let outcome = subscriptions::handle_stripe_event(
            &self.db,
            &self.plan_prices,
            &request.get_ref().payload,
        )
        .await?;
        Ok(Response::new(HandleStripeEventResponse {
            duplicate: outcome == Outcome::Duplicate,
        }))
    }

    async fn get_llm_key_secret(
        &self,
        request: Request<GetLlmKeySecretRequest>,
    ) -> Result<Response<GetLlmKeySecretResponse>, Status> {
        caller(&request)?.require_service(&[ServiceId::Llm])?;
        let req = request.get_ref();
        let tenant = parse_id("tenant_id", &req.tenant_id)?;
        let secret = llm_keys::secret(&self.db, &self.keyring, tenant, &req.provider).await?;
        Ok(Response::new(GetLlmKeySecretResponse {
            api_key: secret.api_key,
            base_url: secret.base_url.unwrap_or_default(),
        }))
    }
}
