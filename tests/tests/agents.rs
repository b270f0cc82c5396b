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
