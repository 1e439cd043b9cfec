//! `GET /metrics` and the layer that counts every request on the listener.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{CONTENT_TYPE, Snapshot, UNMATCHED_ROUTE, UpstreamSnapshot};

/// `GET /metrics`: the Prometheus text exposition.
pub async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    // Gauges mirroring state owned elsewhere are read now. Transports with their own session
    // tables (SSE, WebSocket) report through `Metrics::sessions_gauge` the same way.
    state
        .metrics
        .sessions_gauge("streamable-http", state.sessions.len());
    state.metrics.sessions_gauge("sse", state.sse.len());
    state.metrics.sessions_gauge(
        "websocket",
        state.ws_open.load(std::sync::atomic::Ordering::Relaxed),
    );
    let snapshot = Snapshot {
        serving_not_after: state
            .serving
            .as_ref()
            .map(|s| s.current().info.not_after_unix),
        upstreams: state
            .registry
            .list()
            .iter()
            .map(|up| UpstreamSnapshot {
                name: up.name(),
                online: up.is_online(),
                client_not_after: up.client_certificate_not_after(),
            })
            .collect(),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.render(&snapshot, now),
    )
        .into_response()
}

/// Count the request by route template (so `/gateways/{name}` is one series), method and
/// status, and time it until the response head is ready.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // Held as the extension's own `Arc<str>`: no per-request copy of the template.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    state.metrics.http_request(
        route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str),
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
