//! Start-up and shutdown as Kubernetes sees them, through gRPC health.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mesh_kit::{ServiceId, Shutdown};
use tokio::net::TcpListener;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn status(client: &mut HealthClient<tonic::transport::Channel>) -> Option<ServingStatus> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    client
        .check(request)
        .await
        .ok()
        .map(|r| r.into_inner().status())
}

#[tokio::test]
async fn health_turns_serving_then_flips_to_not_serving_before_the_server_stops() {
    let url = testkit::fresh_database().await.unwrap();
    let mut config = testkit::service_config(ServiceId::Identity, &url).unwrap();
    config.drain = Duration::from_millis(800);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(identity_svc::startup::serve(
        config,
        listener,
        shutdown.clone(),
    ));

    let channel = mesh_kit::client::lazy_channel(&format!("http://{addr}")).unwrap();
    let mut health = HealthClient::new(channel);
    testkit::eventually(Duration::from_secs(20), "SERVING", || {
        let mut health = health.clone();
        async move { (status(&mut health).await == Some(ServingStatus::Serving)).then_some(()) }
    })
    .await
    .unwrap();

    shutdown.cancel();
    // During the drain the server still answers, and says it is going away.
    testkit::eventually(Duration::from_millis(700), "NOT_SERVING", || {
        let mut health = health.clone();
        async move { (status(&mut health).await == Some(ServingStatus::NotServing)).then_some(()) }
    })
    .await
    .unwrap();

    let stopped = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    assert!(status(&mut health).await.is_none());
}
