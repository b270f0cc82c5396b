//! The global template catalogue (A2): seven templates seeded by a migration.

use sqlx::PgPool;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Template {
    pub slug: String,
    pub name: String,
    pub role_title: String,
    pub persona: String,
    pub instructions: String,
    pub suggested_tools: Vec<String>,
    pub escalation: sqlx::types::Json<Escalation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
pub struct Escalation {
    pub enabled: bool,
    #[serde(default)]
    pub trigger_keywords: Vec<String>,
    #[serde(default)]
    pub on_human_request: bool,
    #[serde(default)]
    pub max_consecutive_failures: i32,
}

const COLUMNS: &str = "slug, name, role_title, persona, instructions, suggested_tools, escalation";

pub async fn list(db: &PgPool) -> Result<Vec<Template>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agent_templates ORDER BY position"
    )))
    .fetch_all(db)
    .await
}

pub async fn get(db: &PgPool, slug: &str) -> Result<Option<Template>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM agent_templates WHERE slug = $1"
    )))
    .bind(slug)
    .fetch_optional(db)
    .await
}
