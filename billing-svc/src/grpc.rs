//! The tonic adapters of billing-svc: decode, authorize, call the domain, encode.
//!
//! RPCs of features not built yet answer UNIMPLEMENTED through the generated
//! default methods.

use std::sync::Arc;

use crewmesh_proto::billing::v1::{
    CreateLlmKeyRequest, CreateLlmKeyResponse, DeleteLlmKeyRequest, DeleteLlmKeyResponse,
    GetLlmKeySecretRequest, GetLlmKeySecretResponse, ListLlmKeysRequest, ListLlmKeysResponse,
    LlmKey as ProtoLlmKey, billing_internal_service_server::BillingInternalService,
    billing_service_server::BillingService,
};
use keyring::Keyring;
use mesh_kit::{Role, ServiceId, auth::UserCaller, error::invalid_field, server::caller};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::llm_keys::{self, LlmKey};

/// Roles that manage a tenant's keys and billing: platform staff and its customer admins.
const ADMINS: &[Role] = &[Role::PlatformAdmin, Role::CustomerAdmin];

#[derive(Debug, Clone)]
pub struct BillingApi {
    pub db: PgPool,
    pub keyring: Arc<Keyring>,
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

#[tonic::async_trait]
impl BillingService for BillingApi {
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
