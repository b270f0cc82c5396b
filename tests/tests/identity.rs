//! Identity (I2–I6, X2) end to end through the real gateway, identity-svc,
//! PostgreSQL and Redis.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crewmesh_proto::identity::v1::{
    AuthenticateApiKeyRequest, identity_internal_service_client::IdentityInternalServiceClient,
};
use crewmesh_tests::{
    ADMIN_EMAIL, ADMIN_PASSWORD, MeshOptions, PASSWORD, spawn_mesh, spawn_mesh_with,
};
use mesh_kit::{ErrorCode, ServiceId, client::CallContext};
use serde_json::{Value, json};

#[tokio::test]
async fn the_bootstrap_admin_logs_in_refreshes_and_reuse_ends_the_session() {
    let mesh = spawn_mesh().await;
    let (status, session) = mesh
        .post_json(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "ADMIN@crewmesh.test", "password": ADMIN_PASSWORD }),
        )
        .await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["token_type"], "Bearer");
    assert_eq!(session["user"]["role"], "platform_admin");
    assert!(session["user"].get("tenant_id").is_none());
    let (status, me) = mesh
        .get_json("/api/v1/me", session["access_token"].as_str())
        .await;
    assert_eq!(status, 200);
    assert_eq!(me["role"], "platform_admin");

    let (status, wrong) = mesh
        .post_json(
            "/api/v1/auth/login",
            None,
            &json!({ "email": ADMIN_EMAIL, "password": "nope nope nope" }),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(wrong["code"], "unauthenticated");
    let (status, _) = mesh
        .post_json(
            "/api/v1/auth/login",
            None,
            &json!({ "email": "nobody@x.test", "password": "whatever it is" }),
        )
        .await;
    assert_eq!(status, 401);

    let first = session["refresh_token"].as_str().unwrap();
    let (status, renewed) = mesh
        .post_json(
            "/api/v1/auth/refresh",
            None,
            &json!({ "refresh_token": first }),
        )
        .await;
    assert_eq!(status, 200, "{renewed}");
    let second = renewed["refresh_token"].as_str().unwrap();
    assert_ne!(first, second);
    assert_eq!(
        mesh.get_json("/api/v1/me", renewed["access_token"].as_str())
            .await
            .0,
        200
    );

    // The spent token again: refused, and the newer one dies with it.
    let (status, _) = mesh
        .post_json(
            "/api/v1/auth/refresh",
            None,
            &json!({ "refresh_token": first }),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = mesh
        .post_json(
            "/api/v1/auth/refresh",
            None,
            &json!({ "refresh_token": second }),
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_invite_flow_yields_exactly_the_invited_role() {
    let mesh = spawn_mesh().await;
    let admin = mesh.admin_token().await;
    let tenant = mesh.create_tenant(&admin, "acme").await;
    let (_, token) = mesh
        .invite(&admin, &tenant, "Ann@Acme.test", "operator")
        .await;
    assert!(token.starts_with("cmi_"));

    let (status, user) = mesh.accept_invite(&token).await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["email"], "ann@acme.test");
    assert_eq!(user["role"], "operator");
    assert_eq!(user["tenant_id"], tenant.as_str());

    let ann = mesh.login("ann@acme.test", PASSWORD).await;
    let (_, me) = mesh.get_json("/api/v1/me", Some(&ann)).await;
    assert_eq!(me["role"], "operator");
    assert_eq!(me["tenant_id"], tenant.as_str());

    // Single use.
    let (status, body) = mesh.accept_invite(&token).await;
    assert_eq!(status, 409);
    assert_eq!(body["code"], "conflict");

    // The tenant's users list shows her; a customer admin invites to their own tenant.
    let (status, page) = mesh
        .get_json(&format!("/api/v1/users?tenant_id={tenant}"), Some(&admin))
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["users"][0]["email"], "ann@acme.test");

    let (status, body) = mesh
        .post_json(
            "/api/v1/invites",
            Some(&admin),
            &json!({ "email": "bob@acme.test", "role": "platform_admin", "tenant_id": tenant }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    // Not the shape of an invite token: refused before any lookup.
    let (status, body) = mesh.accept_invite("cmi_not-a-real-token").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "token");
    // The right shape, but no such invite.
    let (status, body) = mesh.accept_invite(&format!("cmi_{}", "A".repeat(43))).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = mesh
        .post_json(
            "/api/v1/invites/accept",
            None,
            &json!({ "token": token, "name": "Ann", "password": "short" }),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["field"], "password");
}

#[tokio::test]
async fn an_expired_invite_is_refused_and_resend_revives_it_with_a_new_token() {
    let mesh = spawn_mesh_with(MeshOptions {
        invite_ttl: Duration::from_secs(1),
        ..MeshOptions::default()
    })
    .await;
    let admin = mesh.admin_token().await;
    let tenant = mesh.create_tenant(&admin, "acme").await;
    let (status, issued) = mesh
        .post_json(
            "/api/v1/invites",
            Some(&admin),
            &json!({ "email": "late@acme.test", "role": "customer_admin", "tenant_id": tenant }),
        )
        .await;
    assert_eq!(status, 201);
    let id = issued["invite"]["id"].as_str().unwrap().to_owned();
    let old_token = issued["token"].as_str().unwrap().to_owned();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(issued["invite"]["expires_at"].as_str().unwrap())
            .unwrap();
    // Accepting would consume it, so wait on the clock rather than on the API.
    testkit::eventually(Duration::from_secs(5), "the invite to expire", || async {
        (chrono::Utc::now() > expires_at).then_some(())
    })
    .await
    .unwrap();

    let (status, body) = mesh.accept_invite(&old_token).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "failed_precondition");
    assert!(body["message"].as_str().unwrap().contains("expired"));

    let (status, resent) = mesh
        .post_json(
            &format!("/api/v1/invites/{id}/resend"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{resent}");
    let new_token = resent["token"].as_str().unwrap();
    assert_ne!(new_token, old_token);

    // The old token is dead; the new one works (one second is enough for one call).
    let (status, _) = mesh.accept_invite(&old_token).await;
    assert_eq!(status, 404);
    let (status, user) = mesh.accept_invite(new_token).await;
    assert_eq!(status, 201, "{user}");
    assert_eq!(user["role"], "customer_admin");

    let (status, _) = mesh
        .post_json(
            &format!("/api/v1/invites/{id}/resend"),
            Some(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "an accepted invite cannot be resent");
}

#[tokio::test]
async fn resend_extends_the_expiry() {
    let mesh = spawn_mesh().await;
    let admin = mesh.admin_token().await;
    let tenant = mesh.create_tenant(&admin, "acme").await;
    let (status, first) = mesh
        .post_json(
            "/api/v1/invites",
            Some(&admin),
            &json!({ "email": "c@acme.test", "role": "operator", "tenant_id": tenant }),
        )
        .await;
    assert_eq!(status, 201);
    let id = first["invite"]["id"].as_str().unwrap();
    let (_, resent) = mesh
        .post_json(
            &format!("/api/v1/invites/{id}/resend"),
            Some(&admin),
            &json!({}),
        )
        .await;
    let parse = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert!(parse(&resent["invite"]["expires_at"]) > parse(&first["invite"]["expires_at"]));
    let (status, _) = mesh
        .post_json(
            "/api/v1/invites",
            Some(&admin),
            &json!({ "email": "c@acme.test", "role": "operator", "tenant_id": tenant }),
        )
        .await;
    assert_eq!(status, 409, "a second pending invite for the same email");
}

#[tokio::test]
async fn impersonation_is_audited_with_both_identities() {
    let mesh = spawn_mesh().await;
    let admin = mesh.admin_token().await;
    let (tenant, _, ann_id) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (_, admin_me) = mesh.get_json("/api/v1/me", Some(&admin)).await;
    let admin_id = admin_me["user_id"].as_str().unwrap().to_owned();

    let response = mesh
        .http
        .post(mesh.url("/api/v1/impersonations"))
        .bearer_auth(&admin)
        .header("user-agent", "support-console/1.0")
        .json(&json!({ "tenant_id": tenant, "user_id": ann_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let session: Value = response.json().await.unwrap();
    let as_ann = session["access_token"].as_str().unwrap().to_owned();

    let (_, me) = mesh.get_json("/api/v1/me", Some(&as_ann)).await;
    assert_eq!(me["user_id"], ann_id.as_str());
    assert_eq!(me["impersonator_id"], admin_id.as_str());
    assert_eq!(me["role"], "customer_admin");

    // What the admin does as Ann is attributed to both.
    let (status, key) = mesh
        .post_json(
            "/api/v1/api-keys",
            Some(&admin),
            &json!({ "name": "old bot", "role": "operator", "tenant_id": tenant }),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let revoked = mesh
        .http
        .delete(mesh.url(&format!(
            "/api/v1/api-keys/{}",
            key["api_key"]["id"].as_str().unwrap()
        )))
        .bearer_auth(&as_ann)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);

    let (status, audit) = mesh
        .get_json(
            &format!("/api/v1/audit-events?tenant_id={tenant}"),
            Some(&admin),
        )
        .await;
    assert_eq!(status, 200);
    let events = audit["events"].as_array().unwrap();
    let started = events
        .iter()
        .find(|e| e["action"] == "impersonation.started")
        .expect("impersonation.started is audited");
    assert_eq!(started["actor_user_id"], admin_id.as_str());
    assert_eq!(started["target_user_id"], ann_id.as_str());
    assert_eq!(started["client_addr"], "127.0.0.1");
    assert_eq!(started["user_agent"], "support-console/1.0");
    assert!(started["occurred_at"].is_string());
    let revoked = events
        .iter()
        .find(|e| e["action"] == "api_key.revoked")
        .expect("the revocation made while impersonating is audited");
    assert_eq!(revoked["actor_user_id"], ann_id.as_str());
    assert_eq!(revoked["impersonator_id"], admin_id.as_str());

    // An impersonating token cannot start another impersonation, nor is it a platform admin.
    let (status, _) = mesh
        .post_json(
            "/api/v1/impersonations",
            Some(&as_ann),
            &json!({ "tenant_id": tenant, "user_id": ann_id }),
        )
        .await;
    assert_eq!(status, 403);
    // A platform admin cannot be impersonated, and a user of another tenant is a 404.
    let (status, _) = mesh
        .post_json(
            "/api/v1/impersonations",
            Some(&admin),
            &json!({ "tenant_id": tenant, "user_id": admin_id }),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_impersonation_token_cannot_mint_credentials_that_outlive_it() {
    let mesh = spawn_mesh().await;
    let admin = mesh.admin_token().await;
    let (tenant, ann, ann_id) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (pending, _) = mesh
        .invite(&admin, &tenant, "pending@acme.test", "operator")
        .await;
    let (status, session) = mesh
        .post_json(
            "/api/v1/impersonations",
            Some(&admin),
            &json!({ "tenant_id": tenant, "user_id": ann_id }),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let as_ann = session["access_token"].as_str().unwrap().to_owned();

    let refused = [
        (
            "/api/v1/api-keys".to_owned(),
            json!({ "name": "backdoor", "role": "customer_admin" }),
        ),
        (
            "/api/v1/invites".to_owned(),
            json!({ "email": "backdoor@acme.test", "role": "customer_admin" }),
        ),
        (format!("/api/v1/invites/{pending}/resend"), json!({})),
    ];
    for (path, body) in &refused {
        let (status, answer) = mesh.post_json(path, Some(&as_ann), body).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert_eq!(answer["code"], "permission_denied");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("while impersonating"),
            "{path}: {answer}"
        );
    }
    // Nothing was minted.
    let (_, keys) = mesh.get_json("/api/v1/api-keys", Some(&ann)).await;
    assert_eq!(keys["api_keys"].as_array().unwrap().len(), 0, "{keys}");
    let (_, audit) = mesh
        .get_json(
            &format!("/api/v1/audit-events?tenant_id={tenant}&action=invite.resent"),
            Some(&admin),
        )
        .await;
    assert!(audit["events"].as_array().unwrap().is_empty(), "{audit}");

    // The same person, not impersonating, still can.
    let (status, _) = mesh
        .post_json(
            "/api/v1/api-keys",
            Some(&ann),
            &json!({ "name": "bot", "role": "operator" }),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn the_audit_log_is_scoped_filtered_and_paged() {
    let mesh = spawn_mesh().await;
    let admin = mesh.admin_token().await;
    let (acme, acme_admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (globex, _, _) = mesh.tenant_with_member("globex", "customer_admin").await;

    let (status, own) = mesh
        .get_json("/api/v1/audit-events", Some(&acme_admin))
        .await;
    assert_eq!(status, 200);
    let events = own["events"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| e["tenant_id"] == acme.as_str()));
    let (status, _) = mesh
        .get_json(
            &format!("/api/v1/audit-events?tenant_id={globex}"),
            Some(&acme_admin),
        )
        .await;
    assert_eq!(status, 404);

    let (_, all) = mesh.get_json("/api/v1/audit-events", Some(&admin)).await;
    let tenants: std::collections::BTreeSet<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tenant_id"].as_str().unwrap())
        .collect();
    assert!(tenants.contains(acme.as_str()) && tenants.contains(globex.as_str()));

    let (_, created) = mesh
        .get_json("/api/v1/audit-events?action=tenant.created", Some(&admin))
        .await;
    assert_eq!(created["events"].as_array().unwrap().len(), 2);
    let (_, first) = mesh
        .get_json("/api/v1/audit-events?page_size=1", Some(&admin))
        .await;
    let token = first["next_page_token"].as_str().unwrap();
    let (_, second) = mesh
        .get_json(
            &format!("/api/v1/audit-events?page_size=1&page_token={token}"),
            Some(&admin),
        )
        .await;
    assert_ne!(first["events"][0]["id"], second["events"][0]["id"]);
    let (status, body) = mesh
        .get_json("/api/v1/audit-events?since=yesterday", Some(&admin))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["field"], "since");
}

#[tokio::test]
async fn api_keys_are_shown_once_authenticate_as_their_role_and_revoke() {
    let mesh = spawn_mesh().await;
    let (tenant, acme_admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (_, globex_admin, _) = mesh.tenant_with_member("globex", "customer_admin").await;

    let (status, issued) = mesh
        .post_json(
            "/api/v1/api-keys",
            Some(&acme_admin),
            &json!({ "name": "bot", "role": "operator" }),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let secret = issued["secret"].as_str().unwrap().to_owned();
    let key_id = issued["api_key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("cmk_"));
    assert!(secret.starts_with(issued["api_key"]["prefix"].as_str().unwrap()));

    let (_, listed) = mesh.get_json("/api/v1/api-keys", Some(&acme_admin)).await;
    let text = listed.to_string();
    assert!(!text.contains(&secret), "the list never shows the key");
    assert_eq!(listed["api_keys"][0]["name"], "bot");

    // The key authenticates like a service account of the tenant.
    let (status, me) = mesh.get_json("/api/v1/me", Some(&secret)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["tenant_id"], tenant.as_str());
    assert_eq!(me["role"], "operator");
    let (status, _) = mesh.get_json("/api/v1/api-keys", Some(&secret)).await;
    assert_eq!(status, 403, "an operator key cannot administer keys");

    let (status, _) = mesh
        .post_json(
            "/api/v1/api-keys",
            Some(&acme_admin),
            &json!({ "name": "root", "role": "platform_admin" }),
        )
        .await;
    assert_eq!(status, 422);

    // Another tenant's admin: 404, nothing revoked.
    let delete = |token: String| {
        let url = mesh.url(&format!("/api/v1/api-keys/{key_id}"));
        let http = mesh.http.clone();
        async move {
            http.delete(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(delete(globex_admin).await, 404);
    assert_eq!(delete(acme_admin.clone()).await, 204);
    let (_, listed) = mesh.get_json("/api/v1/api-keys", Some(&acme_admin)).await;
    assert!(listed["api_keys"][0]["revoked_at"].is_string());

    // identity-svc refuses the revoked key at once (the gateway's cache lasts a minute).
    let channel = mesh_kit::client::lazy_channel(mesh.grpc_url(ServiceId::Identity)).unwrap();
    let mut internal = IdentityInternalServiceClient::new(channel);
    let as_gateway = CallContext::new(testkit::service_token(ServiceId::Gateway).unwrap(), None);
    let status = internal
        .authenticate_api_key(as_gateway.request(AuthenticateApiKeyRequest {
            secret: secret.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::of_status(&status), ErrorCode::Unauthenticated);
    // Only the gateway may exchange keys.
    let as_llm = CallContext::new(testkit::service_token(ServiceId::Llm).unwrap(), None);
    let status = internal
        .authenticate_api_key(as_llm.request(AuthenticateApiKeyRequest { secret }))
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::of_status(&status), ErrorCode::PermissionDenied);
}

#[tokio::test]
async fn nothing_of_another_tenant_is_readable_or_changeable() {
    let mesh = spawn_mesh().await;
    let admin = mesh.admin_token().await;
    let (_, acme_admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (globex, _, _) = mesh.tenant_with_member("globex", "customer_admin").await;
    let (globex_invite, _) = mesh
        .invite(&admin, &globex, "g@globex.test", "operator")
        .await;

    let (status, _) = mesh
        .get_json(
            &format!("/api/v1/users?tenant_id={globex}"),
            Some(&acme_admin),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = mesh
        .post_json(
            &format!("/api/v1/invites/{globex_invite}/resend"),
            Some(&acme_admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = mesh
        .post_json(
            "/api/v1/invites",
            Some(&acme_admin),
            &json!({ "email": "x@globex.test", "role": "operator", "tenant_id": globex }),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = mesh
        .post_json(
            "/api/v1/api-keys",
            Some(&acme_admin),
            &json!({ "name": "k", "role": "operator", "tenant_id": globex }),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn grpc_callers_of_one_tenant_cannot_touch_another() {
    use crewmesh_proto::identity::v1::{
        CreateApiKeyRequest, CreateInviteRequest, GetTenantRequest, ListApiKeysRequest,
        ListAuditEventsRequest, ListUsersRequest, Role as ProtoRole,
        identity_service_client::IdentityServiceClient,
    };
    let mesh = spawn_mesh().await;
    let (_, acme_admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (globex, _, _) = mesh.tenant_with_member("globex", "customer_admin").await;
    let channel = mesh_kit::client::lazy_channel(mesh.grpc_url(ServiceId::Identity)).unwrap();
    let mut identity = IdentityServiceClient::new(channel);
    let call = CallContext::new(acme_admin, None);
    let not_found = |result: Result<(), tonic::Status>| match result {
        Err(status) => ErrorCode::of_status(&status) == ErrorCode::NotFound,
        Ok(()) => false,
    };
    let tenant_id = globex.clone();
    assert!(not_found(
        identity
            .get_tenant(call.request(GetTenantRequest {
                id: tenant_id.clone()
            }))
            .await
            .map(drop)
    ));
    assert!(not_found(
        identity
            .list_users(call.request(ListUsersRequest {
                tenant_id: tenant_id.clone(),
                ..Default::default()
            }))
            .await
            .map(drop)
    ));
    assert!(not_found(
        identity
            .create_invite(call.request(CreateInviteRequest {
                tenant_id: tenant_id.clone(),
                email: "x@globex.test".into(),
                role: ProtoRole::Operator.into(),
            }))
            .await
            .map(drop)
    ));
    assert!(not_found(
        identity
            .create_api_key(call.request(CreateApiKeyRequest {
                tenant_id: tenant_id.clone(),
                name: "k".into(),
                role: ProtoRole::Operator.into(),
            }))
            .await
            .map(drop)
    ));
    assert!(not_found(
        identity
            .list_api_keys(call.request(ListApiKeysRequest {
                tenant_id: tenant_id.clone()
            }))
            .await
            .map(drop)
    ));
    assert!(not_found(
        identity
            .list_audit_events(call.request(ListAuditEventsRequest {
                tenant_id,
                ..Default::default()
            }))
            .await
            .map(drop)
    ));
}
