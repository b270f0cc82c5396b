//! Which tenant and agent an inbound channel identifier belongs to, through
//! `AgentInternalService.ResolveChannel`, cached briefly.
//!
//! Every inbound message needs the answer, and it changes only when an admin
//! connects, reinstalls or disconnects a channel. Caching positive answers
//! for [`TTL`] takes agent-svc (a gRPC hop, a PostgreSQL read and a Fernet
//! decryption) off the webhook's path for busy conversations; the cost is
//! that a disconnect or a token rotation reaches the edge up to [`TTL`]
//! later. Unknown identifiers are not cached, so a channel connected a
//! moment ago works at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crewmesh_proto::agent::v1::{Channel, ResolveChannelRequest, ResolveChannelResponse};
use mesh_kit::ErrorCode;

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
    let key = (i32::from(channel), external_id.to_owned());
    if let Some(route) = state.routes.get(&key) {
        return Ok(Some(route));
    }
    let resolved = state
        .agents_internal
        .clone()
        .resolve_channel(
            meta.as_gateway(&state.signer)?
                .request(ResolveChannelRequest {
                    channel: channel.into(),
                    external_id: external_id.to_owned(),
                }),
        )
        .await;
    match resolved {
        Ok(route) => {
            let route = route.into_inner();
            state.routes.put(key, route.clone());
            Ok(Some(route))
        }
        Err(status) if ErrorCode::of_status(&status) == ErrorCode::NotFound => Ok(None),
        Err(status) => Err(meta.error(&status)),
    }
}
