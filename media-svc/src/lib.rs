//! media-svc: tenant media in S3-compatible storage, presigned URLs and ingest from channels.

pub mod grpc;
pub mod startup;
