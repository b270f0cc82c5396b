//! A per-client-address limit on the public auth routes (login, token refresh,
//! invite acceptance): the only routes anyone may call without a token, and
//! the ones that make identity-svc hash passwords.
//!
//! A fixed window counted in Redis, so the limit holds across gateway
//! replicas: the first request from an address starts a 60-second window,
//! and past `CREWMESH_AUTH_RATE_PER_MINUTE` requests in it the edge answers
//! 429 with `Retry-After` (the seconds left in the window) without calling
//! identity-svc. The address is [`RequestMeta::client_addr`] (the peer, or the
//! last `X-Forwarded-For` hop when `CREWMESH_TRUST_FORWARDED_FOR` is set);
//! IPv6 clients are counted per /64, which one subscriber usually holds whole.
//!
//! When Redis cannot be reached the request is let through (and logged):
//! identity-svc still bounds hashing and throttles failed logins itself, so
//! an outage of the limiter should not also take sign-in down.

use std::{net::IpAddr, time::Duration};

use axum::{extract::FromRequestParts, http::request::Parts};
use mesh_kit::{ErrorCode, config::parsed_or};
use redis::aio::ConnectionManager;

use crate::{auth::RequestMeta, error::ApiError, startup::AppState};

pub const DEFAULT_AUTH_RATE_PER_MINUTE: u32 = 30;
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct AuthRateConfig {
    /// Requests one address may make to the public auth routes per minute;
    /// 0 turns the limit off.
    pub per_minute: u32,
    /// Prefix of the Redis keys, so deployments (or tests) sharing a Redis
    /// count separately.
    pub key_prefix: String,
}

impl AuthRateConfig {
    pub fn from_env() -> anyhow::Result<AuthRateConfig> {
        Ok(AuthRateConfig {
            per_minute: parsed_or(
                "CREWMESH_AUTH_RATE_PER_MINUTE",
                DEFAULT_AUTH_RATE_PER_MINUTE,
            )?,
            key_prefix: "crewmesh:auth-rate".to_owned(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct AuthRateLimit {
    redis: ConnectionManager,
    config: AuthRateConfig,
}

impl AuthRateLimit {
    pub fn new(redis: ConnectionManager, config: AuthRateConfig) -> AuthRateLimit {
        AuthRateLimit { redis, config }
    }

    /// Counts this request against its address; 429 once the window is full.
    pub async fn admit(&self, meta: &RequestMeta) -> Result<(), ApiError> {
        if self.config.per_minute == 0 {
            return Ok(());
        }
        let key = format!(
            "{}:{}",
            self.config.key_prefix,
            client_bucket(&meta.client_addr)
        );
        let mut redis = self.redis.clone();
        // One transaction: the count, the window's start (only when the key
        // is new) and what is left of it.
        let counted: Result<(u64, i64), redis::RedisError> = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .expire(&key, WINDOW.as_secs() as i64)
            .arg("NX")
            .ignore()
            .ttl(&key)
            .query_async(&mut redis)
            .await;
        match counted {
            Ok((count, _)) if count <= u64::from(self.config.per_minute) => Ok(()),
            Ok((_, left)) => {
                let wait = Duration::from_secs(left.clamp(1, WINDOW.as_secs() as i64) as u64);
                Err(ApiError::new(
                    ErrorCode::ResourceExhausted,
                    format!(
                        "too many sign-in requests from this address; retry in {} seconds",
                        wait.as_secs()
                    ),
                    &meta.request_id,
                )
                .with_retry_after(wait))
            }
            Err(e) => {
                tracing::warn!(error = %e, "auth rate limit unavailable; letting the request through");
                Ok(())
            }
        }
    }
}

/// The request meta of a public auth route whose client is within the limit.
/// Taking this instead of [`RequestMeta`] is what puts a route under the limit;
/// as a parts extractor it runs before the body is read.
#[derive(Debug, Clone)]
pub struct AuthRateLimited(pub RequestMeta);

impl FromRequestParts<AppState> for AuthRateLimited {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let meta = RequestMeta::from_request_parts(parts, state).await?;
        state.auth_rate.admit(&meta).await?;
        Ok(AuthRateLimited(meta))
    }
}

/// What an address is counted as: IPv4 as is, IPv6 by its /64, anything
/// unparseable (no address known) in one shared bucket.
fn client_bucket(addr: &str) -> String {
    match addr.parse::<IpAddr>().map(|a| a.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Err(_) => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::client_bucket;

    #[test]
    fn addresses_are_bucketed() {
        assert_eq!(client_bucket("198.51.100.4"), "198.51.100.4");
        assert_eq!(client_bucket("::ffff:198.51.100.4"), "198.51.100.4");
        assert_eq!(
            client_bucket("2001:db8:0:7::1"),
            client_bucket("2001:db8:0:7:ffff::2")
        );
        assert_eq!(client_bucket(""), "unknown");
    }
}
