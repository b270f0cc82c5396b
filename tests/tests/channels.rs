//! Channel connections (A5) through the real gateway and agent-svc: tokens
//! encrypted at rest, inbound resolution for the gateway only, ownership
//! proven with Slack's `auth.test` and the Graph API before anything is
//! bound, and Slack's OAuth v2 install, bound to the browser that started
//! it, against local servers speaking Slack's and Meta's APIs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crewmesh_proto::agent::v1::{
    Channel, ResolveChannelRequest, agent_internal_service_client::AgentInternalServiceClient,
};
use crewmesh_tests::{
    Mesh, MeshOptions,
    fake_graph::{self, FakeGraph},
    fake_slack::FakeSlack,
    spawn_mesh, spawn_mesh_with,
};
use mesh_kit::{ErrorCode, ServiceId, client::CallContext};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

async fn create_agent(mesh: &Mesh, token: &str, name: &str) -> String {
    let (status, agent) = mesh
        .post_json(
            "/api/v1/agents",
            Some(token),
            &json!({ "name": name, "model": "openai/gpt-4o-mini", "budget_limit_usd": "10" }),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    agent["id"].as_str().unwrap().to_owned()
}

async fn resolve(
    mesh: &Mesh,
    as_service: ServiceId,
    channel: Channel,
    external_id: &str,
) -> Result<crewmesh_proto::agent::v1::ResolveChannelResponse, tonic::Status> {
    let mut client = AgentInternalServiceClient::new(
        mesh_kit::client::lazy_channel(mesh.grpc_url(ServiceId::Agent)).unwrap(),
    );
    let call = CallContext::new(testkit::service_token(as_service).unwrap(), None);
    client
        .resolve_channel(call.request(ResolveChannelRequest {
            channel: channel.into(),
            external_id: external_id.to_owned(),
        }))
        .await
        .map(tonic::Response::into_inner)
}

/// A mesh with Slack and Graph API stand-ins.
async fn spawn_mesh_with_fakes() -> (Mesh, FakeSlack, FakeGraph) {
    let slack = FakeSlack::start().await;
    let graph = FakeGraph::start().await;
    let mesh = spawn_mesh_with(MeshOptions {
        slack_api_base: Some(slack.api_base.clone()),
        whatsapp_api_base: Some(graph.api_base()),
        ..MeshOptions::default()
    })
    .await;
    (mesh, slack, graph)
}

async fn delete(mesh: &Mesh, token: &str, id: &str) -> u16 {
    mesh.http
        .delete(mesh.url(&format!("/api/v1/channels/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn admins_connect_slack_and_whatsapp_and_the_gateway_resolves_them() {
    let (mesh, slack_api, graph) = spawn_mesh_with_fakes().await;
    let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let agent = create_agent(&mesh, &admin, "Ava").await;
    let slack_token = format!("xoxb-1-2-{}", uuid::Uuid::new_v4().simple());
    let whatsapp_token = format!("EAAG{}", uuid::Uuid::new_v4().simple());
    slack_api.add_bot(&slack_token, "T0ACME001", "U0ACMEBOT1");
    graph.register_number("106540352242922", &whatsapp_token);

    let (status, slack) = mesh
        .post_json(
            "/api/v1/channels",
            Some(&admin),
            &json!({ "agent_id": agent, "channel": "slack", "external_id": "T0ACME001",
                     "access_token": slack_token, "default_channel": "C0SUPPORT1" }),
        )
        .await;
    assert_eq!(status, 201, "{slack}");
    assert_eq!(slack["tenant_id"], tenant.as_str());
    assert_eq!(slack["agent_id"], agent.as_str());
    assert_eq!(slack["channel"], "slack");
    assert_eq!(slack["default_channel"], "C0SUPPORT1");
    assert_eq!(slack["token_hint"], &slack_token[slack_token.len() - 4..]);
    // What auth.test said: the bot's own user id, and the workspace's name.
    assert_eq!(slack["bot_user_id"], "U0ACMEBOT1");
    assert_eq!(slack["display_name"], "Workspace T0ACME001");
    assert!(!slack.to_string().contains(&slack_token));

    let (status, whatsapp) = mesh
        .post_json(
            "/api/v1/channels",
            Some(&admin),
            &json!({ "agent_id": agent, "channel": "whatsapp", "external_id": "106540352242922",
                     "access_token": whatsapp_token }),
        )
        .await;
    assert_eq!(status, 201, "{whatsapp}");
    assert_eq!(whatsapp["display_name"], fake_graph::VERIFIED_NAME);
    assert_eq!(graph.number_lookups(), 1);

    let (status, list) = mesh.get_json("/api/v1/channels", Some(&admin)).await;
    assert_eq!(status, 200);
    let channels = list["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 2);
    assert!(!list.to_string().contains(&slack_token));
    assert!(!list.to_string().contains(&whatsapp_token));

    // The gateway resolves an inbound identifier to tenant, agent and token.
    let found = resolve(&mesh, ServiceId::Gateway, Channel::Slack, "T0ACME001")
        .await
        .unwrap();
    assert_eq!(found.tenant_id, tenant);
    assert_eq!(found.agent_id, agent);
    assert_eq!(found.access_token, slack_token);
    assert_eq!(found.default_channel, "C0SUPPORT1");
    assert_eq!(found.bot_user_id, "U0ACMEBOT1");
    assert_eq!(found.connection_id, slack["id"].as_str().unwrap());
    let found = resolve(
        &mesh,
        ServiceId::Gateway,
        Channel::Whatsapp,
        "106540352242922",
    )
    .await
    .unwrap();
    assert_eq!(found.access_token, whatsapp_token);
    // The identifier is per channel: a Slack lookup of the number finds nothing.
    let missing = resolve(&mesh, ServiceId::Gateway, Channel::Slack, "106540352242922")
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::of_status(&missing), ErrorCode::NotFound);

    // Only the gateway (webhooks, delivery) and llm-svc (a message's files)
    // may resolve: no other service, and no user.
    assert!(
        resolve(&mesh, ServiceId::Llm, Channel::Slack, "T0ACME001")
            .await
            .is_ok()
    );
    for service in [
        ServiceId::Billing,
        ServiceId::Media,
        ServiceId::Identity,
        ServiceId::Agent,
    ] {
        let refused = resolve(&mesh, service, Channel::Slack, "T0ACME001")
            .await
            .unwrap_err();
        assert_eq!(
            ErrorCode::of_status(&refused),
            ErrorCode::PermissionDenied,
            "{service}"
        );
    }
    let mut client = AgentInternalServiceClient::new(
        mesh_kit::client::lazy_channel(mesh.grpc_url(ServiceId::Agent)).unwrap(),
    );
    let refused = client
        .resolve_channel(
            CallContext::new(admin.clone(), None).request(ResolveChannelRequest {
                channel: Channel::Slack.into(),
                external_id: "T0ACME001".into(),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::of_status(&refused), ErrorCode::PermissionDenied);

    // A database dump holds neither token.
    let dump = std::process::Command::new("pg_dump")
        .arg("--data-only")
        .arg(mesh.database.expose_secret())
        .output()
        .expect("pg_dump is installed with PostgreSQL");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("channel_connections"),
        "the dump covers the table"
    );
    for token in [&slack_token, &whatsapp_token] {
        assert!(!dump.contains(token.as_str()), "a token is in the dump");
        assert!(!dump.contains(&token[..token.len() - 4]));
    }

    // Deleting disconnects: resolution stops at once.
    assert_eq!(
        delete(&mesh, &admin, slack["id"].as_str().unwrap()).await,
        204
    );
    let gone = resolve(&mesh, ServiceId::Gateway, Channel::Slack, "T0ACME001")
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::of_status(&gone), ErrorCode::NotFound);
    assert_eq!(
        delete(&mesh, &admin, slack["id"].as_str().unwrap()).await,
        404
    );

    // Deleting the agent removes its connections with it.
    let status = mesh
        .http
        .delete(mesh.url(&format!("/api/v1/agents/{agent}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204);
    let (_, list) = mesh.get_json("/api/v1/channels", Some(&admin)).await;
    assert_eq!(list["channels"], json!([]));
}

#[tokio::test]
async fn tenants_cannot_see_bind_or_take_each_others_channels() {
    let (mesh, _, graph) = spawn_mesh_with_fakes().await;
    for number in ["1065403522", "1065403523"] {
        graph.register_number(number, "EAAG-secret");
    }
    let (_, acme, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (globex_tenant, globex, _) = mesh.tenant_with_member("globex", "customer_admin").await;
    let acme_agent = create_agent(&mesh, &acme, "Ava").await;
    let globex_agent = create_agent(&mesh, &globex, "Gus").await;

    let connect = |token: String, agent: String, number: &'static str| {
        let mesh = &mesh;
        async move {
            mesh.post_json(
                "/api/v1/channels",
                Some(&token),
                &json!({ "agent_id": agent, "channel": "whatsapp", "external_id": number,
                         "access_token": "EAAG-secret" }),
            )
            .await
        }
    };
    let (status, acme_number) = connect(acme.clone(), acme_agent.clone(), "1065403522").await;
    assert_eq!(status, 201, "{acme_number}");

    // Binding to another tenant's agent is refused as if it did not exist.
    let (status, err) = connect(acme.clone(), globex_agent.clone(), "1065403523").await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["field"], "agent_id");

    // A number belongs to one tenant platform-wide: inbound routing must be
    // unambiguous. (Even a tenant holding a token Meta accepts for it.)
    let (status, err) = connect(globex.clone(), globex_agent.clone(), "1065403522").await;
    assert_eq!(status, 409, "{err}");
    let (status, err) = connect(acme.clone(), acme_agent.clone(), "1065403522").await;
    assert_eq!(status, 409, "{err}");

    // Globex sees nothing of Acme's and cannot delete it.
    let (_, list) = mesh.get_json("/api/v1/channels", Some(&globex)).await;
    assert_eq!(list["channels"], json!([]));
    let id = acme_number["id"].as_str().unwrap();
    assert_eq!(delete(&mesh, &globex, id).await, 404);
    assert_eq!(
        resolve(&mesh, ServiceId::Gateway, Channel::Whatsapp, "1065403522")
            .await
            .unwrap()
            .agent_id,
        acme_agent
    );
    // Naming another tenant in the query is a 404 too.
    let (status, _) = mesh
        .get_json(
            &format!("/api/v1/channels?tenant_id={globex_tenant}"),
            Some(&acme),
        )
        .await;
    assert_eq!(status, 404);

    // Platform admins act on any tenant, naming it.
    let platform = mesh.admin_token().await;
    let (status, list) = mesh
        .get_json(
            &format!("/api/v1/channels?tenant_id={globex_tenant}"),
            Some(&platform),
        )
        .await;
    assert_eq!((status, list["channels"].clone()), (200, json!([])));
    assert_eq!(delete(&mesh, &platform, id).await, 204);
}

#[tokio::test]
async fn bad_connections_get_a_422_naming_the_field() {
    let (mesh, slack, _) = spawn_mesh_with_fakes().await;
    slack.add_bot_token("xoxb-1-2-3", "T0ACME001");
    let (_, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let agent = create_agent(&mesh, &admin, "Ava").await;
    let base = json!({ "agent_id": agent, "channel": "slack", "external_id": "T0ACME001",
                       "access_token": "xoxb-1-2-3" });
    let cases: [(&str, Value, &str); 8] = [
        ("channel", json!("telegram"), "channel"),
        ("external_id", json!("acme"), "external_id"),
        ("access_token", json!("xoxp-user-token"), "access_token"),
        ("access_token", json!(""), "access_token"),
        ("default_channel", json!("#general"), "default_channel"),
        ("agent_id", json!("not-a-uuid"), "agent_id"),
        (
            "agent_id",
            json!("0190a4a0-0000-7000-8000-000000000000"),
            "agent_id",
        ),
        ("access_token", json!(42), ""),
    ];
    for (key, value, field) in cases {
        let mut body = base.clone();
        body[key] = value.clone();
        let (status, err) = mesh
            .post_json("/api/v1/channels", Some(&admin), &body)
            .await;
        assert_eq!(status, 422, "{key}={value}: {err}");
        if !field.is_empty() {
            assert_eq!(err["field"], field, "{key}={value}: {err}");
        }
    }
    // WhatsApp wants the phone_number_id, not the phone number.
    let (status, err) = mesh
        .post_json(
            "/api/v1/channels",
            Some(&admin),
            &json!({ "agent_id": agent, "channel": "whatsapp", "external_id": "+1 555 0100",
                     "access_token": "EAAG" }),
        )
        .await;
    assert_eq!((status, err["field"].clone()), (422, json!("external_id")));
    let (_, list) = mesh.get_json("/api/v1/channels", Some(&admin)).await;
    assert_eq!(list["channels"], json!([]), "nothing half-stored");
    // Malformed requests never reach Slack: only the one naming a missing
    // agent was well-formed enough to be proven (and then refused).
    assert_eq!(slack.auth_tests(), 1);
}

#[tokio::test]
async fn ownership_is_proven_by_slack_and_meta_before_anything_is_bound() {
    let (mesh, slack, graph) = spawn_mesh_with_fakes().await;
    let (_, mallory, _) = mesh.tenant_with_member("mallory", "customer_admin").await;
    let mallory_agent = create_agent(&mesh, &mallory, "Mal").await;
    let connect = |token: String, agent: String, body: Value| {
        let mesh = &mesh;
        async move {
            let mut body = body;
            body["agent_id"] = json!(agent);
            mesh.post_json("/api/v1/channels", Some(&token), &body)
                .await
        }
    };
    let slack_body = |team: &str, token: &str| json!({ "channel": "slack", "external_id": team, "access_token": token });

    // A valid bot token of her own workspace does not bind the victim's.
    slack.add_bot_token("xoxb-1-2-mallory", "T0MALLORY1");
    let (status, err) = connect(
        mallory.clone(),
        mallory_agent.clone(),
        slack_body("T0VICTIM01", "xoxb-1-2-mallory"),
    )
    .await;
    assert_eq!(
        (status, err["field"].clone()),
        (422, json!("external_id")),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("T0MALLORY1"),
        "{err}"
    );
    // Nor does a made-up token, or one the workspace revoked.
    let (status, err) = connect(
        mallory.clone(),
        mallory_agent.clone(),
        slack_body("T0VICTIM01", "xoxb-1-2-junk"),
    )
    .await;
    assert_eq!(
        (status, err["field"].clone()),
        (422, json!("access_token")),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("invalid_auth"),
        "{err}"
    );
    slack.add_bot_token("xoxb-1-2-old", "T0VICTIM01");
    slack.revoke("xoxb-1-2-old");
    let (status, err) = connect(
        mallory.clone(),
        mallory_agent.clone(),
        slack_body("T0VICTIM01", "xoxb-1-2-old"),
    )
    .await;
    assert_eq!(
        (status, err["field"].clone()),
        (422, json!("access_token")),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("token_revoked"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("xoxb-1-2-old"),
        "the token is never echoed: {err}"
    );

    // WhatsApp: a number binds only with a token the Graph API lets read it.
    graph.register_number("106540352242922", "EAAG-victim");
    graph.register_number("106540352249999", "EAAG-mallory");
    for token in ["EAAG-junk", "EAAG-mallory"] {
        let (status, err) = connect(
            mallory.clone(),
            mallory_agent.clone(),
            json!({ "channel": "whatsapp", "external_id": "106540352242922", "access_token": token }),
        )
        .await;
        assert_eq!(
            (status, err["field"].clone()),
            (422, json!("access_token")),
            "{token}: {err}"
        );
    }

    // Nothing was stored, so nothing routes to Mallory.
    let (_, list) = mesh.get_json("/api/v1/channels", Some(&mallory)).await;
    assert_eq!(list["channels"], json!([]));
    for (channel, id) in [
        (Channel::Slack, "T0VICTIM01"),
        (Channel::Whatsapp, "106540352242922"),
    ] {
        let missing = resolve(&mesh, ServiceId::Gateway, channel, id)
            .await
            .unwrap_err();
        assert_eq!(ErrorCode::of_status(&missing), ErrorCode::NotFound, "{id}");
    }

    // The owners, with their own tokens, bind both (no 409: nobody holds them).
    let (_, victim, _) = mesh.tenant_with_member("victim", "customer_admin").await;
    let victim_agent = create_agent(&mesh, &victim, "Vic").await;
    slack.add_bot_token("xoxb-1-2-victim", "T0VICTIM01");
    let (status, created) = connect(
        victim.clone(),
        victim_agent.clone(),
        slack_body("T0VICTIM01", "xoxb-1-2-victim"),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, created) = connect(
        victim.clone(),
        victim_agent.clone(),
        json!({ "channel": "whatsapp", "external_id": "106540352242922", "access_token": "EAAG-victim" }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
}

/// `state` from an authorize URL.
fn state_of(url: &str) -> String {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("state="))
        .unwrap()
        .to_owned()
}

/// Slack's redirect back, from a browser holding `cookie` (`name=value`);
/// returns the status, the page and any `Set-Cookie`.
async fn callback_with(mesh: &Mesh, query: &str, cookie: Option<&str>) -> (u16, String, String) {
    let mut request = mesh
        .http
        .get(mesh.url(&format!("/oauth/slack/callback?{query}")));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, response.text().await.unwrap(), set_cookie)
}

async fn callback(mesh: &Mesh, query: &str, cookie: &str) -> (u16, String) {
    let (status, page, _) = callback_with(mesh, query, Some(cookie)).await;
    (status, page)
}

/// An install begun from one browser.
struct Begun {
    url: String,
    state: String,
    /// `crewmesh_slack_install=…`, as that browser sends it back.
    cookie: String,
    /// The whole `Set-Cookie`.
    set_cookie: String,
}

async fn begin(mesh: &Mesh, token: &str, agent: &str) -> Begun {
    let response = mesh
        .http
        .post(mesh.url("/api/v1/channels/slack/install"))
        .bearer_auth(token)
        .json(&json!({ "agent_id": agent }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let begun: Value = response.json().await.unwrap();
    let url = begun["authorize_url"].as_str().unwrap().to_owned();
    Begun {
        state: state_of(&url),
        url,
        cookie: set_cookie.split(';').next().unwrap().to_owned(),
        set_cookie,
    }
}

#[tokio::test]
async fn slack_oauth_install_stores_the_workspace_once_per_state() {
    let slack = FakeSlack::start().await;
    let mesh = spawn_mesh_with(MeshOptions {
        slack_api_base: Some(slack.api_base.clone()),
        ..MeshOptions::default()
    })
    .await;
    let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let agent = create_agent(&mesh, &admin, "Ava").await;

    let begun = begin(&mesh, &admin, &agent).await;
    let url = &begun.url;
    let authorize = format!(
        "{}/oauth/v2/authorize?",
        slack.api_base.strip_suffix("/api").unwrap()
    );
    assert!(url.starts_with(&authorize), "{url}");
    assert!(url.contains(&format!(
        "client_id={}",
        crewmesh_tests::fake_slack::CLIENT_ID
    )));
    assert!(url.contains("scope=app_mentions%3Aread%2C"), "{url}");
    assert!(url.contains("redirect_uri=https%3A%2F%2Fcrewmesh.test%2Foauth%2Fslack%2Fcallback"));
    let state = begun.state.clone();

    // The admin approves at Slack, which redirects back with a code.
    let token = format!("xoxb-7-8-{}", uuid::Uuid::new_v4().simple());
    let code = slack.issue_code("T0ACME001", "Acme & Co", &token);
    let (status, page, cleared) = callback_with(
        &mesh,
        &format!("code={code}&state={state}"),
        Some(&begun.cookie),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Acme &amp; Co"),
        "names the workspace, escaped: {page}"
    );
    assert!(
        cleared.starts_with("crewmesh_slack_install=;") && cleared.contains("Max-Age=0"),
        "the binding cookie is spent: {cleared}"
    );

    let (_, list) = mesh.get_json("/api/v1/channels", Some(&admin)).await;
    let installed = &list["channels"][0];
    assert_eq!(installed["external_id"], "T0ACME001");
    assert_eq!(installed["display_name"], "Acme & Co");
    assert_eq!(installed["bot_user_id"], "U0BOTUSER1");
    assert_eq!(installed["agent_id"], agent.as_str());
    assert_eq!(installed["token_hint"], &token[token.len() - 4..]);
    let found = resolve(&mesh, ServiceId::Gateway, Channel::Slack, "T0ACME001")
        .await
        .unwrap();
    assert_eq!(
        (found.tenant_id, found.access_token),
        (tenant.clone(), token)
    );
    assert_eq!(found.bot_user_id, "U0BOTUSER1");

    // A replayed callback is refused before Slack is asked again.
    let exchanges = slack.exchanges();
    let (status, page) =
        callback(&mesh, &format!("code={code}&state={state}"), &begun.cookie).await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("start the install again"), "{page}");
    assert_eq!(slack.exchanges(), exchanges);
    // So is a made-up state, and a callback without one.
    let (status, _) = callback(&mesh, &format!("code={code}&state=forged"), &begun.cookie).await;
    assert_eq!(status, 422);
    assert_eq!(callback(&mesh, "code=abc", &begun.cookie).await.0, 422);
    assert_eq!(slack.exchanges(), exchanges);

    // A code Slack does not know: the state is spent, the admin starts again.
    let again = begin(&mesh, &admin, &agent).await;
    let (status, page) = callback(
        &mesh,
        &format!("code=bogus&state={}", again.state),
        &again.cookie,
    )
    .await;
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("invalid_code"), "{page}");

    // Cancelled at Slack.
    let again = begin(&mesh, &admin, &agent).await;
    let (status, page) = callback(
        &mesh,
        &format!("error=access_denied&state={}", again.state),
        &again.cookie,
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("cancelled"));

    // Re-installing the same workspace (Slack issues a new token) moves it to
    // the chosen agent without a second connection.
    let bea = create_agent(&mesh, &admin, "Bea").await;
    let again = begin(&mesh, &admin, &bea).await;
    let renewed = format!("xoxb-9-9-{}", uuid::Uuid::new_v4().simple());
    let code = slack.issue_code("T0ACME001", "Acme & Co", &renewed);
    assert_eq!(
        callback(
            &mesh,
            &format!("code={code}&state={}", again.state),
            &again.cookie
        )
        .await
        .0,
        200
    );
    let (_, list) = mesh.get_json("/api/v1/channels", Some(&admin)).await;
    assert_eq!(list["channels"].as_array().unwrap().len(), 1);
    let found = resolve(&mesh, ServiceId::Gateway, Channel::Slack, "T0ACME001")
        .await
        .unwrap();
    assert_eq!((found.agent_id, found.access_token), (bea.clone(), renewed));

    // Another tenant cannot take over the workspace by installing into it.
    let (_, globex, _) = mesh.tenant_with_member("globex", "customer_admin").await;
    let gus = create_agent(&mesh, &globex, "Gus").await;
    let theirs = begin(&mesh, &globex, &gus).await;
    let code = slack.issue_code("T0ACME001", "Acme & Co", "xoxb-hijack");
    let (status, page) = callback(
        &mesh,
        &format!("code={code}&state={}", theirs.state),
        &theirs.cookie,
    )
    .await;
    assert_eq!(status, 409, "{page}");
    assert_eq!(
        resolve(&mesh, ServiceId::Gateway, Channel::Slack, "T0ACME001")
            .await
            .unwrap()
            .tenant_id,
        tenant
    );

    // Installs are for one's own agents only.
    let (status, _) = mesh
        .post_json(
            "/api/v1/channels/slack/install",
            Some(&globex),
            &json!({ "agent_id": bea }),
        )
        .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn a_forwarded_authorize_link_cannot_attach_a_workspace_to_another_tenant() {
    let slack = FakeSlack::start().await;
    let mesh = spawn_mesh_with(MeshOptions {
        slack_api_base: Some(slack.api_base.clone()),
        ..MeshOptions::default()
    })
    .await;
    // Mallory starts an install for her tenant and forwards the authorize
    // link to Victor, an admin of another workspace.
    let (mallory_tenant, mallory, _) = mesh.tenant_with_member("mallory", "customer_admin").await;
    let mal = create_agent(&mesh, &mallory, "Mal").await;
    let forwarded = begin(&mesh, &mallory, &mal).await;
    // The cookie binding the install: HttpOnly, Secure, SameSite=Lax, sent
    // only to the callback, and as short-lived as the install.
    let attributes: Vec<&str> = forwarded.set_cookie.split("; ").collect();
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/oauth/slack/callback",
    ] {
        assert!(
            attributes.contains(&attribute),
            "{attribute}: {}",
            forwarded.set_cookie
        );
    }
    let max_age: i64 = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((890..=900).contains(&max_age), "{max_age}");
    assert_eq!(forwarded.cookie.len(), "crewmesh_slack_install=".len() + 64);

    // Victor approves at Slack for his workspace; his browser returns with
    // Mallory's state and no cookie of hers — none at all, or the one of
    // an install of his own.
    let (_, victor, _) = mesh.tenant_with_member("victor", "customer_admin").await;
    let vic = create_agent(&mesh, &victor, "Vic").await;
    let own = begin(&mesh, &victor, &vic).await;
    let code = slack.issue_code("T0VICTOR01", "Victor's", "xoxb-victor");
    let query = format!("code={code}&state={}", forwarded.state);
    for cookie in [
        None,
        Some(own.cookie.as_str()),
        Some("crewmesh_slack_install=forged"),
    ] {
        let (status, page, _) = callback_with(&mesh, &query, cookie).await;
        assert_eq!(status, 403, "{cookie:?}: {page}");
        assert!(page.contains("another browser"), "{page}");
    }
    // Refused before Slack was asked for the token: the code is unused.
    assert_eq!(slack.exchanges(), 0);
    let (_, list) = mesh
        .get_json(
            &format!("/api/v1/channels?tenant_id={mallory_tenant}"),
            Some(&mallory),
        )
        .await;
    assert_eq!(list["channels"], json!([]));
    assert_eq!(
        ErrorCode::of_status(
            &resolve(&mesh, ServiceId::Gateway, Channel::Slack, "T0VICTOR01")
                .await
                .unwrap_err()
        ),
        ErrorCode::NotFound
    );

    // Victor's own install, from his browser, still works with his code,
    // and Mallory's (from hers) with a code for her workspace: the refused
    // attempts consumed nothing.
    let (status, page) = callback(
        &mesh,
        &format!("code={code}&state={}", own.state),
        &own.cookie,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let code = slack.issue_code("T0MALLORY1", "Mallory's", "xoxb-mallory");
    let (status, page) = callback(
        &mesh,
        &format!("code={code}&state={}", forwarded.state),
        &forwarded.cookie,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        resolve(&mesh, ServiceId::Gateway, Channel::Slack, "T0VICTOR01")
            .await
            .unwrap()
            .agent_id,
        vic
    );
    assert_eq!(
        resolve(&mesh, ServiceId::Gateway, Channel::Slack, "T0MALLORY1")
            .await
            .unwrap()
            .tenant_id,
        mallory_tenant
    );
}

#[tokio::test]
async fn without_slack_or_meta_nothing_is_bound_and_installs_say_what_to_configure() {
    // No stand-ins: Slack's and Meta's APIs are a closed local port.
    let mesh = spawn_mesh().await;
    let (_, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let agent = create_agent(&mesh, &admin, "Ava").await;
    // Ownership cannot be proven while they are unreachable: try again later.
    for body in [
        json!({ "channel": "slack", "external_id": "T0ACME001", "access_token": "xoxb-1-2-3" }),
        json!({ "channel": "whatsapp", "external_id": "106540352242922", "access_token": "EAAG-x" }),
    ] {
        let mut body = body;
        body["agent_id"] = json!(agent);
        let (status, err) = mesh
            .post_json("/api/v1/channels", Some(&admin), &body)
            .await;
        assert_eq!(status, 503, "{err}");
    }
    let (_, list) = mesh.get_json("/api/v1/channels", Some(&admin)).await;
    assert_eq!(list["channels"], json!([]));

    let (status, err) = mesh
        .post_json(
            "/api/v1/channels/slack/install",
            Some(&admin),
            &json!({ "agent_id": agent }),
        )
        .await;
    assert_eq!(status, 409, "{err}");
    assert!(err["message"].as_str().unwrap().contains("SLACK_CLIENT_ID"));
}
