//! Configuration from the environment (12-factor), with secrets that never print.

use std::{net::SocketAddr, str::FromStr};

use secrecy::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(
        "{0} must be set: CREWMESH_ENV is production unless set to development \
         (which uses well-known development keys and local defaults)"
    )]
    Missing(&'static str),
}

/// `CREWMESH_ENV`: production (the default) or development. Development keys
/// and local defaults are used only when development is asked for by name:
/// a deployment that forgets the variable must fail to start, not run with
/// signing and encryption keys anyone can derive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl Environment {
    pub fn from_env() -> Result<Environment, ConfigError> {
        Environment::parse(var("CREWMESH_ENV").as_deref())
    }

    /// The environment a `CREWMESH_ENV` value names (None: unset).
    pub fn parse(value: Option<&str>) -> Result<Environment, ConfigError> {
        match value {
            Some("development") | Some("dev") => Ok(Environment::Development),
            None | Some("production") | Some("prod") => Ok(Environment::Production),
            Some(other) => Err(ConfigError::Invalid {
                name: "CREWMESH_ENV",
                reason: format!("`{other}` is neither development nor production"),
            }),
        }
    }
}

/// A non-empty environment variable.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A non-empty environment variable holding a secret.
pub fn secret_var(name: &str) -> Option<SecretString> {
    var(name).map(SecretString::from)
}

/// A variable parsed as `T`, or `default` when unset.
pub fn parsed_or<T>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
    }
}

/// A secret that has a safe local default in development but must be set in production.
pub fn secret_or_dev(
    name: &'static str,
    environment: Environment,
    dev_default: &str,
) -> Result<SecretString, ConfigError> {
    match (secret_var(name), environment) {
        (Some(value), _) => Ok(value),
        (None, Environment::Development) => Ok(SecretString::from(dev_default.to_owned())),
        (None, Environment::Production) => Err(ConfigError::Missing(name)),
    }
}

/// The listen address for a service: `{PREFIX}_ADDR`, else `0.0.0.0:{default_port}`.
pub fn listen_addr(env_name: &'static str, default_port: u16) -> Result<SocketAddr, ConfigError> {
    parsed_or(env_name, SocketAddr::from(([0, 0, 0, 0], default_port)))
}

/// What every service reads the same way.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    pub environment: Environment,
    pub database_url: SecretString,
    pub redis_url: SecretString,
}

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/crewmesh";
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl CommonConfig {
    pub fn from_env() -> Result<CommonConfig, ConfigError> {
        let environment = Environment::from_env()?;
        Ok(CommonConfig {
            environment,
            database_url: secret_or_dev("DATABASE_URL", environment, DEFAULT_DATABASE_URL)?,
            redis_url: secret_or_dev("REDIS_URL", environment, DEFAULT_REDIS_URL)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn production_unless_development_is_named() {
        assert_eq!(Environment::parse(None).ok(), Some(Environment::Production));
        assert_eq!(
            Environment::parse(Some("development")).ok(),
            Some(Environment::Development)
        );
        assert_eq!(
            Environment::parse(Some("production")).ok(),
            Some(Environment::Production)
        );
        assert!(Environment::parse(Some("staging")).is_err());
        let missing = secret_or_dev("DATABASE_URL", Environment::Production, "x").unwrap_err();
        assert!(missing.to_string().contains("DATABASE_URL"), "{missing}");
        assert!(missing.to_string().contains("CREWMESH_ENV"), "{missing}");
    }

    #[test]
    fn secrets_never_print() {
        let config = CommonConfig {
            environment: Environment::Development,
            database_url: SecretString::from("postgres://u:hunter2@db/x".to_owned()),
            redis_url: SecretString::from("redis://:hunter2@r".to_owned()),
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(config.database_url.expose_secret().contains("hunter2"));
    }
}
