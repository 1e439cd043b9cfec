//! Portable Streamable-HTTP sessions: any instance on the store serves any live session.
//!
//! A session is written to the store when it opens ([`keep`]): its owner, what its client said
//! at `initialize`, and later its resource subscriptions ([`subscription_changed`]). A request
//! naming a session this instance does not hold (another instance opened it, or one that died,
//! or the process before an upgrade) takes it in from the store ([`recover`]): the owner must
//! match, the session must not have been idle past the limit, and then the client's profile is
//! restored, its subscriptions made again, and its upstream sessions are opened afresh on its
//! first request to each upstream, as on any instance.
//!
//! A legacy SSE session is its stream, and ends with it; but what its client said at
//! `initialize` is stored too, and every event on the stream has the id `<n>@<session id>`. A
//! client that opens the stream again with the last id it read as `Last-Event-ID` (as an
//! EventSource does when a stream breaks, on whatever instance the balancer picks) gets a new
//! session that carries the old one's profile and subscriptions ([`resume_sse`]), so it goes on
//! without initializing again.
//!
//! Nothing here is on the path of a request of a session the instance holds: its last use goes
//! to the store in a batch from the sweeper ([`flush`]), and an end is announced on the store's
//! change channel ([`follow_ends`]) so that every instance lets the session go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::AppState;
use super::mcp::Scope;
use crate::access::Principal;
use crate::session::{SessionKey, fingerprint};
use crate::store::sessions::{ALL_UPSTREAMS, id_hash};
use crate::store::{StoreChange, StoredSession, Subscription};
use crate::upstream::connection::ClientProfile;

/// Write a session that just opened to the store, so that every instance can serve it. A store
/// that cannot take it (PostgreSQL down) leaves the session working here only, said in the log.
pub(super) async fn keep(state: &AppState, id: &str, owner: &Principal, profile: &ClientProfile) {
    let now = unix_now();
    let session = StoredSession {
        id_hash: id_hash(id),
        owner: owner.id.to_string(),
        profile: json!({
            "protocolVersion": profile.protocol_version,
            "capabilities": profile.capabilities,
            "clientInfo": profile.client_info,
        })
        .to_string(),
        created_at: now,
        seen_at: now,
        subscriptions: Vec::new(),
    };
    let saved = state
        .registry
        .on_store(move |store| store.save_session(&session))
        .await;
    if let Err(err) = saved {
        tracing::warn!(session = %fingerprint(id), error = %err, "session not written to the store: only this instance can serve it");
    }
}

/// Take in the session `id` from the store for `principal`, when this instance does not hold
/// it: `true` when it is now open here. `false` (the caller answers 404) when the store has no
/// such session, it is another principal's, it was idle past the limit, or the store cannot
/// be read.
pub(super) async fn recover(state: &Arc<AppState>, id: &str, principal: &Arc<Principal>) -> bool {
    if state.sessions.contains(id) {
        // Here already (another principal's, or taken in by a request meanwhile).
        return state.sessions.touch(id, &principal.id);
    }
    let Some(stored) = stored_for(state, principal, id).await else {
        return false;
    };
    let Some(profile) = profile_of(&stored.profile) else {
        tracing::warn!(session = %fingerprint(id), "stored session has an unreadable client profile; not taken in");
        return false;
    };
    match state.sessions.adopt(id, principal) {
        Ok(true) => {}
        // A request that came at the same time took it in.
        Ok(false) => return state.sessions.touch(id, &principal.id),
        Err(refused) => {
            tracing::warn!(session = %fingerprint(id), error = %refused, "stored session not taken in");
            return false;
        }
    }
    let key = SessionKey::Streamable(id.into());
    state.clients.insert(key.clone(), profile);
    tracing::info!(session = %fingerprint(id), subscriptions = stored.subscriptions.len(), "session taken in from the store");
    resubscribe(state, principal, &key, &stored.subscriptions).await;
    true
}

/// Make a taken-in session's resource subscriptions again, each as its client asked for it
/// (through the pipeline, so the upstream and the naming of its updates are as the first time).
async fn resubscribe(
    state: &Arc<AppState>,
    principal: &Arc<Principal>,
    key: &SessionKey,
    subscriptions: &[Subscription],
) {
    for (n, sub) in subscriptions.iter().enumerate() {
        let scope = if sub.endpoint == ALL_UPSTREAMS {
            Scope::All
        } else {
            Scope::One(sub.endpoint.clone())
        };
        let ctx = super::mcp::Ctx {
            principal: principal.clone(),
            session: Some(key),
            sink: None,
            owner: super::clients::owner(state, Some(key)),
            modern: false,
            headers: None,
        };
        let request = json!({
            "jsonrpc": "2.0", "id": format!("mcpgw-resubscribe-{n}"),
            "method": "resources/subscribe", "params": {"uri": sub.uri},
        });
        let answer = super::mcp::handle(state, &scope, &ctx, request, &mut None).await;
        if let Some(error) = answer.as_ref().and_then(|a| a.get("error")) {
            tracing::warn!(session = %key, uri = %sub.uri, %error, "a subscription of a taken-in session could not be made again");
        }
    }
}

