//! The global agent template catalogue: readable by every role.

use axum::{
    Json,
    extract::{Path, State},
};
use crewmesh_proto::agent::v1::{
    GetTemplateRequest, ListTemplatesRequest, Template as ProtoTemplate,
};
use mesh_kit::Role;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    auth::Authenticated,
    error::{ApiError, ErrorBody},
    startup::AppState,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct EscalationRules {
    pub enabled: bool,
    pub trigger_keywords: Vec<String>,
    pub on_human_request: bool,
    pub max_consecutive_failures: i32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Template {
    #[schema(example = "customer-support")]
    pub slug: String,
    pub name: String,
    pub role_title: String,
    pub persona: String,
    pub instructions: String,
    pub suggested_tools: Vec<String>,
    pub escalation: Option<EscalationRules>,
}

impl From<ProtoTemplate> for Template {
    fn from(t: ProtoTemplate) -> Template {
        Template {
            slug: t.slug,
            name: t.name,
            role_title: t.role_title,
            persona: t.persona,
            instructions: t.instructions,
            suggested_tools: t.suggested_tools,
            escalation: t.escalation.map(|e| EscalationRules {
                enabled: e.enabled,
                trigger_keywords: e.trigger_keywords,
                on_human_request: e.on_human_request,
                max_consecutive_failures: e.max_consecutive_failures,
            }),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<Template>,
}

/// The template catalogue.
#[utoipa::path(
    get, path = "/api/v1/templates", tag = "agents",
    security(("bearer" = [])),
    responses((status = 200, body = TemplateList), (status = 401, body = ErrorBody))
)]
pub async fn list_templates(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<TemplateList>, ApiError> {
    auth.require(&Role::ALL)?;
    let list = state
        .agents
        .clone()
        .list_templates(auth.call.request(ListTemplatesRequest {}))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    Ok(Json(TemplateList {
        templates: list.templates.into_iter().map(Template::from).collect(),
    }))
}

/// One template.
#[utoipa::path(
    get, path = "/api/v1/templates/{slug}", tag = "agents",
    security(("bearer" = [])),
    params(("slug" = String, Path, description = "Template slug")),
    responses((status = 200, body = Template), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn get_template(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(slug): Path<String>,
) -> Result<Json<Template>, ApiError> {
    auth.require(&Role::ALL)?;
    let found = state
        .agents
        .clone()
        .get_template(auth.call.request(GetTemplateRequest { slug }))
        .await
        .map_err(|s| auth.error(&s))?
        .into_inner();
    let template = found.template.ok_or_else(|| auth.missing("template"))?;
    Ok(Json(Template::from(template)))
}
