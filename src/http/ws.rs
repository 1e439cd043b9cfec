//! JSON-RPC over WebSocket at `GET /ws`: not part of the MCP spec, but an extension several
//! clients use. Each text frame carries one JSON-RPC message or batch; answers go back as text
//! frames. Requests are answered concurrently, so answers may come out of order; ids tell them
//! apart, as JSON-RPC intends.
//!
//! Liveness: the server pings every [`PING_INTERVAL`] and closes a socket from which nothing
//! (pong or any other frame) arrived for [`IDLE_PINGS`] intervals, so half-open connections
//! behind NATs and load balancers do not pile up.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Extension, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::AppState;
use super::delivery;
use super::mcp::{self, Scope};
use crate::access::Principal;
use crate::jsonrpc::{self, code};
use crate::session::SessionKey;

/// The subprotocol echoed back when the client offers it.
pub const SUBPROTOCOL: &str = "mcp";

/// Largest message accepted, the same bound as an HTTP body on `/mcp`.
pub const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Default interval between server pings.
pub const PING_INTERVAL: Duration = Duration::from_secs(20);

/// A socket silent for this many ping intervals (60 s by default) is closed.
pub const IDLE_PINGS: u32 = 3;

/// Overrides [`PING_INTERVAL`] in milliseconds (the idle timeout follows it); read once when
/// the gateway starts. Meant for tests.
pub const PING_ENV: &str = "MCPGW_WS_PING_MS";

/// Requests one socket may have in flight; past this the reader stops reading, which pushes
/// back on the client through TCP instead of growing memory here.
const MAX_IN_FLIGHT: usize = 64;

/// Outgoing frames queued for the writer.
const OUTBOX_CAPACITY: usize = 256;

/// WebSocket timing, fixed at start-up.
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// Interval between pings.
    pub ping_interval: Duration,
}

impl WsSettings {
    /// From [`PING_ENV`] or the defaults.
    pub fn from_env() -> Self {
        let ping_interval = std::env::var(PING_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(PING_INTERVAL, Duration::from_millis);
        Self { ping_interval }
    }
}

/// `GET /ws`: upgrade to a WebSocket that sees every online upstream, names prefixed.
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: axum::http::HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // A WebSocket is a session of its own; an upgrade that names another one must name one of
    // its principal's, as on every transport (another's is as unknown as one never opened).
    let named = headers.get(&crate::h1::fields::SESSION_ID);
    let owned = match named.map(|id| id.to_str()) {
        None => true,
        Some(Err(_)) => false,
        Some(Ok(id)) => {
            state.sessions.is_owned_by(id, &principal.id)
                || super::portable::recover(&state, id, &principal).await
        }
    };
    if !owned {
        let why = "session not found (it ended or expired)";
        return axum::response::IntoResponse::into_response((
            axum::http::StatusCode::NOT_FOUND,
            why,
        ));
    }
    let limits = state.sessions.limits();
    if state.ws_open.load(std::sync::atomic::Ordering::Relaxed) >= limits.max {
        return super::mcp::too_many_sessions(limits, "WebSocket");
    }
    // Taken at the upgrade, so that a principal at its quota is refused in HTTP; held for as
    // long as the socket serves.
    let slot = match state.quotas.session(&principal) {
        Ok(slot) => slot,
        Err(held) => return super::limits::over_quota(&held),
    };
    ws.protocols([SUBPROTOCOL])
        .max_message_size(MAX_MESSAGE_SIZE)
        .max_frame_size(MAX_MESSAGE_SIZE)
        .on_upgrade(move |socket| async move {
            serve(state, socket, Scope::All, principal).await;
            drop(slot);
        })
}