/// A legacy SSE client takes up the session `old` on its new stream `new`: what it said at
/// `initialize` (from the store) is the new session's, so it goes on without initializing
/// again; its resource subscriptions are made again. Nothing when the store has no such
/// session, it is another principal's, or it was idle past the limit: the new stream is then a
/// new session, as it always was.
pub(super) async fn resume_sse(
    state: &Arc<AppState>,
    principal: &Arc<Principal>,
    old: &str,
    new: &str,
) {
    let Some(stored) = stored_for(state, principal, old).await else {
        return;
    };
    let Some(profile) = profile_of(&stored.profile) else {
        return;
    };
    keep(state, new, principal, &profile).await;
    let key = SessionKey::Sse(new.into());
    state.clients.insert(key.clone(), profile);
    tracing::info!(session = %fingerprint(new), from = %fingerprint(old), "SSE session taken up again on a new stream");
    resubscribe(state, principal, &key, &stored.subscriptions).await;
}

/// The stored session `id`, if it is `principal`'s and not idle past the limit.
async fn stored_for(state: &AppState, principal: &Principal, id: &str) -> Option<StoredSession> {
    let hash = id_hash(id);
    let loaded = state
        .registry
        .on_store(move |store| store.load_session(&hash))
        .await;
    let stored = match loaded {
        Ok(found) => found?,
        Err(err) => {
            tracing::warn!(session = %fingerprint(id), error = %err, "session not found here and the store cannot be read");
            return None;
        }
    };
    let fresh = stored.seen_at >= live_since(state, unix_now());
    (*stored.owner == *principal.id && fresh).then_some(stored)
}

/// The earliest second (Unix) a session can have been last seen in and still be live at `now`.
/// The store keeps whole seconds, the time of use rounded down: a session is live only if that
/// second is later than `now` less the idle limit, so a session idle past the limit is never
/// taken for live (one within the last second of its limit may be taken for idle).
fn live_since(state: &AppState, now: i64) -> i64 {
    let idle = i64::try_from(state.sessions.limits().idle.as_secs()).unwrap_or(i64::MAX);
    now.saturating_sub(idle).saturating_add(1)
}

/// A resource subscription of a Streamable-HTTP session was made or dropped through `scope`:
/// the store follows, so that an instance taking the session in makes it again.
pub(super) async fn subscription_changed(
    state: &AppState,
    scope: &Scope,
    session: &SessionKey,
    uri: &str,
    subscribed: bool,
) {
    let (SessionKey::Streamable(id) | SessionKey::Sse(id)) = session else {
        return;
    };
    let hash = id_hash(id);
    let sub = Subscription {
        endpoint: match scope {
            Scope::All => ALL_UPSTREAMS.to_owned(),
            Scope::One(name) => name.clone(),
        },
        uri: uri.to_owned(),
    };
    let written = state
        .registry
        .on_store(move |store| store.set_subscription(&hash, &sub, subscribed))
        .await;
    if let Err(err) = written {
        tracing::warn!(%session, error = %err, "subscription change not written to the store; another instance taking the session in will not know it");
    }
}

/// The session `id` was ended by its client: no instance serves it any more.
pub(super) async fn ended(state: &AppState, id: &str) {
    let hash = id_hash(id);
    if let Err(err) = state
        .registry
        .on_store(move |store| store.end_session(&hash))
        .await
    {
        tracing::warn!(session = %fingerprint(id), error = %err, "session end not written to the store; it expires there when idle");
    }
}

