//! Channel connections (A5): a Slack workspace or a WhatsApp business number
//! bound to a tenant and one of its agents.
//!
//! The access token is a Fernet token under the platform keyring before it
//! reaches the database; only `resolve` (the gateway's inbound path) turns it
//! back into plaintext. A workspace or number belongs to one tenant
//! platform-wide, so an inbound event has exactly one owner.

use aws_lc_rs::{digest, rand};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use keyring::Keyring;
use mesh_kit::{
    db::{begin_platform, violated_constraint},
    secrets::{EncryptedColumn, Progress, RotationError, hint, rotate},
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Slack,
    WhatsApp,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Slack => "slack",
            Kind::WhatsApp => "whatsapp",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "slack" => Some(Kind::Slack),
            "whatsapp" => Some(Kind::WhatsApp),
            _ => None,
        }
    }
}

/// A stored connection, without its token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Connection {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub agent_id: Uuid,
    pub channel: String,
    pub external_id: String,
    pub default_channel: String,
    pub token_hint: String,
    pub display_name: String,
    pub bot_user_id: String,
    /// WhatsApp only, both or neither: see [`NewConnection::reply_template_name`].
    pub reply_template_name: String,
    pub reply_template_language: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a new (or re-installed) connection is made of.
#[derive(Debug)]
pub struct NewConnection {
    pub agent_id: Uuid,
    pub kind: Kind,
    pub external_id: String,
    pub token: SecretString,
    pub default_channel: String,
    pub display_name: String,
    pub bot_user_id: String,
    /// WhatsApp only: the approved template a reply goes out as once Meta's
    /// 24-hour customer service window has closed (empty: none, and such a
    /// reply is dead-lettered instead). The template takes one body variable
    /// (`{{1}}`), which receives the reply text cut to 1,024 characters.
    pub reply_template_name: String,
    /// The template's language code, e.g. `en_US`; set exactly when the name is.
    pub reply_template_language: String,
}

