//! `GET /ui/api/events`: the console's live updates over SSE. One `snapshot` event (the
//! overview) on connect, then another when the registry changes or, at most every
//! [`CHECK_EVERY`], when the overview differs from the last one sent (health, traffic,
//! sessions). An unchanged overview sends nothing but a keep-alive comment now and then, so
//! an idle console costs one overview build per tick and no traffic.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::http::AppState;

/// How often the overview is built again to see whether it changed.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a stream may stay silent before a keep-alive comment (proxies cut idle streams).
pub const KEEPALIVE: Duration = Duration::from_secs(15);

struct Stream {
    state: Arc<AppState>,
    changes: broadcast::Receiver<()>,
    tick: tokio::time::Interval,
    shutdown: CancellationToken,
    /// The last overview sent (without its clock), to send only a different one.
    last: Option<String>,
    /// When something was last written.
    wrote: tokio::time::Instant,
}

/// `GET /ui/api/events`.
pub async fn events(State(state): State<Arc<AppState>>) -> Response {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = Stream {
        changes: state.registry.subscribe_changes(),
        shutdown: state.streams_closing(),
        state,
        tick,
        last: None,
        wrote: tokio::time::Instant::now(),
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        loop {
            // The first tick is immediate: the snapshot on connect.
            tokio::select! {
                biased;
                () = s.shutdown.cancelled() => return None,
                changed = s.changes.recv() => {
                    // A lagging receiver only missed wake-ups; the overview is read whole.
                    if matches!(changed, Err(broadcast::error::RecvError::Closed)) {
                        return None;
                    }
                }
                _ = s.tick.tick() => {}
            }
            let mut overview = super::api::overview_of(&s.state);
            // The clock and the uptime move every second: what changed is the rest.
            let now = overview["now"].take();
            let uptime = overview["status"]["uptime_s"].take();
            let key = overview.to_string();
            if s.last.as_deref() != Some(key.as_str()) {
                overview["now"] = now;
                overview["status"]["uptime_s"] = uptime;
                let frame = Bytes::from(format!("event: snapshot\ndata: {overview}\n\n"));
                s.last = Some(key);
                s.wrote = tokio::time::Instant::now();
                return Some((Ok::<_, Infallible>(frame), s));
            }
            if s.wrote.elapsed() >= KEEPALIVE {
                s.wrote = tokio::time::Instant::now();
                return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), s));
            }
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
