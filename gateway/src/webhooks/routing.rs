//! Which tenant and agent an inbound channel identifier belongs to, through
//! `AgentInternalService.ResolveChannel`, cached briefly.
//!
//! Every inbound message needs the answer, and it changes only when an admin
//! connects, reinstalls or disconnects a channel. Caching positive answers
//! for [`TTL`] takes agent-svc (a gRPC hop, a PostgreSQL read and a Fernet
//! decryption) off the webhook's path for busy conversations; the cost is
//! that a disconnect or a token rotation reaches the edge up to [`TTL`]
//! later. Unknown identifiers are not cached, so a channel connected a
//! moment ago works at once, and a route whose token the platform refused
//! is evicted (see [`RouteCache::evict`]), so a reconnected token is used on
//! the next try rather than after [`TTL`].

use std::{
    collections::HashMap,
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
    entries: Arc<Mutex<HashMap<Key, (Instant, ResolveChannelResponse)>>>,
}

impl RouteCache {
    /// The cached route of `external_id` on `channel`, if still fresh.
    pub fn cached(&self, channel: Channel, external_id: &str) -> Option<ResolveChannelResponse> {
        self.get(&(i32::from(channel), external_id.to_owned()))
    }

    /// Forgets the route of `external_id`: the platform refused its token,
    /// so the next lookup asks agent-svc for the (perhaps reconnected) one.
    pub fn evict(&self, channel: Channel, external_id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(&(i32::from(channel), external_id.to_owned()));
    }

    fn get(&self, key: &Key) -> Option<ResolveChannelResponse> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, route)| route.clone())
    }

    fn put(&self, key: Key, route: ResolveChannelResponse) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (at, _)| at.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), route));
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
