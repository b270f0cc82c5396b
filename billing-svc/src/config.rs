//! billing-svc's own settings.

use std::sync::Arc;

use keyring::Keyring;
use mesh_kit::{
    config::{Environment, secret_var},
    service::ServiceConfig,
};
use secrecy::ExposeSecret;

pub const ENCRYPTION_KEYS_ENV: &str = "CREWMESH_ENCRYPTION_KEYS";

/// A well-known key for development only, so local data survives restarts.
/// Production refuses to start without real keys.
pub const DEVELOPMENT_ENCRYPTION_KEY: &str = "Y3Jld21lc2gtZGV2ZWxvcG1lbnQta2V5LWluc2VjdXI=";

#[derive(Debug, Clone)]
pub struct BillingConfig {
    pub service: ServiceConfig,
    pub keyring: Arc<Keyring>,
    /// identity-svc's event stream (`tenant.created`).
    pub events_stream: String,
    /// This replica's name in the consumer group: the pod name in Kubernetes.
    pub consumer_name: String,
    /// None without `STRIPE_SECRET_KEY`: checkout and portal then say Stripe is not configured.
    pub stripe: Option<crate::stripe_api::StripeApi>,
}

/// The platform keyring from `CREWMESH_ENCRYPTION_KEYS` (newest first).
pub fn keyring_from_env(environment: Environment) -> anyhow::Result<Keyring> {
    match (secret_var(ENCRYPTION_KEYS_ENV), environment) {
        (Some(keys), _) => Ok(Keyring::parse(keys.expose_secret())?),
        (None, Environment::Development) => Ok(Keyring::parse(DEVELOPMENT_ENCRYPTION_KEY)?),
        (None, Environment::Production) => anyhow::bail!(
            "{ENCRYPTION_KEYS_ENV} must be set in production (`crewmesh keygen` makes one)"
        ),
    }
}

impl BillingConfig {
    pub fn from_env(service: ServiceConfig) -> anyhow::Result<BillingConfig> {
        let keyring = keyring_from_env(service.common.environment)?;
        Ok(BillingConfig {
            service,
            keyring: Arc::new(keyring),
            events_stream: crate::events::DEFAULT_STREAM.to_owned(),
            consumer_name: consumer_name(),
            stripe: crate::stripe_api::StripeApi::from_env()?,
        })
    }
}

/// `HOSTNAME` (the pod name under Kubernetes), else a random name.
pub fn consumer_name() -> String {
    mesh_kit::config::var("HOSTNAME")
        .unwrap_or_else(|| format!("billing-{}", uuid::Uuid::new_v4().simple()))
}