/// An inbound identifier's owner and the credentials to answer on it.
#[derive(Debug)]
pub struct Resolved {
    pub connection_id: Uuid,
    pub tenant_id: Uuid,
    pub agent_id: Uuid,
    pub token: SecretString,
    pub default_channel: String,
    pub bot_user_id: String,
    pub reply_template_name: String,
    pub reply_template_language: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{field} {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    #[error("agent not found")]
    AgentNotFound,
    #[error("this {0} is already connected; delete the existing connection first")]
    AlreadyConnected(&'static str),
    #[error("channel connection not found")]
    NotFound,
    #[error("encrypting the token failed")]
    Encryption,
    #[error("a stored token cannot be decrypted with any configured key")]
    Undecryptable,
    #[error("the system random generator failed")]
    Random,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn invalid(field: &'static str, reason: &'static str) -> ChannelError {
    ChannelError::Invalid { field, reason }
}

/// `prefix` followed by 2–20 upper-case letters or digits, as Slack's ids are.
fn slack_id(value: &str, prefixes: &[char]) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(|c| prefixes.contains(&c))
        && (3..=21).contains(&value.len())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// Meta's template names: lower-case letters, digits and underscores.
fn template_name(value: &str) -> bool {
    (1..=512).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `en`, `fil` or `en_US`: Meta's template language codes.
fn template_language(value: &str) -> bool {
    let (language, region) = match value.split_once('_') {
        Some((language, region)) => (language, Some(region)),
        None => (value, None),
    };
    (2..=3).contains(&language.len())
        && language.bytes().all(|b| b.is_ascii_lowercase())
        && region.is_none_or(|r| r.len() == 2 && r.bytes().all(|b| b.is_ascii_uppercase()))
}

fn validate_template(new: &NewConnection) -> Result<(), ChannelError> {
    let (name, language) = (&new.reply_template_name, &new.reply_template_language);
    if name.is_empty() && language.is_empty() {
        return Ok(());
    }
    if new.kind == Kind::Slack {
        return Err(invalid(
            if name.is_empty() {
                "reply_template_language"
            } else {
                "reply_template_name"
            },
            "applies to WhatsApp only; leave it empty for Slack",
        ));
    }
    if name.is_empty() {
        return Err(invalid(
            "reply_template_name",
            "is required with reply_template_language",
        ));
    }
    if language.is_empty() {
        return Err(invalid(
            "reply_template_language",
            "is required with reply_template_name",
        ));
    }
    if !template_name(name) {
        return Err(invalid(
            "reply_template_name",
            "must be 1–512 lower-case letters, digits or underscores, as Meta names templates",
        ));
    }
    if !template_language(language) {
        return Err(invalid(
            "reply_template_language",
            "must be a template language code such as en or en_US",
        ));
    }
    Ok(())
}

pub fn validate(new: &NewConnection) -> Result<(), ChannelError> {
    let token = new.token.expose_secret();
    if token.is_empty() || token.len() > 4096 || token.chars().any(char::is_whitespace) {
        return Err(invalid(
            "access_token",
            "must be 1–4096 characters without spaces",
        ));
    }
    match new.kind {
        Kind::Slack => {
            if !slack_id(&new.external_id, &['T', 'E']) {
                return Err(invalid(
                    "external_id",
                    "must be a Slack team id such as T0123ABCD",
                ));
            }
            if !token.starts_with("xoxb-") {
                return Err(invalid(
                    "access_token",
                    "must be a Slack bot token (xoxb-…)",
                ));
            }
            if !new.default_channel.is_empty() && !slack_id(&new.default_channel, &['C', 'G', 'D'])
            {
                return Err(invalid(
                    "default_channel",
                    "must be a Slack channel id such as C0123ABCD",
                ));
            }
        }
        Kind::WhatsApp => {
            if !(5..=20).contains(&new.external_id.len())
                || !new.external_id.chars().all(|c| c.is_ascii_digit())
            {
                return Err(invalid(
                    "external_id",
                    "must be the WhatsApp phone_number_id (digits), not the phone number",
                ));
            }
            if !new.default_channel.is_empty() {
                return Err(invalid(
                    "default_channel",
                    "applies to Slack only; leave it empty for WhatsApp",
                ));
            }
        }
    }
    if new.display_name.len() > 200 || new.bot_user_id.len() > 64 {
        return Err(invalid("display_name", "is too long"));
    }
    validate_template(new)
}

const COLUMNS: &str = "id, tenant_id, agent_id, channel, external_id, default_channel, \
                       token_hint, display_name, bot_user_id, reply_template_name, \
                       reply_template_language, created_at, updated_at";

fn insert_error(e: sqlx::Error, kind: Kind) -> ChannelError {
    match violated_constraint(&e) {
        Some("channel_connections_external_key") => ChannelError::AlreadyConnected(match kind {
            Kind::Slack => "Slack workspace",
            Kind::WhatsApp => "WhatsApp number",
        }),
        Some("channel_connections_agent_fkey") => ChannelError::AgentNotFound,
        _ => ChannelError::Database(e),
    }
}

/// The token as stored: its Fernet token and the hint listings show.
struct Sealed {
    ciphertext: String,
    hint: String,
}

fn seal(keyring: &Keyring, new: &NewConnection) -> Result<Sealed, ChannelError> {
    validate(new)?;
    let token = new.token.expose_secret();
    Ok(Sealed {
        ciphertext: keyring
            .encrypt(token.as_bytes())
            .map_err(|_| ChannelError::Encryption)?,
        hint: hint(token),
    })
}

async fn insert(
    tx: &mut PgConnection,
    tenant: Uuid,
    new: &NewConnection,
    sealed: &Sealed,
) -> Result<Connection, ChannelError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO channel_connections
             (id, tenant_id, agent_id, channel, external_id, default_channel,
              token_ciphertext, token_hint, display_name, bot_user_id,
              reply_template_name, reply_template_language)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(tenant)
    .bind(new.agent_id)
    .bind(new.kind.as_str())
    .bind(&new.external_id)
    .bind(&new.default_channel)
    .bind(&sealed.ciphertext)
    .bind(&sealed.hint)
    .bind(&new.display_name)
    .bind(&new.bot_user_id)
    .bind(&new.reply_template_name)
    .bind(&new.reply_template_language)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| insert_error(e, new.kind))
}

/// Validates and stores a new connection in the tenant transaction `tx`.
pub async fn create(
    tx: &mut PgConnection,
    keyring: &Keyring,
    tenant: Uuid,
    new: &NewConnection,
) -> Result<Connection, ChannelError> {
    let sealed = seal(keyring, new)?;
    insert(tx, tenant, new, &sealed).await
}

/// A Slack (re-)install: the tenant's own existing connection for the
/// workspace takes the new token and agent (Slack issues a new token on each
/// install); another tenant's is a conflict.
pub async fn install(
    tx: &mut PgConnection,
    keyring: &Keyring,
    tenant: Uuid,
    new: &NewConnection,
) -> Result<Connection, ChannelError> {
    let sealed = seal(keyring, new)?;
    // RLS shows only this tenant's row: another tenant's workspace falls
    // through to the insert and its unique violation.
    let updated = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE channel_connections
            SET agent_id = $3, token_ciphertext = $4, token_hint = $5, display_name = $6,
                bot_user_id = $7, updated_at = now()
          WHERE channel = $1 AND external_id = $2
         RETURNING {COLUMNS}"
    )))
    .bind(new.kind.as_str())
    .bind(&new.external_id)
    .bind(new.agent_id)
    .bind(&sealed.ciphertext)
    .bind(&sealed.hint)
    .bind(&new.display_name)
    .bind(&new.bot_user_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| insert_error(e, new.kind))?;
    match updated {
        Some(connection) => Ok(connection),
        None => insert(tx, tenant, new, &sealed).await,
    }
}