/// Counts a socket as open for as long as it lives.
struct OpenSocket(Arc<AppState>);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0
            .ws_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn serve(state: Arc<AppState>, socket: WebSocket, scope: Scope, principal: Arc<Principal>) {
    state
        .ws_open
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _open = OpenSocket(state.clone());
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUTBOX_CAPACITY);
    // The connection is the session: notifications for it go through its outbox.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let key = SessionKey::Ws(id);
    let outlet = Outlet::register(&state, id, out_tx.clone(), principal.id.clone());
    // One writer owns the sink, so concurrent answers and pings never interleave mid-frame.
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let period = state.ws.ping_interval;
    let idle_limit = period * IDLE_PINGS;
    let mut ping = tokio::time::interval_at(Instant::now() + period, period);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let shutdown = state.streams_closing();

    loop {
        let frame = tokio::select! {
            () = shutdown.cancelled() => {
                let _ = out_tx.send(close(close_code::AWAY, "gateway shutting down")).await;
                break;
            }
            _ = ping.tick() => {
                if last_seen.elapsed() >= idle_limit {
                    tracing::debug!(idle_s = idle_limit.as_secs(), "WebSocket idle; closing");
                    let _ = out_tx.send(close(close_code::AWAY, "no pong received")).await;
                    break;
                }
                if out_tx.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
                continue;
            }
            frame = stream.next() => frame,
        };
        let parsed: Result<Value, _> = match frame {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(msg)) => {
                last_seen = Instant::now();
                match msg {
                    Message::Text(text) => serde_json::from_str(text.as_str()),
                    // Some clients send JSON in binary frames; answer them in text all the same.
                    Message::Binary(bytes) => serde_json::from_slice(&bytes),
                    // tungstenite answers pings itself; a pong only proves liveness.
                    Message::Ping(_) | Message::Pong(_) | Message::Close(_) => continue,
                }
            }
        };
        // Bad JSON is the client's problem with one message, not a reason to drop it; and each
        // message counts against its principal's rate, as each HTTP request does at the gate:
        // past it the answer is the refusal, and the socket stays open.
        let admitted = parsed
            .map_err(|e| {
                jsonrpc::error(Value::Null, code::PARSE_ERROR, format!("parse error: {e}"))
            })
            .and_then(|msg| match state.quotas.request(&principal) {
                Ok(()) => Ok(msg),
                Err(over) => Err(over.rpc_error(msg.get("id").cloned().unwrap_or(Value::Null))),
            });
        let msg = match admitted {
            Ok(msg) => msg,
            Err(refused) => {
                let refused = Message::Text(refused.to_string().into());
                if out_tx.send(refused).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let state = state.clone();
        let scope = scope.clone();
        let out_tx = out_tx.clone();
        let key = key.clone();
        let principal = principal.clone();
        tokio::spawn(async move {
            if let Some(answer) = mcp::on_connection(&state, &scope, &principal, &key, msg).await {
                let _ = out_tx.send(Message::Text(answer.to_string().into())).await;
            }
            drop(permit);
        });
    }
    // The session ends now: its subscriptions are released at once (the outlet's own sender
    // would otherwise keep the writer, and with it the session, alive until a send failed).
    drop(outlet);
    // In-flight answers still hold senders; the writer ends when they are done or the peer is gone.
    drop(out_tx);
    let _ = writer.await;
}

/// The outbox of each open WebSocket session, by its session key, for notifications (resource
/// updates).
#[derive(Debug, Default)]
pub struct WsOutlets(std::sync::Mutex<Outboxes>);

/// Each open session's outbox, and the principal it serves.
type Outboxes = std::collections::HashMap<u64, (mpsc::Sender<Message>, Arc<str>)>;

impl WsOutlets {
    fn lock(&self) -> std::sync::MutexGuard<'_, Outboxes> {
        // Single inserts and removes: a poisoned lock still holds a whole map.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the session `key` is open.
    pub fn contains(&self, key: u64) -> bool {
        self.lock().contains_key(&key)
    }

    /// Open sessions by principal (the console's sessions page).
    pub fn by_owner(&self) -> std::collections::BTreeMap<String, usize> {
        super::sessions::tally(self.lock().values().map(|(_, owner)| &**owner))
    }

    /// Queue a notification on session `key`'s outbox: `false` when it is gone.
    pub fn notify(&self, key: u64, msg: &Value) -> bool {
        let Some(out) = self.lock().get(&key).map(|(out, _)| out.clone()) else {
            return false;
        };
        let sent = out.try_send(Message::Text(msg.to_string().into()));
        delivery::offered(sent, &SessionKey::Ws(key))
    }
}

/// A WebSocket session's entry in [`WsOutlets`], removed when the socket ends.
struct Outlet {
    state: Arc<AppState>,
    key: u64,
}

impl Outlet {
    fn register(
        state: &Arc<AppState>,
        key: u64,
        out: mpsc::Sender<Message>,
        owner: Arc<str>,
    ) -> Self {
        state.ws_outlets.lock().insert(key, (out, owner));
        Self {
            state: state.clone(),
            key,
        }
    }
}

impl Drop for Outlet {
    fn drop(&mut self) {
        self.state.ws_outlets.lock().remove(&self.key);
        delivery::session_ended(&self.state, &SessionKey::Ws(self.key));
    }
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}
