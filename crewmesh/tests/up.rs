//! The real `crewmesh up` binary: it starts every service, prints where they
//! are, answers readiness through the gateway, and stops cleanly on SIGTERM.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use secrecy::ExposeSecret;

#[tokio::test]
async fn crewmesh_up_serves_the_mesh_and_stops_on_sigterm() {
    let database = testkit::fresh_database().await.unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_crewmesh"));
    command
        .arg("up")
        .env("DATABASE_URL", database.expose_secret())
        .env("REDIS_URL", testkit::redis_url())
        .env("CREWMESH_ENV", "development")
        .env_remove("CREWMESH_TOKEN_SIGNING_KEY")
        .env_remove("CREWMESH_TOKEN_PUBLIC_KEYS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // Port 0 everywhere, so the test never collides with a running Crewmesh.
    for svc in ["GATEWAY", "IDENTITY", "AGENT", "LLM", "BILLING", "MEDIA"] {
        command.env(format!("CREWMESH_{svc}_ADDR"), "127.0.0.1:0");
    }
    let mut child = command.spawn().unwrap();

    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut gateway = None;
    let mut grpc_lines = 0;
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("crewmesh up said nothing for a minute");
        if line.contains(" grpc ") {
            grpc_lines += 1;
        }
        if line.trim_start().starts_with("gateway") {
            gateway = line.split_whitespace().nth(2).map(str::to_owned);
        }
        if line.starts_with("Crewmesh is up") {
            break;
        }
    }
    assert_eq!(grpc_lines, 5, "one line per gRPC service");
    let gateway = gateway.expect("the gateway's URL is printed");

    let ready = reqwest::get(format!("{gateway}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = testkit::eventually(Duration::from_secs(15), "crewmesh to exit", || {
        let status = child.try_wait().unwrap();
        async move { status }
    })
    .await
    .unwrap();
    assert!(status.success(), "exit status {status:?}");
}
