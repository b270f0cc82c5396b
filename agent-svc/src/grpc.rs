//! The tonic adapters of agent-svc.
//!
//! The contract is sketched in full; the RPCs of features not built yet answer
//! UNIMPLEMENTED through the generated default methods.

use crewmesh_proto::agent::v1::{
    EscalationRules, GetTemplateRequest, GetTemplateResponse, ListTemplatesRequest,
    ListTemplatesResponse, Template as ProtoTemplate,
};
use mesh_kit::{ErrorCode, Role, server::caller};
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::templates::{self, Template};

#[derive(Debug, Clone)]
pub struct AgentApi {
    pub db: PgPool,
}

fn proto_template(t: Template) -> ProtoTemplate {
    let escalation = t.escalation.0;
    ProtoTemplate {
        slug: t.slug,
        name: t.name,
        role_title: t.role_title,
        persona: t.persona,
        instructions: t.instructions,
        suggested_tools: t.suggested_tools,
        escalation: Some(EscalationRules {
            enabled: escalation.enabled,
            trigger_keywords: escalation.trigger_keywords,
            on_human_request: escalation.on_human_request,
            max_consecutive_failures: escalation.max_consecutive_failures,
        }),
    }
}

fn db_error(e: &sqlx::Error) -> Status {
    mesh_kit::error::internal("agent query failed", e)
}

#[tonic::async_trait]
impl crewmesh_proto::agent::v1::agent_service_server::AgentService for AgentApi {
    async fn list_templates(
        &self,
        request: Request<ListTemplatesRequest>,
    ) -> Result<Response<ListTemplatesResponse>, Status> {
        // The catalogue is global: every role may read it.
        caller(&request)?.require_role(&Role::ALL)?;
        let all = templates::list(&self.db).await.map_err(|e| db_error(&e))?;
        Ok(Response::new(ListTemplatesResponse {
            templates: all.into_iter().map(proto_template).collect(),
        }))
    }

    async fn get_template(
        &self,
        request: Request<GetTemplateRequest>,
    ) -> Result<Response<GetTemplateResponse>, Status> {
        caller(&request)?.require_role(&Role::ALL)?;
        let template = templates::get(&self.db, &request.get_ref().slug)
            .await
            .map_err(|e| db_error(&e))?
            .ok_or_else(|| ErrorCode::NotFound.status("no template with that slug"))?;
        Ok(Response::new(GetTemplateResponse {
            template: Some(proto_template(template)),
        }))
    }
}

#[tonic::async_trait]
impl crewmesh_proto::agent::v1::agent_internal_service_server::AgentInternalService for AgentApi {}
