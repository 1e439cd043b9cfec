//! `GET /metrics` and the counting of every request on the listener.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{CONTENT_TYPE, Metrics, Snapshot, UNMATCHED_ROUTE, UpstreamSnapshot};

/// `GET /metrics`: the Prometheus text exposition.
pub async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = snapshot(&state);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(&snapshot, now),
    )
        .into_response()
}

/// Open downstream sessions by transport, as the `sessions` gauge exports them. A 2026-07-28
/// client has no session; its open listen streams are what it holds.
pub fn open_sessions(state: &AppState) -> [(&'static str, usize); 4] {
    [
        ("streamable-http", state.sessions.len()),
        ("sse", state.sse.len()),
        (
            "websocket",
            state.ws_open.load(std::sync::atomic::Ordering::Relaxed),
        ),
        ("subscriptions-listen", state.listens.len()),
    ]
}

/// The gauges mirroring state owned elsewhere, read now (the session gauges are set on the
/// way, the same way transports with their own tables report them).
pub fn snapshot(state: &AppState) -> Snapshot {
    for (transport, open) in open_sessions(state) {
        state.metrics.sessions_gauge(transport, open);
    }
    Snapshot {
        serving_not_after: state
            .serving
            .as_ref()
            .map(|s| s.current().info.not_after_unix),
        upstreams: state
            .registry
            .list()
            .iter()
            .map(|up| {
                let (client_sessions, client_sessions_opened) = up.client_sessions();
                UpstreamSnapshot {
                    name: up.name(),
                    transport: up.registration().transport.as_str(),
                    online: up.is_online(),
                    client_not_after: up.client_certificate_not_after(),
                    client_sessions,
                    client_sessions_opened,
                }
            })
            .collect(),
    }
}

/// A request being counted: by route template (so `/gateways/{name}` is one series), method
/// and status, timed until the response head is ready. Started first and finished last by
/// [`super::front::gate`], so refusals are counted too.
#[derive(Debug)]
pub struct Tracked {
    started: Instant,
    method: Method,
    route: Option<Route>,
}

/// A route template, without a per-request copy.
#[derive(Debug)]
enum Route {
    /// The router's match (the extension's own `Arc<str>`).
    Matched(MatchedPath),
    /// A route served without the router ([`super::App`]).
    Fixed(&'static str),
}

impl Tracked {
    /// Start timing `request`.
    pub fn start(request: &Request) -> Self {
        Self {
            started: Instant::now(),
            method: request.method().clone(),
            route: request
                .extensions()
                .get::<MatchedPath>()
                .cloned()
                .map(Route::Matched),
        }
    }

    /// Start timing a request with `method`, which `route` serves without the router.
    pub fn fixed(method: &Method, route: &'static str) -> Self {
        Self {
            started: Instant::now(),
            method: method.clone(),
            route: Some(Route::Fixed(route)),
        }
    }

    /// The matched route template, when a route matched.
    pub fn route(&self) -> Option<&str> {
        self.route.as_ref().map(|r| match r {
            Route::Matched(m) => m.as_str(),
            Route::Fixed(r) => r,
        })
    }

    /// Count the request with the status it was answered with.
    pub fn finish(self, metrics: &Metrics, status: StatusCode) {
        metrics.http_request(
            self.route().unwrap_or(UNMATCHED_ROUTE),
            &self.method,
            status.as_u16(),
            self.started.elapsed(),
        );
    }
}
