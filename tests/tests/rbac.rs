//! The RBAC matrix of SPEC, walked whole: every route that exists × anonymous
//! and every role, against the real gateway and services. Another tenant's
//! resource is a 404; a role without the right is a 403. Later features add
//! their rows here.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crewmesh_tests::{MeshOptions, fake_graph::FakeGraph, spawn_mesh_with};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
enum Who {
    Anonymous,
    PlatformAdmin,
    CustomerAdmin,
    Operator,
}

const EVERYONE: [Who; 4] = [
    Who::Anonymous,
    Who::PlatformAdmin,
    Who::CustomerAdmin,
    Who::Operator,
];

/// A body that is new on every call, so creates do not collide.
type Body = Box<dyn Fn() -> Value>;

fn unique() -> String {
    Uuid::new_v4().simple().to_string()
}

#[tokio::test]
async fn rbac_matrix() {
    // The Graph API stand-in proves the numbers connected below.
    let graph = FakeGraph::start().await;
    let mesh = spawn_mesh_with(MeshOptions {
        whatsapp_api_base: Some(graph.api_base()),
        ..MeshOptions::default()
    })
    .await;
    let admin = mesh.admin_token().await;
    let (own, customer_admin, _) = mesh.tenant_with_member("own", "customer_admin").await;
    let operator = {
        let email = "operator@own.test";
        let (_, token) = mesh.invite(&admin, &own, email, "operator").await;
        let (status, _) = mesh.accept_invite(&token).await;
        assert_eq!(status, 201);
        mesh.login(email, crewmesh_tests::PASSWORD).await
    };
    let (other, _, other_user) = mesh.tenant_with_member("other", "customer_admin").await;
    let agent_body = json!({ "name": "A", "model": "openai/gpt-4o-mini", "budget_limit_usd": "1" });
    let (status, own_agent) = mesh
        .post_json("/api/v1/agents", Some(&admin), &{
            let mut b = agent_body.clone();
            b["tenant_id"] = json!(own);
            b
        })
        .await;
    assert_eq!(status, 201, "{own_agent}");
    let own_agent = own_agent["id"].as_str().unwrap().to_owned();
    let (status, other_agent) = mesh
        .post_json("/api/v1/agents", Some(&admin), &{
            let mut b = agent_body.clone();
            b["tenant_id"] = json!(other);
            b
        })
        .await;
    assert_eq!(status, 201, "{other_agent}");
    let other_agent = other_agent["id"].as_str().unwrap().to_owned();
    // For runs: a model whose provider the other tenant has no key for, so an
    // allowed run stops at a 409 before any provider is called. (Its `openai`
    // key below has no base URL: running `other_agent` would call the real API.)
    let (status, other_runner) = mesh
        .post_json(
            "/api/v1/agents",
            Some(&admin),
            &json!({ "name": "R", "model": "anthropic/claude-3-5-haiku",
                     "budget_limit_usd": "1", "tenant_id": other }),
        )
        .await;
    assert_eq!(status, 201, "{other_runner}");
    let other_runner = other_runner["id"].as_str().unwrap().to_owned();
    let (own_invite, _) = mesh
        .invite(&admin, &own, "pending@own.test", "operator")
        .await;
    let (other_invite, _) = mesh
        .invite(&admin, &other, "pending@other.test", "operator")
        .await;
    let (status, key) = mesh
        .post_json(
            "/api/v1/api-keys",
            Some(&admin),
            &json!({ "name": "other key", "role": "operator", "tenant_id": other }),
        )
        .await;
    assert_eq!(status, 201);
    let other_key = key["api_key"]["id"].as_str().unwrap().to_owned();
    let (status, llm_key) = mesh
        .post_json(
            "/api/v1/llm-keys",
            Some(&admin),
            &json!({ "provider": "openai", "api_key": "sk-other", "tenant_id": other }),
        )
        .await;
    assert_eq!(status, 201, "{llm_key}");
    let other_llm_key = llm_key["id"].as_str().unwrap().to_owned();
    graph.register_number("1065403529", "EAAG-other");
    let (status, channel) = mesh
        .post_json(
            "/api/v1/channels",
            Some(&admin),
            &json!({ "agent_id": other_agent, "channel": "whatsapp", "external_id": "1065403529",
                     "access_token": "EAAG-other", "tenant_id": other }),
        )
        .await;
    assert_eq!(status, 201, "{channel}");
    let other_channel = channel["id"].as_str().unwrap().to_owned();
    // Uploaded, so a download URL is granted rather than refused as pending.
    let own_media = mesh
        .upload_media(&admin, &own, "image/png", vec![7; 64])
        .await;
    let other_media = mesh
        .upload_media(&admin, &other, "image/png", vec![7; 64])
        .await;

    let new_tenant: Body = Box::new(|| json!({ "slug": format!("t-{}", unique()), "name": "New" }));
    let invite_to = |tenant: String| -> Body {
        Box::new(
            move || json!({ "email": format!("{}@x.test", unique()), "role": "operator", "tenant_id": tenant }),
        )
    };
    let key_for = |tenant: String| -> Body {
        Box::new(move || json!({ "name": unique(), "role": "operator", "tenant_id": tenant }))
    };
    let empty = || -> Body { Box::new(|| json!({})) };
    let rename = || -> Body { Box::new(|| json!({ "name": format!("A {}", unique()) })) };
    let portal_for = |tenant: String| -> Body {
        Box::new(
            move || json!({ "return_url": "https://app.example/billing", "tenant_id": tenant }),
        )
    };
    let checkout_for = |tenant: String| -> Body {
        Box::new(move || {
            json!({ "plan": "starter", "success_url": "https://a.example/ok",
                    "cancel_url": "https://a.example/no", "tenant_id": tenant })
        })
    };
    // One key per provider and tenant, so each create names a new provider.
    let llm_key_for = |tenant: String| -> Body {
        Box::new(move || {
            let provider = format!("p{}", &unique()[..12]);
            json!({ "provider": provider, "api_key": "sk-x", "tenant_id": tenant })
        })
    };
    // A WhatsApp number per call (a number belongs to one connection),
    // whose token the Graph API stand-in accepts.
    let channel_for = |tenant: String, agent: String| -> Body {
        let graph = graph.clone();
        Box::new(move || {
            let number = format!("1{:014}", Uuid::new_v4().as_u128() % 100_000_000_000_000);
            graph.register_number(&number, "EAAG-x");
            json!({ "agent_id": agent, "channel": "whatsapp", "external_id": number,
                    "access_token": "EAAG-x", "tenant_id": tenant })
        })
    };
    let install_for = |tenant: String, agent: String| -> Body {
        Box::new(move || json!({ "agent_id": agent, "tenant_id": tenant }))
    };
    let upload_to = |tenant: String| -> Body {
        Box::new(
            move || json!({ "content_type": "image/png", "size_bytes": 64, "tenant_id": tenant }),
        )
    };
    let run_in = |tenant: String| -> Body {
        Box::new(move || json!({ "text": "Hello", "tenant_id": tenant }))
    };
    let impersonate_other = json!({ "tenant_id": other, "user_id": other_user });

    // (method, path, body, [anonymous, platform_admin, customer_admin, operator])
    let matrix: Vec<(Method, String, Option<Body>, [u16; 4])> = vec![
        (Method::GET, "/api/v1/me".into(), None, [401, 200, 200, 200]),
        // agents: list, get — every role of the tenant; another tenant's is a 404
        (
            Method::GET,
            format!("/api/v1/agents?tenant_id={own}"),
            None,
            [401, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/v1/agents/{own_agent}"),
            None,
            [401, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/v1/agents/{other_agent}"),
            None,
            [401, 200, 404, 404],
        ),
        (
            Method::GET,
            format!("/api/v1/agents/{own_agent}/system-prompt?channel=slack"),
            None,
            [401, 200, 200, 200],
        ),
        // agents: test run — every role of the tenant. A real run needs a key
        // and a provider (tests/agent_runs.rs has those); here the tenant has
        // no key for the agent's provider (`own` stores keys only for made-up
        // providers), so a caller who passes RBAC gets llm-svc's 409 "add an
        // LLM key", which proves the call got past authorization without
        // reaching any provider. No role is refused outright, hence no 403.
        (
            Method::POST,
            format!("/api/v1/agents/{own_agent}/run"),
            Some(run_in(own.clone())),
            [401, 409, 409, 409],
        ),
        (
            Method::POST,
            format!("/api/v1/agents/{other_runner}/run"),
            Some(run_in(other.clone())),
            [401, 409, 404, 404],
        ),
        // agents: update — admins of the tenant only
        (
            Method::PATCH,
            format!("/api/v1/agents/{own_agent}"),
            Some(rename()),
            [401, 200, 200, 403],
        ),
        (
            Method::PATCH,
            format!("/api/v1/agents/{other_agent}"),
            Some(rename()),
            [401, 200, 404, 403],
        ),
        // templates: list — every role
        (
            Method::GET,
            "/api/v1/templates".into(),
            None,
            [401, 200, 200, 200],
        ),
        (
            Method::GET,
            "/api/v1/templates/sales".into(),
            None,
            [401, 200, 200, 200],
        ),
        // tenants: create, list all — platform only; get — own tenant
        (
            Method::POST,
            "/api/v1/tenants".into(),
            Some(new_tenant),
            [401, 201, 403, 403],
        ),
        (
            Method::GET,
            "/api/v1/tenants".into(),
            None,
            [401, 200, 403, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/tenants/{own}"),
            None,
            [401, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/v1/tenants/{other}"),
            None,
            [401, 200, 404, 404],
        ),
        // invites: create, resend; list users — platform, own tenant's admins
        (
            Method::GET,
            format!("/api/v1/users?tenant_id={own}"),
            None,
            [401, 200, 200, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/users?tenant_id={other}"),
            None,
            [401, 200, 404, 403],
        ),
        (
            Method::POST,
            "/api/v1/invites".into(),
            Some(invite_to(own.clone())),
            [401, 201, 201, 403],
        ),
        (
            Method::POST,
            "/api/v1/invites".into(),
            Some(invite_to(other.clone())),
            [401, 201, 404, 403],
        ),
        (
            Method::POST,
            format!("/api/v1/invites/{own_invite}/resend"),
            Some(empty()),
            [401, 200, 200, 403],
        ),
        (
            Method::POST,
            format!("/api/v1/invites/{other_invite}/resend"),
            Some(empty()),
            [401, 200, 404, 403],
        ),
        // audit log — all for platform, own tenant for customer admins
        (
            Method::GET,
            "/api/v1/audit-events".into(),
            None,
            [401, 200, 200, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/audit-events?tenant_id={other}"),
            None,
            [401, 200, 404, 403],
        ),
        // tenant API keys — platform, own tenant's admins
        (
            Method::POST,
            "/api/v1/api-keys".into(),
            Some(key_for(own.clone())),
            [401, 201, 201, 403],
        ),
        (
            Method::POST,
            "/api/v1/api-keys".into(),
            Some(key_for(other.clone())),
            [401, 201, 404, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/api-keys?tenant_id={own}"),
            None,
            [401, 200, 200, 403],
        ),
        (
            Method::DELETE,
            format!("/api/v1/api-keys/{other_key}"),
            None,
            [401, 204, 404, 403],
        ),
        // LLM keys: list, create, delete — platform, own tenant's admins
        (
            Method::POST,
            "/api/v1/llm-keys".into(),
            Some(llm_key_for(own.clone())),
            [401, 201, 201, 403],
        ),
        (
            Method::POST,
            "/api/v1/llm-keys".into(),
            Some(llm_key_for(other.clone())),
            [401, 201, 404, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/llm-keys?tenant_id={own}"),
            None,
            [401, 200, 200, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/llm-keys?tenant_id={other}"),
            None,
            [401, 200, 404, 403],
        ),
        // dead letters: list, retry — platform (all), own tenant's admins
        (
            Method::GET,
            "/api/v1/dead-letters".into(),
            None,
            [401, 200, 200, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/dead-letters?tenant_id={other}"),
            None,
            [401, 200, 404, 403],
        ),
        (
            Method::POST,
            format!("/api/v1/dead-letters/{}/retry", Uuid::now_v7()),
            Some(Box::new(move || json!({}))),
            [401, 404, 404, 403],
        ),
        // billing: subscription — platform, own tenant's admins
        (
            Method::GET,
            format!("/api/v1/billing/subscription?tenant_id={own}"),
            None,
            [401, 200, 200, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/billing/subscription?tenant_id={other}"),
            None,
            [401, 200, 404, 403],
        ),
        // usage and budget status — every role of the tenant
        (
            Method::GET,
            format!("/api/v1/usage/daily?tenant_id={own}"),
            None,
            [401, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/v1/usage/daily?tenant_id={other}"),
            None,
            [401, 200, 404, 404],
        ),
        (
            Method::GET,
            format!("/api/v1/usage/conversations?tenant_id={own}"),
            None,
            [401, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/v1/usage/conversations?tenant_id={other}"),
            None,
            [401, 200, 404, 404],
        ),
        // No budget is set for this agent: found by nobody, refused before that for strangers.
        (
            Method::GET,
            format!("/api/v1/usage/agents/{other}/budget?tenant_id={other}"),
            None,
            [401, 404, 404, 404],
        ),
        // billing: checkout, portal — platform, own tenant's admins (Stripe is not
        // configured in this mesh, so an allowed call ends in 409 saying so)
        (
            Method::POST,
            "/api/v1/billing/portal".into(),
            Some(portal_for(own.clone())),
            [401, 409, 409, 403],
        ),
        (
            Method::POST,
            "/api/v1/billing/portal".into(),
            Some(portal_for(other.clone())),
            [401, 409, 404, 403],
        ),
        (
            Method::POST,
            "/api/v1/billing/checkout".into(),
            Some(checkout_for(own.clone())),
            [401, 409, 409, 403],
        ),
        (
            Method::POST,
            "/api/v1/billing/checkout".into(),
            Some(checkout_for(other.clone())),
            [401, 409, 404, 403],
        ),
        // channels: connect, list, delete, Slack install — platform, own tenant's admins
        (
            Method::POST,
            "/api/v1/channels".into(),
            Some(channel_for(own.clone(), own_agent.clone())),
            [401, 201, 201, 403],
        ),
        (
            Method::POST,
            "/api/v1/channels".into(),
            Some(channel_for(other.clone(), other_agent.clone())),
            [401, 201, 404, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/channels?tenant_id={own}"),
            None,
            [401, 200, 200, 403],
        ),
        (
            Method::GET,
            format!("/api/v1/channels?tenant_id={other}"),
            None,
            [401, 200, 404, 403],
        ),
        // No Slack app in this mesh: allowed callers learn it is not configured.
        (
            Method::POST,
            "/api/v1/channels/slack/install".into(),
            Some(install_for(own.clone(), own_agent.clone())),
            [401, 409, 409, 403],
        ),
        (
            Method::POST,
            "/api/v1/channels/slack/install".into(),
            Some(install_for(other.clone(), other_agent.clone())),
            [401, 409, 404, 403],
        ),
        (
            Method::DELETE,
            format!("/api/v1/channels/{other_channel}"),
            None,
            [401, 204, 404, 403],
        ),
        // media: upload, metadata, download URL — every role of the tenant
        (
            Method::POST,
            "/api/v1/media/uploads".into(),
            Some(upload_to(own.clone())),
            [401, 201, 201, 201],
        ),
        (
            Method::POST,
            "/api/v1/media/uploads".into(),
            Some(upload_to(other.clone())),
            [401, 201, 404, 404],
        ),
        (
            Method::GET,
            format!("/api/v1/media/{own_media}"),
            None,
            [401, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/v1/media/{other_media}"),
            None,
            [401, 200, 404, 404],
        ),
        (
            Method::GET,
            format!("/api/v1/media/{other_media}?tenant_id={other}"),
            None,
            [401, 200, 404, 404],
        ),
        (
            Method::GET,
            format!("/api/v1/media/{own_media}/url"),
            None,
            [401, 200, 200, 200],
        ),
        (
            Method::GET,
            format!("/api/v1/media/{other_media}/url"),
            None,
            [401, 200, 404, 404],
        ),
        (
            Method::GET,
            format!("/api/v1/media/{other_media}/url?tenant_id={other}"),
            None,
            [401, 200, 404, 404],
        ),
        // agents: delete — operators refused, strangers see 404, the platform admin deletes
        (
            Method::DELETE,
            format!("/api/v1/agents/{other_agent}"),
            None,
            [401, 204, 404, 403],
        ),
        // Deleted by the platform admin first: later callers see 404 or 403.
        (
            Method::DELETE,
            format!("/api/v1/llm-keys/{other_llm_key}"),
            None,
            [401, 204, 404, 403],
        ),
    ];

    let token = |who: Who| match who {
        Who::Anonymous => None,
        Who::PlatformAdmin => Some(admin.clone()),
        Who::CustomerAdmin => Some(customer_admin.clone()),
        Who::Operator => Some(operator.clone()),
    };
    let mut failures = Vec::new();
    let mut check = |method: &Method, path: &str, who: Who, got: u16, want: u16| {
        if got != want {
            failures.push(format!("{method} {path} as {who:?}: {got}, want {want}"));
        }
    };
    for (method, path, body, expected) in &matrix {
        for (who, want) in EVERYONE.into_iter().zip(expected) {
            let mut request = mesh.http.request(method.clone(), mesh.url(path));
            if let Some(token) = token(who) {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(&body());
            }
            let got = request.send().await.unwrap().status().as_u16();
            check(method, path, who, got, *want);
        }
    }
    // Impersonation: platform admins only (run last: it is audited, not undone).
    for (who, want) in EVERYONE.into_iter().zip([401, 201, 403, 403]) {
        let mut request = mesh
            .http
            .post(mesh.url("/api/v1/impersonations"))
            .json(&impersonate_other);
        if let Some(token) = token(who) {
            request = request.bearer_auth(token);
        }
        let got = request.send().await.unwrap().status().as_u16();
        check(&Method::POST, "/api/v1/impersonations", who, got, want);
    }
    assert!(
        failures.is_empty(),
        "RBAC matrix mismatches:\n{}",
        failures.join("\n")
    );
}
