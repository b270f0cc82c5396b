//! The tonic adapter: decode, authorize, call the domain, encode.

use std::time::Duration;

use crewmesh_proto::identity::v1::{
    AcceptInviteRequest, AcceptInviteResponse, ApiKey as ProtoApiKey,
    AuditEvent as ProtoAuditEvent, AuthenticateApiKeyRequest, AuthenticateApiKeyResponse,
    CreateApiKeyRequest, CreateApiKeyResponse, CreateInviteRequest, CreateInviteResponse,
    CreateTenantRequest, CreateTenantResponse, GetTenantRequest, GetTenantResponse,
    Invite as ProtoInvite, ListApiKeysRequest, ListApiKeysResponse, ListAuditEventsRequest,
    ListAuditEventsResponse, ListTenantsRequest, ListTenantsResponse, ListUsersRequest,
    ListUsersResponse, LoginRequest, LoginResponse, RefreshTokenRequest, RefreshTokenResponse,
    ResendInviteRequest, ResendInviteResponse, RevokeApiKeyRequest, RevokeApiKeyResponse,
    Role as ProtoRole, StartImpersonationRequest, StartImpersonationResponse,
    Tenant as ProtoTenant, User as ProtoUser, WhoAmIRequest, WhoAmIResponse,
    identity_internal_service_server::IdentityInternalService,
    identity_service_server::IdentityService,
};
use mesh_kit::wire::{from_timestamp, parse_id, parse_opt_id, timestamp};
use mesh_kit::{
    Caller, ErrorCode, Role, ServiceId,
    auth::{TokenVerifier, UserCaller, bearer},
    config::Environment,
    error::invalid_field,
    server::caller,
};
use secrecy::SecretString;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    api_keys::{self, ApiKey},
    audit::{self, Actor, AuditEvent},
    invites::{self, Invite},
    passwords::Hasher,
    sessions::{self, Issuer, Tokens},
    tenants::{self, Tenant, Visibility},
    throttle::{LoginThrottle, client_bucket},
    users::{self, User},
};

/// RPCs callable without a token: they are how a caller gets one.
pub const PUBLIC_METHODS: &[&str] = &[
    "/crewmesh.identity.v1.IdentityService/Login",
    "/crewmesh.identity.v1.IdentityService/RefreshToken",
    "/crewmesh.identity.v1.IdentityService/AcceptInvite",
];

const MAX_PAGE_SIZE: i64 = 200;
const DEFAULT_PAGE_SIZE: i64 = 50;

#[derive(Debug, Clone)]
pub struct IdentityApi {
    pub db: PgPool,
    pub throttle: LoginThrottle,
    pub hasher: Hasher,
    pub issuer: Issuer,
    /// Checks the optional token of the public Login RPC (see [`IdentityApi::login_client`]).
    pub verifier: TokenVerifier,
    pub environment: Environment,
    pub invite_ttl: Duration,
}

/// Roles that administer a tenant: its customer admins and platform staff.
const ADMINS: &[Role] = &[Role::PlatformAdmin, Role::CustomerAdmin];

