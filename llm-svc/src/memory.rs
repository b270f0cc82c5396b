//! Conversation memory: the recent turns of a conversation in Redis (the
//! fast window), rebuilt from PostgreSQL (the record) whenever Redis has lost
//! them or they are stale, and cut to a token budget before they reach the
//! model.
//!
//! The window carries the conversation's message count it was built at; a
//! run uses it only when that count is the conversation's current one, so a
//! window that missed a write (Redis down at the time, a concurrent run) is
//! never served — it is rebuilt instead.

use redis::{AsyncCommands as _, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{conversations::Turn, pricing::estimate_tokens};

/// Turns the window keeps (and PostgreSQL is asked for on a rebuild).
pub const WINDOW_TURNS: usize = 20;
/// The history sent with a run is cut to about this many tokens, newest
/// turns kept, so a long conversation cannot crowd out the answer or blow
/// the model's context.
pub const HISTORY_TOKENS: usize = 6_000;
/// Conversations idle this long fall out of Redis (PostgreSQL still has
/// them): Redis then holds only the conversations of the last hour, which
/// is what keeps it small (ARCHITECTURE.md has the arithmetic).
const TTL_SECS: u64 = 3600;
const PREFIX: &str = "crewmesh:memory";

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    version: i64,
    turns: Vec<Turn>,
}

#[derive(Clone)]
pub struct Memory {
    redis: ConnectionManager,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").finish_non_exhaustive()
    }
}

fn key(conversation: Uuid) -> String {
    format!("{PREFIX}:{conversation}")
}

impl Memory {
    pub fn new(redis: ConnectionManager) -> Memory {
        Memory { redis }
    }

    /// The window at `version`, if Redis has exactly that one. Redis being
    /// unavailable is a miss, not an error: PostgreSQL has the history.
    pub async fn load(&self, conversation: Uuid, version: i64) -> Option<Vec<Turn>> {
        let mut redis = self.redis.clone();
        let raw: Option<Vec<u8>> = match redis.get(key(conversation)).await {
            Ok(raw) => raw,
            Err(e) => {
                tracing::debug!(%conversation, error = %e, "memory window unavailable");
                return None;
            }
        };
        let stored: Stored = serde_json::from_slice(&raw?).ok()?;
        (stored.version == version).then_some(stored.turns)
    }

    /// Stores the window at `version`; best effort.
    pub async fn store(&self, conversation: Uuid, version: i64, turns: &[Turn]) {
        let start = turns.len().saturating_sub(WINDOW_TURNS);
        let stored = Stored {
            version,
            turns: turns[start..].to_vec(),
        };
        let Ok(body) = serde_json::to_vec(&stored) else {
            return;
        };
        let mut redis = self.redis.clone();
        let written: Result<(), _> = redis.set_ex(key(conversation), body, TTL_SECS).await;
        if let Err(e) = written {
            tracing::debug!(%conversation, error = %e, "memory window not stored");
        }
    }

    /// Drops the window, so the next run rebuilds it from PostgreSQL.
    pub async fn forget(&self, conversation: Uuid) {
        let mut redis = self.redis.clone();
        let _: Result<(), _> = redis.del(key(conversation)).await;
    }
}

/// The newest turns that fit in `budget` tokens, oldest first. A turn that
/// alone exceeds what is left ends the history there: older turns without
/// it would read as a different conversation.
pub fn fit(turns: &[Turn], budget: usize) -> &[Turn] {
    let mut used = 0usize;
    let mut start = turns.len();
    for (i, turn) in turns.iter().enumerate().rev() {
        // A few tokens of framing per message, as chat formats add.
        let cost = usize::try_from(estimate_tokens(turn.text.len())).unwrap_or(usize::MAX) + 4;
        if used.saturating_add(cost) > budget {
            break;
        }
        used += cost;
        start = i;
    }
    &turns[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: &str, text: &str) -> Turn {
        Turn {
            role: role.into(),
            text: text.into(),
        }
    }

    #[test]
    fn history_keeps_the_newest_turns_that_fit() {
        let turns = vec![
            turn("user", &"a".repeat(4000)),
            turn("assistant", &"b".repeat(400)),
            turn("user", &"c".repeat(400)),
        ];
        assert_eq!(fit(&turns, 10_000).len(), 3);
        let fitted = fit(&turns, 300);
        assert_eq!(fitted.len(), 2, "the long first turn does not fit");
        assert_eq!(fitted[0].text.chars().next(), Some('b'));
        assert!(fit(&turns, 10).is_empty());
        assert!(fit(&[], 100).is_empty());
    }
}
