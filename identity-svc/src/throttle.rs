//! Failed-login throttling in Redis, per account and per (account, client
//! address) — never per address alone. Behind an ingress or a carrier NAT many
//! people share one address; failures there must not refuse another
//! account's correct password. The per-account limit is what protects an
//! account guessed at from many addresses.
//!
//! An attempt is counted *before* the password is checked: [`LoginThrottle::reserve`]
//! checks both counters and increments them in one Redis script, so concurrent
//! wrong guesses cannot all pass a check that has not yet counted them. The
//! outcome then settles the reservation: a wrong password leaves it counted;
//! a right one gives it back and clears the (account, address) failures; an
//! attempt that never reached the password (hashing busy, database down) is
//! given back. Each counter expires `window` after its first failure.

use std::{net::IpAddr, time::Duration};

use mesh_kit::ErrorCode;
use redis::{Script, aio::ConnectionManager};
use tonic::Status;

use crate::config::LoginLimits;

/// Checks both limits and, when neither is reached, counts the attempt.
/// KEYS: the account's counter, the (account, address) counter.
/// ARGV: the account limit, the pair limit, the window in seconds.
/// Returns 0 when reserved, else the seconds until the blocking counter expires.
const RESERVE: &str = r"
local account = tonumber(redis.call('GET', KEYS[1]) or '0')
local pair = tonumber(redis.call('GET', KEYS[2]) or '0')
local blocked = false
local wait = 1
if account >= tonumber(ARGV[1]) then
  blocked = true
  wait = math.max(wait, redis.call('TTL', KEYS[1]))
end
if pair >= tonumber(ARGV[2]) then
  blocked = true
  wait = math.max(wait, redis.call('TTL', KEYS[2]))
end
if blocked then
  return wait
end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3], 'NX')
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3], 'NX')
return 0
";

/// Gives a reserved attempt back. KEYS as for [`RESERVE`]; ARGV[1] is
/// `success` (also forget the pair's failures) or `refund`. A counter that
/// expired meanwhile is left alone rather than pushed below zero.
const RELEASE: &str = r"
local function give_back(key)
  if tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
give_back(KEYS[1])
if ARGV[1] == 'success' then
  redis.call('DEL', KEYS[2])
else
  give_back(KEYS[2])
end
return 0
";

#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    #[error("too many failed logins; try again in {} seconds", .0.as_secs())]
    Blocked(Duration),
    #[error("the throttle store is unavailable")]
    Redis(#[from] redis::RedisError),
}

impl From<ThrottleError> for Status {
    fn from(err: ThrottleError) -> Status {
        match err {
            ThrottleError::Blocked(wait) => {
                crate::error::retry_later(ErrorCode::ResourceExhausted, err.to_string(), wait)
            }
            ThrottleError::Redis(ref e) => {
                tracing::error!(error = %e, "login throttle unavailable");
                ErrorCode::Unavailable.status("login is briefly unavailable; retry shortly")
            }
        }
    }
}

/// One reserved login attempt, to be settled with [`LoginThrottle::succeeded`]
/// or [`LoginThrottle::refund`] (or left counted, for a wrong password).
#[derive(Debug)]
#[must_use = "a reserved attempt counts as a failure unless it is settled"]
pub struct Attempt {
    account_key: String,
    pair_key: String,
}

#[derive(Debug, Clone)]
pub struct LoginThrottle {
    redis: ConnectionManager,
    limits: LoginLimits,
    reserve: Script,
    release: Script,
}

impl LoginThrottle {
    pub fn new(redis: ConnectionManager, limits: LoginLimits) -> LoginThrottle {
        LoginThrottle {
            redis,
            limits,
            reserve: Script::new(RESERVE),
            release: Script::new(RELEASE),
        }
    }

    /// The Redis keys of `email` and of (`email`, `client`). The email is the
    /// hash tag, so both keys of a script live in one Redis Cluster slot.
    fn keys(&self, email: &str, client: &str) -> Attempt {
        let ns = &self.limits.namespace;
        Attempt {
            account_key: format!("{ns}:login-failures:{{{email}}}:account"),
            pair_key: format!("{ns}:login-failures:{{{email}}}:addr:{client}"),
        }
    }

    /// Reserves one attempt at `email` from `client` (a [`client_bucket`]),
    /// or says how long to wait.
    pub async fn reserve(&self, email: &str, client: &str) -> Result<Attempt, ThrottleError> {
        let attempt = self.keys(email, client);
        let mut redis = self.redis.clone();
        let wait: u64 = self
            .reserve
            .key(&attempt.account_key)
            .key(&attempt.pair_key)
            .arg(self.limits.per_account)
            .arg(self.limits.per_account_address)
            .arg(self.limits.window.as_secs().max(1))
            .invoke_async(&mut redis)
            .await?;
        match wait {
            0 => Ok(attempt),
            secs => Err(ThrottleError::Blocked(Duration::from_secs(secs))),
        }
    }

    /// The right password: the attempt was no guess, and earlier failures
    /// from this address no longer count. Failures from other addresses do:
    /// the owner logging in must not reset an attack on their account.
    pub async fn succeeded(&self, attempt: Attempt) -> Result<(), ThrottleError> {
        self.settle(attempt, "success").await
    }

    /// The attempt never reached the password (hashing busy, storage down).
    pub async fn refund(&self, attempt: Attempt) -> Result<(), ThrottleError> {
        self.settle(attempt, "refund").await
    }

    async fn settle(&self, attempt: Attempt, outcome: &str) -> Result<(), ThrottleError> {
        let mut redis = self.redis.clone();
        self.release
            .key(&attempt.account_key)
            .key(&attempt.pair_key)
            .arg(outcome)
            .invoke_async::<()>(&mut redis)
            .await?;
        Ok(())
    }
}

/// The address a login is counted under: IPv4 as is, IPv6 by its /64 (one
/// subscriber usually holds a whole /64, so single addresses would be free
/// to rotate through), `unknown` when there is none.
pub fn client_bucket(addr: Option<IpAddr>) -> String {
    match addr.map(|a| a.to_canonical()) {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_bucketed_so_they_cannot_be_rotated_cheaply() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(client_bucket(ip("203.0.113.7")), "203.0.113.7");
        assert_eq!(client_bucket(ip("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(
            client_bucket(ip("2001:db8:1:2:aaaa::1")),
            client_bucket(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            client_bucket(ip("2001:db8:1:2::1")),
            client_bucket(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_bucket(None), "unknown");
    }
}
