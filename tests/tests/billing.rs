//! Billing state (B1) and Stripe webhooks (B2, G4) through the real gateway,
//! billing-svc, PostgreSQL and Redis.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lc_rs::hmac;
use crewmesh_proto::billing::v1::{
    CheckAgentQuotaRequest, CheckAgentQuotaResponse,
    billing_internal_service_client::BillingInternalServiceClient,
};
use crewmesh_tests::{Mesh, STRIPE_WEBHOOK_SECRET, spawn_mesh};
use mesh_kit::{ServiceId, client::CallContext};
use serde_json::{Value, json};

fn sign(t: i64, payload: &str, secret: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::sign(&key, format!("{t}.{payload}").as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// POSTs `payload` to the Stripe webhook with `signature` as the header (None: no header).
async fn deliver(mesh: &Mesh, payload: &str, signature: Option<String>) -> (u16, Value) {
    let mut request = mesh
        .http
        .post(mesh.url("/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(payload.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Delivers a correctly signed event.
async fn send(mesh: &Mesh, event: &Value) -> Value {
    let payload = event.to_string();
    let t = now();
    let (status, body) = deliver(
        mesh,
        &payload,
        Some(format!(
            "t={t},v1={}",
            sign(t, &payload, STRIPE_WEBHOOK_SECRET)
        )),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn subscription_event(
    id: &str,
    kind: &str,
    created: i64,
    tenant: &str,
    status: &str,
    plan: &str,
) -> Value {
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "created": created,
        "data": { "object": {
            "id": "sub_123",
            "object": "subscription",
            "customer": "cus_123",
            "status": status,
            "metadata": { "tenant_id": tenant, "plan": plan },
            "items": { "object": "list", "data": [{
                "id": "si_123", "object": "subscription_item", "quantity": 1,
                "price": { "id": format!("price_{plan}"), "object": "price" },
            }]},
        }},
    })
}

async fn subscription(mesh: &Mesh, token: &str) -> Value {
    let (status, body) = mesh
        .get_json("/api/v1/billing/subscription", Some(token))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn quota(mesh: &Mesh, tenant: &str, current: i32) -> CheckAgentQuotaResponse {
    let channel = mesh_kit::client::lazy_channel(mesh.grpc_url(ServiceId::Billing)).unwrap();
    let call = CallContext::new(testkit::service_token(ServiceId::Agent).unwrap(), None);
    BillingInternalServiceClient::new(channel)
        .check_agent_quota(call.request(CheckAgentQuotaRequest {
            tenant_id: tenant.to_owned(),
            current_agents: current,
        }))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_new_tenant_starts_on_a_trial_with_the_trial_quota() {
    let mesh = spawn_mesh().await;
    let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let state = subscription(&mesh, &admin).await;
    assert_eq!(state["status"], "trialing");
    assert_eq!(state["plan"], "trial");
    assert_eq!(state["agent_quota"], 2);
    let ends =
        chrono::DateTime::parse_from_rfc3339(state["trial_ends_at"].as_str().unwrap()).unwrap();
    let days = (ends.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((13.9..=14.0).contains(&days), "{days} days of trial");

    let allowed = quota(&mesh, &tenant, 1).await;
    assert!(allowed.allowed);
    let full = quota(&mesh, &tenant, 2).await;
    assert!(!full.allowed);
    assert!(full.reason.contains("allows 2 agents"), "{}", full.reason);
}

#[tokio::test]
async fn webhook_signatures_are_checked_on_the_raw_body() {
    let mesh = spawn_mesh().await;
    let (tenant, _, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let payload = subscription_event(
        "evt_sig",
        "customer.subscription.updated",
        now(),
        &tenant,
        "active",
        "starter",
    )
    .to_string();
    let t = now();
    let good = sign(t, &payload, STRIPE_WEBHOOK_SECRET);

    let (status, body) = deliver(&mesh, &payload, None).await;
    assert_eq!(status, 422, "missing header: {body}");
    let (status, _) = deliver(
        &mesh,
        &payload.replace("active", "canceled"),
        Some(format!("t={t},v1={good}")),
    )
    .await;
    assert_eq!(status, 401, "tampered body");
    let stale = t - 301;
    let (status, body) = deliver(
        &mesh,
        &payload,
        Some(format!(
            "t={stale},v1={}",
            sign(stale, &payload, STRIPE_WEBHOOK_SECRET)
        )),
    )
    .await;
    assert_eq!(status, 401, "stale timestamp");
    assert!(body["message"].as_str().unwrap().contains("tolerance"));
    let (status, _) = deliver(
        &mesh,
        &payload,
        Some(format!("t={t},v1={}", sign(t, &payload, "whsec_wrong"))),
    )
    .await;
    assert_eq!(status, 401, "wrong secret");
    // Several signatures (a secret being rolled): one match is enough.
    let (status, body) = deliver(
        &mesh,
        &payload,
        Some(format!(
            "t={t},v1={},v1={good}",
            sign(t, &payload, "whsec_old")
        )),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], false);
    let admin_token = mesh.admin_token().await;
    let (_, state) = mesh
        .get_json(
            &format!("/api/v1/billing/subscription?tenant_id={tenant}"),
            Some(&admin_token),
        )
        .await;
    assert_eq!(state["status"], "active");
}

#[tokio::test]
async fn redelivered_events_change_nothing_and_late_events_never_move_state_back() {
    let mesh = spawn_mesh().await;
    let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let t0 = now() - 100;

    // updated (active, growth) arrives before the older created (incomplete).
    let updated = subscription_event(
        "evt_2",
        "customer.subscription.updated",
        t0 + 10,
        &tenant,
        "active",
        "growth",
    );
    let created = subscription_event(
        "evt_1",
        "customer.subscription.created",
        t0,
        &tenant,
        "incomplete",
        "growth",
    );
    send(&mesh, &updated).await;
    send(&mesh, &created).await;
    let state = subscription(&mesh, &admin).await;
    assert_eq!(state["status"], "active", "the late `created` did not win");
    assert_eq!(state["plan"], "growth");
    assert_eq!(state["agent_quota"], 20);
    assert_eq!(state["stripe_customer_id"], "cus_123");

    // A redelivery is recognised and stored once.
    let again = send(&mesh, &updated).await;
    assert_eq!(again["duplicate"], true);

    // Payment fails → past_due; paid → active again.
    let invoice = |id: &str, kind: &str, created: i64| {
        json!({ "id": id, "type": kind, "created": created,
                "data": { "object": { "object": "invoice", "customer": "cus_123", "subscription": "sub_123" } } })
    };
    send(&mesh, &invoice("evt_3", "invoice.payment_failed", t0 + 20)).await;
    assert_eq!(subscription(&mesh, &admin).await["status"], "past_due");
    assert!(
        quota(&mesh, &tenant, 0).await.allowed,
        "past_due still works during dunning"
    );
    send(&mesh, &invoice("evt_4", "invoice.paid", t0 + 30)).await;
    assert_eq!(subscription(&mesh, &admin).await["status"], "active");

    // Canceled: no new agents, and an older `updated` arriving late cannot revive it.
    send(
        &mesh,
        &subscription_event(
            "evt_5",
            "customer.subscription.deleted",
            t0 + 40,
            &tenant,
            "canceled",
            "growth",
        ),
    )
    .await;
    send(
        &mesh,
        &subscription_event(
            "evt_6",
            "customer.subscription.updated",
            t0 + 35,
            &tenant,
            "active",
            "growth",
        ),
    )
    .await;
    assert_eq!(subscription(&mesh, &admin).await["status"], "canceled");
    let denied = quota(&mesh, &tenant, 0).await;
    assert!(!denied.allowed);
    assert!(denied.reason.contains("canceled"));

    send(
        &mesh,
        &subscription_event(
            "evt_7",
            "customer.subscription.updated",
            t0 + 50,
            &tenant,
            "unpaid",
            "growth",
        ),
    )
    .await;
    assert!(
        !quota(&mesh, &tenant, 0).await.allowed,
        "unpaid cannot create agents"
    );
}

#[tokio::test]
async fn checkout_completion_links_the_customer_and_unknown_events_are_stored_and_ignored() {
    let mesh = spawn_mesh().await;
    let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let completed = json!({
        "id": "evt_checkout", "type": "checkout.session.completed", "created": now(),
        "data": { "object": { "object": "checkout.session", "client_reference_id": tenant,
                              "customer": "cus_999", "subscription": "sub_999" } },
    });
    assert_eq!(send(&mesh, &completed).await["duplicate"], false);
    assert_eq!(
        subscription(&mesh, &admin).await["stripe_customer_id"],
        "cus_999"
    );

    let other = json!({ "id": "evt_other", "type": "customer.created", "created": now(),
                        "data": { "object": { "object": "customer", "id": "cus_x" } } });
    assert_eq!(send(&mesh, &other).await["duplicate"], false);
    assert_eq!(send(&mesh, &other).await["duplicate"], true);

    let t = now();
    let junk = "not json";
    let (status, _) = deliver(
        &mesh,
        junk,
        Some(format!("t={t},v1={}", sign(t, junk, STRIPE_WEBHOOK_SECRET))),
    )
    .await;
    assert_eq!(status, 422, "a signed body that is not an event");
}

mod stripe_api {
    use crewmesh_tests::{MeshOptions, fake_stripe::FakeStripe, spawn_mesh_with};
    use serde_json::json;

    #[tokio::test]
    async fn checkout_and_portal_speak_stripes_wire_format() {
        let stripe = FakeStripe::start().await;
        let mesh = spawn_mesh_with(MeshOptions {
            stripe_api_base: Some(stripe.url.clone()),
            ..MeshOptions::default()
        })
        .await;
        let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
        let body = json!({ "plan": "growth", "success_url": "https://app.example/ok", "cancel_url": "https://app.example/no" });

        let response = mesh
            .http
            .post(mesh.url("/api/v1/billing/checkout"))
            .bearer_auth(&admin)
            .header("idempotency-key", "upgrade-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let first: serde_json::Value = response.json().await.unwrap();
        assert!(
            first["url"]
                .as_str()
                .unwrap()
                .starts_with("https://checkout.stripe.com/")
        );

        let requests = stripe.requests();
        assert_eq!(requests.len(), 2, "a customer, then a session");
        let (customer, session) = (&requests[0], &requests[1]);
        assert_eq!(customer.path, "/v1/customers");
        assert_eq!(
            customer.field("metadata[tenant_id]").as_deref(),
            Some(tenant.as_str())
        );
        assert_eq!(
            customer.headers["idempotency-key"],
            format!("crewmesh-customer-{tenant}")
        );
        assert_eq!(session.path, "/v1/checkout/sessions");
        assert_eq!(session.headers["authorization"], "Bearer sk_test_crewmesh");
        assert_eq!(
            session.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(session.field("mode").as_deref(), Some("subscription"));
        assert_eq!(session.field("customer").as_deref(), Some("cus_fake1"));
        assert_eq!(
            session.field("client_reference_id").as_deref(),
            Some(tenant.as_str())
        );
        assert_eq!(
            session.field("line_items[0][price]").as_deref(),
            Some("price_growth")
        );
        assert_eq!(
            session.field("line_items[0][quantity]").as_deref(),
            Some("1")
        );
        assert_eq!(
            session
                .field("subscription_data[metadata][plan]")
                .as_deref(),
            Some("growth")
        );
        assert_eq!(
            session
                .field("subscription_data[metadata][tenant_id]")
                .as_deref(),
            Some(tenant.as_str())
        );
        assert_eq!(
            session.field("success_url").as_deref(),
            Some("https://app.example/ok")
        );

        // The customer is reused; a retry with the same key is the same session.
        let again: serde_json::Value = mesh
            .http
            .post(mesh.url("/api/v1/billing/checkout"))
            .bearer_auth(&admin)
            .header("idempotency-key", "upgrade-1")
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(again["url"], first["url"]);
        let requests = stripe.requests();
        assert_eq!(requests.len(), 3);
        assert_eq!(
            requests[2].headers["idempotency-key"],
            requests[1].headers["idempotency-key"]
        );
        let (_, state) = mesh
            .get_json("/api/v1/billing/subscription", Some(&admin))
            .await;
        assert_eq!(state["stripe_customer_id"], "cus_fake1");

        // Transient failures are retried with the same key.
        stripe.fail_next(1);
        let (status, portal) = mesh
            .post_json(
                "/api/v1/billing/portal",
                Some(&admin),
                &json!({ "return_url": "https://app.example/billing" }),
            )
            .await;
        assert_eq!(status, 201, "{portal}");
        assert!(
            portal["url"]
                .as_str()
                .unwrap()
                .starts_with("https://billing.stripe.com/")
        );
        let requests = stripe.requests();
        let tries: Vec<_> = requests
            .iter()
            .filter(|r| r.path == "/v1/billing_portal/sessions")
            .collect();
        assert_eq!(tries.len(), 2, "one failure, one retry");
        assert_eq!(
            tries[0].headers["idempotency-key"],
            tries[1].headers["idempotency-key"]
        );
        assert_eq!(tries[1].field("customer").as_deref(), Some("cus_fake1"));

        let (status, bad) = mesh
            .post_json("/api/v1/billing/checkout", Some(&admin), &json!({ "plan": "platinum", "success_url": "https://a.b/c", "cancel_url": "https://a.b/c" }))
            .await;
        assert_eq!(status, 422);
        assert_eq!(bad["field"], "plan");
        stripe.fail_next(10);
        let (status, down) = mesh
            .post_json(
                "/api/v1/billing/portal",
                Some(&admin),
                &json!({ "return_url": "https://app.example/billing" }),
            )
            .await;
        assert_eq!(status, 503, "{down}");
    }

    #[tokio::test]
    async fn without_a_stripe_key_billing_says_what_to_configure() {
        let mesh = crewmesh_tests::spawn_mesh().await;
        let (_, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
        let (status, body) = mesh
            .post_json(
                "/api/v1/billing/portal",
                Some(&admin),
                &json!({ "return_url": "https://app.example/billing" }),
            )
            .await;
        assert_eq!(status, 409);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("STRIPE_SECRET_KEY")
        );
    }
}

#[tokio::test]
async fn the_subscribed_price_decides_the_plan_not_the_metadata() {
    let mesh = spawn_mesh().await;
    let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let t0 = now() - 100;
    send(
        &mesh,
        &subscription_event(
            "evt_1",
            "customer.subscription.created",
            t0,
            &tenant,
            "active",
            "growth",
        ),
    )
    .await;
    assert_eq!(subscription(&mesh, &admin).await["plan"], "growth");

    // Moved to the starter price in the billing portal: the checkout's
    // metadata still says growth.
    let mut downgraded = subscription_event(
        "evt_2",
        "customer.subscription.updated",
        t0 + 10,
        &tenant,
        "active",
        "growth",
    );
    downgraded["data"]["object"]["items"]["data"][0]["price"]["id"] = json!("price_starter");
    send(&mesh, &downgraded).await;
    let state = subscription(&mesh, &admin).await;
    assert_eq!(state["plan"], "starter", "{state}");
    assert_eq!(state["agent_quota"], 5);

    // A price no plan names leaves the plan as it was, whatever the metadata says.
    let mut unknown = downgraded.clone();
    unknown["id"] = json!("evt_3");
    unknown["created"] = json!(t0 + 20);
    unknown["data"]["object"]["items"]["data"][0]["price"]["id"] = json!("price_from_elsewhere");
    unknown["data"]["object"]["metadata"]["plan"] = json!("scale");
    send(&mesh, &unknown).await;
    let state = subscription(&mesh, &admin).await;
    assert_eq!(state["plan"], "starter");
    assert_eq!(state["agent_quota"], 5);
}
