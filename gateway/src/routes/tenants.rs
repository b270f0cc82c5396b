//! Tenants: create and list for platform admins; get for anyone in the tenant.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
};
use crewmesh_proto::identity::v1::{
    CreateTenantRequest, GetTenantRequest, ListTenantsRequest, Tenant as ProtoTenant,
};
use mesh_kit::Role;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::rfc3339;
use crate::{auth::Authenticated, error::ApiError, extract::ApiJson, startup::AppState};

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewTenant {
    /// 3–63 characters of a–z, 0–9 and '-', unique across the platform.
    #[schema(example = "acme")]
    pub slug: String,
    #[schema(example = "Acme Inc.")]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    pub tenants: Vec<Tenant>,
    /// Pass as `page_token` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// At most 200; default 50.
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
}

fn tenant(t: ProtoTenant) -> Tenant {
    Tenant {
        id: t.id,
        slug: t.slug,
        name: t.name,
        created_at: rfc3339(t.created_at).unwrap_or_default(),
    }
}

/// Create a tenant (platform admins). Send an `Idempotency-Key` header to make retries safe.
#[utoipa::path(
    post, path = "/api/v1/tenants", tag = "tenants",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key returns the first result")),
    request_body = NewTenant,
    responses(
        (status = 201, body = Tenant),
        (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody),
        (status = 409, description = "The slug is taken", body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody),
    )
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    ApiJson(body): ApiJson<NewTenant>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    auth.require(&[Role::PlatformAdmin])?;
    let request_id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let created = state
        .identity
        .clone()
        .create_tenant(auth.call.request(CreateTenantRequest {
            slug: body.slug,
            name: body.name,
            request_id,
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let created = created.tenant.ok_or_else(|| auth.missing("tenant"))?;
    Ok((StatusCode::CREATED, Json(tenant(created))))
}

/// List every tenant (platform admins), oldest first.
#[utoipa::path(
    get, path = "/api/v1/tenants", tag = "tenants",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, body = TenantPage),
        (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody),
    )
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(query): Query<PageQuery>,
) -> Result<Json<TenantPage>, ApiError> {
    auth.require(&[Role::PlatformAdmin])?;
    let page = state
        .identity
        .clone()
        .list_tenants(auth.call.request(ListTenantsRequest {
            page_size: query.page_size.unwrap_or_default(),
            page_token: query.page_token.unwrap_or_default(),
        }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(TenantPage {
        tenants: page.tenants.into_iter().map(tenant).collect(),
        next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
    }))
}

/// Get a tenant: any tenant for platform admins, their own for everyone else.
#[utoipa::path(
    get, path = "/api/v1/tenants/{id}", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, body = Tenant),
        (status = 401, body = crate::error::ErrorBody),
        (status = 404, description = "Absent, or another tenant's", body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody),
    )
)]
pub async fn get_tenant(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, ApiError> {
    auth.require(&Role::ALL)?;
    let found = state
        .identity
        .clone()
        .get_tenant(auth.call.request(GetTenantRequest { id }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let found = found.tenant.ok_or_else(|| auth.missing("tenant"))?;
    Ok(Json(tenant(found)))
}