/// The connections visible in `tx`, oldest first.
pub async fn list(tx: &mut PgConnection) -> Result<Vec<Connection>, ChannelError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM channel_connections ORDER BY created_at, id"
    )))
    .fetch_all(&mut *tx)
    .await?)
}

/// Deletes a connection visible in `tx`; returns it as it was (the edge
/// forgets its route by channel and external id), None when there is none.
pub async fn delete(tx: &mut PgConnection, id: Uuid) -> Result<Option<Connection>, ChannelError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM channel_connections WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?)
}

/// The owner of an inbound Slack team id or WhatsApp phone_number_id, with
/// the plaintext token to answer on it. Inbound events carry no tenant, so
/// this reads across tenants.
pub async fn resolve(
    db: &PgPool,
    keyring: &Keyring,
    kind: Kind,
    external_id: &str,
) -> Result<Option<Resolved>, ChannelError> {
    let mut tx = begin_platform(db).await?;
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        tenant_id: Uuid,
        agent_id: Uuid,
        token_ciphertext: String,
        default_channel: String,
        bot_user_id: String,
        reply_template_name: String,
        reply_template_language: String,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, tenant_id, agent_id, token_ciphertext, default_channel, bot_user_id,
                reply_template_name, reply_template_language
           FROM channel_connections WHERE channel = $1 AND external_id = $2",
    )
    .bind(kind.as_str())
    .bind(external_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let plaintext = keyring
        .decrypt(&row.token_ciphertext)
        .map_err(|_| ChannelError::Undecryptable)?;
    let token = String::from_utf8(plaintext).map_err(|_| ChannelError::Undecryptable)?;
    Ok(Some(Resolved {
        connection_id: row.id,
        tenant_id: row.tenant_id,
        agent_id: row.agent_id,
        token: token.into(),
        default_channel: row.default_channel,
        bot_user_id: row.bot_user_id,
        reply_template_name: row.reply_template_name,
        reply_template_language: row.reply_template_language,
    }))
}

/// The tokens `crewmesh rotate-keys` re-encrypts.
pub const TOKENS: EncryptedColumn = EncryptedColumn {
    table: "channel_connections",
    column: "token_ciphertext",
};

/// Re-encrypts every channel token under the newest key.
pub async fn rotate_tokens(
    db: &PgPool,
    keyring: &Keyring,
    batch: i64,
    report: impl FnMut(Progress),
) -> Result<Progress, RotationError> {
    rotate(db, keyring, TOKENS, batch, report).await
}

/// How long an admin has to finish the install on Slack's consent page;
/// the gateway's binding cookie lives exactly as long.
pub const INSTALL_TTL: Duration = Duration::minutes(15);

