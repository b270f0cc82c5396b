//! Ingest from channels against a local server speaking the Graph API media
//! shape and serving Slack private files, into the real s3s-fs.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{App, FakeChannel, FakeFile, GOOD_TOKEN, authed, service, user};
use crewmesh_proto::media::v1::{GetDownloadUrlRequest, IngestChannelMediaRequest, MediaObject};
use media_svc::config::{MediaConfig, Origin};
use mesh_kit::{ErrorCode, Role, ServiceId, error::violated_field};
use tonic::Status;
use uuid::Uuid;

struct Setup {
    app: App,
    fake: FakeChannel,
    tenant: Uuid,
}

async fn setup(files: &[(&str, FakeFile)], tweak: impl FnOnce(&mut MediaConfig)) -> Setup {
    let fake = FakeChannel::start(files).await;
    let mut config = common::config().await;
    config.whatsapp_api_base = fake.graph_base();
    config.slack_files = fake.origin();
    tweak(&mut config);
    Setup {
        app: common::spawn(config).await,
        fake,
        tenant: Uuid::now_v7(),
    }
}

fn request(
    tenant: Uuid,
    channel: &str,
    reference: &str,
    message_id: &str,
) -> IngestChannelMediaRequest {
    IngestChannelMediaRequest {
        tenant_id: tenant.to_string(),
        channel: channel.into(),
        reference: reference.into(),
        access_token: GOOD_TOKEN.into(),
        expected_mime_type: String::new(),
        message_id: message_id.into(),
    }
}

impl Setup {
    async fn ingest(&mut self, request: IngestChannelMediaRequest) -> Result<MediaObject, Status> {
        self.app
            .internal
            .ingest_channel_media(authed(&service(ServiceId::Gateway), request))
            .await
            .map(|r| r.into_inner().media.unwrap())
    }

