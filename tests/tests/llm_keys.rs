//! LLM keys (B3) through the real gateway and billing-svc.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crewmesh_proto::billing::v1::{
    GetLlmKeySecretRequest, billing_internal_service_client::BillingInternalServiceClient,
};
use crewmesh_tests::spawn_mesh;
use mesh_kit::{ErrorCode, ServiceId, client::CallContext};
use serde_json::json;

#[tokio::test]
async fn keys_are_stored_redacted_unique_and_deleted_only_by_their_tenant() {
    let mesh = spawn_mesh().await;
    let (acme, acme_admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (_, globex_admin, _) = mesh.tenant_with_member("globex", "customer_admin").await;
    let secret = "sk-proj-abcdefghijklmnopQRSTx7Qa";

    let (status, key) = mesh
        .post_json(
            "/api/v1/llm-keys",
            Some(&acme_admin),
            &json!({ "provider": "openai", "api_key": secret }),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    assert_eq!(key["key_hint"], "x7Qa");
    assert_eq!(key["tenant_id"], acme.as_str());
    assert!(!key.to_string().contains(secret));
    let id = key["id"].as_str().unwrap().to_owned();

    let (status, listed) = mesh.get_json("/api/v1/llm-keys", Some(&acme_admin)).await;
    assert_eq!(status, 200);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    let text = listed.to_string();
    assert!(
        !text.contains(secret) && !text.contains("gAAAAA"),
        "no key, no ciphertext: {text}"
    );

    let (status, dup) = mesh
        .post_json(
            "/api/v1/llm-keys",
            Some(&acme_admin),
            &json!({ "provider": "openai", "api_key": "sk-2" }),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(dup["code"], "conflict");
    let (status, with_base) = mesh
        .post_json(
            "/api/v1/llm-keys",
            Some(&acme_admin),
            &json!({ "provider": "ollama", "api_key": "ollama", "base_url": "http://127.0.0.1:11434/v1" }),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(with_base["base_url"], "http://127.0.0.1:11434/v1");
    let (status, bad) = mesh
        .post_json(
            "/api/v1/llm-keys",
            Some(&acme_admin),
            &json!({ "provider": "Open AI", "api_key": "k" }),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(bad["field"], "provider");

    let delete = |token: &str, id: &str| {
        let request = mesh
            .http
            .delete(mesh.url(&format!("/api/v1/llm-keys/{id}")))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        delete(&globex_admin, &id).await,
        404,
        "another tenant's key"
    );
    assert_eq!(
        mesh.get_json("/api/v1/llm-keys", Some(&acme_admin)).await.1["keys"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(delete(&acme_admin, &id).await, 204);
    assert_eq!(delete(&acme_admin, &id).await, 404, "already gone");
    assert_eq!(delete(&acme_admin, "not-a-uuid").await, 422);
}

#[tokio::test]
async fn only_llm_svc_reads_a_key_in_plaintext() {
    let mesh = spawn_mesh().await;
    let (acme, acme_admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (status, _) = mesh
        .post_json(
            "/api/v1/llm-keys",
            Some(&acme_admin),
            &json!({ "provider": "anthropic", "api_key": "sk-ant-secret" }),
        )
        .await;
    assert_eq!(status, 201);

    let channel = mesh_kit::client::lazy_channel(mesh.grpc_url(ServiceId::Billing)).unwrap();
    let mut billing = BillingInternalServiceClient::new(channel);
    let ask = |token: String| {
        CallContext::new(token, None).request(GetLlmKeySecretRequest {
            tenant_id: acme.clone(),
            provider: "anthropic".into(),
        })
    };
    let secret = billing
        .get_llm_key_secret(ask(testkit::service_token(ServiceId::Llm).unwrap()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(secret.api_key, "sk-ant-secret");

    for service in [ServiceId::Gateway, ServiceId::Agent] {
        let status = billing
            .get_llm_key_secret(ask(testkit::service_token(service).unwrap()))
            .await
            .unwrap_err();
        assert_eq!(
            ErrorCode::of_status(&status),
            ErrorCode::PermissionDenied,
            "{service}"
        );
    }
    let status = billing
        .get_llm_key_secret(ask(acme_admin))
        .await
        .unwrap_err();
    assert_eq!(
        ErrorCode::of_status(&status),
        ErrorCode::PermissionDenied,
        "a user"
    );
}