/// SHA-256 of an install secret (the OAuth state or the browser binding):
/// what is stored instead of the secret.
fn state_hash(state: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, state.as_bytes())
        .as_ref()
        .to_vec()
}

/// A browser binding is the caller's random value: 22 characters hold the
/// 128 bits of a base64url-encoded 16 bytes.
fn valid_binding(binding: &str) -> bool {
    (22..=512).contains(&binding.len()) && !binding.chars().any(char::is_whitespace)
}

/// Records a pending install of `agent` in the tenant transaction `tx`,
/// bound to the browser holding `binding`; returns the OAuth `state` (256
/// random bits; only its hash is stored, as only the binding's is).
pub async fn begin_install(
    tx: &mut PgConnection,
    tenant: Uuid,
    agent: Uuid,
    binding: &str,
) -> Result<(String, DateTime<Utc>), ChannelError> {
    if !valid_binding(binding) {
        return Err(invalid(
            "browser_binding",
            "must be a random value of 22–512 characters held by the installing browser",
        ));
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes).map_err(|_| ChannelError::Random)?;
    let state = URL_SAFE_NO_PAD.encode(bytes);
    let expires_at = Utc::now() + INSTALL_TTL;
    sqlx::query(
        "INSERT INTO slack_install_states (state_hash, tenant_id, agent_id, expires_at, binding_hash)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(state_hash(&state))
    .bind(tenant)
    .bind(agent)
    .bind(expires_at)
    .bind(state_hash(binding))
    .execute(&mut *tx)
    .await
    .map_err(|e| match violated_constraint(&e) {
        Some("slack_install_states_agent_fkey") => ChannelError::AgentNotFound,
        _ => ChannelError::Database(e),
    })?;
    Ok((state, expires_at))
}

/// What a returning OAuth callback may do with its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The install of this agent, for this tenant: consumed now, once.
    Install { tenant: Uuid, agent: Uuid },
    /// A live install started in another browser (a forwarded authorize
    /// link), or whose cookie is gone: left for the browser that holds it.
    OtherBrowser,
    /// Unknown, used or expired.
    Unknown,
}

