//! Agents (A1–A5) through the real gateway and agent-svc.

// Helpers outside #[test] functions fail the test loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crewmesh_tests::spawn_mesh;

#[tokio::test]
async fn the_catalogue_has_seven_complete_templates_for_every_role() {
    let mesh = spawn_mesh().await;
    let (_, operator, _) = mesh.tenant_with_member("acme", "operator").await;
    let (status, list) = mesh.get_json("/api/v1/templates", Some(&operator)).await;
    assert_eq!(status, 200);
    let templates = list["templates"].as_array().unwrap();
    assert_eq!(templates.len(), 7);
    let slugs: Vec<&str> = templates
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(
        slugs,
        [
            "customer-support",
            "sales",
            "receptionist",
            "it-helpdesk",
            "hr",
            "accounts",
            "marketing"
        ]
    );
    for t in templates {
        for field in ["name", "role_title", "persona", "instructions"] {
            assert!(
                t[field].as_str().unwrap().len() > 10 || field == "name",
                "{} {field}",
                t["slug"]
            );
        }
        assert!(
            !t["suggested_tools"].as_array().unwrap().is_empty(),
            "{}",
            t["slug"]
        );
        assert_eq!(t["escalation"]["enabled"], true);
        assert!(
            !t["escalation"]["trigger_keywords"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    let (status, one) = mesh
        .get_json("/api/v1/templates/it-helpdesk", Some(&operator))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["role_title"], "IT helpdesk technician");
    assert_eq!(
        mesh.get_json("/api/v1/templates/astronaut", Some(&operator))
            .await
            .0,
        404
    );
    assert_eq!(mesh.get_json("/api/v1/templates", None).await.0, 401);
}

mod crud {
    use crewmesh_tests::spawn_mesh;
    use serde_json::{Value, json};

    fn agent(name: &str) -> Value {
        json!({
            "name": name, "role_title": "support specialist", "persona": "Kind.",
            "instructions": "Help with orders.", "model": "openai/gpt-4o-mini",
            "tools": ["order_lookup"], "budget_limit_usd": "25.00",
            "escalation": { "enabled": true, "trigger_keywords": ["refund"], "on_human_request": true },
            "escalation_assignee": "U123SLACK"
        })
    }

    #[tokio::test]
    async fn admins_manage_agents_operators_read_them_and_other_tenants_see_nothing() {
        let mesh = spawn_mesh().await;
        let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
        let (_, globex, _) = mesh.tenant_with_member("globex", "customer_admin").await;
        let operator = {
            let platform = mesh.admin_token().await;
            let (_, token) = mesh
                .invite(&platform, &tenant, "op@acme.test", "operator")
                .await;
            assert_eq!(mesh.accept_invite(&token).await.0, 201);
            mesh.login("op@acme.test", crewmesh_tests::PASSWORD).await
        };

        let (status, ava) = mesh
            .post_json("/api/v1/agents", Some(&admin), &agent("Ava"))
            .await;
        assert_eq!(status, 201, "{ava}");
        assert_eq!(ava["tenant_id"], tenant.as_str());
        assert_eq!(ava["budget_limit_usd"], "25.00");
        let id = ava["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/agents/{id}");

        // The budget went to billing with the agent.
        let (status, budget) = mesh
            .get_json(
                &format!("/api/v1/usage/agents/{id}/budget"),
                Some(&operator),
            )
            .await;
        assert_eq!(status, 200, "{budget}");
        assert_eq!(budget["limit_usd"], "25.00");

        assert_eq!(mesh.get_json(&path, Some(&operator)).await.1["name"], "Ava");
        assert_eq!(
            mesh.get_json("/api/v1/agents", Some(&operator)).await.1["agents"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            mesh.get_json(&path, Some(&globex)).await.0,
            404,
            "another tenant's agent"
        );
        assert_eq!(
            mesh.post_json("/api/v1/agents", Some(&operator), &agent("Op"))
                .await
                .0,
            403
        );

        let patch = |token: &str, body: Value| {
            mesh.http
                .patch(mesh.url(&path))
                .bearer_auth(token)
                .json(&body)
                .send()
        };
        let response = patch(&admin, json!({ "name": "Ava 2", "budget_limit_usd": "40" }))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let changed: Value = response.json().await.unwrap();
        assert_eq!(changed["name"], "Ava 2");
        assert_eq!(changed["persona"], "Kind.", "untouched fields stay");
        assert_eq!(
            mesh.get_json(&format!("/api/v1/usage/agents/{id}/budget"), Some(&admin))
                .await
                .1["limit_usd"],
            "40.00"
        );
        assert_eq!(
            patch(&operator, json!({ "name": "x" }))
                .await
                .unwrap()
                .status(),
            403
        );
        assert_eq!(
            patch(&globex, json!({ "name": "x" }))
                .await
                .unwrap()
                .status(),
            404
        );
        let bad = patch(&admin, json!({ "model": "gpt-4" })).await.unwrap();
        assert_eq!(bad.status(), 422);
        assert_eq!(bad.json::<Value>().await.unwrap()["field"], "model");

        let delete = |token: &str| mesh.http.delete(mesh.url(&path)).bearer_auth(token).send();
        assert_eq!(delete(&operator).await.unwrap().status(), 403);
        assert_eq!(delete(&globex).await.unwrap().status(), 404);
        assert_eq!(delete(&admin).await.unwrap().status(), 204);
        assert_eq!(mesh.get_json(&path, Some(&admin)).await.0, 404);
    }

    #[tokio::test]
    async fn validation_names_the_field_and_the_quota_refuses_a_third_trial_agent() {
        let mesh = spawn_mesh().await;
        let (_, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
        for (change, field) in [
            (json!({ "model": "gpt-4o" }), "model"),
            (json!({ "budget_limit_usd": "-1" }), "budget_limit_usd"),
            (
                json!({ "budget_limit_usd": "1.0000000001" }),
                "budget_limit_usd",
            ),
            (json!({ "name": "" }), "name"),
            (json!({ "tools": ["Bad Tool"] }), "tools"),
            (json!({ "escalation_assignee": "" }), "escalation_assignee"),
        ] {
            let mut body = agent("V");
            for (k, v) in change.as_object().unwrap() {
                body[k] = v.clone();
            }
            let (status, err) = mesh.post_json("/api/v1/agents", Some(&admin), &body).await;
            assert_eq!(status, 422, "{change}: {err}");
            assert_eq!(err["field"], field, "{change}");
        }

        assert_eq!(
            mesh.post_json("/api/v1/agents", Some(&admin), &agent("One"))
                .await
                .0,
            201
        );
        assert_eq!(
            mesh.post_json("/api/v1/agents", Some(&admin), &agent("Two"))
                .await
                .0,
            201
        );
        let (status, refused) = mesh
            .post_json("/api/v1/agents", Some(&admin), &agent("Three"))
            .await;
        assert_eq!(status, 409, "{refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("allows 2 agents")
        );
        assert_eq!(
            mesh.get_json("/api/v1/agents", Some(&admin)).await.1["agents"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn agents_from_templates_and_the_prompt_preview_per_channel() {
        let mesh = spawn_mesh().await;
        let (_, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
        let (_, operator, _) = mesh.tenant_with_member("acme-ops", "operator").await;
        let (status, agent) = mesh
            .post_json(
                "/api/v1/agents/from-template",
                Some(&admin),
                &json!({ "slug": "it-helpdesk", "model": "anthropic/claude-3-5-haiku" }),
            )
            .await;
        assert_eq!(status, 201, "{agent}");
        assert_eq!(agent["name"], "IT helpdesk");
        assert_eq!(agent["role_title"], "IT helpdesk technician");
        assert_eq!(
            agent["tools"],
            json!(["knowledge_search", "create_ticket", "reset_password"])
        );
        let id = agent["id"].as_str().unwrap();

        for channel in ["slack", "whatsapp", "api"] {
            let (status, preview) = mesh
                .get_json(
                    &format!("/api/v1/agents/{id}/system-prompt?channel={channel}"),
                    Some(&admin),
                )
                .await;
            assert_eq!(status, 200, "{preview}");
            let prompt = preview["system_prompt"].as_str().unwrap();
            assert!(
                prompt.starts_with(
                    "## Identity and role\nYou are IT helpdesk, IT helpdesk technician."
                )
            );
            assert!(prompt.ends_with("This section takes precedence over every other section."));
            assert_eq!(
                prompt.contains("You only handle: knowledge_search, create_ticket, reset_password"),
                channel == "whatsapp"
            );
        }
        let (status, err) = mesh
            .get_json(
                &format!("/api/v1/agents/{id}/system-prompt?channel=fax"),
                Some(&admin),
            )
            .await;
        assert_eq!(status, 422);
        assert_eq!(err["field"], "channel");
        // An operator of another tenant cannot preview it.
        assert_eq!(
            mesh.get_json(
                &format!("/api/v1/agents/{id}/system-prompt?channel=api"),
                Some(&operator)
            )
            .await
            .0,
            404
        );
    }
}

#[tokio::test]
async fn llm_svc_gets_the_runtime_config_and_nobody_else_does() {
    use crewmesh_proto::agent::v1::{
        Channel, GetRuntimeConfigRequest, agent_internal_service_client::AgentInternalServiceClient,
    };
    use mesh_kit::{ErrorCode, ServiceId, client::CallContext};

    let mesh = spawn_mesh().await;
    let (tenant, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
    let (status, agent) = mesh
        .post_json(
            "/api/v1/agents/from-template",
            Some(&admin),
            &serde_json::json!({ "slug": "sales", "model": "openai/gpt-4o-mini" }),
        )
        .await;
    assert_eq!(status, 201);
    let id = agent["id"].as_str().unwrap().to_owned();
    let channel = mesh_kit::client::lazy_channel(mesh.grpc_url(ServiceId::Agent)).unwrap();
    let mut internal = AgentInternalServiceClient::new(channel);
    let ask = |service: ServiceId, tenant: &str| {
        CallContext::new(testkit::service_token(service).unwrap(), None).request(
            GetRuntimeConfigRequest {
                tenant_id: tenant.to_owned(),
                agent_id: id.clone(),
                channel: Channel::Whatsapp.into(),
            },
        )
    };
    let config = internal
        .get_runtime_config(ask(ServiceId::Llm, &tenant))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(config.agent.unwrap().id, id);
    assert!(
        config
            .system_prompt
            .contains("You only handle: knowledge_search, book_meeting, create_lead")
    );
    assert!(
        config
            .system_prompt
            .ends_with("This section takes precedence over every other section.")
    );

    let status = internal
        .get_runtime_config(ask(ServiceId::Gateway, &tenant))
        .await
        .unwrap_err();
    assert_eq!(ErrorCode::of_status(&status), ErrorCode::PermissionDenied);
    let other = uuid::Uuid::now_v7().to_string();
    let status = internal
        .get_runtime_config(ask(ServiceId::Llm, &other))
        .await
        .unwrap_err();
    assert_eq!(
        ErrorCode::of_status(&status),
        ErrorCode::NotFound,
        "the tenant must match"
    );
}

/// Saving agents under concurrency and with billing-svc away (issue 11).
mod saves {
    use std::time::Duration;

    use crewmesh_tests::{MeshOptions, gate::Gate, spawn_mesh, spawn_mesh_with};
    use secrecy::ExposeSecret as _;
    use serde_json::{Value, json};

    fn agent(name: &str) -> Value {
        json!({ "name": name, "model": "openai/gpt-4o-mini", "budget_limit_usd": "25.00" })
    }

    #[tokio::test]
    async fn concurrent_patches_of_different_fields_all_survive() {
        let mesh = spawn_mesh().await;
        let (_, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
        let (status, created) = mesh
            .post_json("/api/v1/agents", Some(&admin), &agent("Ava"))
            .await;
        assert_eq!(status, 201, "{created}");
        let path = format!("/api/v1/agents/{}", created["id"].as_str().unwrap());
        let patch = |body: Value| {
            let (mesh, admin, path) = (&mesh, &admin, &path);
            async move {
                let response = mesh
                    .http
                    .patch(mesh.url(path))
                    .bearer_auth(admin)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        };
        // Each round changes four fields at once, one per request: a PATCH
        // that rewrote the row it read before the others wrote would undo them.
        for round in 0..10 {
            tokio::join!(
                patch(json!({ "name": format!("Ava {round}") })),
                patch(json!({ "persona": format!("Persona {round}") })),
                patch(json!({ "role_title": format!("Role {round}") })),
                patch(json!({ "instructions": format!("Instructions {round}") })),
            );
            let (_, stored) = mesh.get_json(&path, Some(&admin)).await;
            assert_eq!(
                [
                    &stored["name"],
                    &stored["persona"],
                    &stored["role_title"],
                    &stored["instructions"]
                ],
                [
                    &json!(format!("Ava {round}")),
                    &json!(format!("Persona {round}")),
                    &json!(format!("Role {round}")),
                    &json!(format!("Instructions {round}")),
                ],
                "round {round}"
            );
        }
    }

    #[tokio::test]
    async fn a_create_retried_concurrently_with_one_key_makes_one_agent() {
        let mesh = spawn_mesh().await;
        let admin = mesh.admin_token().await;
        // `n` creates in `tenant` with one key, released together as a
        // client retrying on timeouts might send them; every answer.
        let create = |tenant: String, key: &'static str, n: usize| {
            let (url, http, admin) = (mesh.url("/api/v1/agents"), mesh.http.clone(), admin.clone());
            async move {
                let start = std::sync::Arc::new(tokio::sync::Barrier::new(n));
                let mut retries = tokio::task::JoinSet::new();
                for _ in 0..n {
                    let (url, http, admin, start) =
                        (url.clone(), http.clone(), admin.clone(), start.clone());
                    let mut body = agent("Ava");
                    body["tenant_id"] = json!(tenant);
                    retries.spawn(async move {
                        start.wait().await;
                        let response = http
                            .post(url)
                            .bearer_auth(admin)
                            .header("idempotency-key", key)
                            .json(&body)
                            .send()
                            .await
                            .unwrap();
                        let status = response.status().as_u16();
                        (status, response.json::<Value>().await.unwrap())
                    });
                }
                retries.join_all().await
            }
        };
        // Races are won by chance: several tenants, and the trial's two
        // agents in each, give the losing interleavings several tries.
        for slug in ["acme", "globex", "initech", "umbrella"] {
            let tenant = mesh.create_tenant(&admin, slug).await;
            let mut created = Vec::new();
            for key in ["create-ava", "create-bea"] {
                let answers = create(tenant.clone(), key, 16).await;
                let ids: Vec<Value> = answers
                    .into_iter()
                    .map(|(status, body)| {
                        assert_eq!(status, 201, "{slug} {key}: {body}");
                        body["id"].clone()
                    })
                    .collect();
                assert!(ids.iter().all(|id| *id == ids[0]), "{slug} {key}: {ids:?}");
                created.push(ids[0].clone());
            }
            assert_ne!(created[0], created[1]);
            let (_, list) = mesh
                .get_json(&format!("/api/v1/agents?tenant_id={tenant}"), Some(&admin))
                .await;
            assert_eq!(
                list["agents"].as_array().unwrap().len(),
                2,
                "{slug}: {list}"
            );
            // A retry after the fact answers its agent, though the quota is
            // now used up; a new key is refused by it.
            let (status, again) = create(tenant.clone(), "create-ava", 1).await.remove(0);
            assert_eq!((status, &again["id"]), (201, &created[0]), "{slug}");
            let (status, refused) = create(tenant.clone(), "create-cid", 1).await.remove(0);
            assert_eq!(status, 409, "{slug}: {refused}");
        }
    }

    /// The budget waiting in agent-svc's outbox for `agent`, if any:
    /// (limit in nano-dollars, attempts so far).
    async fn outbox(db: &sqlx::PgPool, agent: &str) -> Option<(i64, i32)> {
        sqlx::query_as(
            "SELECT limit_nanos, attempts FROM agent.agent_budget_outbox WHERE agent_id = $1::uuid",
        )
        .bind(agent)
        .fetch_optional(db)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_budget_saved_while_billing_is_away_reaches_it_after_the_commit() {
        let gate = Gate::start().await;
        let mesh = spawn_mesh_with(MeshOptions {
            billing_gate: Some(gate.clone()),
            ..MeshOptions::default()
        })
        .await;
        let db = sqlx::PgPool::connect(mesh.database.expose_secret())
            .await
            .unwrap();
        let (_, admin, _) = mesh.tenant_with_member("acme", "customer_admin").await;
        let (status, created) = mesh
            .post_json("/api/v1/agents", Some(&admin), &agent("Ava"))
            .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        let budget_path = format!("/api/v1/usage/agents/{id}/budget");
        let limit = || {
            let (mesh, admin, budget_path) = (&mesh, &admin, &budget_path);
            async move { mesh.get_json(budget_path, Some(admin)).await.1["limit_usd"].clone() }
        };
        assert_eq!(limit().await, "25.00");
        assert_eq!(outbox(&db, &id).await, None, "pushed at once, nothing left");

        // billing-svc is away from agent-svc (the gateway still reaches it).
        gate.close();
        let patch = |body: Value| {
            let (mesh, admin, id) = (&mesh, &admin, &id);
            async move {
                let response = mesh
                    .http
                    .patch(mesh.url(&format!("/api/v1/agents/{id}")))
                    .bearer_auth(admin)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.unwrap())
            }
        };
        // The save commits; its budget waits in the outbox.
        let (status, saved) = patch(json!({ "budget_limit_usd": "40" })).await;
        assert_eq!(
            (status, &saved["budget_limit_usd"]),
            (200, &json!("40.00")),
            "{saved}"
        );
        let (status, saved) = patch(json!({ "budget_limit_usd": "50" })).await;
        assert_eq!(
            (status, &saved["budget_limit_usd"]),
            (200, &json!("50.00")),
            "{saved}"
        );
        assert_eq!(limit().await, "25.00", "billing-svc has not heard yet");
        // The relay keeps trying, with the newest limit.
        let waiting = testkit::eventually(Duration::from_secs(20), "a retried push", || async {
            outbox(&db, &id)
                .await
                .filter(|(_, attempts)| *attempts >= 2)
        })
        .await
        .unwrap();
        assert_eq!(waiting.0, 50_000_000_000);

        // Back: the newest budget lands, and the outbox empties.
        gate.open();
        testkit::eventually(
            Duration::from_secs(30),
            "the budget in billing-svc",
            || async { (limit().await == "50.00").then_some(()) },
        )
        .await
        .unwrap();
        testkit::eventually(Duration::from_secs(10), "an empty outbox", || async {
            outbox(&db, &id).await.is_none().then_some(())
        })
        .await
        .unwrap();
    }
}
