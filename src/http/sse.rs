//! The legacy HTTP+SSE transport (MCP 2024-11-05), which many deployed clients still speak.
//!
//! `GET /sse` (or `/servers/{name}/sse` for one upstream's catalog, unprefixed) opens an event
//! stream whose first event names where to POST: `event: endpoint` / `data: /message?session_id=…`.
//! `POST /message?session_id=…` answers `202 Accepted` at once; the JSON-RPC answers travel back
//! as `event: message` on that session's stream. The scope (`/sse` or `/servers/{name}/sse`) is
//! remembered in the session, so there is a single `/message` route for both.
//!
//! Memory is bounded per session: a POST reserves a slot in the session's queue before it is
//! accepted, so at most [`QUEUE_CAPACITY`] answers can be pending or in flight. A client that
//! does not read its stream fast enough loses the session (the stream closes) instead of making
//! the gateway buffer without limit.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::delivery;
use super::mcp::{self, Scope};
use crate::access::Principal;
use crate::access::quota::SessionSlot;
use crate::jsonrpc::{self, code};
use crate::session::SessionKey;

/// Answers a session may have queued or in flight before it is dropped as too slow.
pub const QUEUE_CAPACITY: usize = 256;

/// Default interval between `: keep-alive` comments; idle proxies commonly cut at 30-60 s.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Overrides [`KEEPALIVE_INTERVAL`] in milliseconds; read once when the gateway starts.
/// Meant for tests and for proxies with unusually short idle timeouts.
pub const KEEPALIVE_ENV: &str = "MCPGW_SSE_KEEPALIVE_MS";

/// The open SSE sessions, keyed by the id given out in the `endpoint` event.
#[derive(Debug)]
pub struct SseSessions {
    map: Mutex<HashMap<String, Session>>,
    keepalive: Duration,
}

#[derive(Debug, Clone)]
struct Session {
    /// Answers for the stream, boxed: the channel allocates its slots 32 at a time, and a
    /// pointer-sized slot keeps an idle session's first block small.
    tx: mpsc::Sender<Box<Value>>,
    scope: Scope,
    /// Who opened the stream: the only principal whose `POST /message` it takes.
    principal: Arc<Principal>,
    /// Fired to end the stream from the POST side (queue overflow).
    close: CancellationToken,
}

