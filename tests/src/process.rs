//! A service run as its own operating-system process, for tests that kill
//! it for real (SIGKILL) and start it again — what a crashed pod does.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use secrecy::ExposeSecret as _;

use crate::Mesh;

/// The workspace's target directory for this build profile: the test binary
/// lives in `<target>/<profile>/deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in <target>/<profile>/deps")
        .to_path_buf()
}

/// The path of `bin`, built first when a partial test run did not build it.
pub fn binary(package: &str, bin: &str) -> PathBuf {
    let path = profile_dir().join(bin);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", bin])
            .status()
            .expect("running cargo build");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {bin} failed"
        );
    }
    path
}

/// llm-svc as its own process, consuming the mesh's queues under `consumer`.
/// Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct LlmProcess {
    child: Child,
}

impl LlmProcess {
    pub fn start(mesh: &Mesh, consumer: &str) -> LlmProcess {
        use mesh_kit::ServiceId;
        let queues = &mesh.queues;
        let child = Command::new(binary("llm-svc", "llm-svc"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CREWMESH_ENV", "development")
            .env("RUST_LOG", "info")
            .env("DATABASE_URL", mesh.database.expose_secret())
            .env("REDIS_URL", &mesh.redis_url)
            .env("CREWMESH_LLM_ADDR", "127.0.0.1:0")
            .env("CREWMESH_METRICS_ADDR", "off")
            .env("CREWMESH_AGENT_URL", mesh.grpc_url(ServiceId::Agent))
            .env("CREWMESH_BILLING_URL", mesh.grpc_url(ServiceId::Billing))
            .env("CREWMESH_MEDIA_URL", mesh.grpc_url(ServiceId::Media))
            .env("CREWMESH_INBOUND_STREAM", queues.inbound.prefix())
            .env("CREWMESH_OUTBOUND_STREAM", queues.outbound.prefix())
            .env("CREWMESH_DEAD_LETTER_STREAM", queues.dead_letters.prefix())
            .env(
                "CREWMESH_QUEUE_PARTITIONS",
                queues.inbound.partitions().to_string(),
            )
            .env("CREWMESH_CONSUMER_NAME", consumer)
            .env("CREWMESH_PROVIDER_TIMEOUT_SECS", "10")
            .env("CREWMESH_EGRESS_ALLOW", &mesh.egress_allow)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting llm-svc");
        LlmProcess { child }
    }

    /// SIGKILL, as the kernel's OOM killer or a node failure would: no
    /// shutdown hook runs, nothing is acknowledged or handed back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LlmProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