/// Consumes a pending install if `binding` is the one it was started with
/// and it has not expired. Expired installs are swept on the way.
pub async fn take_install(db: &PgPool, state: &str, binding: &str) -> Result<Claim, ChannelError> {
    let mut tx = begin_platform(db).await?;
    let taken: Option<(Uuid, Uuid, bool)> = sqlx::query_as(
        "DELETE FROM slack_install_states WHERE state_hash = $1 AND binding_hash = $2
         RETURNING tenant_id, agent_id, expires_at > now()",
    )
    .bind(state_hash(state))
    .bind(state_hash(binding))
    .fetch_optional(&mut *tx)
    .await?;
    let claim = match taken {
        Some((tenant, agent, true)) => Claim::Install { tenant, agent },
        Some((_, _, false)) => Claim::Unknown,
        None => {
            let live: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM slack_install_states
                                 WHERE state_hash = $1 AND expires_at > now())",
            )
            .bind(state_hash(state))
            .fetch_one(&mut *tx)
            .await?;
            if live {
                Claim::OtherBrowser
            } else {
                Claim::Unknown
            }
        }
    };
    sqlx::query("DELETE FROM slack_install_states WHERE expires_at <= now()")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(claim)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack(team: &str, token: &str, default_channel: &str) -> NewConnection {
        NewConnection {
            agent_id: Uuid::nil(),
            kind: Kind::Slack,
            external_id: team.into(),
            token: token.to_owned().into(),
            default_channel: default_channel.into(),
            display_name: String::new(),
            bot_user_id: String::new(),
            reply_template_name: String::new(),
            reply_template_language: String::new(),
        }
    }

    fn whatsapp(number: &str, token: &str, default_channel: &str) -> NewConnection {
        NewConnection {
            kind: Kind::WhatsApp,
            ..slack(number, token, default_channel)
        }
    }

    fn field(r: Result<(), ChannelError>) -> Option<&'static str> {
        match r {
            Err(ChannelError::Invalid { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn slack_connections_need_team_bot_token_and_channel_ids() {
        assert!(validate(&slack("T0123ABCD", "xoxb-1-2-abc", "")).is_ok());
        assert!(validate(&slack("E0123ABCD", "xoxb-1-2-abc", "C0456EFGH")).is_ok());
        assert_eq!(
            field(validate(&slack("t0123", "xoxb-1", ""))),
            Some("external_id")
        );
        assert_eq!(
            field(validate(&slack("T", "xoxb-1", ""))),
            Some("external_id")
        );
        assert_eq!(
            field(validate(&slack("T0123ABCD", "xoxp-user-token", ""))),
            Some("access_token")
        );
        assert_eq!(
            field(validate(&slack("T0123ABCD", "xoxb-1 2", ""))),
            Some("access_token")
        );
        assert_eq!(
            field(validate(&slack("T0123ABCD", "xoxb-1", "#general"))),
            Some("default_channel")
        );
    }

    #[test]
    fn whatsapp_connections_need_the_phone_number_id() {
        assert!(validate(&whatsapp("106540352242922", "EAAG-token", "")).is_ok());
        assert_eq!(
            field(validate(&whatsapp("+1 555 0100", "EAAG", ""))),
            Some("external_id")
        );
        assert_eq!(
            field(validate(&whatsapp("106540352242922", "", ""))),
            Some("access_token")
        );
        assert_eq!(
            field(validate(&whatsapp("106540352242922", "EAAG", "C0123"))),
            Some("default_channel")
        );
    }

    fn templated(kind: Kind, name: &str, language: &str) -> NewConnection {
        let base = match kind {
            Kind::Slack => slack("T0123ABCD", "xoxb-1-2-abc", ""),
            Kind::WhatsApp => whatsapp("106540352242922", "EAAG-token", ""),
        };
        NewConnection {
            reply_template_name: name.into(),
            reply_template_language: language.into(),
            ..base
        }
    }

    #[test]
    fn reply_templates_are_whatsapp_only_and_come_in_pairs() {
        for (name, language) in [
            ("order_update", "en_US"),
            ("order_update", "en"),
            ("x", "fil"),
        ] {
            assert!(
                validate(&templated(Kind::WhatsApp, name, language)).is_ok(),
                "{name} {language}"
            );
        }
        assert!(validate(&templated(Kind::WhatsApp, &"a".repeat(512), "pt_BR")).is_ok());
        let refused =
            |kind, name: &str, language: &str| field(validate(&templated(kind, name, language)));
        assert_eq!(
            refused(Kind::Slack, "order_update", "en_US"),
            Some("reply_template_name")
        );
        assert_eq!(
            refused(Kind::Slack, "", "en_US"),
            Some("reply_template_language")
        );
        assert_eq!(
            refused(Kind::WhatsApp, "order_update", ""),
            Some("reply_template_language")
        );
        assert_eq!(
            refused(Kind::WhatsApp, "", "en_US"),
            Some("reply_template_name")
        );
        for name in ["Order_Update", "order-update", "order update", "ordér"] {
            assert_eq!(
                refused(Kind::WhatsApp, name, "en_US"),
                Some("reply_template_name"),
                "{name}"
            );
        }
        assert_eq!(
            refused(Kind::WhatsApp, &"a".repeat(513), "en_US"),
            Some("reply_template_name")
        );
        for language in ["e", "engl", "EN", "en_us", "en-US", "en_USA", "en_"] {
            assert_eq!(
                refused(Kind::WhatsApp, "order_update", language),
                Some("reply_template_language"),
                "{language}"
            );
        }
    }

    #[test]
    fn states_are_hashed_not_stored() {
        assert_eq!(state_hash("abc").len(), 32);
        assert_ne!(state_hash("abc"), state_hash("abd"));
    }

    #[test]
    fn browser_bindings_carry_at_least_128_bits() {
        assert!(valid_binding(&URL_SAFE_NO_PAD.encode([7u8; 16])));
        assert!(valid_binding(&URL_SAFE_NO_PAD.encode([7u8; 32])));
        for bad in ["", "short", &"a".repeat(513), "aaaaaaaaaaa aaaaaaaaaaaa"] {
            assert!(!valid_binding(bad), "{bad}");
        }
    }
}
