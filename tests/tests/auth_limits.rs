//! Sign-in under abuse (issue 11, items 5 and 6), through the real gateway,
//! identity-svc, PostgreSQL and Redis: password hashing cannot exhaust
//! memory, the edge limits the public auth routes per address, and the login
//! throttle stops guessing without locking out everyone behind one address.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crewmesh_proto::identity::v1::{LoginRequest, identity_service_client::IdentityServiceClient};
use crewmesh_tests::{ADMIN_EMAIL, ADMIN_PASSWORD, Mesh, MeshOptions, PASSWORD, spawn_mesh_with};
use mesh_kit::{ErrorCode, ServiceId, client::CallContext};
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// One Argon2id hash's memory (the default parameters).
const HASH_MIB: u64 = 19;

/// What an HTTP answer says: status, `Retry-After` seconds, JSON body.
type Answer = (u16, Option<u64>, Value);

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

/// POSTs `body` to `path` as a client at `addr` (the gateway trusts
/// `X-Forwarded-For` in these meshes).
async fn post_from(mesh: &Mesh, addr: &str, path: &str, body: &Value) -> Answer {
    let response = mesh
        .http
        .post(mesh.url(path))
        .header("x-forwarded-for", addr)
        .json(body)
        .send()
        .await
        .unwrap();
    answer(response).await
}

async fn login_from(mesh: &Mesh, addr: &str, email: &str, password: &str) -> Answer {
    post_from(
        mesh,
        addr,
        "/api/v1/auth/login",
        &json!({ "email": email, "password": password }),
    )
    .await
}

/// Accepts every invite token at once; returns (token, answer) in any order.
async fn accept_all_at_once(mesh: &Mesh, tokens: &[String]) -> Vec<(String, Answer)> {
    let mut accepts = JoinSet::new();
    for token in tokens {
        let request = mesh
            .http
            .post(mesh.url("/api/v1/invites/accept"))
            .json(&json!({ "token": token, "name": "Concurrent", "password": PASSWORD }));
        let token = token.clone();
        accepts.spawn(async move { (token, answer(request.send().await.unwrap()).await) });
    }
    accepts.join_all().await
}

/// Anonymous resident memory of this process (the whole mesh) in MiB: what
/// Argon2's blocks occupy, without the binary's pages the kernel faults in
/// and out.
fn anon_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon in /proc/self/status");
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

/// The largest growth of anonymous memory while it runs, sampled every
/// millisecond from a thread of its own (a hash holds its 19 MiB for tens of
/// milliseconds, so no burst of them slips between two samples).
struct PeakGrowth {
    baseline: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
}

impl PeakGrowth {
    fn start() -> PeakGrowth {
        let baseline = anon_rss_mib();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let mut peak = baseline;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    peak = peak.max(anon_rss_mib());
                    std::thread::sleep(Duration::from_millis(1));
                }
                peak
            }
        });
        PeakGrowth {
            baseline,
            stop,
            sampler,
        }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = self.sampler.join().unwrap().max(anon_rss_mib());
        peak.saturating_sub(self.baseline)
    }
}

fn made_up_invite_token(i: usize) -> String {
    format!("cmi_{:0>43}", format!("madeup{i}"))
}

#[tokio::test]
async fn made_up_invite_tokens_never_reach_password_hashing() {
    let mesh = spawn_mesh_with(MeshOptions {
        password_hash_concurrency: 4,
        ..MeshOptions::default()
    })
    .await;
    let tokens: Vec<String> = (0..40).map(made_up_invite_token).collect();
    let memory = PeakGrowth::start();
    let answers = accept_all_at_once(&mesh, &tokens).await;
    let growth = memory.finish();

    // All looked up and refused. Had any been hashed first, the ones beyond
    // the 4 hashing slots would have been refused with 503 instead.
    for (token, (status, _, body)) in &answers {
        assert_eq!(*status, 404, "{token}: {body}");
    }
    assert!(
        growth < 2 * HASH_MIB,
        "40 bogus accepts grew the peak by {growth} MiB"
    );
}

