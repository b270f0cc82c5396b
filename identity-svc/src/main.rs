use identity_svc::startup::{ADDR_ENV, DEFAULT_PORT, serve};
use mesh_kit::{ServiceId, service::ServiceConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mesh_kit::service::run_binary(
        ServiceId::Identity,
        ADDR_ENV,
        DEFAULT_PORT,
        || ServiceConfig::from_env(ServiceId::Identity),
        serve,
    )
    .await
}
