//! identity-svc's own settings on top of what every service has.

use std::time::Duration;

use mesh_kit::{
    config::{parsed_or, secret_var, var},
    service::ServiceConfig,
};
use secrecy::SecretString;

#[derive(Debug, Clone)]
pub struct BootstrapAdmin {
    pub email: String,
    pub password: SecretString,
}

/// Failed-login limits (see `throttle`). There is deliberately no limit per
/// address alone: behind an ingress or a NAT, one address is many people.
#[derive(Debug, Clone)]
pub struct LoginLimits {
    /// Failed logins allowed per account within `window`, from all addresses
    /// together: what stops guessing one account from many addresses.
    pub per_account: u32,
    /// Failed logins allowed per (account, client address) within `window`:
    /// one address guessing at one account stops well before the account's
    /// limit locks its owner out.
    pub per_account_address: u32,
    pub window: Duration,
    /// Prefix of the Redis keys, so deployments (or tests) sharing a Redis
    /// keep separate counters.
    pub namespace: String,
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub service: ServiceConfig,
    /// Created at start-up as the first platform admin when none exists.
    pub bootstrap_admin: Option<BootstrapAdmin>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub invite_ttl: Duration,
    pub api_key_token_ttl: Duration,
    pub login_limits: LoginLimits,
    /// `CREWMESH_PASSWORD_HASH_CONCURRENCY`: Argon2 runs at once (19 MiB
    /// each); more are refused with 503 + `Retry-After`, not queued.
    pub password_hash_concurrency: usize,
    /// Redis Stream the outbox relay publishes to.
    pub events_stream: String,
}

impl IdentityConfig {
    /// Defaults for everything but the service config.
    pub fn new(service: ServiceConfig) -> IdentityConfig {
        IdentityConfig {
            service,
            bootstrap_admin: None,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            invite_ttl: Duration::from_secs(7 * 24 * 3600),
            api_key_token_ttl: Duration::from_secs(5 * 60),
            login_limits: LoginLimits {
                per_account: 20,
                per_account_address: 5,
                window: Duration::from_secs(15 * 60),
                namespace: "identity".to_owned(),
            },
            password_hash_concurrency: crate::passwords::DEFAULT_CONCURRENCY,
            events_stream: crate::outbox::DEFAULT_STREAM.to_owned(),
        }
    }

    pub fn from_env(service: ServiceConfig) -> anyhow::Result<IdentityConfig> {
        let mut config = IdentityConfig::new(service);
        config.bootstrap_admin = match (
            var("CREWMESH_BOOTSTRAP_ADMIN_EMAIL"),
            secret_var("CREWMESH_BOOTSTRAP_ADMIN_PASSWORD"),
        ) {
            (Some(email), Some(password)) => Some(BootstrapAdmin { email, password }),
            (None, None) => None,
            _ => anyhow::bail!(
                "set both CREWMESH_BOOTSTRAP_ADMIN_EMAIL and CREWMESH_BOOTSTRAP_ADMIN_PASSWORD, or neither"
            ),
        };
        config.invite_ttl = Duration::from_secs(parsed_or(
            "CREWMESH_INVITE_TTL_SECS",
            config.invite_ttl.as_secs(),
        )?);
        config.password_hash_concurrency = parsed_or(
            "CREWMESH_PASSWORD_HASH_CONCURRENCY",
            config.password_hash_concurrency,
        )?;
        if config.password_hash_concurrency == 0 {
            anyhow::bail!(
                "CREWMESH_PASSWORD_HASH_CONCURRENCY must be at least 1 (each hash needs 19 MiB)"
            );
        }
        Ok(config)
    }
}