impl SseSessions {
    /// Empty table; the keep-alive interval comes from [`KEEPALIVE_ENV`] or the default.
    pub fn from_env() -> Self {
        let keepalive = std::env::var(KEEPALIVE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(KEEPALIVE_INTERVAL, Duration::from_millis);
        Self {
            map: Mutex::new(HashMap::new()),
            keepalive,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<Session> {
        self.lock().get(id).cloned()
    }

    /// Whether the session `id` is open.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    fn remove(&self, id: &str) {
        if let Some(session) = self.lock().remove(id) {
            session.close.cancel();
        }
    }

    /// Take no more messages for a session whose stream is draining: it leaves the table, and
    /// its stream ends once the answers of the messages it took are sent.
    fn release(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Queue a server-to-client message (a notification) for a session's stream: `false`
    /// when the session is gone (see [`delivery::offered`]; its answers have their slots reserved).
    pub fn notify(&self, id: &str, msg: &Value) -> bool {
        let Some(session) = self.get(id) else {
            return false;
        };
        delivery::offered(
            session.tx.try_send(Box::new(msg.clone())),
            &SessionKey::Sse(id.into()),
        )
    }

    /// How the store names each open session ([`crate::store::sessions::id_hash`]).
    pub fn hashes(&self) -> Vec<String> {
        self.lock()
            .keys()
            .map(|id| crate::store::sessions::id_hash(id))
            .collect()
    }

    /// Number of open SSE streams.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Open SSE streams per principal (the console's sessions page).
    pub fn by_owner(&self) -> std::collections::BTreeMap<String, usize> {
        super::sessions::tally(self.lock().values().map(|session| &*session.principal.id))
    }

    /// Whether no SSE stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes the session when its stream is dropped, which is how a client disconnect shows up.
struct Guard {
    state: Arc<AppState>,
    id: String,
    /// Its place in its principal's session quota, given back after the session is removed.
    _slot: SessionSlot,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.state.sse.remove(&self.id);
        let key = crate::session::SessionKey::Sse(self.id.as_str().into());
        delivery::session_ended(&self.state, &key);
        tracing::debug!(session = %crate::session::fingerprint(&self.id), "SSE session closed");
    }
}

/// `GET /sse`: a stream for every online upstream, names prefixed.
pub async fn stream_all(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: axum::http::HeaderMap,
) -> Response {
    open(state, Scope::All, principal, &headers).await
}

/// `GET /servers/{name}/sse`: a stream for one upstream, names as it gives them.
pub async fn stream_one(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    if state.registry.get(&name).is_none() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": format!("no upstream named '{name}' is registered")}})),
        )
            .into_response();
    }
    open(state, Scope::One(name), principal, &headers).await
}

/// The session a reconnecting client's stream belonged to: an event id is `<n>@<session id>`,
/// and a client whose stream broke sends the last one it saw as `Last-Event-ID`.
fn resumed_from(headers: &axum::http::HeaderMap) -> Option<&str> {
    let last = headers
        .get(&crate::h1::fields::LAST_EVENT_ID)?
        .to_str()
        .ok()?;
    let (_, id) = last.trim().split_once('@')?;
    (!id.is_empty()).then_some(id)
}

async fn open(
    state: Arc<AppState>,
    scope: Scope,
    principal: Arc<Principal>,
    headers: &axum::http::HeaderMap,
) -> Response {
    let limits = state.sessions.limits();
    if state.sse.len() >= limits.max {
        return super::mcp::too_many_sessions(limits, "SSE");
    }
    let slot = match state.quotas.session(&principal) {
        Ok(slot) => slot,
        Err(held) => return super::limits::over_quota(&held),
    };
    // On a shared store the id says which instance holds the stream, for the others to
    // forward its messages to ([`super::peers`]).
    let id = state.peers.mint(new_id());
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let close = CancellationToken::new();
    state.sse.lock().insert(
        id.clone(),
        Session {
            tx,
            scope,
            principal: principal.clone(),
            close: close.clone(),
        },
    );
    tracing::debug!(session = %crate::session::fingerprint(&id), "SSE session opened");
    // A client taking its session up again on a new stream (its old one broke, or the
    // instance holding it went): what it said at `initialize` carries over, so it does not
    // initialize again. Done before the stream starts, so its first message finds it.
    if let Some(old) = resumed_from(headers) {
        super::portable::resume_sse(&state, &principal, old, &id).await;
    }
    let period = state.sse.keepalive;
    // The first tick of a plain `interval` is immediate; a keep-alive is only useful after a pause.
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = StreamState {
        first: Some(Bytes::from(format!(
            "event: endpoint\ndata: /message?session_id={id}\n\n"
        ))),
        sent: 0,
        rx,
        keepalive,
        close,
        shutdown: state.streams_closing(),
        draining: false,
        _guard: Guard {
            state,
            id,
            _slot: slot,
        },
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        if let Some(first) = s.first.take() {
            return Some((Ok::<_, Infallible>(first), s));
        }
        loop {
            let frame = tokio::select! {
                // Closing wins over pending output: an overflowed session must not keep streaming.
                biased;
                () = s.close.cancelled() => return None,
                // Shutdown: no more messages are taken, and the stream ends once the answers
                // of those taken are sent (every sender is gone), within the drain's grace.
                () = s.shutdown.cancelled(), if !s.draining => {
                    s.draining = true;
                    s._guard.state.sse.release(&s._guard.id);
                    continue;
                }
                msg = s.rx.recv() => {
                    // The id names the session, for a client that comes back with it.
                    s.sent += 1;
                    let (n, id) = (s.sent, &s._guard.id);
                    Bytes::from(format!("event: message\nid: {n}@{id}\ndata: {}\n\n", msg?))
                }
                _ = s.keepalive.tick() => Bytes::from_static(b": keep-alive\n\n"),
            };
            return Some((Ok(frame), s));
        }
    });
    (
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            // nginx buffers responses by default, which would hold events back.
            ("x-accel-buffering", "no"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

struct StreamState {
    first: Option<Bytes>,
    /// Messages sent so far (their event ids count them).
    sent: u64,
    rx: mpsc::Receiver<Box<Value>>,
    keepalive: tokio::time::Interval,
    close: CancellationToken,
    shutdown: CancellationToken,
    /// Shutdown began: the answers already owed are being sent.
    draining: bool,
    _guard: Guard,
}

fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // SystemRandom only fails if the OS has no randomness source, where nothing else works either.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    hex::encode(bytes)
}

/// The query string of `POST /message`.
#[derive(Debug, Deserialize)]
pub struct MessageQuery {
    session_id: Option<String>,
}

/// `POST /message?session_id=…`: accept one JSON-RPC message or batch for a session's stream.
/// A session another instance holds gets the request forwarded there.
pub async fn post_message(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Query(query): Query<MessageQuery>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let Some(id) = query.session_id.filter(|s| !s.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "session_id is required").into_response();
    };
    let Some(held) = state.sse.get(&id) else {
        let peer = state.peers.owner_of(&id);
        return match peer {
            Some(peer) if !super::peers::was_forwarded(&headers) => {
                state.peers.forward(&peer, &uri, &headers, body).await
            }
            _ => (StatusCode::NOT_FOUND, "could not find session").into_response(),
        };
    };
    // Another principal's session is as unknown as one never opened.
    if held.principal.id != principal.id {
        return (StatusCode::NOT_FOUND, "could not find session").into_response();
    }
    let session = held;
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(jsonrpc::error(
                    Value::Null,
                    code::PARSE_ERROR,
                    format!("parse error: {e}"),
                )),
            )
                .into_response();
        }
    };
    // Reserve the answer's slot now, so the number of requests in flight is bounded by the queue.
    let permit = match session.tx.clone().try_reserve_owned() {
        Ok(permit) => permit,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(session = %crate::session::fingerprint(&id), capacity = QUEUE_CAPACITY, "SSE client is not reading its stream; dropping the session");
            state.sse.remove(&id);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "session dropped: its event stream is not being read",
            )
                .into_response();
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            return (StatusCode::NOT_FOUND, "could not find session").into_response();
        }
    };
    tokio::spawn(async move {
        let key = SessionKey::Sse(id.into());
        let (scope, principal) = (&session.scope, &session.principal);
        if let Some(answer) = mcp::on_connection(&state, scope, principal, &key, msg).await {
            permit.send(Box::new(answer));
        }
    });
    (StatusCode::ACCEPTED, "Accepted").into_response()
}
