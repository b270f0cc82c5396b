//! The tonic adapters of llm-svc: decode, authorize, call the feature
//! module, encode.
//!
//! RPCs of features not built yet (streaming runs, conversation listing,
//! escalations, tool approvals) answer UNIMPLEMENTED through the generated
//! default methods.

use crewmesh_proto::llm::v1::{
    AttachmentKind as ProtoAttachmentKind, DeadLetter as ProtoDeadLetter, DeadLetterQueue,
    ListDeadLettersRequest, ListDeadLettersResponse, RetryDeadLetterRequest,
    RetryDeadLetterResponse, RunAgentRequest, RunAgentResponse, Usage,
};
use mesh_kit::{
    Caller, ErrorCode, Role, ServiceId,
    error::invalid_field,
    server::caller,
    wire::{format_usd, parse_id, parse_opt_id, timestamp},
};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    dead_letters::{self, DeadLetter, DeadLetterError, Queue, Requeue, Scope},
    providers::vision::AttachmentKind,
    run::{AttachmentRef, ConversationRef, RunChannel, RunInput, Runner},
};

#[derive(Debug, Clone)]
pub struct LlmApi {
    pub runner: Runner,
    pub db: PgPool,
    pub requeue: Requeue,
}

/// Who sees and retries dead letters: a tenant's admins, and the platform's.
const DEAD_LETTER_ROLES: [Role; 2] = [Role::PlatformAdmin, Role::CustomerAdmin];
const MAX_PAGE_SIZE: i32 = 200;

/// The tenant a run acts in: a user's own (platform admins name one), or
/// the one the gateway names for a channel message.
fn run_tenant(caller: &Caller, tenant_id: &str) -> Result<Uuid, Status> {
    match caller {
        Caller::User(_) => caller
            .require_role(&Role::ALL)?
            .tenant_scope(parse_opt_id("tenant_id", tenant_id)?),
        Caller::Service(_) => {
            caller.require_service(&[ServiceId::Gateway])?;
            parse_id("tenant_id", tenant_id)
        }
    }
}

fn dead_letter_status(e: DeadLetterError) -> Status {
    match e {
        DeadLetterError::NotFound => ErrorCode::NotFound.status(e.to_string()),
        DeadLetterError::UnknownQueue => ErrorCode::FailedPrecondition.status(e.to_string()),
        DeadLetterError::Queue(inner) => {
            tracing::warn!(error = %inner, "re-queueing a dead letter failed");
            ErrorCode::Unavailable.status("the message queue is unavailable; try again")
        }
        DeadLetterError::Database(inner) => mesh_kit::error::internal("dead letter query", &inner),
    }
}

fn proto_dead_letter(d: DeadLetter) -> ProtoDeadLetter {
    ProtoDeadLetter {
        id: d.id.to_string(),
        tenant_id: d.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
        queue: match d.queue {
            Queue::Inbound => DeadLetterQueue::Inbound,
            Queue::Outbound => DeadLetterQueue::Outbound,
            Queue::Unknown => DeadLetterQueue::Unspecified,
        }
        .into(),
        message_id: d.message_id,
        reason: d.reason,
        detail: d.detail,
        attempts: d.attempts,
        channel: d.channel,
        text: d.text,
        failed_at: Some(timestamp(d.failed_at)),
        retried_at: d.retried_at.map(timestamp),
        retried_by: d.retried_by,
    }
}

/// A caller's view of dead letters: their tenant's, or the whole platform's
/// for a platform admin who names no tenant.
fn dead_letter_scope(caller: &Caller, tenant_id: &str) -> Result<Scope, Status> {
    let user = caller.require_role(&DEAD_LETTER_ROLES)?;
    let requested = parse_opt_id("tenant_id", tenant_id)?;
    match (user.role, requested) {
        (Role::PlatformAdmin, None) => Ok(Scope::Platform),
        _ => user.tenant_scope(requested).map(Scope::Tenant),
    }
}

#[tonic::async_trait]
impl crewmesh_proto::llm::v1::llm_service_server::LlmService for LlmApi {
    async fn run_agent(
        &self,
        request: Request<RunAgentRequest>,
    ) -> Result<Response<RunAgentResponse>, Status> {
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let req = request.get_ref();
        let tenant = run_tenant(caller(&request)?, &req.tenant_id)?;
        let attachments = req
            .attachments
            .iter()
            .map(|a| {
                let kind = match a.kind() {
                    ProtoAttachmentKind::Image => AttachmentKind::Image,
                    ProtoAttachmentKind::Document => AttachmentKind::Document,
                    ProtoAttachmentKind::Unspecified => {
                        return Err(invalid_field(
                            "attachments.kind",
                            "must be image or document",
                        ));
                    }
                };
                Ok(AttachmentRef {
                    kind,
                    media_id: parse_id("attachments.media_id", &a.media_id)?,
                    filename: a.filename.clone(),
                    caption: a.caption.clone(),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let conversation = match parse_opt_id("conversation_id", &req.conversation_id)? {
            Some(id) => ConversationRef::Existing(id),
            None => ConversationRef::New,
        };
        let output = self
            .runner
            .run(RunInput {
                tenant,
                agent: parse_id("agent_id", &req.agent_id)?,
                channel: RunChannel::Api,
                conversation,
                text: req.text.clone(),
                attachments,
                request_id: Some(req.request_id.clone()),
                traceparent,
            })
            .await?;
        Ok(Response::new(RunAgentResponse {
            conversation_id: output.conversation.to_string(),
            reply: output.reply,
            usage: Some(Usage {
                prompt_tokens: output.prompt_tokens,
                completion_tokens: output.completion_tokens,
                cost_usd: format_usd(output.cost_nanos),
            }),
            escalated: false,
            refusal_reason: output.refusal_reason,
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let req = request.get_ref();
        let scope = dead_letter_scope(caller(&request)?, &req.tenant_id)?;
        let page_size = match req.page_size {
            0 => 50,
            n if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(invalid_field(
                    "page_size",
                    format!("must be between 1 and {MAX_PAGE_SIZE}"),
                ));
            }
        };
        let after = parse_opt_id("page_token", &req.page_token)?;
        let limit = i64::from(page_size);
        let mut rows = dead_letters::list(&self.db, scope, limit + 1, after)
            .await
            .map_err(dead_letter_status)?;
        let next = if rows.len() > page_size as usize {
            rows.truncate(page_size as usize);
            rows.last().map(|r| r.id.to_string())
        } else {
            None
        };
        Ok(Response::new(ListDeadLettersResponse {
            dead_letters: rows.into_iter().map(proto_dead_letter).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn retry_dead_letter(
        &self,
        request: Request<RetryDeadLetterRequest>,
    ) -> Result<Response<RetryDeadLetterResponse>, Status> {
        let req = request.get_ref();
        let caller = caller(&request)?;
        let scope = dead_letter_scope(caller, &req.tenant_id)?;
        let id = parse_id("id", &req.id)?;
        let by = caller
            .user()
            .map(|u| u.user_id.to_string())
            .unwrap_or_default();
        let retried = dead_letters::retry(&self.db, &self.requeue, scope, id, &by)
            .await
            .map_err(dead_letter_status)?;
        Ok(Response::new(RetryDeadLetterResponse {
            dead_letter: Some(proto_dead_letter(retried)),
        }))
    }
}
