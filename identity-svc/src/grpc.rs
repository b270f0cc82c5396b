//! The tonic adapter: decode, authorize, call the domain, encode.

use crewmesh_proto::identity::v1::{
    Role as ProtoRole, WhoAmIRequest, WhoAmIResponse, identity_service_server::IdentityService,
};
use mesh_kit::{Caller, Role, server::caller};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct IdentityApi {
    // Used by the tenant, user and audit features as they land.
    #[allow(dead_code)]
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

#[tonic::async_trait]
impl IdentityService for IdentityApi {
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
