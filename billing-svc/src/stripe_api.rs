//! Calls to Stripe's API (B2) with async-stripe: customers, Checkout sessions
//! for a plan, and billing-portal sessions. `STRIPE_API_BASE` points the same
//! code at a local server in tests.
//!
//! Every create carries an idempotency key, and transient failures (network,
//! timeouts, 429, 5xx) are retried a bounded number of times with the same
//! key, so a retry never makes a second customer or session.

use std::{collections::HashMap, time::Duration};

use mesh_kit::{ErrorCode, config::var, error::invalid_field};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::CreateCustomer;
use stripe_shared::CheckoutSessionMode;
use tonic::Status;
use uuid::Uuid;

use crate::{plans, subscriptions};

const ATTEMPTS: u32 = 3;
const TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

#[derive(Clone)]
pub struct StripeApi {
    client: Client,
    /// Plan name → Stripe price id.
    prices: HashMap<String, String>,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeApi")
            .field("prices", &self.prices)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    #[error("Stripe is not configured: set STRIPE_SECRET_KEY")]
    NotConfigured,
    #[error("unknown plan `{0}`; choose starter, growth or scale")]
    UnknownPlan(String),
    #[error("the {0} plan has no Stripe price: set it in CREWMESH_STRIPE_PRICES")]
    NoPrice(String),
    #[error("{0} must be an http(s) URL")]
    InvalidUrl(&'static str),
    #[error("Stripe refused the request: {0}")]
    Refused(String),
    #[error("Stripe is unreachable or failing: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Billing(#[from] subscriptions::BillingError),
}

impl From<StripeApiError> for Status {
    fn from(err: StripeApiError) -> Status {
        match err {
            StripeApiError::NotConfigured | StripeApiError::NoPrice(_) => {
                ErrorCode::FailedPrecondition.status(err.to_string())
            }
            StripeApiError::UnknownPlan(_) => invalid_field("plan", err.to_string()),
            StripeApiError::InvalidUrl(field) => invalid_field(field, err.to_string()),
            StripeApiError::Refused(_) => {
                tracing::warn!(error = %err, "Stripe refused a request");
                ErrorCode::FailedPrecondition.status(err.to_string())
            }
            StripeApiError::Unavailable(_) => {
                tracing::warn!(error = %err, "Stripe unavailable");
                ErrorCode::Unavailable.status("Stripe is unavailable; retry shortly")
            }
            StripeApiError::Billing(e) => e.into(),
        }
    }
}

/// Parses `plan=price,…`.
pub fn parse_prices(spec: &str) -> HashMap<String, String> {
    spec.split(',')
        .filter_map(|entry| entry.split_once('='))
        .map(|(plan, price)| (plan.trim().to_owned(), price.trim().to_owned()))
        .filter(|(plan, price)| !plan.is_empty() && !price.is_empty())
        .collect()
}

impl StripeApi {
    pub fn new(
        secret_key: &SecretString,
        api_base: &str,
        prices: HashMap<String, String>,
    ) -> Result<StripeApi, StripeError> {
        let client = ClientBuilder::new(secret_key.expose_secret())
            .url(api_base)
            .timeout(TIMEOUT)
            .build()?;
        Ok(StripeApi { client, prices })
    }

    /// From `STRIPE_SECRET_KEY`, `STRIPE_API_BASE` and `CREWMESH_STRIPE_PRICES`;
    /// None when no secret key is set (the Stripe RPCs then say so).
    pub fn from_env() -> anyhow::Result<Option<StripeApi>> {
        let Some(key) = mesh_kit::config::secret_var("STRIPE_SECRET_KEY") else {
            return Ok(None);
        };
        let base = var("STRIPE_API_BASE").unwrap_or_else(|| DEFAULT_API_BASE.to_owned());
        let prices = parse_prices(&var("CREWMESH_STRIPE_PRICES").unwrap_or_default());
        Ok(Some(StripeApi::new(&key, &base, prices)?))
    }

