//! The whole mesh in this process, on random ports, against a fresh database:
//! the same `serve` functions the binaries and `crewmesh up` run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, time::Duration};

use mesh_kit::{ServiceId, Shutdown, service::ServiceConfig};
use tokio::net::TcpListener;

#[derive(Debug)]
pub struct Mesh {
    /// Base URL of the gateway, e.g. `http://127.0.0.1:41234`.
    pub gateway: String,
    /// Each gRPC service and its loopback URL.
    pub grpc: Vec<(ServiceId, String)>,
    pub http: reqwest::Client,
    shutdown: Shutdown,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Mesh {
    pub fn grpc_url(&self, service: ServiceId) -> &str {
        self.grpc
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, url)| url.as_str())
            .expect("no such service in the mesh")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// GETs `path` through the gateway and returns the status and JSON body.
    pub async fn get_json(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }
}

async fn loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Starts every service and the gateway, and returns once `/readyz` says ready.
pub async fn spawn_mesh() -> Mesh {
    let database = testkit::fresh_database().await.unwrap();
    let shutdown = Shutdown::new();
    let mut grpc = Vec::new();

    macro_rules! spawn_service {
        ($id:expr, $serve:path) => {{
            let config: ServiceConfig = testkit::service_config($id, &database).unwrap();
            let (listener, addr) = loopback().await;
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = $serve(config, listener, stop).await {
                    panic!("{} failed: {e:#}", $id);
                }
            });
            grpc.push(($id, format!("http://{addr}")));
        }};
    }
    spawn_service!(ServiceId::Identity, identity_svc::startup::serve);
    spawn_service!(ServiceId::Agent, agent_svc::startup::serve);
    spawn_service!(ServiceId::Llm, llm_svc::startup::serve);
    spawn_service!(ServiceId::Billing, billing_svc::startup::serve);
    spawn_service!(ServiceId::Media, media_svc::startup::serve);

    let url_of = |id| {
        grpc.iter()
            .find(|(s, _)| *s == id)
            .map(|(_, u): &(ServiceId, String)| u.clone())
            .unwrap()
    };
    let config = gateway::startup::Config {
        service: testkit::service_config(ServiceId::Gateway, &database).unwrap(),
        upstreams: gateway::startup::Upstreams {
            identity: url_of(ServiceId::Identity),
            agent: url_of(ServiceId::Agent),
            llm: url_of(ServiceId::Llm),
            billing: url_of(ServiceId::Billing),
            media: url_of(ServiceId::Media),
        },
    };
    let (listener, addr) = loopback().await;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = gateway::startup::serve(config, listener, stop).await {
            panic!("gateway failed: {e:#}");
        }
    });

    let mesh = Mesh {
        gateway: format!("http://{addr}"),
        grpc,
        http: reqwest::Client::new(),
        shutdown,
    };
    let ready = mesh.url("/readyz");
    testkit::eventually(Duration::from_secs(30), "the mesh to be ready", || async {
        let response = mesh.http.get(&ready).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await
    .unwrap();
    mesh
}
