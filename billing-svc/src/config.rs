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
    /// `CREWMESH_EGRESS_ALLOW`: internal addresses a key's base URL may name.
    pub egress: mesh_kit::egress::EgressPolicy,
    /// `CREWMESH_STRIPE_PRICES`, read price → plan: what a subscription is
    /// billed for decides its plan and quota.
    pub plan_prices: crate::subscriptions::PlanPrices,
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
            egress: mesh_kit::egress::EgressPolicy::from_env()?,
            plan_prices: crate::subscriptions::PlanPrices::new(&crate::stripe_api::parse_prices(
                &mesh_kit::config::var("CREWMESH_STRIPE_PRICES").unwrap_or_default(),
            )),
        })
    }
}

/// Stable per replica (`CREWMESH_CONSUMER_NAME`, else the host name, the
/// pod name under Kubernetes): a restarted replica takes back its own
/// pending events instead of leaving them to the claim time.
pub fn consumer_name() -> String {
    mesh_kit::queues::consumer_name()
}
