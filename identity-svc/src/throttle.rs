//! Failed-login throttling in Redis: a counter per account and per client
//! address, each expiring `window` after its first failure.

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::config::LoginLimits;

#[derive(Debug, Clone)]
pub struct LoginThrottle {
    redis: ConnectionManager,
    limits: LoginLimits,
}

impl LoginThrottle {
    fn account_key(&self, email: &str) -> String {
        format!("{}:login-failures:account:{email}", self.limits.namespace)
    }

    fn address_key(&self, addr: &str) -> String {
        format!("{}:login-failures:addr:{addr}", self.limits.namespace)
    }

    pub fn new(redis: ConnectionManager, limits: LoginLimits) -> LoginThrottle {
        LoginThrottle { redis, limits }
    }

    /// `Some(wait)` while the account or the address has too many recent failures.
    pub async fn blocked(
        &self,
        email: &str,
        addr: &str,
    ) -> Result<Option<Duration>, redis::RedisError> {
        let mut redis = self.redis.clone();
        let (account, account_ttl, address, address_ttl): (Option<u32>, i64, Option<u32>, i64) =
            redis::pipe()
                .get(self.account_key(email))
                .ttl(self.account_key(email))
                .get(self.address_key(addr))
                .ttl(self.address_key(addr))
                .query_async(&mut redis)
                .await?;
        let mut wait = None;
        if account.unwrap_or(0) >= self.limits.per_account {
            wait = Some(account_ttl.max(1));
        }
        if !addr.is_empty() && address.unwrap_or(0) >= self.limits.per_address {
            wait = Some(wait.unwrap_or(0).max(address_ttl.max(1)));
        }
        Ok(wait.map(|s| Duration::from_secs(s.unsigned_abs())))
    }

    pub async fn failed(&self, email: &str, addr: &str) -> Result<(), redis::RedisError> {
        let mut redis = self.redis.clone();
        let window = self.limits.window.as_secs() as i64;
        let mut pipe = redis::pipe();
        pipe.incr(self.account_key(email), 1)
            .ignore()
            .expire(self.account_key(email), window)
            .arg("NX")
            .ignore();
        if !addr.is_empty() {
            pipe.incr(self.address_key(addr), 1)
                .ignore()
                .expire(self.address_key(addr), window)
                .arg("NX")
                .ignore();
        }
        pipe.query_async::<()>(&mut redis).await
    }

    /// A successful login clears the account's failures (not the address's).
    pub async fn succeeded(&self, email: &str) -> Result<(), redis::RedisError> {
        let mut redis = self.redis.clone();
        redis::cmd("DEL")
            .arg(self.account_key(email))
            .query_async::<()>(&mut redis)
            .await
    }
}
