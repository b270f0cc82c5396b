//! The tonic adapters of billing-svc: decode, authorize, call the domain, encode.
//!
//! RPCs of features not built yet answer UNIMPLEMENTED through the generated
//! default methods.

use std::sync::Arc;

use crewmesh_proto::billing::v1::{
    CheckAgentQuotaRequest, CheckAgentQuotaResponse, CreateCheckoutSessionRequest,
    CreateCheckoutSessionResponse, CreateLlmKeyRequest, CreateLlmKeyResponse,
    CreatePortalSessionRequest, CreatePortalSessionResponse, DeleteLlmKeyRequest,
    DeleteLlmKeyResponse, GetLlmKeySecretRequest, GetLlmKeySecretResponse, GetSubscriptionRequest,
    GetSubscriptionResponse, HandleStripeEventRequest, HandleStripeEventResponse,
    ListLlmKeysRequest, ListLlmKeysResponse, LlmKey as ProtoLlmKey, RegisterTenantRequest,
    RegisterTenantResponse, Subscription, billing_internal_service_server::BillingInternalService,
    billing_service_server::BillingService,
};
use keyring::Keyring;
use mesh_kit::{Role, ServiceId, auth::UserCaller, error::invalid_field, server::caller};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    llm_keys::{self, LlmKey},
    stripe_api::{StripeApi, StripeApiError},
    subscriptions::{self, Outcome, TenantBilling},
};

/// Roles that manage a tenant's keys and billing: platform staff and its customer admins.
const ADMINS: &[Role] = &[Role::PlatformAdmin, Role::CustomerAdmin];

#[derive(Debug, Clone)]
pub struct BillingApi {
    pub db: PgPool,
    pub keyring: Arc<Keyring>,
    pub stripe: Option<StripeApi>,
}

impl BillingApi {
    fn stripe(&self) -> Result<&StripeApi, Status> {
        self.stripe
            .as_ref()
            .ok_or_else(|| StripeApiError::NotConfigured.into())
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn parse_id(field: &str, value: &str) -> Result<Uuid, Status> {
    value
        .parse()
        .map_err(|_| invalid_field(field, "must be a UUID"))
}

/// The tenant a request acts on, from an optional `tenant_id` field.
fn tenant(user: &UserCaller, tenant_id: &str) -> Result<Uuid, Status> {
    let requested = if tenant_id.is_empty() {
        None
    } else {
        Some(parse_id("tenant_id", tenant_id)?)
    };
    user.tenant_scope(requested)
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

#[tonic::async_trait]
impl BillingService for BillingApi {
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
        let outcome =
            subscriptions::handle_stripe_event(&self.db, &request.get_ref().payload).await?;
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
