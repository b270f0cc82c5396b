//! The gRPC contracts of the Crewmesh services.
//!
//! One module per `crewmesh.<svc>.v1` package. Clients are behind the `client`
//! feature and servers behind `server`, so the gateway builds no server code.

// Generated code is not ours to lint.
#![allow(clippy::all, missing_debug_implementations)]

/// Every service's file descriptors, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/crewmesh_descriptor.bin"));

pub mod identity {
    pub mod v1 {
        tonic::include_proto!("crewmesh.identity.v1");
    }
}

pub mod agent {
    pub mod v1 {
        tonic::include_proto!("crewmesh.agent.v1");
    }
}

pub mod llm {
    pub mod v1 {
        tonic::include_proto!("crewmesh.llm.v1");
    }
}

pub mod billing {
    pub mod v1 {
        tonic::include_proto!("crewmesh.billing.v1");
    }
}

pub mod media {
    pub mod v1 {
        tonic::include_proto!("crewmesh.media.v1");
    }
}

/// Queue entries between the gateway and llm-svc (not a gRPC service).
pub mod messaging {
    pub mod v1 {
        tonic::include_proto!("crewmesh.messaging.v1");
    }
}