/// From the sweeper: write when the sessions used since `since` were last seen, drop from the
/// store the sessions no instance has used for the idle limit, and let go here of the used
/// ones the store no longer holds (their end's notice was missed: the store's channel was
/// down, or this instance fell behind).
pub async fn flush(state: &Arc<AppState>, since: Instant) {
    let unix = |at: SystemTime| {
        at.duration_since(UNIX_EPOCH).map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
    };
    let wall = SystemTime::now();
    let now = unix(wall);
    // Each session goes to the store with the second it was last used in, not the time of this
    // flush, so that it expires there as it does here.
    let mut used: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (hash, ago) in state.sessions.used_since(since) {
        used.entry(wall.checked_sub(ago).map_or(0, unix))
            .or_default()
            .push(hash);
    }
    // An SSE session is in use for as long as its stream is open (it ends with the stream).
    let streams = state.sse.hashes();
    let cutoff = live_since(state, now);
    let outcome = state
        .registry
        .on_store(move |store| {
            let mut ended = Vec::new();
            for (seen, hashes) in &used {
                ended.extend(store.touch_sessions(hashes, *seen)?);
            }
            if !streams.is_empty() {
                store.touch_sessions(&streams, now)?;
            }
            Ok((ended, store.expire_sessions(cutoff)?))
        })
        .await;
    match outcome {
        Ok((ended, expired)) => {
            if expired > 0 {
                tracing::debug!(sessions = expired, "idle sessions expired from the store");
            }
            for hash in ended {
                let_go(state, &hash);
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "session use not written to the store; retrying at the next sweep")
        }
    }
}

/// Let go of the session the store names `hash`, which ended elsewhere, if it is held here.
fn let_go(state: &Arc<AppState>, hash: &str) {
    if let Some(id) = state.sessions.forget_hashed(hash) {
        tracing::debug!(session = %fingerprint(&id), "session ended on another instance");
        super::delivery::session_ended(state, &SessionKey::Streamable(id.into()));
    }
}

/// Let go of the sessions that ended on other instances, as the store announces them (a missed
/// notice is made up for by [`flush`]); `None` for a store only this instance uses.
pub fn follow_ends(
    state: &Arc<AppState>,
    stop: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let mut changes = state.registry.store_changes()?;
    let state = state.clone();
    Some(tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let change = tokio::select! {
                () = stop.cancelled() => break,
                change = changes.recv() => change,
            };
            match change {
                Ok(StoreChange::SessionEnded(hash)) => let_go(&state, &hash),
                Ok(StoreChange::SessionEvent { hash, message }) => {
                    state.sessions.push_if_streaming(&hash, message.into());
                }
                // Read here, in turn, so that it keeps its place among the session's messages.
                Ok(StoreChange::SessionEventStored { hash, id }) => {
                    take_stored_event(&state, &hash, id).await;
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    }))
}

/// Send the stored message `id` for the session the store names `hash`, if its client reads its
/// stream here (only that instance reads the row).
async fn take_stored_event(state: &AppState, hash: &str, id: i64) {
    if !state.sessions.streaming_hashed(hash) {
        return;
    }
    match state
        .registry
        .on_store(move |store| store.load_session_event(id))
        .await
    {
        Ok(Some(message)) => {
            state.sessions.push_if_streaming(hash, message.into());
        }
        Ok(None) => {
            tracing::warn!(
                row = id,
                "a session's stored message was gone before it was read"
            )
        }
        Err(err) => {
            tracing::warn!(row = id, error = %err, "a session's stored message could not be read")
        }
    }
}

/// A server-to-client message queued for session `id`, whose client has no stream open here:
/// announced through the store, for the instance where it has one (on a shared store; the
/// client may read its stream from any instance). Not for what every instance sends every
/// session anyway (catalog changes), only for what arose here.
pub(super) fn relay_event(state: &AppState, id: &str, msg: &Value) {
    if state.peers.me().is_none() {
        return;
    }
    let (hash, message) = (id_hash(id), msg.to_string());
    let registry = state.registry.clone();
    tokio::spawn(async move {
        let published = registry
            .on_store(move |store| store.publish_session_event(&hash, &message))
            .await;
        if let Err(err) = published {
            tracing::debug!(error = %err, "a session's message not passed to the other instances");
        }
    });
}

/// What a stored profile says, as the client said it at `initialize`.
fn profile_of(text: &str) -> Option<ClientProfile> {
    let value: Value = serde_json::from_str(text).ok()?;
    let version = value.get("protocolVersion")?.as_str()?;
    // Stored under the names `initialize` gives them, so read as its params are.
    Some(ClientProfile::from_initialize(Some(&value), version))
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// How often the sweeper writes session use to the store (each session with the second of its
/// last use); a session is expired from the store at the first sweep after it was idle for
/// the limit.
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_profile_reads_back_as_the_client_said_it() {
        let text = json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {"roots": {"listChanged": true}, "sampling": {}},
            "clientInfo": {"name": "probe", "version": "1.2"},
        })
        .to_string();
        let profile = profile_of(&text).unwrap();
        assert_eq!(profile.protocol_version, "2025-06-18");
        assert_eq!(profile.capabilities["roots"]["listChanged"], json!(true));
        assert_eq!(profile.client_info["name"], "probe");
        assert!(profile_of("{}").is_none());
        assert!(profile_of("not json").is_none());
    }
}
