//! billing-svc's own settings.

use std::sync::Arc;

use keyring::Keyring;
use mesh_kit::service::ServiceConfig;

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

impl BillingConfig {
    pub fn from_env(service: ServiceConfig) -> anyhow::Result<BillingConfig> {
        let keyring = mesh_kit::secrets::keyring_from_env(service.common.environment)?;
        Ok(BillingConfig {
            service,
            keyring: Arc::new(keyring),
            events_stream: crate::events::DEFAULT_STREAM.to_owned(),
            consumer_name: consumer_name(),
            stripe: crate::stripe_api::StripeApi::from_env()?,
        })
    }
}

/// Stable per replica (`CREWMESH_CONSUMER_NAME`, else the host name, the
/// pod name under Kubernetes): a restarted replica takes back its own
/// pending events instead of leaving them to the claim time.
pub fn consumer_name() -> String {
    mesh_kit::queues::consumer_name()
}
