//! Tenants (I1) through the real gateway and identity-svc, and the start of
//! the RBAC matrix: every role × every route that exists, anonymous included.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crewmesh_proto::identity::v1::{
    CreateTenantRequest, identity_service_client::IdentityServiceClient,
};
use crewmesh_tests::{Mesh, spawn_mesh};
use mesh_kit::{ErrorCode, Role, ServiceId, client::CallContext};
use serde_json::{Value, json};
use uuid::Uuid;

fn platform_admin() -> String {
    testkit::user_token(Role::PlatformAdmin, None).unwrap().1
}

async fn create(mesh: &Mesh, token: &str, slug: &str) -> reqwest::Response {
    mesh.http
        .post(mesh.url("/api/v1/tenants"))
        .bearer_auth(token)
        .json(&json!({ "slug": slug, "name": format!("{slug} Inc.") }))
        .send()
        .await
        .unwrap()
}

async fn created_id(mesh: &Mesh, slug: &str) -> String {
    let response = create(mesh, &platform_admin(), slug).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn platform_admins_create_list_and_get_tenants() {
    let mesh = spawn_mesh().await;
    let admin = platform_admin();
    let response = create(&mesh, &admin, "acme").await;
    assert_eq!(response.status(), 201);
    let acme: Value = response.json().await.unwrap();
    assert_eq!(acme["slug"], "acme");
    assert_eq!(acme["name"], "acme Inc.");
    let id = acme["id"].as_str().unwrap();

    let (status, got) = mesh
        .get_json(&format!("/api/v1/tenants/{id}"), Some(&admin))
        .await;
    assert_eq!(status, 200);
    assert_eq!(got, acme);

    created_id(&mesh, "globex").await;
    created_id(&mesh, "initech").await;
    let (_, first) = mesh
        .get_json("/api/v1/tenants?page_size=2", Some(&admin))
        .await;
    let slugs = |page: &Value| -> Vec<String> {
        page["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["slug"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(slugs(&first), ["acme", "globex"]);
    let token = first["next_page_token"].as_str().unwrap();
    let (_, second) = mesh
        .get_json(
            &format!("/api/v1/tenants?page_size=2&page_token={token}"),
            Some(&admin),
        )
        .await;
    assert_eq!(slugs(&second), ["initech"]);
    assert!(second.get("next_page_token").is_none());
}

#[tokio::test]
async fn slugs_are_unique_validated_and_retries_are_idempotent() {
    let mesh = spawn_mesh().await;
    let admin = platform_admin();
    created_id(&mesh, "acme").await;

    let duplicate = create(&mesh, &admin, "acme").await;
    assert_eq!(duplicate.status(), 409);
    assert_eq!(duplicate.json::<Value>().await.unwrap()["code"], "conflict");

    let invalid = create(&mesh, &admin, "Not A Slug").await;
    assert_eq!(invalid.status(), 422);
    let body: Value = invalid.json().await.unwrap();
    assert_eq!(body["code"], "invalid_argument");
    assert_eq!(body["field"], "slug");

    let malformed = mesh
        .http
        .post(mesh.url("/api/v1/tenants"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"slug\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 422);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["code"],
        "invalid_argument"
    );

    let (status, body) = mesh
        .get_json("/api/v1/tenants/not-a-uuid", Some(&admin))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["field"], "id");

    let retry = |slug: &'static str| {
        mesh.http
            .post(mesh.url("/api/v1/tenants"))
            .bearer_auth(&admin)
            .header("idempotency-key", "create-globex-1")
            .json(&json!({ "slug": slug, "name": "Globex" }))
            .send()
    };
    let first: Value = retry("globex").await.unwrap().json().await.unwrap();
    let again = retry("globex").await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
}

#[tokio::test]
async fn identity_svc_enforces_the_role_itself() {
    let mesh = spawn_mesh().await;
    let url = mesh.grpc_url(ServiceId::Identity).to_owned();
    let mut identity = IdentityServiceClient::new(mesh_kit::client::lazy_channel(&url).unwrap());
    let (_, token) = testkit::user_token(Role::CustomerAdmin, Some(Uuid::now_v7())).unwrap();
    let status = identity
        .create_tenant(CallContext::new(token, None).request(CreateTenantRequest {
            slug: "sneaky".into(),
            name: "Sneaky".into(),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::of_status(&status), ErrorCode::PermissionDenied);
}

#[tokio::test]
async fn a_new_tenant_is_announced_on_the_event_stream_for_billing() {
    let mesh = spawn_mesh().await;
    let id = created_id(&mesh, "acme").await;
    let client = redis::Client::open(testkit::redis_url()).unwrap();
    let redis = client.get_multiplexed_async_connection().await.unwrap();
    let stream = mesh.events_stream.clone();
    let entry: Vec<(String, Vec<(String, String)>)> = testkit::eventually(
        std::time::Duration::from_secs(10),
        "the tenant.created event",
        || {
            let (mut redis, stream) = (redis.clone(), stream.clone());
            async move {
                let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut redis)
                    .await
                    .ok()?;
                (!entries.is_empty()).then_some(entries)
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(entry.len(), 1, "one event per tenant");
    let fields: std::collections::HashMap<_, _> = entry[0].1.iter().cloned().collect();
    assert_eq!(fields["topic"], "tenant.created");
    let payload: Value = serde_json::from_str(&fields["payload"]).unwrap();
    assert_eq!(payload["tenant_id"], id.as_str());
    assert_eq!(payload["slug"], "acme");
    assert!(!fields["id"].is_empty());
}
