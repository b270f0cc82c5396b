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
