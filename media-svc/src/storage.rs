//! The S3-compatible object store: bucket set-up, HEAD, PUT from a file,
//! DELETE; and presigned URLs for the public host.

use std::{path::Path, time::Duration};

use aws_sdk_s3::{
    Client,
    config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation, retry::RetryConfig, timeout::TimeoutConfig,
    },
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
};
use chrono::{DateTime, Utc};
use mesh_kit::ErrorCode;
use secrecy::ExposeSecret as _;
use tonic::Status;

use crate::{
    config::S3Config,
    presign::{self, Addressing, ExpiryOutOfRange, Operation, Target},
};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "object storage is unreachable ({0}); `scripts/up` starts a local one, or set S3_ENDPOINT"
    )]
    Unreachable(String),
    #[error(
        "the media bucket does not exist in object storage (readiness creates it once storage answers)"
    )]
    NoBucket,
    #[error("the object is not in storage")]
    NotFound,
    #[error("object storage refused the request: {0}")]
    Refused(String),
    #[error("reading the staged file: {0}")]
    File(String),
}

impl From<StorageError> for Status {
    fn from(err: StorageError) -> Status {
        match err {
            StorageError::Unreachable(_) | StorageError::NoBucket => {
                tracing::warn!(error = %err, "object storage unavailable");
                ErrorCode::Unavailable.status(err.to_string())
            }
            StorageError::NotFound => ErrorCode::NotFound.status("media not found in storage"),
            StorageError::Refused(_) | StorageError::File(_) => {
                tracing::error!(error = %err, "object storage");
                ErrorCode::Internal.status("internal error; see the service logs")
            }
        }
    }
}

/// The size and type storage holds for an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub size: i64,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ObjectStore {
    client: Client,
    config: S3Config,
}

impl ObjectStore {
    pub fn new(config: &S3Config) -> ObjectStore {
        let credentials = Credentials::new(
            config.access_key_id.clone(),
            config.secret_access_key.expose_secret().to_owned(),
            None,
            None,
            "crewmesh-config",
        );
        let s3 = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(config.endpoint.url())
            .force_path_style(true)
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            // Checksums only where S3 requires them: newer SDK defaults send
            // aws-chunked trailers that S3-compatible servers often reject.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            )
            .build();
        ObjectStore {
            client: Client::from_conf(s3),
            config: config.clone(),
        }
    }

    /// The SDK client, for tests that inspect storage directly.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.config.bucket
    }

    /// Creates the bucket when it does not exist yet; readiness runs it until it succeeds.
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        let bucket = &self.config.bucket;
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => return Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => {}
            Err(e) => return Err(classify(e)),
        }
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => {
                tracing::info!(%bucket, "created the media bucket");
                Ok(())
            }
            Err(SdkError::ServiceError(e))
                if e.err().is_bucket_already_owned_by_you()
                    || e.err().is_bucket_already_exists() =>
            {
                Ok(())
            }
            Err(e) => Err(classify(e)),
        }
    }

    pub async fn head(&self, key: &str) -> Result<Head, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Head {
                size: out.content_length().unwrap_or_default(),
                content_type: out.content_type().map(str::to_owned),
            }),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Err(StorageError::NotFound),
            Err(e) => Err(classify(e)),
        }
    }

    /// Uploads the staged file at `path` (streamed from disk, not read into memory).
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        content_type: &str,
        size: u64,
    ) -> Result<(), StorageError> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|e| StorageError::File(e.to_string()))?;
        self.client
            .put_object()
            .bucket(&self.config.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }

    /// A URL anyone holding it can GET `key` with, signed for the public host.
    pub fn presigned_get(
        &self,
        key: &str,
        at: DateTime<Utc>,
        expires_secs: u64,
    ) -> Result<String, ExpiryOutOfRange> {
        self.presign(key, Operation::Get, at, expires_secs)
    }

    /// A URL that accepts exactly one PUT of `content_length` bytes of `content_type`.
    pub fn presigned_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        at: DateTime<Utc>,
        expires_secs: u64,
    ) -> Result<String, ExpiryOutOfRange> {
        let put = Operation::Put {
            content_type,
            content_length,
        };
        self.presign(key, put, at, expires_secs)
    }

    fn presign(
        &self,
        key: &str,
        operation: Operation<'_>,
        at: DateTime<Utc>,
        expires_secs: u64,
    ) -> Result<String, ExpiryOutOfRange> {
        let credentials = presign::Credentials {
            access_key_id: &self.config.access_key_id,
            secret_access_key: self.config.secret_access_key.expose_secret(),
            region: &self.config.region,
        };
        let target = Target {
            scheme: &self.config.public_endpoint.scheme,
            authority: &self.config.public_endpoint.authority,
            bucket: &self.config.bucket,
            key,
            addressing: Addressing::Path,
        };
        presign::presign(&credentials, &target, operation, at, expires_secs)
    }
}

/// Sorts an SDK failure into what the caller can do about it.
fn classify<E>(err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StorageError::Unreachable(detail)
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match service.err().code() {
                Some("NoSuchBucket") => StorageError::NoBucket,
                Some("NoSuchKey") => StorageError::NotFound,
                _ if status == 404 => StorageError::NotFound,
                _ if status >= 500 => StorageError::Unreachable(detail),
                _ => StorageError::Refused(detail),
            }
        }
        // ConstructionFailure and variants added by future SDK versions (the enum
        // is non-exhaustive): nothing reached storage, so it is our bug.
        _ => StorageError::Refused(detail),
    }
}
