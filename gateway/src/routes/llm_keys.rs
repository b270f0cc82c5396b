//! Tenants' LLM provider keys: stored encrypted, listed redacted.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use crewmesh_proto::billing::v1::{
    CreateLlmKeyRequest, DeleteLlmKeyRequest, ListLlmKeysRequest, LlmKey as ProtoLlmKey,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ADMINS, api_keys::TenantQuery, non_empty, rfc3339};
use crate::{
    auth::Authenticated,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    startup::AppState,
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewLlmKey {
    /// The model prefix it serves, e.g. `openai`, `anthropic`, `ollama`.
    #[schema(example = "openai")]
    pub provider: String,
    pub api_key: String,
    /// For OpenAI-compatible servers (Ollama, vLLM, a gateway).
    pub base_url: Option<String>,
    /// Platform admins name the tenant; customer admins store for their own.
    pub tenant_id: Option<String>,
}

/// A stored key, redacted: the last four characters only.
#[derive(Debug, Serialize, ToSchema)]
pub struct LlmKey {
    pub id: String,
    pub tenant_id: String,
    pub provider: String,
    #[schema(example = "x7Qa")]
    pub key_hint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    pub created_at: Option<String>,
}

impl From<ProtoLlmKey> for LlmKey {
    fn from(k: ProtoLlmKey) -> LlmKey {
        LlmKey {
            id: k.id,
            tenant_id: k.tenant_id,
            provider: k.provider,
            key_hint: k.key_hint,
            base_url: non_empty(k.base_url),
            created_at: rfc3339(k.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LlmKeyList {
    pub keys: Vec<LlmKey>,
}

/// Store a provider key (encrypted at rest). One key per provider and tenant.
#[utoipa::path(
    post, path = "/api/v1/llm-keys", tag = "llm-keys",
    security(("bearer" = [])),
    request_body = NewLlmKey,
    responses(
        (status = 201, body = LlmKey),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The tenant already has a key for this provider", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn create_llm_key(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewLlmKey>,
) -> Result<(StatusCode, Json<LlmKey>), ApiError> {
    auth.require(ADMINS)?;
    let created = state
        .billing
        .clone()
        .create_llm_key(auth.call.request(CreateLlmKeyRequest {
            tenant_id: body.tenant_id.unwrap_or_default(),
            provider: body.provider,
            api_key: body.api_key,
            base_url: body.base_url.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let key = created.key.ok_or_else(|| auth.missing("key"))?;
    Ok((StatusCode::CREATED, Json(LlmKey::from(key))))
}

/// List a tenant's provider keys, redacted.
#[utoipa::path(
    get, path = "/api/v1/llm-keys", tag = "llm-keys",
    security(("bearer" = [])),
    params(TenantQuery),
    responses(
        (status = 200, body = LlmKeyList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn list_llm_keys(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<TenantQuery>,
) -> Result<Json<LlmKeyList>, ApiError> {
    auth.require(ADMINS)?;
    let listed = state
        .billing
        .clone()
        .list_llm_keys(auth.call.request(ListLlmKeysRequest {
            tenant_id: query.tenant_id.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(LlmKeyList {
        keys: listed.keys.into_iter().map(LlmKey::from).collect(),
    }))
}

/// Delete a provider key.
#[utoipa::path(
    delete, path = "/api/v1/llm-keys/{id}", tag = "llm-keys",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "LLM key id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "Absent, or another tenant's (nothing is deleted)", body = ErrorBody),
    )
)]
pub async fn delete_llm_key(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(ADMINS)?;
    state
        .billing
        .clone()
        .delete_llm_key(auth.call.request(DeleteLlmKeyRequest { id }))
        .await
        .map_err(|s| auth.error(&s))?;
    Ok(StatusCode::NO_CONTENT)
}
