//! Uploads and downloads through presigned URLs, followed with a plain HTTP
//! client against the real s3s-fs, and who may get them over gRPC.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use chrono::{TimeZone as _, Utc};
use common::{App, authed, service, user};
use crewmesh_proto::media::v1::{
    CreateUploadRequest, CreateUploadResponse, GetDownloadUrlRequest, GetMediaRequest,
};
use media_svc::{
    config::Origin,
    presign::{self, Addressing, Credentials, Operation, Target},
    storage::ObjectStore,
};
use mesh_kit::{ErrorCode, Role, ServiceId, error::violated_field};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

#[test]
fn the_presigner_reproduces_the_aws_documented_example() {
    let credentials = Credentials {
        access_key_id: "AKIAIOSFODNN7EXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region: "us-east-1",
    };
    let target = Target {
        scheme: "https",
        authority: "s3.amazonaws.com",
        bucket: "examplebucket",
        key: "test.txt",
        addressing: Addressing::VirtualHosted,
    };
    let at = Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap();
    let url = presign::presign(&credentials, &target, Operation::Get, at, 86400).unwrap();
    assert!(url.starts_with("https://examplebucket.s3.amazonaws.com/test.txt?"));
    assert!(url.ends_with(
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    ));
}

#[tokio::test]
async fn urls_name_the_public_host_not_the_internal_one() {
    let mut config = common::config().await;
    config.s3.public_endpoint =
        Origin::parse("S3_PUBLIC_ENDPOINT", "https://media.example.com").unwrap();
    let store = ObjectStore::new(&config.s3);
    let url = store
        .presigned_get("tenants/t/x.png", Utc::now(), 60)
        .unwrap();
    let prefix = format!(
        "https://media.example.com/{}/tenants/t/x.png?",
        config.s3.bucket
    );
    assert!(url.starts_with(&prefix), "{url}");
}

fn code(status: &Status) -> ErrorCode {
    ErrorCode::of_status(status)
}

