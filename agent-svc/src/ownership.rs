//! Channel ownership is proven, not claimed: before a Slack workspace or a
//! WhatsApp number is bound to a tenant, the token offered for it must be
//! accepted by Slack or Meta *for that workspace or number*. Otherwise any
//! tenant could bind another's team id with a junk token, receive its
//! messages, and lock the real owner out (the identifier is unique
//! platform-wide).
//!
//! The proof is asked before any database connection is taken: no pooled
//! connection waits on a third party.

use secrecy::SecretString;

use crate::{
    channels::Kind,
    slack::{self, SlackError},
    whatsapp::{self, GraphError},
};

/// Where the proofs are asked, with agent-svc's one HTTP client.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub http: reqwest::Client,
    /// `SLACK_API_BASE`.
    pub slack_api_base: String,
    /// `WHATSAPP_API_BASE`.
    pub whatsapp_api_base: String,
}

/// What the platform said about the token, worth keeping with the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Slack: the bot's user id. WhatsApp: empty.
    pub bot_user_id: String,
    /// The workspace's name, or the number's verified business name.
    pub display_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// The token is valid, for another workspace than the one claimed.
    #[error("the token belongs to Slack workspace {actual}, not {claimed}")]
    OtherWorkspace { claimed: String, actual: String },
    /// Slack named a bot user id that is not one.
    #[error("Slack's auth.test named a malformed bot user id")]
    MalformedBotUser,
    #[error(transparent)]
    Slack(#[from] SlackError),
    #[error(transparent)]
    Graph(#[from] GraphError),
}

/// `U…` or `W…` (Enterprise Grid), upper-case letters and digits.
fn user_id(value: &str) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(|c| c == 'U' || c == 'W')
        && (3..=21).contains(&value.len())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The longest prefix of `text` within `max` bytes (what a stored name
/// may hold), cut at a character boundary: names are shown, never parsed.
fn clipped(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl Verifier {
    /// Proves `token` speaks for `external_id` on `kind`.
    pub async fn prove(
        &self,
        kind: Kind,
        external_id: &str,
        token: &SecretString,
    ) -> Result<Proof, OwnershipError> {
        match kind {
            Kind::Slack => {
                let bot = slack::auth_test(&self.http, &self.slack_api_base, token).await?;
                // An org-wide (Enterprise Grid) install is addressed by its
                // enterprise id; any other by its team id.
                let owns =
                    bot.team_id == external_id || bot.enterprise_id.as_deref() == Some(external_id);
                if !owns {
                    return Err(OwnershipError::OtherWorkspace {
                        claimed: external_id.to_owned(),
                        actual: bot.team_id,
                    });
                }
                if !user_id(&bot.user_id) {
                    return Err(OwnershipError::MalformedBotUser);
                }
                Ok(Proof {
                    bot_user_id: bot.user_id,
                    display_name: clipped(&bot.team_name, 200),
                })
            }
            Kind::WhatsApp => {
                let number =
                    whatsapp::phone_number(&self.http, &self.whatsapp_api_base, external_id, token)
                        .await?;
                let name = if number.verified_name.is_empty() {
                    number.display_phone_number
                } else {
                    number.verified_name
                };
                Ok(Proof {
                    bot_user_id: String::new(),
                    display_name: clipped(&name, 200),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_user_ids_are_slack_user_ids() {
        assert!(user_id("U0BOTUSER1"));
        assert!(user_id("W0123ABCD"));
        for bad in ["", "B0BOT", "u0bot", "U", "U0BOT USER", &"U".repeat(22)] {
            assert!(!user_id(bad), "{bad}");
        }
    }

    #[test]
    fn names_are_clipped_at_a_character_boundary() {
        assert_eq!(clipped("Acme & Co", 200), "Acme & Co");
        assert_eq!(clipped(&"é".repeat(300), 200), "é".repeat(100));
        assert_eq!(clipped("aé", 2), "a");
    }
}
