//! media-svc's own settings. The local defaults match what `scripts/up` and
//! `scripts/test` start (s3s-fs on 127.0.0.1:8014 with the dev credentials).

use mesh_kit::{
    config::{ConfigError, Environment, parsed_or, secret_or_dev, var},
    service::ServiceConfig,
};
use reqwest::Url;
use secrecy::SecretString;

pub const DEFAULT_S3_ENDPOINT: &str = "http://127.0.0.1:8014";
pub const DEFAULT_BUCKET: &str = "crewmesh-media";
pub const DEV_ACCESS_KEY_ID: &str = "crewmesh-dev";
pub const DEV_SECRET_ACCESS_KEY: &str = "crewmesh-dev-secret";
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_WHATSAPP_API_BASE: &str = "https://graph.facebook.com/v21.0";
pub const DEFAULT_SLACK_FILES_BASE: &str = "https://files.slack.com";
pub const DEFAULT_MAX_BYTES: u64 = 25 * 1024 * 1024;

/// An http(s) origin with nothing after it: presigned URLs are signed for
/// exactly this host and port, and Slack ingest compares origins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    /// `host[:port]` as sent in the `Host` header (the port only when not the default).
    pub authority: String,
}

impl Origin {
    pub fn parse(name: &'static str, raw: &str) -> Result<Origin, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            name,
            reason: format!("`{raw}` {reason}"),
        };
        let url = Url::parse(raw.trim()).map_err(|e| invalid(&format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("is not an http(s) URL"));
        }
        if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
            return Err(invalid(
                "must be scheme://host[:port] with no path, query or user",
            ));
        }
        let host = url.host_str().ok_or_else(|| invalid("has no host"))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Origin {
            scheme: url.scheme().to_owned(),
            authority,
        })
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// Whether `url` is on this origin (scheme, host and effective port).
    pub fn contains(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        url.scheme() == self.scheme && authority.eq_ignore_ascii_case(&self.authority)
    }
}

/// Where media is stored and with which credentials.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// What media-svc itself talks to (`S3_ENDPOINT`).
    pub endpoint: Origin,
    /// The host presigned URLs name (`S3_PUBLIC_ENDPOINT`, default the endpoint):
    /// clients outside the cluster reach storage by another name, and the host is signed.
    pub public_endpoint: Origin,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub service: ServiceConfig,
    pub s3: S3Config,
    /// Graph API base, media ids are resolved under it (`WHATSAPP_API_BASE`).
    pub whatsapp_api_base: String,
    /// The only origin Slack file URLs may point at (`SLACK_FILES_BASE`): the bot
    /// token is sent there, so any other host would leak it.
    pub slack_files: Origin,
    /// Largest object accepted, uploads and ingest alike (`CREWMESH_MEDIA_MAX_BYTES`).
    pub max_bytes: u64,
}

impl MediaConfig {
    /// Everything at its local default: s3s-fs on loopback, the real channel APIs.
    pub fn local(service: ServiceConfig) -> anyhow::Result<MediaConfig> {
        let endpoint = Origin::parse("S3_ENDPOINT", DEFAULT_S3_ENDPOINT)?;
        Ok(MediaConfig {
            service,
            s3: S3Config {
                public_endpoint: endpoint.clone(),
                endpoint,
                bucket: DEFAULT_BUCKET.to_owned(),
                region: DEFAULT_REGION.to_owned(),
                access_key_id: DEV_ACCESS_KEY_ID.to_owned(),
                secret_access_key: SecretString::from(DEV_SECRET_ACCESS_KEY.to_owned()),
            },
            whatsapp_api_base: DEFAULT_WHATSAPP_API_BASE.to_owned(),
            slack_files: Origin::parse("SLACK_FILES_BASE", DEFAULT_SLACK_FILES_BASE)?,
            max_bytes: DEFAULT_MAX_BYTES,
        })
    }

