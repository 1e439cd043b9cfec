//! Server-to-client messages of a Streamable-HTTP session: `GET /mcp` opens the stream, every
//! event has an id, and the last events are kept so a client that reconnects with
//! `Last-Event-ID` gets what it missed.
//!
//! What flows here today: `notifications/{tools,prompts,resources}/list_changed` when an
//! upstream's catalog changes (registration, removal, recovery, or the upstream's own
//! notification).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::broadcast;

use super::AppState;

/// An event and its id.
type Numbered = (u64, Value);

/// Events kept per session for replay.
const REPLAY: usize = 128;

/// One session's outgoing events.
#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<(u64, VecDeque<(u64, Value)>)>,
    tx: broadcast::Sender<(u64, Value)>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            inner: Mutex::new((0, VecDeque::new())),
            tx: broadcast::channel(REPLAY).0,
        }
    }
}

impl EventLog {
    /// Append an event (assigning the next id) and wake open streams.
    pub fn push(&self, msg: Value) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.0 += 1;
        let id = inner.0;
        inner.1.push_back((id, msg.clone()));
        while inner.1.len() > REPLAY {
            inner.1.pop_front();
        }
        // No receiver is fine: the event waits in the replay buffer.
        let _ = self.tx.send((id, msg));
    }

    /// Events after `last` still in the buffer, and a receiver for what comes next. Taken under
    /// one lock so nothing falls between the two.
    fn since(&self, last: u64) -> (Vec<Numbered>, broadcast::Receiver<Numbered>) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let missed = inner
            .1
            .iter()
            .filter(|(id, _)| *id > last)
            .cloned()
            .collect();
        (missed, self.tx.subscribe())
    }
}

fn event((id, msg): (u64, Value)) -> Result<Event, Infallible> {
    Ok(Event::default()
        .id(id.to_string())
        .event("message")
        .data(msg.to_string()))
}

/// `GET /mcp`: the session's server-to-client stream.
pub async fn stream(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(id) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
        return (
            StatusCode::BAD_REQUEST,
            "GET /mcp needs an Mcp-Session-Id header (initialize first)",
        )
            .into_response();
    };
    let Some(log) = state.sessions.events(id) else {
        return (
            StatusCode::NOT_FOUND,
            "session not found (it ended or expired)",
        )
            .into_response();
    };
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let (missed, mut rx) = log.since(last);
    let replay = futures_util::stream::iter(missed.into_iter().map(event));
    // A relay task, so the stream ends when the gateway shuts down or the session's log goes.
    let (tx, out) = tokio::sync::mpsc::channel::<(u64, Value)>(REPLAY);
    let stop = state.streams_closing();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                next = rx.recv() => match next {
                    Ok(item) => if tx.send(item).await.is_err() { break },
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    });
    let mut out = out;
    let live = futures_util::stream::poll_fn(move |cx| out.poll_recv(cx).map(|m| m.map(event)));
    Sse::new(futures_util::StreamExt::chain(replay, live))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