async fn create_upload(
    app: &mut App,
    token: &str,
    content_type: &str,
    size: i64,
) -> Result<CreateUploadResponse, Status> {
    app.media
        .create_upload(authed(
            token,
            CreateUploadRequest {
                tenant_id: String::new(),
                content_type: content_type.into(),
                size_bytes: size,
                filename: "photo.png".into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

fn download_request(
    token: &str,
    id: &str,
    expires: i64,
    tenant: &str,
) -> Request<GetDownloadUrlRequest> {
    authed(
        token,
        GetDownloadUrlRequest {
            id: id.into(),
            expires_in_seconds: expires,
            tenant_id: tenant.into(),
        },
    )
}

#[tokio::test]
async fn an_upload_round_trips_through_presigned_put_and_get() {
    let mut app = common::spawn(common::config().await).await;
    // SERVING once storage answers and the test's bucket exists.
    app.wait_health(ServingStatus::Serving).await;
    let tenant = Uuid::now_v7();
    let admin = user(Role::CustomerAdmin, Some(tenant));
    let body = common::bytes(4096);
    let upload = create_upload(&mut app, &admin, "image/png", body.len() as i64)
        .await
        .unwrap();
    let media = upload.media.unwrap();
    assert_eq!(media.status, "pending");
    assert_eq!(media.tenant_id, tenant.to_string());
    assert!(
        media.object_key.starts_with(&format!("tenants/{tenant}/")),
        "{}",
        media.object_key
    );
    assert!(upload.upload_url.starts_with(&format!(
        "http://127.0.0.1:8014/{}/tenants/{tenant}/",
        app.config.s3.bucket
    )));

    // Nothing to download before the bytes arrive.
    let early = app
        .media
        .get_download_url(download_request(&admin, &media.id, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(code(&early), ErrorCode::FailedPrecondition, "{early:?}");
    assert!(early.message().contains("upload has not completed"));

    let http = reqwest::Client::new();
    let put = |content_type: &'static str, body: Vec<u8>| {
        http.put(&upload.upload_url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(
        put("image/jpeg", body.clone()).await.unwrap().status(),
        403,
        "another content type than the signed one"
    );
    let mut bigger = body.clone();
    bigger.push(0);
    assert_eq!(
        put("image/png", bigger).await.unwrap().status(),
        403,
        "another size than the signed one"
    );
    let stored = put("image/png", body.clone()).await.unwrap();
    assert!(stored.status().is_success(), "{}", stored.status());

    let before = Utc::now().timestamp();
    let download = app
        .media
        .get_download_url(download_request(&admin, &media.id, 0, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(
        download.url.contains("X-Amz-Expires=3600&"),
        "one hour by default: {}",
        download.url
    );
    let expires_at = download.expires_at.unwrap().seconds;
    assert!((before + 3600..=before + 3602).contains(&expires_at));
    let got = http.get(&download.url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(got.bytes().await.unwrap().as_ref(), body.as_slice());

    let after = app
        .media
        .get_media(authed(
            &admin,
            GetMediaRequest {
                id: media.id.clone(),
                tenant_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .media
        .unwrap();
    assert_eq!(after.status, "ready");
    assert_eq!(after.size_bytes, body.len() as i64);
    assert_eq!(after.content_type, "image/png");
    assert_eq!(after.filename, "photo.png");

    // Tampering with the key or the signature, or an expired URL, is refused by storage.
    let other_key = download.url.replace(&media.id, &Uuid::now_v7().to_string());
    assert_ne!(other_key, download.url);
    assert_eq!(http.get(&other_key).send().await.unwrap().status(), 403);
    let forged = tamper_signature(&download.url);
    assert_eq!(http.get(&forged).send().await.unwrap().status(), 403);
    let expired = app
        .store
        .presigned_get(
            &media.object_key,
            Utc::now() - chrono::Duration::hours(2),
            60,
        )
        .unwrap();
    assert_eq!(http.get(&expired).send().await.unwrap().status(), 403);
}

/// `url` with the last hex digit of its signature changed.
fn tamper_signature(url: &str) -> String {
    let mut url = url.to_owned();
    let last = url.pop().unwrap();
    url.push(if last == '0' { '1' } else { '0' });
    url
}

#[tokio::test]
async fn upload_requests_outside_the_limits_name_the_field() {
    let mut config = common::config().await;
    config.max_bytes = 1000;
    let mut app = common::spawn(config).await;
    let tenant = Uuid::now_v7();
    let operator = user(Role::Operator, Some(tenant));
    for (content_type, size, field) in [
        ("image/png", 1001, "size_bytes"),
        ("image/png", 0, "size_bytes"),
        ("text/html", 10, "content_type"),
        ("image/svg+xml", 10, "content_type"),
        ("", 10, "content_type"),
    ] {
        let err = create_upload(&mut app, &operator, content_type, size)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{content_type} {size}");
        assert_eq!(violated_field(&err).as_deref(), Some(field), "{err:?}");
    }
    assert_eq!(app.rows(tenant).await, 0);

    let voice = create_upload(&mut app, &operator, "audio/ogg; codecs=opus", 1000)
        .await
        .unwrap();
    let media = voice.media.unwrap();
    assert_eq!(media.content_type, "audio/ogg", "stored bare");
    assert!(media.object_key.ends_with(".ogg"));
}

#[tokio::test]
async fn download_urls_are_for_the_tenant_its_staff_and_reading_services_only() {
    let mut app = common::spawn(common::config().await).await;
    let (tenant, other) = (Uuid::now_v7(), Uuid::now_v7());
    let admin = user(Role::CustomerAdmin, Some(tenant));
    let body = common::bytes(100);
    let upload = create_upload(&mut app, &admin, "text/plain", 100)
        .await
        .unwrap();
    let id = upload.media.unwrap().id;
    let put = reqwest::Client::new()
        .put(&upload.upload_url)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());

    let ok = |token: String, tenant: String| download_request(&token, &id, 600, &tenant);
    let tenant_s = tenant.to_string();
    for (who, request) in [
        ("customer admin", ok(admin.clone(), String::new())),
        (
            "operator",
            ok(user(Role::Operator, Some(tenant)), String::new()),
        ),
        (
            "platform admin, any tenant",
            ok(user(Role::PlatformAdmin, None), String::new()),
        ),
        (
            "platform admin, named tenant",
            ok(user(Role::PlatformAdmin, None), tenant_s.clone()),
        ),
        ("llm-svc", ok(service(ServiceId::Llm), tenant_s.clone())),
    ] {
        let got = app.media.get_download_url(request).await;
        assert!(got.is_ok(), "{who}: {got:?}");
    }

    let denied = |token: String, tenant: String| download_request(&token, &id, 600, &tenant);
    for (who, request, expected) in [
        (
            "another tenant's admin",
            denied(user(Role::CustomerAdmin, Some(other)), String::new()),
            ErrorCode::NotFound,
        ),
        (
            "another tenant's operator naming this tenant",
            denied(user(Role::Operator, Some(other)), tenant_s.clone()),
            ErrorCode::NotFound,
        ),
        (
            "platform admin naming another tenant",
            denied(user(Role::PlatformAdmin, None), other.to_string()),
            ErrorCode::NotFound,
        ),
        (
            "llm-svc for another tenant",
            denied(service(ServiceId::Llm), other.to_string()),
            ErrorCode::NotFound,
        ),
        (
            "llm-svc naming no tenant",
            denied(service(ServiceId::Llm), String::new()),
            ErrorCode::InvalidArgument,
        ),
        (
            "billing-svc",
            denied(service(ServiceId::Billing), tenant_s.clone()),
            ErrorCode::PermissionDenied,
        ),
    ] {
        let err = app.media.get_download_url(request).await.unwrap_err();
        assert_eq!(code(&err), expected, "{who}: {err:?}");
    }

    let anonymous = app
        .media
        .get_download_url(Request::new(GetDownloadUrlRequest {
            id: id.clone(),
            expires_in_seconds: 0,
            tenant_id: tenant_s.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(code(&anonymous), ErrorCode::Unauthenticated);

    let not_found = app
        .media
        .get_media(authed(
            &user(Role::CustomerAdmin, Some(other)),
            GetMediaRequest {
                id: id.clone(),
                tenant_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(code(&not_found), ErrorCode::NotFound);

    for expires in [604_801, -1] {
        let err = app
            .media
            .get_download_url(download_request(&admin, &id, expires, ""))
            .await
            .unwrap_err();
        assert_eq!(code(&err), ErrorCode::InvalidArgument, "{expires}");
        assert_eq!(violated_field(&err).as_deref(), Some("expires_in_seconds"));
    }
    let week = app
        .media
        .get_download_url(download_request(&admin, &id, 604_800, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(week.url.contains("X-Amz-Expires=604800&"));
}

#[tokio::test]
async fn storage_down_makes_downloads_unavailable_and_the_service_unready() {
    let mut config = common::config().await;
    config.s3.endpoint = Origin::parse("S3_ENDPOINT", "http://127.0.0.1:1").unwrap();
    let mut app = common::spawn(config).await;
    let tenant = Uuid::now_v7();
    let admin = user(Role::CustomerAdmin, Some(tenant));
    // Signing needs no storage, so an upload can still be prepared.
    let upload = create_upload(&mut app, &admin, "image/png", 10)
        .await
        .unwrap();
    let id = upload.media.unwrap().id;
    let err = app
        .media
        .get_download_url(download_request(&admin, &id, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(code(&err), ErrorCode::Unavailable, "{err:?}");
    assert!(err.message().contains("unreachable"), "{}", err.message());
    // Readiness probes storage too: a SERVING replica would get traffic it cannot serve.
    app.wait_health(ServingStatus::NotServing).await;
}
