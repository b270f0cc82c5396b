//! Media (M1) through the gateway: uploads by presigned PUT to the real
//! s3s-fs, presigned downloads, validation, and tenant isolation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crewmesh_tests::{Mesh, PASSWORD, spawn_mesh};
use serde_json::{Value, json};

/// A tenant member of `role`, invited by `admin` and logged in; returns the access token.
async fn member(mesh: &Mesh, admin: &str, tenant: &str, email: &str, role: &str) -> String {
    let (_, invite) = mesh.invite(admin, tenant, email, role).await;
    let (status, user) = mesh.accept_invite(&invite).await;
    assert_eq!(status, 201, "{user}");
    mesh.login(email, PASSWORD).await
}

/// Bytes that are not all alike, so a truncated or shifted copy is caught.
fn bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// The URL with the last character of its signature changed.
fn tamper_signature(url: &str) -> String {
    let last = url.chars().last().unwrap();
    let swapped = if last == '0' { '1' } else { '0' };
    format!("{}{swapped}", &url[..url.len() - 1])
}

async fn download_url(mesh: &Mesh, token: &str, id: &str, query: &str) -> (u16, Value) {
    mesh.get_json(&format!("/api/v1/media/{id}/url{query}"), Some(token))
        .await
}

#[tokio::test]
async fn an_upload_goes_to_storage_with_the_signed_headers_and_downloads_intact() {
    let mesh = spawn_mesh().await;
    let admin = mesh.admin_token().await;
    let tenant = mesh.create_tenant(&admin, "media-acme").await;
    let body = bytes(5000);

    // The type is normalized, and the signed headers say so: a client copying
    // its own `Content-Type` would be refused by storage.
    let (status, upload) = mesh
        .post_json(
            "/api/v1/media/uploads",
            Some(&admin),
            &json!({ "content_type": "Image/PNG", "size_bytes": body.len(),
                     "filename": "receipt.png", "tenant_id": tenant }),
        )
        .await;
    assert_eq!(status, 201, "{upload}");
    let id = upload["media"]["id"].as_str().unwrap().to_owned();
    assert_eq!(upload["media"]["tenant_id"], tenant.as_str());
    assert_eq!(upload["media"]["status"], "pending");
    assert_eq!(upload["media"]["content_type"], "image/png");
    assert_eq!(upload["media"]["filename"], "receipt.png");
    assert!(upload["media"].get("object_key").is_none(), "{upload}");
    assert_eq!(upload["upload_method"], "PUT");
    assert_eq!(
        upload["upload_headers"],
        json!({ "Content-Type": "image/png", "Content-Length": "5000" })
    );
    assert!(upload["expires_at"].is_string(), "{upload}");

    // Nothing to download before the bytes arrive.
    let (status, early) = download_url(&mesh, &admin, &id, "").await;
    assert_eq!(status, 409, "{early}");
    assert_eq!(early["code"], "failed_precondition");

    let as_requested = mesh
        .http
        .put(upload["upload_url"].as_str().unwrap())
        .header("Content-Type", "Image/PNG")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(as_requested.status(), 403, "only the signed headers pass");
    assert_eq!(mesh.put_upload(&upload, body.clone()).await, 200);

    let before = chrono::Utc::now();
    let (status, download) = download_url(&mesh, &admin, &id, "").await;
    assert_eq!(status, 200, "{download}");
    let url = download["url"].as_str().unwrap();
    assert!(
        url.contains("X-Amz-Expires=3600&"),
        "one hour by default: {url}"
    );
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(download["expires_at"].as_str().unwrap()).unwrap();
    let ttl = (expires_at.to_utc() - before).num_seconds();
    assert!((3598..=3601).contains(&ttl), "{ttl}");

    let got = mesh.http.get(url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());

    let (status, media) = mesh
        .get_json(&format!("/api/v1/media/{id}"), Some(&admin))
        .await;
    assert_eq!(status, 200, "{media}");
    assert_eq!(media["status"], "ready");
    assert_eq!(media["size_bytes"], 5000);
    assert_eq!(media["source"], "upload");
    assert_eq!(media["filename"], "receipt.png");

    // Storage, not the edge, checks signatures.
    let forged = mesh.http.get(tamper_signature(url)).send().await.unwrap();
    assert_eq!(forged.status(), 403);

    // The longest expiry S3 allows, and one second more.
    let (status, week) = download_url(&mesh, &admin, &id, "?expires_in=604800").await;
    assert_eq!(status, 200, "{week}");
    assert!(
        week["url"]
            .as_str()
            .unwrap()
            .contains("X-Amz-Expires=604800&")
    );
    for too_long in ["604801", "-5", "soon"] {
        let (status, error) =
            download_url(&mesh, &admin, &id, &format!("?expires_in={too_long}")).await;
        assert_eq!(status, 422, "{too_long}: {error}");
        assert_eq!(error["code"], "invalid_argument");
        // Named as the client sent it, not as media-svc calls it.
        assert_eq!(error["field"], "expires_in", "{error}");
        assert!(
            !error["message"]
                .as_str()
                .unwrap()
                .contains("expires_in_seconds")
        );
    }
}

