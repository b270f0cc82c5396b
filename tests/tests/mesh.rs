//! End to end through the real gateway, services, PostgreSQL and Redis.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crewmesh_proto::identity::v1::{WhoAmIRequest, identity_service_client::IdentityServiceClient};
use crewmesh_tests::spawn_mesh;
use mesh_kit::{ErrorCode, Role, ServiceId, client::CallContext};
use serde_json::Value;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};
use uuid::Uuid;

#[tokio::test]
async fn me_is_401_without_a_token_and_answers_the_caller_with_one() {
    let mesh = spawn_mesh().await;
    let url = mesh.url("/api/v1/me");

    let anonymous = mesh.http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let echoed_id = anonymous.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");
    assert_eq!(body["request_id"], echoed_id.as_str());
    assert!(body["message"].as_str().unwrap().contains("Bearer"));

    let forged = mesh
        .http
        .get(&url)
        .bearer_auth(testkit::service_token(ServiceId::Llm).unwrap() + "x")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);

    let tenant = Uuid::now_v7();
    let (user, token) = testkit::user_token(Role::CustomerAdmin, Some(tenant)).unwrap();
    let me = mesh.http.get(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let body: Value = me.json().await.unwrap();
    assert_eq!(body["kind"], "user");
    assert_eq!(body["user_id"], user.to_string());
    assert_eq!(body["tenant_id"], tenant.to_string());
    assert_eq!(body["role"], "customer_admin");
}

#[tokio::test]
async fn every_service_is_serving_and_lists_itself_in_reflection() {
    let mesh = spawn_mesh().await;
    let expected = [
        (ServiceId::Identity, "crewmesh.identity.v1.IdentityService"),
        (ServiceId::Agent, "crewmesh.agent.v1.AgentService"),
        (ServiceId::Llm, "crewmesh.llm.v1.LlmService"),
        (ServiceId::Billing, "crewmesh.billing.v1.BillingService"),
        (ServiceId::Media, "crewmesh.media.v1.MediaService"),
    ];
    for (service, name) in expected {
        let url = mesh.grpc_url(service).to_owned();
        let channel = mesh_kit::client::lazy_channel(&url).unwrap();
        let mut health = HealthClient::new(channel.clone());
        for checked in ["", name] {
            let status = health
                .check(HealthCheckRequest {
                    service: checked.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            assert_eq!(
                status,
                ServingStatus::Serving,
                "{service} health of `{checked}`"
            );
        }

        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("{service}: not a list-services answer");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == name), "{service} lists {names:?}");
        assert!(names.iter().any(|n| n == "grpc.health.v1.Health"));
    }
}

