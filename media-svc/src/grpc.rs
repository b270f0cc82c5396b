//! The tonic adapters of media-svc: decode, authorize, call the domain, encode.

use std::sync::Arc;

use chrono::Utc;
use crewmesh_proto::media::v1::{
    CreateUploadRequest, CreateUploadResponse, GetDownloadUrlRequest, GetDownloadUrlResponse,
    GetMediaRequest, GetMediaResponse, IngestChannelMediaRequest, IngestChannelMediaResponse,
    MediaObject as ProtoMediaObject, media_internal_service_server::MediaInternalService,
    media_service_server::MediaService,
};
use mesh_kit::{
    Caller, Role, ServiceId,
    server::caller,
    wire::{parse_id, parse_opt_id, timestamp},
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::{
    access::{self, Scope, UploadRequest},
    ingest::{IngestRequest, Ingester},
    objects::MediaObject,
    storage::ObjectStore,
};

/// Every role of a tenant works with its media (operators answer conversations with it).
const USERS: &[Role] = &Role::ALL;
/// Services that read media for a tenant: llm-svc (vision) and the gateway (delivery).
const READING_SERVICES: &[ServiceId] = &[ServiceId::Llm, ServiceId::Gateway];
/// Services that ingest channel media with the channel's credentials.
const INGESTING_SERVICES: &[ServiceId] = &[ServiceId::Gateway, ServiceId::Llm];

#[derive(Debug, Clone)]
pub struct MediaApi {
    pub db: PgPool,
    pub store: Arc<ObjectStore>,
    pub ingester: Arc<Ingester>,
    pub max_bytes: u64,
}

pub fn proto_media(m: MediaObject) -> ProtoMediaObject {
    ProtoMediaObject {
        id: m.id.to_string(),
        tenant_id: m.tenant_id.to_string(),
        object_key: m.object_key,
        content_type: m.content_type,
        size_bytes: m.size_bytes,
        sha256: m.sha256.unwrap_or_default(),
        source: m.source,
        created_at: Some(timestamp(m.created_at)),
        status: m.status,
        filename: m.filename,
    }
}

/// The rows a read may see: a tenant user's own tenant; a platform admin's
/// named tenant or every tenant; a reading service's named tenant.
fn read_scope(caller: &Caller, tenant_id: &str) -> Result<Scope, Status> {
    let requested = parse_opt_id("tenant_id", tenant_id)?;
    match caller {
        Caller::User(user) => match (user.role, requested) {
            (Role::PlatformAdmin, None) => Ok(Scope::Platform),
            (Role::PlatformAdmin | Role::CustomerAdmin | Role::Operator, _) => {
                user.tenant_scope(requested).map(Scope::Tenant)
            }
        },
        Caller::Service(_) => {
            caller.require_service(READING_SERVICES)?;
            Ok(Scope::Tenant(parse_id("tenant_id", tenant_id)?))
        }
    }
}

#[tonic::async_trait]
impl MediaService for MediaApi {
    async fn create_upload(
        &self,
        request: Request<CreateUploadRequest>,
    ) -> Result<Response<CreateUploadResponse>, Status> {
        let user = caller(&request)?.require_role(USERS)?;
        let req = request.get_ref();
        let tenant = user.tenant_scope(parse_opt_id("tenant_id", &req.tenant_id)?)?;
        let upload = access::create_upload(
            &self.db,
            &self.store,
            self.max_bytes,
            UploadRequest {
                tenant,
                content_type: &req.content_type,
                size_bytes: req.size_bytes,
                filename: &req.filename,
            },
            Utc::now(),
        )
        .await?;
        Ok(Response::new(CreateUploadResponse {
            media: Some(proto_media(upload.media)),
            upload_url: upload.url,
            expires_at: Some(timestamp(upload.expires_at)),
        }))
    }

    async fn get_download_url(
        &self,
        request: Request<GetDownloadUrlRequest>,
    ) -> Result<Response<GetDownloadUrlResponse>, Status> {
        let req = request.get_ref();
        let scope = read_scope(caller(&request)?, &req.tenant_id)?;
        let id = parse_id("id", &req.id)?;
        let download = access::download_url(
            &self.db,
            &self.store,
            scope,
            id,
            req.expires_in_seconds,
            Utc::now(),
        )
        .await?;
        Ok(Response::new(GetDownloadUrlResponse {
            url: download.url,
            expires_at: Some(timestamp(download.expires_at)),
        }))
    }

    async fn get_media(
        &self,
        request: Request<GetMediaRequest>,
    ) -> Result<Response<GetMediaResponse>, Status> {
        let req = request.get_ref();
        let scope = read_scope(caller(&request)?, &req.tenant_id)?;
        let id = parse_id("id", &req.id)?;
        let media = access::get(&self.db, scope, id).await?;
        Ok(Response::new(GetMediaResponse {
            media: Some(proto_media(media)),
        }))
    }
}

#[tonic::async_trait]
impl MediaInternalService for MediaApi {
    async fn ingest_channel_media(
        &self,
        request: Request<IngestChannelMediaRequest>,
    ) -> Result<Response<IngestChannelMediaResponse>, Status> {
        caller(&request)?.require_service(INGESTING_SERVICES)?;
        let req = request.get_ref();
        let tenant = parse_id("tenant_id", &req.tenant_id)?;
        let media = self
            .ingester
            .ingest(
                &self.db,
                &self.store,
                &IngestRequest {
                    tenant,
                    channel: &req.channel,
                    reference: &req.reference,
                    access_token: &req.access_token,
                    expected_mime_type: &req.expected_mime_type,
                    message_id: &req.message_id,
                },
            )
            .await?;
        Ok(Response::new(IngestChannelMediaResponse {
            media: Some(proto_media(media)),
        }))
    }
}
