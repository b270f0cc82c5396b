//! Which tenant and agent an inbound channel identifier belongs to, through
//! `AgentInternalService.ResolveChannel`, cached briefly.
//!
//! Every inbound message needs the answer, and it changes only when an admin
//! connects, reinstalls or disconnects a channel. Caching positive answers
//! for [`TTL`] takes agent-svc (a gRPC hop, a PostgreSQL read and a Fernet
//! decryption) off the webhook's path for busy conversations; the cost is
//! that a token rotation, or a disconnect made through another replica,
//! reaches this edge up to [`TTL`] later. A disconnect through this replica
//! evicts the route at once (`DELETE /api/v1/channels/{id}`). Unknown
//! identifiers are not cached, so a channel connected a moment ago works at
//! once, and a route whose token the platform refused is evicted (see
//! [`RouteCache::evict`]), so a reconnected token is used on the next try
//! rather than after [`TTL`].
//!
//! Cached routes hold plaintext tokens: their `Debug` redacts them.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crewmesh_proto::agent::v1::{
    Channel, ResolveChannelRequest, ResolveChannelResponse,
    agent_internal_service_client::AgentInternalServiceClient,
};
use mesh_kit::{ErrorCode, client::CallContext};

use crate::{auth::RequestMeta, error::ApiError, startup::AppState};

pub const TTL: Duration = Duration::from_secs(30);
/// Bounds memory under a flood of distinct identifiers.
const MAX_ENTRIES: usize = 10_000;

type Key = (i32, String);

#[derive(Debug, Clone, Default)]
pub struct RouteCache {
    entries: Arc<Mutex<HashMap<Key, Cached>>>,
}

/// A route and when it was fetched.
struct Cached {
    at: Instant,
    route: ResolveChannelResponse,
}

impl fmt::Debug for Cached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let route = &self.route;
        f.debug_struct("Cached")
            .field("at", &self.at)
            .field("tenant_id", &route.tenant_id)
            .field("agent_id", &route.agent_id)
            .field("connection_id", &route.connection_id)
            .field("access_token", &"[REDACTED]")
            .field("default_channel", &route.default_channel)
            .field("bot_user_id", &route.bot_user_id)
            .field("reply_template_name", &route.reply_template_name)
            .field("reply_template_language", &route.reply_template_language)
            .finish()
    }
}

impl RouteCache {
    /// The cached route of `external_id` on `channel`, if still fresh.
    pub fn cached(&self, channel: Channel, external_id: &str) -> Option<ResolveChannelResponse> {
        self.get(&(i32::from(channel), external_id.to_owned()))
    }

    /// Forgets the route of `external_id`: the platform refused its token,
    /// or the connection was deleted, so the next lookup asks agent-svc for
    /// the (perhaps reconnected) one.
    pub fn evict(&self, channel: Channel, external_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&(i32::from(channel), external_id.to_owned()));
    }

    fn get(&self, key: &Key) -> Option<ResolveChannelResponse> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|cached| cached.at.elapsed() < TTL)
            .map(|cached| cached.route.clone())
    }

    fn put(&self, key: Key, route: ResolveChannelResponse) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, cached| cached.at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Cached {
                at: Instant::now(),
                route,
            },
        );
    }
}

/// The route of `external_id` on `channel`; None when no connection has it.
/// agent-svc unreachable is an error (503), so the platform retries.
pub async fn resolve(
    state: &AppState,
    meta: &RequestMeta,
    channel: Channel,
    external_id: &str,
) -> Result<Option<ResolveChannelResponse>, ApiError> {
    if let Some(route) = state.routes.cached(channel, external_id) {
        return Ok(Some(route));
    }
    let call = meta.as_gateway(&state.signer)?;
    fetch(
        &state.agents_internal,
        &state.routes,
        &call,
        channel,
        external_id,
    )
    .await
    .map_err(|status| meta.error(&status))
}

/// Asks agent-svc for the route of `external_id` as `call` (the gateway's
/// own identity) and caches a found one; None when no connection has it.
/// [`resolve`] for webhooks; the delivery workers, which serve no HTTP
/// request, check [`RouteCache::cached`] first and call this on a miss.
pub async fn fetch(
    agents: &AgentInternalServiceClient<tonic::transport::Channel>,
    cache: &RouteCache,
    call: &CallContext,
    channel: Channel,
    external_id: &str,
) -> Result<Option<ResolveChannelResponse>, tonic::Status> {
    let resolved = agents
        .clone()
        .resolve_channel(call.request(ResolveChannelRequest {
            channel: channel.into(),
            external_id: external_id.to_owned(),
        }))
        .await;
    match resolved {
        Ok(route) => {
            let route = route.into_inner();
            cache.put((i32::from(channel), external_id.to_owned()), route.clone());
            Ok(Some(route))
        }
        Err(status) if ErrorCode::of_status(&status) == ErrorCode::NotFound => Ok(None),
        Err(status) => Err(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(token: &str) -> ResolveChannelResponse {
        ResolveChannelResponse {
            tenant_id: "0190a4a0-0000-7000-8000-00000000000a".into(),
            agent_id: "0190a4a0-0000-7000-8000-00000000000b".into(),
            connection_id: "0190a4a0-0000-7000-8000-00000000000c".into(),
            access_token: token.into(),
            default_channel: "C0SUPPORT1".into(),
            bot_user_id: "U0BOTUSER1".into(),
            ..ResolveChannelResponse::default()
        }
    }

    #[test]
    fn the_cache_never_prints_a_token() {
        let cache = RouteCache::default();
        let token = "xoxb-1-2-plaintext-secret";
        cache.put(
            (i32::from(Channel::Slack), "T0ACME001".into()),
            route(token),
        );
        let printed = format!("{cache:?} {cache:#?}");
        assert!(!printed.contains(token), "{printed}");
        assert!(!printed.contains("plaintext-secret"), "{printed}");
        assert!(printed.contains("[REDACTED]"), "{printed}");
        assert!(
            printed.contains("T0ACME001"),
            "still says what is cached: {printed}"
        );
        assert_eq!(
            cache
                .cached(Channel::Slack, "T0ACME001")
                .map(|r| r.access_token),
            Some(token.to_owned()),
            "the route itself keeps its token"
        );
    }

    #[test]
    fn an_evicted_route_is_gone_at_once() {
        let cache = RouteCache::default();
        cache.put((i32::from(Channel::Slack), "T0ACME001".into()), route("t"));
        cache.put(
            (i32::from(Channel::Whatsapp), "T0ACME001".into()),
            route("w"),
        );
        cache.evict(Channel::Slack, "T0ACME001");
        assert!(cache.cached(Channel::Slack, "T0ACME001").is_none());
        assert!(
            cache.cached(Channel::Whatsapp, "T0ACME001").is_some(),
            "only that channel's route"
        );
    }
}
