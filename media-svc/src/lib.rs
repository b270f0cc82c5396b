//! media-svc: tenant media in S3-compatible storage, presigned URLs and ingest from channels.

pub mod access;
pub mod config;
pub mod content_type;
pub mod grpc;
pub mod ingest;
pub mod objects;
pub mod presign;
pub mod startup;
pub mod storage;
