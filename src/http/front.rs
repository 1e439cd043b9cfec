//! The listener's front gate: every request on the network listener passes it before any
//! handler runs. One middleware rather than a stack of four, because each `from_fn` layer
//! costs a boxed future and a clone of the inner service per request, on the hot path of every
//! forwarded call. The control socket (the CLI's channel, already checked by peer uid) has none
//! of this.
//!
//! Order, first refusal wins:
//! 1. metrics: outermost, so refusals below are counted too;
//! 2. `Host`/`Origin` ([`super::origin`]): a DNS-rebinding page gets nothing, not even a 401;
//! 3. the body is read whole, bounded in size and time ([`super::limits`]);
//! 4. bearer auth ([`super::auth`]) on every matched route except [`UNPROTECTED`]. Requests no
//!    route matched are not asked for a token: they get the 404 anyway.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::mcp::Reply;
use super::{AppState, auth, limits, metrics, origin};
use crate::h1::fields::Incoming;

/// Route templates served without a bearer token (liveness probes carry none).
pub const UNPROTECTED: &[&str] = &["/health"];

/// The route [`super::App`] serves without the router.
pub const MCP_ROUTE: &str = "/mcp";

/// The middleware: applied with `Router::layer`, so it wraps each route (and the fallback)
/// where `MatchedPath` is already known.
pub async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let tracked = metrics::Tracked::start(&request);
    let response = admit(&state, tracked.route(), request, next).await;
    tracked.finish(&state.metrics, response.status());
    response
}

/// `POST /mcp` past the same gate as [`gate`], without the router: metrics (as route
/// `/mcp`), `Host`/`Origin`, the bounded body, bearer auth, then the MCP handler.
pub async fn post_mcp(state: Arc<AppState>, request: Request) -> Response {
    let tracked = metrics::Tracked::fixed(request.method(), MCP_ROUTE);
    let reply = admit_mcp(&state, request).await;
    tracked.finish(&state.metrics, reply.status());
    reply.into_response()
}

/// [`post_mcp`] for a request whose body the server already read whole, within
/// [`limits::MAX_BODY`] and the body timeout (`crate::h1::server`).
pub async fn post_mcp_read(state: Arc<AppState>, headers: Incoming, body: Bytes) -> Reply {
    let tracked = metrics::Tracked::fixed(&Method::POST, MCP_ROUTE);
    let reply = admit_read(&state, headers, body).await;
    tracked.finish(&state.metrics, reply.status());
    reply
}

async fn admit_mcp(state: &Arc<AppState>, request: Request) -> Reply {
    if let Some(refused) = origin::refusal(&state.origin, request.headers()) {
        return refused.into();
    }
    let (parts, body) = request.into_parts();
    let body = match limits::collect(state.body_timeout, body).await {
        Ok(body) => body,
        Err(refused) => return refused.into(),
    };
    if let Some(refused) = auth::refusal(&state.auth, &parts.headers) {
        return refused.into();
    }
    let headers = Incoming::Map(parts.headers);
    super::mcp::post(state.clone(), super::mcp::Scope::All, headers, body).await
}

async fn admit_read(state: &Arc<AppState>, headers: Incoming, body: Bytes) -> Reply {
    if let Some(refused) = origin::refusal(&state.origin, &headers) {
        return refused.into();
    }
    if let Some(refused) = auth::refusal(&state.auth, &headers) {
        return refused.into();
    }
    super::mcp::post(state.clone(), super::mcp::Scope::All, headers, body).await
}

async fn admit(state: &AppState, route: Option<&str>, request: Request, next: Next) -> Response {
    if let Some(refused) = origin::refusal(&state.origin, request.headers()) {
        return refused;
    }
    let request = match limits::buffer(state.body_timeout, request).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    if route.is_some_and(|r| !UNPROTECTED.contains(&r))
        && let Some(refused) = auth::refusal(&state.auth, request.headers())
    {
        return refused;
    }
    next.run(request).await
}
