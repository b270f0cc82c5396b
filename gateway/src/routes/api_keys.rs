//! Tenant API keys: service accounts for the OpenAI-compatible endpoint and
//! internal callers. Send a key as `Authorization: Bearer cmk_…`.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use crewmesh_proto::identity::v1::{
    ApiKey as ProtoApiKey, CreateApiKeyRequest, ListApiKeysRequest, RevokeApiKeyRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ADMINS, TenantRole, rfc3339, role_name};
use crate::{
    auth::Authenticated,
    error::{ApiError, ErrorBody},
    extract::ApiJson,
    startup::AppState,
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewApiKey {
    #[schema(example = "support-bot")]
    pub name: String,
    /// The role the key acts with; never platform_admin.
    pub role: TenantRole,
    /// Platform admins name the tenant; customer admins create for their own.
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The visible start of the key.
    pub prefix: String,
    pub role: Option<String>,
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl From<ProtoApiKey> for ApiKey {
    fn from(k: ProtoApiKey) -> ApiKey {
        ApiKey {
            id: k.id,
            tenant_id: k.tenant_id,
            name: k.name,
            prefix: k.prefix,
            role: role_name(k.role),
            created_at: rfc3339(k.created_at),
            revoked_at: rfc3339(k.revoked_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedApiKey {
    pub api_key: Option<ApiKey>,
    /// The whole key. Shown once; only its hash is stored.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKey>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TenantQuery {
    pub tenant_id: Option<String>,
}

/// Create an API key for a tenant. The response carries the key once.
#[utoipa::path(
    post, path = "/api/v1/api-keys", tag = "api-keys",
    security(("bearer" = [])),
    request_body = NewApiKey,
    responses(
        (status = 201, body = IssuedApiKey),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn create_api_key(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<NewApiKey>,
) -> Result<(StatusCode, Json<IssuedApiKey>), ApiError> {
    auth.require(ADMINS)?;
    let issued = state
        .identity
        .clone()
        .create_api_key(auth.call.request(CreateApiKeyRequest {
            tenant_id: body.tenant_id.unwrap_or_default(),
            name: body.name,
            role: body.role.proto(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok((
        StatusCode::CREATED,
        Json(IssuedApiKey {
            api_key: issued.api_key.map(ApiKey::from),
            secret: issued.secret,
        }),
    ))
}

/// List a tenant's API keys (never the keys themselves).
#[utoipa::path(
    get, path = "/api/v1/api-keys", tag = "api-keys",
    security(("bearer" = [])),
    params(TenantQuery),
    responses(
        (status = 200, body = ApiKeyList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub async fn list_api_keys(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<TenantQuery>,
) -> Result<Json<ApiKeyList>, ApiError> {
    auth.require(ADMINS)?;
    let keys = state
        .identity
        .clone()
        .list_api_keys(auth.call.request(ListApiKeysRequest {
            tenant_id: query.tenant_id.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(ApiKeyList {
        api_keys: keys.api_keys.into_iter().map(ApiKey::from).collect(),
    }))
}

/// Revoke an API key; it stops authenticating within a minute.
#[utoipa::path(
    delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "API key id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "Absent, or another tenant's", body = ErrorBody),
    )
)]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.require(ADMINS)?;
    state
        .identity
        .clone()
        .revoke_api_key(auth.call.request(RevokeApiKeyRequest { id }))
        .await
        .map_err(|s| auth.error(&s))?;
    Ok(StatusCode::NO_CONTENT)
}
