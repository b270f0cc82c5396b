//! Tracing start-up: JSON logs in production, readable ones in development,
//! filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::Environment;

/// Installs the global subscriber once; later calls (several services in one
/// process, or tests) are no-ops.
pub fn init(environment: Environment) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match environment {
        Environment::Production => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
        Environment::Development => registry.with(fmt::layer().compact()).try_init(),
    };
    // Already initialised by an earlier service in this process: keep that one.
    drop(result);
}