#[tokio::test]
async fn concurrent_accepts_beyond_the_hashing_bound_get_503_and_memory_stays_bounded() {
    const CONCURRENCY: u64 = 4;
    let mesh = spawn_mesh_with(MeshOptions {
        password_hash_concurrency: CONCURRENCY as usize,
        ..MeshOptions::default()
    })
    .await;
    let admin = mesh.admin_token().await;
    let tenant = mesh.create_tenant(&admin, "crowd").await;
    let mut tokens = Vec::new();
    for i in 0..40 {
        let (_, token) = mesh
            .invite(&admin, &tenant, &format!("u{i}@crowd.test"), "operator")
            .await;
        tokens.push(token);
    }

    let memory = PeakGrowth::start();
    let answers = accept_all_at_once(&mesh, &tokens).await;
    let growth = memory.finish();

    let mut refused = Vec::new();
    for (token, (status, retry_after, body)) in &answers {
        match status {
            201 => {}
            503 => {
                assert_eq!(body["code"], "unavailable", "{body}");
                assert!(body["request_id"].is_string(), "{body}");
                assert!(
                    matches!(retry_after, Some(1..=5)),
                    "503 without a usable Retry-After: {retry_after:?}"
                );
                refused.push(token.clone());
            }
            other => panic!("{token}: {other} {body}"),
        }
    }
    let accepted = answers.len() - refused.len();
    assert!(accepted >= CONCURRENCY as usize, "only {accepted} accepted");
    assert!(!refused.is_empty(), "40 at once cannot all fit 4 slots");
    // Unbounded, 40 hashes at once took ~40 × 19 MiB (the issue saw ~740 MiB).
    let bound = (CONCURRENCY + 2) * HASH_MIB;
    assert!(
        growth <= bound,
        "the peak grew by {growth} MiB, more than {bound} MiB"
    );

    // A 503 consumed nothing: each refused invite is accepted on retry.
    for token in refused {
        testkit::eventually(Duration::from_secs(20), "a retried accept", || {
            let mesh = &mesh;
            let token = token.clone();
            async move {
                let (status, body) = mesh.accept_invite(&token).await;
                match status {
                    201 => Some(()),
                    503 => None,
                    other => panic!("retry of {token}: {other} {body}"),
                }
            }
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn the_edge_limits_auth_requests_per_client_address() {
    let mesh = spawn_mesh_with(MeshOptions {
        auth_requests_per_minute: 5,
        trust_forwarded_for: true,
        ..MeshOptions::default()
    })
    .await;
    let noisy = "203.0.113.10";
    // Every public auth route counts against the same address.
    assert_eq!(
        login_from(&mesh, noisy, "x@example.test", "wrong password!")
            .await
            .0,
        401
    );
    assert_eq!(
        login_from(&mesh, noisy, "y@example.test", "wrong password!")
            .await
            .0,
        401
    );
    assert_eq!(
        post_from(
            &mesh,
            noisy,
            "/api/v1/auth/refresh",
            &json!({ "refresh_token": "cmr_nope" })
        )
        .await
        .0,
        401
    );
    assert_eq!(
        post_from(
            &mesh,
            noisy,
            "/api/v1/invites/accept",
            &json!({ "token": made_up_invite_token(1), "name": "N", "password": PASSWORD })
        )
        .await
        .0,
        404
    );
    assert_eq!(
        login_from(&mesh, noisy, "z@example.test", "wrong password!")
            .await
            .0,
        401
    );

    // The sixth: refused at the edge, even with the right password.
    let (status, retry_after, body) = login_from(&mesh, noisy, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "resource_exhausted");
    assert!(body["request_id"].is_string(), "{body}");
    assert!(
        matches!(retry_after, Some(1..=60)),
        "Retry-After: {retry_after:?}"
    );
    for (path, request) in [
        (
            "/api/v1/auth/refresh",
            json!({ "refresh_token": "cmr_nope" }),
        ),
        (
            "/api/v1/invites/accept",
            json!({ "token": made_up_invite_token(2), "name": "N", "password": PASSWORD }),
        ),
    ] {
        let (status, retry_after, _) = post_from(&mesh, noisy, path, &request).await;
        assert_eq!(status, 429, "{path}");
        assert!(retry_after.is_some(), "{path}");
    }

    // Another address is unaffected, and so are authenticated routes.
    let (status, _, session) =
        login_from(&mesh, "198.51.100.20", ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(status, 200, "{session}");
    let me = mesh
        .http
        .get(mesh.url("/api/v1/me"))
        .header("x-forwarded-for", noisy)
        .bearer_auth(session["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}

#[tokio::test]
async fn failed_logins_from_one_shared_address_do_not_lock_out_other_users() {
    let mesh = spawn_mesh_with(MeshOptions {
        trust_forwarded_for: true,
        ..MeshOptions::default()
    })
    .await;
    let (_, _, _) = mesh.tenant_with_member("bobco", "operator").await;
    let (_, _, _) = mesh.tenant_with_member("victimco", "operator").await;
    let bob = "operator@bobco.test";
    let victim = "operator@victimco.test";
    // Everyone behind one ingress without forwarding would share this address.
    let shared = "192.0.2.1";

    let mut statuses = Vec::new();
    for i in 0..15 {
        let email = format!("nobody{i}@example.test");
        statuses.push(login_from(&mesh, shared, &email, "wrong password!").await.0);
    }
    for _ in 0..10 {
        statuses.push(login_from(&mesh, shared, victim, "wrong password!").await.0);
    }
    // 25 failures from the address: the unknown accounts' all counted, the
    // victim's stopped at the per-(account, address) limit of 5.
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 20);
    assert_eq!(statuses[15..].iter().filter(|s| **s == 429).count(), 5);

    // Another user behind the same address logs in with the right password.
    let (status, _, body) = login_from(&mesh, shared, bob, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    // The victim is refused from the address the guesses came from, with a
    // time to wait, but not from their own.
    let (status, retry_after, _) = login_from(&mesh, shared, victim, PASSWORD).await;
    assert_eq!(status, 429);
    assert!(matches!(retry_after, Some(1..=900)), "{retry_after:?}");
    let (status, _, body) = login_from(&mesh, "198.51.100.7", victim, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_per_account_limit_stops_guessing_one_account_from_many_addresses() {
    let mesh = spawn_mesh_with(MeshOptions {
        trust_forwarded_for: true,
        ..MeshOptions::default()
    })
    .await;
    mesh.tenant_with_member("victimco", "operator").await;
    mesh.tenant_with_member("bobco", "operator").await;
    let victim = "operator@victimco.test";
    // 20 guesses (the per-account limit), each from a new address.
    for i in 0..20 {
        let (status, _, body) =
            login_from(&mesh, &format!("10.1.0.{i}"), victim, "wrong password!").await;
        assert_eq!(status, 401, "guess {i}: {body}");
    }
    // The account is closed for the window, to every address.
    let (status, retry_after, body) =
        login_from(&mesh, "10.1.0.200", victim, "wrong password!").await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after.is_some());
    assert_eq!(
        login_from(&mesh, "10.1.0.201", victim, PASSWORD).await.0,
        429
    );
    // Other accounts, from the same addresses, are not.
    assert_eq!(
        login_from(&mesh, "10.1.0.3", "operator@bobco.test", PASSWORD)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn concurrent_wrong_guesses_cannot_exceed_the_limits() {
    let mesh = spawn_mesh_with(MeshOptions {
        trust_forwarded_for: true,
        // Enough hashing slots that every admitted guess is verified (no 503s).
        password_hash_concurrency: 24,
        ..MeshOptions::default()
    })
    .await;
    mesh.tenant_with_member("one", "operator").await;
    mesh.tenant_with_member("many", "operator").await;

    let guess_all = |email: &'static str, addr_of: fn(usize) -> String| {
        let mut guesses = JoinSet::new();
        for i in 0..100 {
            let request = mesh
                .http
                .post(mesh.url("/api/v1/auth/login"))
                .header("x-forwarded-for", addr_of(i))
                .json(&json!({ "email": email, "password": "wrong password!" }));
            guesses.spawn(async move { request.send().await.unwrap().status().as_u16() });
        }
        guesses.join_all()
    };
    let count = |statuses: &[u16], status: u16| statuses.iter().filter(|s| **s == status).count();

    // 100 at once from one address: exactly the per-(account, address) limit get through.
    let statuses = guess_all("operator@one.test", |_| "198.51.100.99".to_owned()).await;
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 95, "{statuses:?}");

    // 100 at once from 100 addresses: exactly the per-account limit.
    let statuses = guess_all("operator@many.test", |i| format!("10.2.0.{i}")).await;
    assert_eq!(count(&statuses, 401), 20, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 80, "{statuses:?}");
}

#[tokio::test]
async fn only_the_gateway_may_name_the_client_address_of_a_login() {
    let mesh = spawn_mesh_with(MeshOptions::default()).await;
    mesh.tenant_with_member("anonco", "operator").await;
    mesh.tenant_with_member("svcco", "operator").await;
    mesh.tenant_with_member("gwco", "operator").await;
    let channel = mesh_kit::client::lazy_channel(mesh.grpc_url(ServiceId::Identity)).unwrap();
    let identity = IdentityServiceClient::new(channel);
    let login = |call: CallContext, email: &'static str, i: usize| {
        let mut identity = identity.clone();
        async move {
            identity
                .login(call.request(LoginRequest {
                    email: email.into(),
                    password: "wrong password!".into(),
                    client_addr: format!("10.9.0.{i}"),
                    user_agent: String::new(),
                }))
                .await
                .map(drop)
                .map_err(|status| ErrorCode::of_status(&status))
        }
    };
    let anonymous = || CallContext::new(String::new(), None);
    let as_service = |service| CallContext::new(testkit::service_token(service).unwrap(), None);

    // Anonymous callers and other services name a new address each time, and
    // are still counted under their connection's: the limit of 5 holds.
    for (who, email) in [
        ("anonymous", "operator@anonco.test"),
        ("llm-svc", "operator@svcco.test"),
    ] {
        let mut outcomes = Vec::new();
        for i in 0..8 {
            let call = match who {
                "anonymous" => anonymous(),
                _ => as_service(ServiceId::Llm),
            };
            outcomes.push(login(call, email, i).await);
        }
        assert_eq!(
            outcomes,
            [
                vec![Err(ErrorCode::Unauthenticated); 5],
                vec![Err(ErrorCode::ResourceExhausted); 3]
            ]
            .concat(),
            "{who}"
        );
    }

    // The gateway vouches for the address: 8 addresses, 8 separate counts.
    for i in 0..8 {
        assert_eq!(
            login(as_service(ServiceId::Gateway), "operator@gwco.test", i).await,
            Err(ErrorCode::Unauthenticated)
        );
    }

    // A token that does not verify is refused, not taken as anonymous.
    let mut identity = identity.clone();
    let status = identity
        .login(
            CallContext::new("not-a-token".into(), None).request(LoginRequest {
                email: "operator@gwco.test".into(),
                password: PASSWORD.into(),
                ..Default::default()
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::of_status(&status), ErrorCode::Unauthenticated);
    assert!(!status.message().contains("password"), "{status:?}");
}
