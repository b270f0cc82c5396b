//! Usage metering (B4, X4) through the real gateway and billing-svc: settled
//! usage shows as budget status, a daily series and cost per conversation.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crewmesh_proto::billing::v1::{
    SetAgentBudgetRequest, SettleUsageRequest, UsageEvent,
    billing_internal_service_client::BillingInternalServiceClient,
};
use crewmesh_tests::spawn_mesh;
use mesh_kit::{ServiceId, client::CallContext};
use uuid::Uuid;

fn event(call: &str, tenant: &str, agent: &str, conversation: &str, cost: &str) -> UsageEvent {
    UsageEvent {
        call_id: call.into(),
        tenant_id: tenant.into(),
        agent_id: agent.into(),
        conversation_id: conversation.into(),
        model: "openai/gpt-4o-mini".into(),
        prompt_tokens: 1000,
        completion_tokens: 200,
        cost_usd: cost.into(),
        lease_id: String::new(),
    }
}

#[tokio::test]
async fn settled_usage_shows_as_budget_status_series_and_conversation_costs() {
    let mesh = spawn_mesh().await;
    let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (_, globex_admin, _) = mesh.tenant_with_member("globex", "customer_admin").await;
    let operator = {
        let platform = mesh.admin_token().await;
        let (_, token) = mesh
            .invite(&platform, &tenant, "op@acme.test", "operator")
            .await;
        assert_eq!(mesh.accept_invite(&token).await.0, 201);
        mesh.login("op@acme.test", crewmesh_tests::PASSWORD).await
    };
    let agent = Uuid::now_v7().to_string();
    let (c1, c2) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());

    let channel = mesh_kit::client::lazy_channel(mesh.grpc_url(ServiceId::Billing)).unwrap();
    let mut billing = BillingInternalServiceClient::new(channel);
    let as_agent_svc = CallContext::new(testkit::service_token(ServiceId::Agent).unwrap(), None);
    billing
        .set_agent_budget(as_agent_svc.request(SetAgentBudgetRequest {
            tenant_id: tenant.clone(),
            agent_id: agent.clone(),
            limit_usd: "1.00".into(),
        }))
        .await
        .unwrap();
    let as_llm = CallContext::new(testkit::service_token(ServiceId::Llm).unwrap(), None);
    let events = vec![
        event("call-1", &tenant, &agent, &c1, "0.30"),
        event("call-2", &tenant, &agent, &c1, "0.25"),
        event("call-3", &tenant, &agent, &c2, "0.000000001"),
    ];
    let first = billing
        .settle_usage(as_llm.request(SettleUsageRequest {
            events: events.clone(),
            closed_leases: vec![],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.recorded, first.duplicates), (3, 0));
    let again = billing
        .settle_usage(as_llm.request(SettleUsageRequest {
            events,
            closed_leases: vec![],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.recorded, again.duplicates),
        (0, 3),
        "redelivery records nothing"
    );

    let budget_path = format!("/api/v1/usage/agents/{agent}/budget");
    let (status, budget) = mesh.get_json(&budget_path, Some(&operator)).await;
    assert_eq!(status, 200, "{budget}");
    assert_eq!(budget["limit_usd"], "1.00");
    assert_eq!(
        budget["spent_usd"], "0.550000001",
        "exact to the nano-dollar"
    );
    assert_eq!(budget["status"], "ok");
    billing
        .settle_usage(as_llm.request(SettleUsageRequest {
            events: vec![event("call-4", &tenant, &agent, &c2, "0.249999999")],
            closed_leases: vec![],
        }))
        .await
        .unwrap();
    let (_, budget) = mesh.get_json(&budget_path, Some(&admin)).await;
    assert_eq!(budget["spent_usd"], "0.80");
    assert_eq!(budget["status"], "warning", "80 % is a warning");
    assert_eq!(
        mesh.get_json(&budget_path, Some(&globex_admin)).await.0,
        404
    );

    let (status, series) = mesh.get_json("/api/v1/usage/daily", Some(&operator)).await;
    assert_eq!(status, 200);
    let days = series["days"].as_array().unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0]["day"], chrono::Utc::now().date_naive().to_string());
    assert_eq!(days[0]["prompt_tokens"], 4000);
    assert_eq!(days[0]["cost_usd"], "0.80");

    let (status, costs) = mesh
        .get_json("/api/v1/usage/conversations", Some(&admin))
        .await;
    assert_eq!(status, 200);
    let rows = costs["conversations"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let c1_row = rows
        .iter()
        .find(|r| r["conversation_id"] == c1.as_str())
        .unwrap();
    assert_eq!(c1_row["calls"], 2);
    assert_eq!(c1_row["cost_usd"], "0.55");

    let csv = mesh
        .http
        .get(mesh.url("/api/v1/usage/conversations?format=csv"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "conversation_id,agent_id,calls,prompt_tokens,completion_tokens,cost_usd,last_call_at"
    );
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{c1},{agent},2,2000,400,0.55,")))
    );

    // Another tenant sees none of it.
    let (_, theirs) = mesh
        .get_json("/api/v1/usage/conversations", Some(&globex_admin))
        .await;
    assert!(theirs["conversations"].as_array().unwrap().is_empty());
    let (status, _) = mesh
        .get_json(
            &format!("/api/v1/usage/conversations?tenant_id={tenant}"),
            Some(&globex_admin),
        )
        .await;
    assert_eq!(status, 404);
}