    /// Sends `request` under one idempotency key, retrying transient failures.
    async fn send<R>(&self, request: &R, key: &str) -> Result<R::Output, StripeApiError>
    where
        R: StripeRequest,
        R::Output: miniserde::Deserialize,
    {
        let key = IdempotencyKey::new(key).map_err(|e| StripeApiError::Refused(e.to_string()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = request
                .customize()
                .request_strategy(RequestStrategy::Idempotent(key.clone()))
                .send(&self.client)
                .await;
            let error = match result {
                Ok(output) => return Ok(output),
                Err(StripeError::Stripe(errors, status)) if status != 429 && status < 500 => {
                    return Err(StripeApiError::Refused(
                        errors
                            .message
                            .clone()
                            .unwrap_or_else(|| format!("HTTP {status}")),
                    ));
                }
                Err(e) => e,
            };
            if attempt >= ATTEMPTS {
                return Err(StripeApiError::Unavailable(error.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
        }
    }

    /// The tenant's Stripe customer, created once (the idempotency key is the tenant).
    pub async fn ensure_customer(
        &self,
        db: &PgPool,
        tenant: Uuid,
    ) -> Result<String, StripeApiError> {
        let state = subscriptions::get(db, tenant).await?;
        if let Some(customer) = state.stripe_customer_id {
            return Ok(customer);
        }
        let mut metadata = HashMap::new();
        metadata.insert("tenant_id".to_owned(), tenant.to_string());
        let request = CreateCustomer::new()
            .name(format!("Crewmesh tenant {tenant}"))
            .metadata(metadata);
        let customer = self
            .send(&request, &format!("crewmesh-customer-{tenant}"))
            .await?;
        subscriptions::set_customer(db, tenant, customer.id.as_str()).await?;
        Ok(customer.id.to_string())
    }

    /// A Checkout session that subscribes the tenant to `plan`; returns its URL.
    pub async fn checkout(
        &self,
        db: &PgPool,
        tenant: Uuid,
        plan: &str,
        success_url: &str,
        cancel_url: &str,
        request_id: &str,
    ) -> Result<String, StripeApiError> {
        let plan = plans::paid(plan).ok_or_else(|| StripeApiError::UnknownPlan(plan.to_owned()))?;
        let price = self
            .prices
            .get(plan.name)
            .ok_or_else(|| StripeApiError::NoPrice(plan.name.to_owned()))?;
        check_url("success_url", success_url)?;
        check_url("cancel_url", cancel_url)?;
        let customer = self.ensure_customer(db, tenant).await?;
        let mut metadata = HashMap::new();
        metadata.insert("tenant_id".to_owned(), tenant.to_string());
        metadata.insert("plan".to_owned(), plan.name.to_owned());
        let request = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .customer(customer)
            .client_reference_id(tenant.to_string())
            .line_items(vec![CreateCheckoutSessionLineItems {
                price: Some(price.clone()),
                quantity: Some(1),
                ..Default::default()
            }])
            .subscription_data(CreateCheckoutSessionSubscriptionData {
                metadata: Some(metadata),
                ..Default::default()
            })
            .success_url(success_url)
            .cancel_url(cancel_url);
        let key = if request_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            format!("crewmesh-checkout-{tenant}-{request_id}")
        };
        let session = self.send(&request, &key).await?;
        session
            .url
            .ok_or_else(|| StripeApiError::Refused("the Checkout session has no URL".into()))
    }

    /// A billing-portal session for the tenant's customer; returns its URL.
    pub async fn portal(
        &self,
        db: &PgPool,
        tenant: Uuid,
        return_url: &str,
    ) -> Result<String, StripeApiError> {
        check_url("return_url", return_url)?;
        let customer = self.ensure_customer(db, tenant).await?;
        let request = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url);
        let session = self.send(&request, &Uuid::new_v4().to_string()).await?;
        Ok(session.url)
    }
}

fn check_url(field: &'static str, url: &str) -> Result<(), StripeApiError> {
    if (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() > 8
        && url.len() <= 2048
    {
        Ok(())
    } else {
        Err(StripeApiError::InvalidUrl(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_lists_parse() {
        let prices = parse_prices("starter=price_1, growth = price_2,broken,=x");
        assert_eq!(prices.len(), 2);
        assert_eq!(prices["growth"], "price_2");
    }
}