    async fn download(&mut self, media: &MediaObject) -> reqwest::Response {
        let url = self
            .app
            .media
            .get_download_url(authed(
                &service(ServiceId::Llm),
                GetDownloadUrlRequest {
                    id: media.id.clone(),
                    expires_in_seconds: 0,
                    tenant_id: self.tenant.to_string(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .url;
        reqwest::get(url).await.unwrap()
    }

    /// Nothing was recorded or stored for the tenant.
    async fn assert_nothing_written(&self) {
        assert_eq!(self.app.rows(self.tenant).await, 0, "no metadata row");
        assert!(self.app.objects(self.tenant).await.is_empty(), "no object");
    }
}

#[tokio::test]
async fn whatsapp_media_is_stored_under_the_tenant_once_per_message() {
    let photo = common::bytes(300_000);
    let mut s = setup(
        &[("1001", FakeFile::new("image/jpeg", photo.clone()))],
        |_| {},
    )
    .await;
    let mut req = request(s.tenant, "whatsapp", "1001", "wamid.A");
    req.expected_mime_type = "image/jpeg".into();
    let media = s.ingest(req.clone()).await.unwrap();
    assert_eq!(media.tenant_id, s.tenant.to_string());
    assert!(
        media
            .object_key
            .starts_with(&format!("tenants/{}/", s.tenant)),
        "{}",
        media.object_key
    );
    assert_eq!(media.content_type, "image/jpeg");
    assert_eq!(media.size_bytes, photo.len() as i64);
    assert_eq!(media.sha256, common::sha256_hex(&photo));
    assert_eq!(
        (media.source.as_str(), media.status.as_str()),
        ("whatsapp", "ready")
    );
    assert_eq!(
        s.app.objects(s.tenant).await,
        vec![media.object_key.clone()]
    );

    let got = s.download(&media).await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/jpeg");
    assert_eq!(got.bytes().await.unwrap().as_ref(), photo.as_slice());

    // The channel redelivers the message: the same object, nothing fetched again.
    let again = s.ingest(req).await.unwrap();
    assert_eq!(again.id, media.id);
    assert_eq!(s.fake.downloads(), 1);
    assert_eq!(s.app.rows(s.tenant).await, 1);
}

#[tokio::test]
async fn oversized_media_is_refused_while_streaming_and_leaves_nothing() {
    let declared = FakeFile::new("image/jpeg", common::bytes(5000));
    let mut undeclared = FakeFile::new("image/jpeg", common::bytes(5000));
    undeclared.declared_size = None;
    undeclared.chunked = true;
    let mut s = setup(&[("declared", declared), ("undeclared", undeclared)], |c| {
        c.max_bytes = 4096
    })
    .await;
    for (id, downloads) in [("declared", 0), ("undeclared", 1)] {
        let err = s
            .ingest(request(s.tenant, "whatsapp", id, id))
            .await
            .unwrap_err();
        assert_eq!(
            ErrorCode::of_status(&err),
            ErrorCode::InvalidArgument,
            "{id}: {err:?}"
        );
        assert_eq!(violated_field(&err).as_deref(), Some("size_bytes"), "{id}");
        assert!(err.message().contains("4096"), "{}", err.message());
        assert_eq!(
            s.fake.downloads(),
            downloads,
            "{id}: refused before downloading?"
        );
    }
    s.assert_nothing_written().await;
}

#[tokio::test]
async fn media_of_the_wrong_type_is_refused() {
    let mut s = setup(
        &[
            (
                "page",
                FakeFile::new("text/html", b"<script>x</script>".to_vec()),
            ),
            ("photo", FakeFile::new("image/jpeg", common::bytes(10))),
        ],
        |_| {},
    )
    .await;
    let html = s
        .ingest(request(s.tenant, "whatsapp", "page", "m1"))
        .await
        .unwrap_err();
    assert_eq!(
        violated_field(&html).as_deref(),
        Some("content_type"),
        "{html:?}"
    );
    assert!(html.message().contains("text/html"));

    let mut req = request(s.tenant, "whatsapp", "photo", "m2");
    req.expected_mime_type = "application/pdf".into();
    let mismatch = s.ingest(req).await.unwrap_err();
    assert_eq!(violated_field(&mismatch).as_deref(), Some("content_type"));
    assert!(
        mismatch
            .message()
            .contains("not the expected application/pdf")
    );

    let mut req = request(s.tenant, "whatsapp", "photo", "m3");
    req.expected_mime_type = "application/x-msdownload".into();
    let bad_expectation = s.ingest(req).await.unwrap_err();
    assert_eq!(
        violated_field(&bad_expectation).as_deref(),
        Some("expected_mime_type")
    );
    assert_eq!(s.fake.downloads(), 0);
    s.assert_nothing_written().await;
}

#[tokio::test]
async fn graph_failures_are_clear_errors() {
    let mut s = setup(
        &[("1001", FakeFile::new("image/png", common::bytes(10)))],
        |_| {},
    )
    .await;
    let mut req = request(s.tenant, "whatsapp", "1001", "m1");
    req.access_token = "EAAG-revoked".into();
    let refused = s.ingest(req).await.unwrap_err();
    assert_eq!(
        ErrorCode::of_status(&refused),
        ErrorCode::FailedPrecondition
    );
    assert!(
        refused
            .message()
            .contains("WhatsApp refused the access token (HTTP 401)"),
        "{}",
        refused.message()
    );

    let missing = s
        .ingest(request(s.tenant, "whatsapp", "2002", "m2"))
        .await
        .unwrap_err();
    assert_eq!(
        ErrorCode::of_status(&missing),
        ErrorCode::NotFound,
        "{missing:?}"
    );

    let injected = s
        .ingest(request(s.tenant, "whatsapp", "../files/1001", "m3"))
        .await
        .unwrap_err();
    assert_eq!(violated_field(&injected).as_deref(), Some("reference"));

    let mut down = setup(&[], |c| {
        c.whatsapp_api_base = "http://127.0.0.1:1/v21.0".into()
    })
    .await;
    let unreachable = down
        .ingest(request(down.tenant, "whatsapp", "1001", "m4"))
        .await
        .unwrap_err();
    assert_eq!(
        ErrorCode::of_status(&unreachable),
        ErrorCode::Unavailable,
        "{unreachable:?}"
    );
    s.assert_nothing_written().await;
}

#[tokio::test]
async fn slack_files_come_only_from_the_slack_files_origin() {
    let pdf = common::bytes(2048);
    let mut s = setup(
        &[(
            "F1-report.pdf",
            FakeFile::new("application/pdf", pdf.clone()),
        )],
        |_| {},
    )
    .await;
    let url = format!("{}/files-pri/F1-report.pdf", s.fake.base);
    let media = s
        .ingest(request(s.tenant, "slack", &url, "1700000000.000100"))
        .await
        .unwrap();
    assert_eq!(
        (media.source.as_str(), media.content_type.as_str()),
        ("slack", "application/pdf")
    );
    assert!(media.object_key.ends_with(".pdf"));
    assert_eq!(
        s.download(&media).await.bytes().await.unwrap().as_ref(),
        pdf.as_slice()
    );

    let hits = s.fake.hits();
    let elsewhere =
        FakeChannel::start(&[("x", FakeFile::new("image/png", common::bytes(10)))]).await;
    for forged in [
        format!("{}/files-pri/x", elsewhere.base),
        "https://files.slack.com/files-pri/x".to_owned(),
        format!("{}@127.0.0.1:1/files-pri/x", s.fake.base),
        "not a url".to_owned(),
    ] {
        let err = s
            .ingest(request(s.tenant, "slack", &forged, "m-forged"))
            .await
            .unwrap_err();
        assert_eq!(
            violated_field(&err).as_deref(),
            Some("reference"),
            "{forged}: {err:?}"
        );
    }
    assert_eq!(elsewhere.hits(), 0, "the bot token went to another host");
    assert_eq!(s.fake.hits(), hits);

    let mut req = request(s.tenant, "slack", &url, "m-bad-token");
    req.access_token = "xoxb-revoked".into();
    let refused = s.ingest(req).await.unwrap_err();
    assert_eq!(
        ErrorCode::of_status(&refused),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(s.app.rows(s.tenant).await, 1);
}

#[tokio::test]
async fn only_the_gateway_and_llm_svc_may_ingest() {
    let mut s = setup(
        &[("1001", FakeFile::new("image/png", common::bytes(10)))],
        |_| {},
    )
    .await;
    for token in [
        user(Role::PlatformAdmin, None),
        user(Role::CustomerAdmin, Some(s.tenant)),
        service(ServiceId::Billing),
    ] {
        let err = s
            .app
            .internal
            .ingest_channel_media(authed(&token, request(s.tenant, "whatsapp", "1001", "m")))
            .await
            .unwrap_err();
        assert_eq!(ErrorCode::of_status(&err), ErrorCode::PermissionDenied);
    }
    let media = s
        .app
        .internal
        .ingest_channel_media(authed(
            &service(ServiceId::Llm),
            request(s.tenant, "whatsapp", "1001", "m"),
        ))
        .await
        .unwrap();
    assert!(media.into_inner().media.is_some());

    let bad_channel = s
        .ingest(request(s.tenant, "telegram", "1001", "m9"))
        .await
        .unwrap_err();
    assert_eq!(violated_field(&bad_channel).as_deref(), Some("channel"));
    let no_message = s
        .ingest(request(s.tenant, "whatsapp", "1001", " "))
        .await
        .unwrap_err();
    assert_eq!(violated_field(&no_message).as_deref(), Some("message_id"));
}

#[tokio::test]
async fn storage_down_during_ingest_is_unavailable_with_no_row() {
    let mut s = setup(
        &[("1001", FakeFile::new("image/png", common::bytes(10)))],
        |c| {
            c.s3.endpoint = Origin::parse("S3_ENDPOINT", "http://127.0.0.1:1").unwrap();
        },
    )
    .await;
    let err = s
        .ingest(request(s.tenant, "whatsapp", "1001", "m"))
        .await
        .unwrap_err();
    assert_eq!(
        ErrorCode::of_status(&err),
        ErrorCode::Unavailable,
        "{err:?}"
    );
    assert_eq!(s.app.rows(s.tenant).await, 0);
}
