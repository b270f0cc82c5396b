//! The tonic adapters of llm-svc.
//!
//! RPCs of features not built yet (streaming runs, conversation listing,
//! escalations, tool approvals) answer UNIMPLEMENTED through the generated
//! default methods.

use crewmesh_proto::llm::v1::{RunAgentRequest, RunAgentResponse, Usage};
use mesh_kit::{
    Caller, Role, ServiceId,
    server::caller,
    wire::{format_usd, parse_id, parse_opt_id},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::run::{RunInput, Runner};

#[derive(Debug, Clone)]
pub struct LlmApi {
    pub runner: Runner,
}

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

#[tonic::async_trait]
impl crewmesh_proto::llm::v1::llm_service_server::LlmService for LlmApi {
    async fn run_agent(
        &self,
        request: Request<RunAgentRequest>,
    ) -> Result<Response<RunAgentResponse>, Status> {
        let req = request.get_ref();
        let tenant = run_tenant(caller(&request)?, &req.tenant_id)?;
        let output = self
            .runner
            .run(RunInput {
                tenant,
                agent: parse_id("agent_id", &req.agent_id)?,
                conversation: parse_opt_id("conversation_id", &req.conversation_id)?,
                text: req.text.clone(),
                request_id: Some(req.request_id.clone()),
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
}
