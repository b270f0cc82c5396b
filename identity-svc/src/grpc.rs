//! The tonic adapter: decode, authorize, call the domain, encode.

use crewmesh_proto::identity::v1::{
    CreateTenantRequest, CreateTenantResponse, GetTenantRequest, GetTenantResponse,
    ListTenantsRequest, ListTenantsResponse, Role as ProtoRole, Tenant as ProtoTenant,
    WhoAmIRequest, WhoAmIResponse, identity_service_server::IdentityService,
};
use mesh_kit::{Caller, Role, error::invalid_field, server::caller};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::tenants::{self, Tenant, Visibility};

#[derive(Debug, Clone)]
pub struct IdentityApi {
    db: PgPool,
}

impl IdentityApi {
    pub fn new(db: PgPool) -> IdentityApi {
        IdentityApi { db }
    }
}

fn proto_role(role: Role) -> ProtoRole {
    match role {
        Role::PlatformAdmin => ProtoRole::PlatformAdmin,
        Role::CustomerAdmin => ProtoRole::CustomerAdmin,
        Role::Operator => ProtoRole::Operator,
    }
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn proto_tenant(tenant: Tenant) -> ProtoTenant {
    ProtoTenant {
        id: tenant.id.to_string(),
        slug: tenant.slug,
        name: tenant.name,
        created_at: Some(timestamp(tenant.created_at)),
    }
}

fn parse_id(field: &str, value: &str) -> Result<Uuid, Status> {
    value
        .parse()
        .map_err(|_| invalid_field(field, "must be a UUID"))
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn create_tenant(
        &self,
        request: Request<CreateTenantRequest>,
    ) -> Result<Response<CreateTenantResponse>, Status> {
        caller(&request)?.require_role(&[Role::PlatformAdmin])?;
        let req = request.into_inner();
        let request_id = Some(req.request_id.as_str()).filter(|r| !r.is_empty());
        let tenant = tenants::create(&self.db, &req.slug, &req.name, request_id).await?;
        tracing::info!(tenant = %tenant.id, slug = %tenant.slug, "tenant created");
        Ok(Response::new(CreateTenantResponse {
            tenant: Some(proto_tenant(tenant)),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        caller(&request)?.require_role(&[Role::PlatformAdmin])?;
        let req = request.into_inner();
        let (page, next) = tenants::list(&self.db, req.page_size, &req.page_token).await?;
        Ok(Response::new(ListTenantsResponse {
            tenants: page.into_iter().map(proto_tenant).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<GetTenantRequest>,
    ) -> Result<Response<GetTenantResponse>, Status> {
        let user = caller(&request)?.require_role(&Role::ALL)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let visibility = match user.role {
            Role::PlatformAdmin => Visibility::Platform,
            // Another tenant's id reads as absent: RLS shows only their own row.
            Role::CustomerAdmin | Role::Operator => Visibility::Tenant(user.tenant_scope(None)?),
        };
        let tenant = tenants::get(&self.db, id, visibility).await?;
        Ok(Response::new(GetTenantResponse {
            tenant: Some(proto_tenant(tenant)),
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let response = match caller(&request)? {
            Caller::User(user) => WhoAmIResponse {
                kind: "user".into(),
                user_id: user.user_id.to_string(),
                tenant_id: user.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
                role: proto_role(user.role).into(),
                impersonator_id: user.impersonator.map(|a| a.to_string()).unwrap_or_default(),
                service: String::new(),
            },
            Caller::Service(svc) => WhoAmIResponse {
                kind: "service".into(),
                service: svc.as_str().into(),
                ..Default::default()
            },
        };
        Ok(Response::new(response))
    }
}

/// Internal RPCs (API key exchange) arrive with the identity issue; until then
/// every one answers UNIMPLEMENTED.
#[tonic::async_trait]
impl crewmesh_proto::identity::v1::identity_internal_service_server::IdentityInternalService
    for IdentityApi
{
}