fn page_size(requested: i32) -> i64 {
    match i64::from(requested) {
        n if n <= 0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

fn proto_role(role: Role) -> ProtoRole {
    match role {
        Role::PlatformAdmin => ProtoRole::PlatformAdmin,
        Role::CustomerAdmin => ProtoRole::CustomerAdmin,
        Role::Operator => ProtoRole::Operator,
    }
}

fn role_from_proto(field: &str, role: i32) -> Result<Role, Status> {
    match ProtoRole::try_from(role) {
        Ok(ProtoRole::PlatformAdmin) => Ok(Role::PlatformAdmin),
        Ok(ProtoRole::CustomerAdmin) => Ok(Role::CustomerAdmin),
        Ok(ProtoRole::Operator) => Ok(Role::Operator),
        Ok(ProtoRole::Unspecified) | Err(_) => {
            Err(invalid_field(field, "must be customer_admin or operator"))
        }
    }
}

fn role_name_to_proto(name: &str) -> i32 {
    Role::parse(name)
        .map(proto_role)
        .unwrap_or(ProtoRole::Unspecified)
        .into()
}

fn unix_timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

fn opt_id(id: Option<Uuid>) -> String {
    id.map(|i| i.to_string()).unwrap_or_default()
}

fn proto_tenant(tenant: Tenant) -> ProtoTenant {
    ProtoTenant {
        id: tenant.id.to_string(),
        slug: tenant.slug,
        name: tenant.name,
        created_at: Some(timestamp(tenant.created_at)),
    }
}

fn proto_user(user: User) -> ProtoUser {
    ProtoUser {
        id: user.id.to_string(),
        email: user.email,
        name: user.name,
        tenant_id: opt_id(user.tenant_id),
        role: proto_role(user.role).into(),
    }
}

fn proto_invite(invite: Invite) -> ProtoInvite {
    ProtoInvite {
        id: invite.id.to_string(),
        tenant_id: invite.tenant_id.to_string(),
        email: invite.email,
        role: role_name_to_proto(&invite.role),
        expires_at: Some(timestamp(invite.expires_at)),
        accepted_at: invite.accepted_at.map(timestamp),
    }
}

fn proto_api_key(key: ApiKey) -> ProtoApiKey {
    ProtoApiKey {
        id: key.id.to_string(),
        tenant_id: key.tenant_id.to_string(),
        name: key.name,
        prefix: key.prefix,
        role: role_name_to_proto(&key.role),
        created_at: Some(timestamp(key.created_at)),
        revoked_at: key.revoked_at.map(timestamp),
    }
}

fn proto_audit_event(event: AuditEvent) -> ProtoAuditEvent {
    ProtoAuditEvent {
        id: event.id.to_string(),
        tenant_id: event.tenant_id.to_string(),
        actor_user_id: opt_id(event.actor_user_id),
        impersonator_id: opt_id(event.impersonator_id),
        action: event.action,
        target_user_id: opt_id(event.target_user_id),
        client_addr: event.client_addr.unwrap_or_default(),
        user_agent: event.user_agent.unwrap_or_default(),
        occurred_at: Some(timestamp(event.occurred_at)),
    }
}

fn login_response(tokens: Tokens) -> LoginResponse {
    LoginResponse {
        access_token: tokens.access_token,
        access_expires_at: Some(unix_timestamp(tokens.access_expires_at)),
        refresh_token: tokens.refresh_token.unwrap_or_default(),
        user: Some(proto_user(tokens.user)),
    }
}

/// Refuses to mint credentials under impersonation. An API key or an invite
/// outlives the 15-minute impersonation token that made it, and would go on
/// acting for the tenant after the impersonation ended, with no impersonator
/// on the credential itself.
fn not_impersonating(user: &UserCaller, what: &str) -> Result<(), Status> {
    match user.impersonator {
        None => Ok(()),
        Some(_) => Err(ErrorCode::PermissionDenied.status(format!(
            "{what} cannot be issued while impersonating: it would outlive the impersonation; \
             ask one of the tenant's admins to do it"
        ))),
    }
}

impl IdentityApi {
    /// The client a login is throttled under ([`client_bucket`]).
    ///
    /// Only the gateway speaks for the end user's address: it calls Login
    /// with its own service token and the address it computed (honouring
    /// `CREWMESH_TRUST_FORWARDED_FOR`). Any other caller — anonymous, a user,
    /// another service — is counted under the peer address of its own
    /// connection, whatever `client_addr` says, so it cannot pick addresses to
    /// dodge the per-(account, address) limit. Login is public, so the auth
    /// layer lets it through without looking at a token: it is checked here,
    /// and one that does not verify is refused rather than ignored.
    fn login_client(&self, request: &Request<LoginRequest>) -> Result<String, Status> {
        let caller = match request.metadata().get("authorization") {
            None => None,
            Some(value) => {
                let token = value.to_str().ok().and_then(bearer).ok_or_else(|| {
                    ErrorCode::Unauthenticated.status("authorization is not a bearer token")
                })?;
                let caller = self
                    .verifier
                    .verify(token)
                    .map_err(|e| ErrorCode::Unauthenticated.status(e.to_string()))?;
                Some(caller)
            }
        };
        let forwarded = match caller {
            Some(Caller::Service(ServiceId::Gateway)) => {
                request.get_ref().client_addr.trim().parse().ok()
            }
            Some(Caller::Service(_) | Caller::User(_)) | None => None,
        };
        let peer = request.remote_addr().map(|addr| addr.ip());
        Ok(client_bucket(forwarded.or(peer)))
    }
}

/// The tenant an admin acts on, from an optional `tenant_id` field.
fn admin_tenant(user: &UserCaller, tenant_id: &str) -> Result<Uuid, Status> {
    user.tenant_scope(parse_opt_id("tenant_id", tenant_id)?)
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
                tenant_id: opt_id(user.tenant_id),
                role: proto_role(user.role).into(),
                impersonator_id: opt_id(user.impersonator),
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

    async fn create_tenant(
        &self,
        request: Request<CreateTenantRequest>,
    ) -> Result<Response<CreateTenantResponse>, Status> {
        let actor = Actor::of(caller(&request)?.require_role(&[Role::PlatformAdmin])?);
        let req = request.into_inner();
        let request_id = Some(req.request_id.as_str()).filter(|r| !r.is_empty());
        let tenant = tenants::create(&self.db, &actor, &req.slug, &req.name, request_id).await?;
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

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let client = self.login_client(&request)?;
        let req = request.into_inner();
        let tokens = sessions::login(
            &self.db,
            &self.throttle,
            &self.hasher,
            &self.issuer,
            &req.email,
            SecretString::from(req.password),
            &client,
        )
        .await?;
        Ok(Response::new(login_response(tokens)))
    }

    async fn refresh_token(
        &self,
        request: Request<RefreshTokenRequest>,
    ) -> Result<Response<RefreshTokenResponse>, Status> {
        let tokens =
            sessions::refresh(&self.db, &self.issuer, &request.get_ref().refresh_token).await?;
        Ok(Response::new(RefreshTokenResponse {
            access_token: tokens.access_token,
            access_expires_at: Some(unix_timestamp(tokens.access_expires_at)),
            refresh_token: tokens.refresh_token.unwrap_or_default(),
        }))
    }

    async fn list_users(
        &self,
        request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let req = request.get_ref();
        let tenant = admin_tenant(user, &req.tenant_id)?;
        let (page, next) =
            users::list(&self.db, tenant, page_size(req.page_size), &req.page_token).await?;
        Ok(Response::new(ListUsersResponse {
            users: page.into_iter().map(proto_user).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn create_invite(
        &self,
        request: Request<CreateInviteRequest>,
    ) -> Result<Response<CreateInviteResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        not_impersonating(user, "an invite")?;
        let req = request.get_ref();
        let tenant = admin_tenant(user, &req.tenant_id)?;
        let role = role_from_proto("role", req.role)?;
        let (invite, token) = invites::create(
            &self.db,
            self.environment,
            &Actor::of(user),
            tenant,
            &req.email,
            role,
            self.invite_ttl,
        )
        .await?;
        Ok(Response::new(CreateInviteResponse {
            invite: Some(proto_invite(invite)),
            token,
        }))
    }

    async fn resend_invite(
        &self,
        request: Request<ResendInviteRequest>,
    ) -> Result<Response<ResendInviteResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        not_impersonating(user, "an invite token")?;
        let id = parse_id("invite_id", &request.get_ref().invite_id)?;
        let tenant = match user.role {
            Role::PlatformAdmin => invites::tenant_of(&self.db, id).await?,
            Role::CustomerAdmin | Role::Operator => user.tenant_scope(None)?,
        };
        let (invite, token) = invites::resend(
            &self.db,
            self.environment,
            &Actor::of(user),
            tenant,
            id,
            self.invite_ttl,
        )
        .await?;
        Ok(Response::new(ResendInviteResponse {
            invite: Some(proto_invite(invite)),
            token,
        }))
    }

    async fn accept_invite(
        &self,
        request: Request<AcceptInviteRequest>,
    ) -> Result<Response<AcceptInviteResponse>, Status> {
        let req = request.into_inner();
        if req.token.is_empty() {
            return Err(invalid_field("token", "is required"));
        }
        let user = invites::accept(
            &self.db,
            &self.hasher,
            &req.token,
            &req.name,
            SecretString::from(req.password),
        )
        .await?;
        Ok(Response::new(AcceptInviteResponse {
            user: Some(proto_user(user)),
        }))
    }

    async fn start_impersonation(
        &self,
        request: Request<StartImpersonationRequest>,
    ) -> Result<Response<StartImpersonationResponse>, Status> {
        let admin = caller(&request)?.require_role(&[Role::PlatformAdmin])?;
        if admin.impersonator.is_some() {
            return Err(
                ErrorCode::PermissionDenied.status("stop impersonating before starting again")
            );
        }
        let req = request.get_ref();
        let tenant = parse_id("tenant_id", &req.tenant_id)?;
        let target = parse_id("user_id", &req.user_id)?;
        let tokens = sessions::impersonate(
            &self.db,
            &self.issuer,
            admin.user_id,
            tenant,
            target,
            &req.client_addr,
            &req.user_agent,
        )
        .await?;
        Ok(Response::new(StartImpersonationResponse {
            access_token: tokens.access_token,
            access_expires_at: Some(unix_timestamp(tokens.access_expires_at)),
        }))
    }

    async fn list_audit_events(
        &self,
        request: Request<ListAuditEventsRequest>,
    ) -> Result<Response<ListAuditEventsResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?.clone();
        let req = request.into_inner();
        let requested = parse_opt_id("tenant_id", &req.tenant_id)?;
        let (scope, tenant_id) = match user.role {
            Role::PlatformAdmin => (audit::Scope::Platform, requested),
            Role::CustomerAdmin | Role::Operator => {
                let own = user.tenant_scope(requested)?;
                (audit::Scope::Tenant(own), Some(own))
            }
        };
        let filter = audit::Filter {
            tenant_id,
            action: Some(req.action).filter(|a| !a.is_empty()),
            actor_user_id: parse_opt_id("actor_user_id", &req.actor_user_id)?,
            since: from_timestamp("since", req.since)?,
            until: from_timestamp("until", req.until)?,
            page_size: page_size(req.page_size),
            before: audit::parse_page_token(&req.page_token)?,
        };
        let (events, next) = audit::list(&self.db, scope, &filter).await?;
        Ok(Response::new(ListAuditEventsResponse {
            events: events.into_iter().map(proto_audit_event).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        not_impersonating(user, "an API key")?;
        let req = request.get_ref();
        let tenant = admin_tenant(user, &req.tenant_id)?;
        let role = role_from_proto("role", req.role)?;
        let (key, secret) =
            api_keys::create(&self.db, &Actor::of(user), tenant, &req.name, role).await?;
        Ok(Response::new(CreateApiKeyResponse {
            api_key: Some(proto_api_key(key)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let tenant = admin_tenant(user, &request.get_ref().tenant_id)?;
        let keys = api_keys::list(&self.db, tenant).await?;
        Ok(Response::new(ListApiKeysResponse {
            api_keys: keys.into_iter().map(proto_api_key).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        let user = caller(&request)?.require_role(ADMINS)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let tenant = match user.role {
            Role::PlatformAdmin => api_keys::tenant_of(&self.db, id).await?,
            Role::CustomerAdmin | Role::Operator => user.tenant_scope(None)?,
        };
        api_keys::revoke(&self.db, &Actor::of(user), tenant, id).await?;
        Ok(Response::new(RevokeApiKeyResponse {}))
    }
}

#[tonic::async_trait]
impl IdentityInternalService for IdentityApi {
    async fn authenticate_api_key(
        &self,
        request: Request<AuthenticateApiKeyRequest>,
    ) -> Result<Response<AuthenticateApiKeyResponse>, Status> {
        caller(&request)?.require_service(&[ServiceId::Gateway])?;
        let (user, key_id) = api_keys::authenticate(&self.db, &request.get_ref().secret).await?;
        let (access_token, _) =
            self.issuer
                .access(&user, None, Some(key_id), self.issuer.api_key_token_ttl)?;
        Ok(Response::new(AuthenticateApiKeyResponse {
            access_token,
            tenant_id: opt_id(user.tenant_id),
            role: proto_role(user.role).into(),
            api_key_id: key_id.to_string(),
        }))
    }
}