    pub fn from_env(service: ServiceConfig) -> anyhow::Result<MediaConfig> {
        let environment = service.common.environment;
        let endpoint = Origin::parse(
            "S3_ENDPOINT",
            &var("S3_ENDPOINT").unwrap_or_else(|| DEFAULT_S3_ENDPOINT.to_owned()),
        )?;
        let public_endpoint = match var("S3_PUBLIC_ENDPOINT") {
            Some(raw) => Origin::parse("S3_PUBLIC_ENDPOINT", &raw)?,
            None => endpoint.clone(),
        };
        let access_key_id = match (var("AWS_ACCESS_KEY_ID"), environment) {
            (Some(id), _) => id,
            (None, Environment::Development) => DEV_ACCESS_KEY_ID.to_owned(),
            (None, Environment::Production) => {
                return Err(ConfigError::Missing("AWS_ACCESS_KEY_ID").into());
            }
        };
        let max_bytes = parsed_or("CREWMESH_MEDIA_MAX_BYTES", DEFAULT_MAX_BYTES)?;
        if max_bytes == 0 {
            return Err(ConfigError::Invalid {
                name: "CREWMESH_MEDIA_MAX_BYTES",
                reason: "must be at least 1".into(),
            }
            .into());
        }
        let bucket = var("S3_BUCKET").unwrap_or_else(|| DEFAULT_BUCKET.to_owned());
        validate_bucket(&bucket)?;
        Ok(MediaConfig {
            service,
            s3: S3Config {
                endpoint,
                public_endpoint,
                bucket,
                region: var("AWS_REGION").unwrap_or_else(|| DEFAULT_REGION.to_owned()),
                access_key_id,
                secret_access_key: secret_or_dev(
                    "AWS_SECRET_ACCESS_KEY",
                    environment,
                    DEV_SECRET_ACCESS_KEY,
                )?,
            },
            whatsapp_api_base: var("WHATSAPP_API_BASE")
                .unwrap_or_else(|| DEFAULT_WHATSAPP_API_BASE.to_owned())
                .trim_end_matches('/')
                .to_owned(),
            slack_files: Origin::parse(
                "SLACK_FILES_BASE",
                &var("SLACK_FILES_BASE").unwrap_or_else(|| DEFAULT_SLACK_FILES_BASE.to_owned()),
            )?,
            max_bytes,
        })
    }
}

/// S3 bucket naming rules, so a typo fails at start-up rather than on the first upload.
fn validate_bucket(bucket: &str) -> Result<(), ConfigError> {
    let b = bucket.as_bytes();
    let ok = (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name: "S3_BUCKET",
            reason: format!("`{bucket}` is not a valid bucket name (3–63 of a–z, 0–9, '-', '.')"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_keep_non_default_ports_and_refuse_paths() {
        let o = Origin::parse("X", "http://127.0.0.1:8014").unwrap();
        assert_eq!(o.authority, "127.0.0.1:8014");
        assert_eq!(o.url(), "http://127.0.0.1:8014");
        let o = Origin::parse("X", "https://files.slack.com:443/").unwrap();
        assert_eq!(o.authority, "files.slack.com");
        assert!(Origin::parse("X", "https://s3.example.com/media").is_err());
        assert!(Origin::parse("X", "ftp://s3.example.com").is_err());
    }

    #[test]
    fn origin_membership_compares_scheme_host_and_port() {
        let slack = Origin::parse("X", "https://files.slack.com").unwrap();
        let yes = |u: &str| Url::parse(u).map(|u| slack.contains(&u)).unwrap_or(false);
        assert!(yes("https://files.slack.com/files-pri/T1-F1/a.png"));
        assert!(yes("https://files.slack.com:443/x"));
        assert!(!yes("http://files.slack.com/x"));
        assert!(!yes("https://files.slack.com:8443/x"));
        assert!(!yes("https://files.slack.com.evil.example/x"));
        assert!(!yes("https://evil.example/files.slack.com"));
        assert!(!yes("https://files.slack.com@evil.example/x"));
    }

    #[test]
    fn secrets_never_print() {
        let service = ServiceConfig::development(mesh_kit::ServiceId::Media).unwrap();
        let config = MediaConfig::local(service).unwrap();
        assert!(!format!("{config:?}").contains(DEV_SECRET_ACCESS_KEY));
    }
}
