//! Compiles every service contract into one module tree and a descriptor set,
//! which the services hand to gRPC reflection.

use std::{env, path::PathBuf};

const PROTOS: &[&str] = &[
    "crewmesh/identity/v1/identity.proto",
    "crewmesh/identity/v1/identity_internal.proto",
    "crewmesh/agent/v1/agent.proto",
    "crewmesh/agent/v1/agent_internal.proto",
    "crewmesh/llm/v1/llm.proto",
    "crewmesh/billing/v1/billing.proto",
    "crewmesh/billing/v1/billing_internal.proto",
    "crewmesh/media/v1/media.proto",
    "crewmesh/media/v1/media_internal.proto",
    "crewmesh/messaging/v1/messaging.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let build_client = env::var_os("CARGO_FEATURE_CLIENT").is_some();
    let build_server = env::var_os("CARGO_FEATURE_SERVER").is_some();
    tonic_prost_build::configure()
        .build_client(build_client)
        .build_server(build_server)
        // RPCs sketched in the contract but not built yet answer UNIMPLEMENTED
        // instead of forcing placeholder bodies into every service.
        .generate_default_stubs(true)
        .file_descriptor_set_path(out_dir.join("crewmesh_descriptor.bin"))
        .compile_protos(PROTOS, &["."])?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
