use gateway::startup::{ADDR_ENV, Config, DEFAULT_PORT, serve};
use mesh_kit::ServiceId;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mesh_kit::service::run_binary(
        ServiceId::Gateway,
        ADDR_ENV,
        DEFAULT_PORT,
        Config::from_env,
        serve,
    )
    .await
}
