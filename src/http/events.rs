//! Server-to-client messages of a Streamable-HTTP session: `GET /mcp` opens the stream, every
//! event has an id, and the last events are kept so a client that reconnects with
//! `Last-Event-ID` gets what it missed.
//!
//! What flows here today: `notifications/{tools,prompts,resources}/list_changed` when an
//! upstream's catalog changes (registration, removal, recovery, or the upstream's own
//! notification).
//!
//! Memory: a session that has had no event costs its log's few words, whether or not a stream
//! is open. Each open stream reads the log itself from a cursor (the id it sent last), woken by
//! a `Notify`, so there is no per-session channel (a broadcast channel preallocates every slot)
//! and no relay task. An event is serialized once and its text shared by every session's log.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::access::Principal;

/// Events kept per session for replay.
const REPLAY: usize = 128;

/// One session's outgoing events.
#[derive(Debug, Default)]
pub struct EventLog {
    inner: Mutex<Inner>,
    /// Wakes the session's open streams on a new event and when the session ends.
    wake: Notify,
    /// A `GET` stream was opened on the session (its client reads what servers send outside a
    /// request, so its upstream sessions listen for such messages too).
    listened: std::sync::atomic::AtomicBool,
    /// `GET` streams open on the session now.
    streams: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Id of the newest event (ids start at 1, so 0 means none yet).
    newest: u64,
    /// The last [`REPLAY`] events; ids are consecutive, ending at `newest`.
    kept: VecDeque<Arc<str>>,
    /// The session ended: streams send what is left and stop.
    closed: bool,
}

/// What a stream finds when it looks at its session's log.
enum Next {
    /// The oldest kept event after the stream's cursor.
    Event(u64, Arc<str>),
    /// Nothing new yet.
    Wait,
    /// Nothing new, and the session has ended.
    Closed,
}

impl EventLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is a single push or flag, so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append an event (assigning the next id) and wake open streams.
    pub(crate) fn push(&self, data: Arc<str>) {
        {
            let mut inner = self.lock();
            inner.newest += 1;
            inner.kept.push_back(data);
            if inner.kept.len() > REPLAY {
                inner.kept.pop_front();
            }
        }
        self.wake.notify_waiters();
    }

    /// End the session's streams once they have sent what is kept; called when the session
    /// leaves the table.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_waiters();
    }

    /// Whether a `GET` stream was ever opened on the session.
    pub(crate) fn listened(&self) -> bool {
        self.listened.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a `GET` stream is open on the session now (here: on a shared store its client
    /// may read it from another instance).
    pub(crate) fn streaming(&self) -> bool {
        self.streams.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// `last` as a client sent it, but never past the newest event: ids from elsewhere (another
    /// session, a bogus header) must not hold back the events to come.
    fn clamp(&self, last: u64) -> u64 {
        last.min(self.lock().newest)
    }

    /// The oldest kept event after `last`. A stream that fell behind by more than [`REPLAY`]
    /// events resumes at the oldest one kept.
    fn next_after(&self, last: u64) -> Next {
        let inner = self.lock();
        let oldest = inner.newest + 1 - inner.kept.len() as u64;
        let id = (last + 1).max(oldest);
        match inner.kept.get((id - oldest) as usize) {
            Some(data) => Next::Event(id, data.clone()),
            None if inner.closed => Next::Closed,
            None => Next::Wait,
        }
    }
}

/// Where one open stream is; counted in its log's open streams while it lives.
struct Cursor {
    log: Arc<EventLog>,
    /// Id of the last event sent (or the client's `Last-Event-ID`).
    last: u64,
    /// Gateway shutdown.
    stop: CancellationToken,
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.log
            .streams
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Cursor {
    /// The next event, waiting for one; `None` when the session ends or the gateway shuts down.
    async fn next(&mut self) -> Option<Event> {
        loop {
            // Shutdown wins over pending events.
            if self.stop.is_cancelled() {
                return None;
            }
            let log = Arc::clone(&self.log);
            // Registered before looking, so an event pushed in between still wakes us.
            let woken = log.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match log.next_after(self.last) {
                Next::Event(id, data) => {
                    self.last = id;
                    return Some(
                        Event::default()
                            .id(id.to_string())
                            .event("message")
                            .data(&*data),
                    );
                }
                Next::Closed => return None,
                Next::Wait => {}
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = &mut woken => {}
            }
        }
    }
}

/// Serialize `msg` once, for pushing to many logs.
pub(crate) fn shared(msg: &Value) -> Arc<str> {
    Arc::from(msg.to_string())
}

/// `GET /mcp`: the session's server-to-client stream.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: HeaderMap,
) -> Response {
    open(&state, &principal, &headers).await
}

/// `GET /servers/{name}/mcp`: the same stream (a session's notifications do not depend on the
/// endpoint it was opened on), for a registered upstream's endpoint.
pub async fn stream_one(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if state.registry.get(&name).is_none() {
        return (
            StatusCode::NOT_FOUND,
            format!("no upstream named '{name}' is registered"),
        )
            .into_response();
    }
    open(&state, &principal, &headers).await
}

async fn open(state: &Arc<AppState>, principal: &Arc<Principal>, headers: &HeaderMap) -> Response {
    let Some(id) = headers
        .get(&crate::h1::fields::SESSION_ID)
        .and_then(|v| v.to_str().ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            "a GET stream needs an Mcp-Session-Id header (initialize first)",
        )
            .into_response();
    };
    // A session another instance opened is taken in; a `Last-Event-ID` from that instance's
    // stream counts from this log's start ([`EventLog::clamp`]).
    let log = match state.sessions.events(id, &principal.id) {
        Some(log) => Some(log),
        None if super::portable::recover(state, id, principal).await => {
            state.sessions.events(id, &principal.id)
        }
        None => None,
    };
    let Some(log) = log else {
        return (
            StatusCode::NOT_FOUND,
            "session not found (it ended or expired)",
        )
            .into_response();
    };
    let last = headers
        .get(&crate::h1::fields::LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if !log
        .listened
        .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        let key = crate::session::SessionKey::Streamable(id.into());
        for up in state.registry.list() {
            up.client_listens(&key);
        }
    }
    // The stream ends when the gateway shuts down or the session leaves the table.
    log.streams
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let cursor = Cursor {
        last: log.clamp(last),
        log,
        stop: state.streams_closing(),
    };
    let events = futures_util::stream::unfold(cursor, |mut c| async move {
        let event = c.next().await?;
        Some((Ok::<_, Infallible>(event), c))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests;
