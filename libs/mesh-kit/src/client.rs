//! Outbound gRPC: lazily connected channels, and requests that carry the
//! caller's token, a `traceparent` and a deadline.

use std::time::Duration;

use tonic::{
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

/// Deadline of a call to another service unless the caller chooses one.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
#[error("`{url}` is not a valid gRPC endpoint: {source}")]
pub struct EndpointError {
    url: String,
    #[source]
    source: tonic::transport::Error,
}

/// A channel that connects on first use and reconnects on its own, so a
/// service can start before the ones it calls.
pub fn lazy_channel(url: &str) -> Result<Channel, EndpointError> {
    Endpoint::from_shared(url.to_owned())
        .map_err(|source| EndpointError {
            url: url.to_owned(),
            source,
        })
        .map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true)
                .connect_lazy()
        })
}

/// What travels with every outbound call.
#[derive(Clone)]
pub struct CallContext {
    /// The bearer token: the end user's when acting for them, else our service token.
    pub token: String,
    /// W3C trace context of the request being served.
    pub traceparent: String,
    pub deadline: Duration,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("token", &"[REDACTED]")
            .field("traceparent", &self.traceparent)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl CallContext {
    pub fn new(token: String, traceparent: Option<String>) -> CallContext {
        CallContext {
            token,
            traceparent: traceparent
                .filter(|t| is_traceparent(t))
                .unwrap_or_else(new_traceparent),
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// Wraps `message` with authorization, trace context and deadline.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        let metadata = request.metadata_mut();
        // An empty token is an anonymous call (login and friends): no header.
        if !self.token.is_empty()
            && let Ok(value) = MetadataValue::try_from(format!("Bearer {}", self.token))
        {
            metadata.insert("authorization", value);
        }
        if let Ok(value) = MetadataValue::try_from(self.traceparent.as_str()) {
            metadata.insert("traceparent", value);
        }
        request
    }
}

/// A fresh W3C `traceparent` (version 00, sampled).
pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_token_trace_and_deadline() {
        let ctx = CallContext::new("tok".into(), None);
        let request = ctx.request(());
        let md = request.metadata();
        assert_eq!(md.get("authorization").unwrap(), "Bearer tok");
        assert!(is_traceparent(
            md.get("traceparent").unwrap().to_str().unwrap()
        ));
        assert_eq!(md.get("grpc-timeout").unwrap(), "10000000u");
    }

    #[test]
    fn a_valid_incoming_traceparent_is_kept_and_garbage_replaced() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            CallContext::new("t".into(), Some(tp.into())).traceparent,
            tp
        );
        let replaced = CallContext::new("t".into(), Some("junk".into())).traceparent;
        assert!(is_traceparent(&replaced));
    }
}