#[tokio::test]
async fn grpc_calls_need_a_valid_token_and_see_who_called() {
    let mesh = spawn_mesh().await;
    let url = mesh.grpc_url(ServiceId::Identity).to_owned();
    let mut identity = IdentityServiceClient::connect(url).await.unwrap();

    let status = identity.who_am_i(WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(ErrorCode::of_status(&status), ErrorCode::Unauthenticated);

    // A user token signed by a service other than identity-svc is refused.
    let llm = mesh_kit::auth::Keyring::development(ServiceId::Llm).unwrap();
    let (minted, _) = llm
        .signer
        .sign_user(
            &mesh_kit::auth::UserClaims {
                user_id: Uuid::now_v7(),
                tenant_id: None,
                role: Role::PlatformAdmin,
                impersonator: None,
                api_key_id: None,
            },
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let status = identity
        .who_am_i(CallContext::new(minted, None).request(WhoAmIRequest {}))
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::of_status(&status), ErrorCode::Unauthenticated);

    let token = testkit::service_token(ServiceId::Agent).unwrap();
    let me = identity
        .who_am_i(CallContext::new(token, None).request(WhoAmIRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.kind, "service");
    assert_eq!(me.service, "agent-svc");

    // Refused and answered calls alike reach the metrics, by code; a made-up
    // method does not become a label.
    let text = mesh_kit::metrics::render();
    let series = |code: &str| {
        format!(
            r#"grpc_server_handled_total{{grpc_service="crewmesh.identity.v1.IdentityService",grpc_method="WhoAmI",grpc_code="{code}"}} "#
        )
    };
    assert!(text.contains(&(series("Unauthenticated") + "2")), "{text}");
    assert!(text.contains(&(series("OK") + "1")), "{text}");
}

#[tokio::test]
async fn the_edge_documents_itself_and_answers_unknown_routes_in_json() {
    let mesh = spawn_mesh().await;
    let (_, doc) = mesh.get_json("/api/v1/openapi.json", None).await;
    assert_eq!(doc["info"]["title"], "Crewmesh API");
    let operations = [
        ("get", "/api/v1/me"),
        ("post", "/api/v1/tenants"),
        ("get", "/api/v1/tenants"),
        ("get", "/api/v1/tenants/{id}"),
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/refresh"),
        ("get", "/api/v1/users"),
        ("post", "/api/v1/invites"),
        ("post", "/api/v1/invites/{id}/resend"),
        ("post", "/api/v1/invites/accept"),
        ("post", "/api/v1/impersonations"),
        ("get", "/api/v1/audit-events"),
        ("post", "/api/v1/api-keys"),
        ("get", "/api/v1/api-keys"),
        ("delete", "/api/v1/api-keys/{id}"),
        ("post", "/api/v1/llm-keys"),
        ("get", "/api/v1/llm-keys"),
        ("delete", "/api/v1/llm-keys/{id}"),
        ("get", "/api/v1/billing/subscription"),
        ("post", "/api/v1/billing/checkout"),
        ("post", "/api/v1/billing/portal"),
        ("post", "/webhooks/stripe"),
        ("post", "/webhooks/slack/events"),
        ("get", "/webhooks/whatsapp"),
        ("post", "/webhooks/whatsapp"),
        ("get", "/api/v1/usage/agents/{agent_id}/budget"),
        ("get", "/api/v1/usage/daily"),
        ("get", "/api/v1/usage/conversations"),
        ("get", "/api/v1/templates"),
        ("post", "/api/v1/agents"),
        ("get", "/api/v1/agents"),
        ("post", "/api/v1/agents/from-template"),
        ("get", "/api/v1/agents/{id}"),
        ("patch", "/api/v1/agents/{id}"),
        ("delete", "/api/v1/agents/{id}"),
        ("get", "/api/v1/agents/{id}/system-prompt"),
        ("post", "/api/v1/agents/{id}/run"),
        ("get", "/api/v1/templates/{slug}"),
        ("post", "/api/v1/channels"),
        ("get", "/api/v1/channels"),
        ("delete", "/api/v1/channels/{id}"),
        ("post", "/api/v1/channels/slack/install"),
        ("get", "/api/v1/dead-letters"),
        ("post", "/api/v1/dead-letters/{id}/retry"),
        ("get", "/oauth/slack/callback"),
        ("post", "/api/v1/media/uploads"),
        ("get", "/api/v1/media/{id}"),
        ("get", "/api/v1/media/{id}/url"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    ];
    let documented = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum::<usize>();
    assert_eq!(
        documented,
        operations.len(),
        "every route is listed, and only those"
    );
    for (method, path) in operations {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "OpenAPI lacks {method} {path}");
        // Every operation documents a success with a body shape (204 has none;
        // the OAuth callback answers a browser with a page; a webhook
        // handshake echoes its challenge as plain text).
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.iter().any(|(code, r)| code.starts_with('2')
                && (code == "204"
                    || r["content"]["application/json"]["schema"].is_object()
                    || (path.starts_with("/oauth/")
                        && r["content"]["text/html"]["schema"].is_object())
                    || (method == "get"
                        && path.starts_with("/webhooks/")
                        && r["content"]["text/plain"]["schema"].is_object()))),
            "{method} {path} documents no success shape"
        );
        if (method == "post" || method == "patch") && !path.ends_with("/resend") {
            assert!(
                op["requestBody"]["content"]["application/json"]["schema"].is_object(),
                "{method} {path} documents no request shape"
            );
        }
        // Whatever takes input can refuse it, and says so.
        if method == "post" || method == "patch" {
            assert!(
                responses.contains_key("422"),
                "{method} {path} does not document its 422"
            );
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let swagger = mesh.http.get(mesh.url("/docs/")).send().await.unwrap();
    assert_eq!(swagger.status(), 200);
    assert!(swagger.text().await.unwrap().contains("swagger"));

    let missing = mesh
        .http
        .get(mesh.url("/api/v1/nope"))
        .header("x-request-id", "client-chosen-id")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    assert_eq!(body["request_id"], "client-chosen-id");

    let live = mesh.http.get(mesh.url("/healthz")).send().await.unwrap();
    assert_eq!(live.status(), 200);
}