#[tokio::test]
async fn another_tenants_media_is_not_found_and_its_bytes_stay_out_of_reach() {
    let mesh = spawn_mesh().await;
    let admin = mesh.admin_token().await;
    let (own, own_admin, _) = mesh.tenant_with_member("media-own", "customer_admin").await;
    let own_operator = member(&mesh, &admin, &own, "operator@media-own.test", "operator").await;
    let (other, other_admin, _) = mesh
        .tenant_with_member("media-other", "customer_admin")
        .await;
    let other_operator = member(
        &mesh,
        &admin,
        &other,
        "operator@media-other.test",
        "operator",
    )
    .await;

    // Operators upload too: they handle media in conversations.
    let body = bytes(777);
    let id = mesh
        .upload_media(&own_operator, &own, "application/pdf", body.clone())
        .await;
    for token in [&own_admin, &own_operator] {
        let (status, media) = mesh
            .get_json(&format!("/api/v1/media/{id}"), Some(token))
            .await;
        assert_eq!(status, 200, "{media}");
        assert_eq!(media["tenant_id"], own.as_str());
    }
    let (status, download) = download_url(&mesh, &own_admin, &id, "").await;
    assert_eq!(status, 200, "{download}");
    let url = download["url"].as_str().unwrap();

    for stranger in [&other_admin, &other_operator] {
        for query in [String::new(), format!("?tenant_id={own}")] {
            let (status, error) = mesh
                .get_json(&format!("/api/v1/media/{id}{query}"), Some(stranger))
                .await;
            assert_eq!(status, 404, "metadata{query}: {error}");
            assert_eq!(error["code"], "not_found");
            let (status, error) = download_url(&mesh, stranger, &id, &query).await;
            assert_eq!(status, 404, "url{query}: {error}");
            assert!(!error.to_string().contains("X-Amz"), "{error}");
        }
    }
    // Without a signature of ours, storage hands out nothing: the object's
    // address alone, or with another key's signature, is refused.
    let (address, _) = url.split_once('?').unwrap();
    assert_eq!(mesh.http.get(address).send().await.unwrap().status(), 403);
    let other_id = mesh
        .upload_media(&other_admin, &other, "application/pdf", bytes(777))
        .await;
    let (status, theirs) = download_url(&mesh, &other_admin, &other_id, "").await;
    assert_eq!(status, 200, "{theirs}");
    let (_, their_query) = theirs["url"].as_str().unwrap().split_once('?').unwrap();
    let borrowed = format!("{address}?{their_query}");
    assert_eq!(mesh.http.get(&borrowed).send().await.unwrap().status(), 403);
    // Isolation holds the other way too.
    let (status, _) = mesh
        .get_json(&format!("/api/v1/media/{other_id}"), Some(&own_operator))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn uploads_are_validated_field_by_field_and_need_a_token() {
    let mesh = spawn_mesh().await;
    let admin = mesh.admin_token().await;
    let (tenant, operator, _) = mesh.tenant_with_member("media-checks", "operator").await;

    let cases = [
        (
            json!({ "content_type": "text/html", "size_bytes": 10 }),
            "content_type",
        ),
        (
            json!({ "content_type": "image/svg+xml", "size_bytes": 10 }),
            "content_type",
        ),
        (json!({ "size_bytes": 10 }), "content_type"),
        (
            json!({ "content_type": "image/png", "size_bytes": 0 }),
            "size_bytes",
        ),
        (
            json!({ "content_type": "image/png", "size_bytes": 26 * 1024 * 1024 }),
            "size_bytes",
        ),
        (json!({ "content_type": "image/png" }), "size_bytes"),
        (
            json!({ "content_type": "image/png", "size_bytes": 10, "filename": "../x.png" }),
            "filename",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = mesh
            .post_json("/api/v1/media/uploads", Some(&operator), &body)
            .await;
        assert_eq!(status, 422, "{body}: {error}");
        assert_eq!(error["code"], "invalid_argument", "{body}");
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    // Platform admins belong to no tenant, so they name one.
    let (status, error) = mesh
        .post_json(
            "/api/v1/media/uploads",
            Some(&admin),
            &json!({ "content_type": "image/png", "size_bytes": 10 }),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "tenant_id");

    let id = mesh
        .upload_media(&operator, &tenant, "text/plain", b"hello".to_vec())
        .await;
    let (status, error) = mesh
        .get_json("/api/v1/media/not-a-uuid", Some(&operator))
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "id");

    let anonymous = [
        mesh.http
            .post(mesh.url("/api/v1/media/uploads"))
            .json(&json!({ "content_type": "image/png", "size_bytes": 10 })),
        mesh.http.get(mesh.url(&format!("/api/v1/media/{id}"))),
        mesh.http.get(mesh.url(&format!("/api/v1/media/{id}/url"))),
    ];
    for request in anonymous {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], "unauthenticated");
    }
}
