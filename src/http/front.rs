//! Stage **gate** of the pipeline, for the listener: every request on the network listener
//! passes it before any handler runs. One middleware rather than a stack of four, because each
//! `from_fn` layer costs a boxed future and a clone of the inner service per request. The
//! control socket (the CLI's channel, already checked by peer uid) has none of this.
//!
//! Order, first refusal wins:
//! 1. metrics: outermost, so refusals below are counted too;
//! 2. `Host`/`Origin` ([`super::origin`]): a DNS-rebinding page gets nothing, not even a 401;
//! 3. bearer auth ([`super::auth`]) on every matched route except [`UNPROTECTED`], on the
//!    head alone: no body byte is buffered for a request without a valid token;
//! 4. the body is read whole, bounded in size and time ([`super::limits`]).
//!
//! The listener's own HTTP/1.1 loop reads `POST /mcp` bodies itself (bounded the same way) and
//! then runs the same head checks ([`post_mcp_read`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::mcp::Reply;
use super::{AppState, auth, limits, metrics, origin};
use crate::h1::fields::{Incoming, Lookup};

/// Route templates served without a bearer token (liveness probes carry none).
pub const UNPROTECTED: &[&str] = &["/health"];

/// The route the listener's HTTP/1.1 loop serves itself.
pub const MCP_ROUTE: &str = "/mcp";

/// The middleware: applied with `Router::layer`, so it wraps each route (and the fallback)
/// where `MatchedPath` is already known.
pub async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let tracked = metrics::Tracked::start(&request);
    let response = admit(&state, tracked.route(), request, next).await;
    tracked.finish(&state.metrics, response.status());
    response
}

/// `POST /mcp` read by the listener's own HTTP/1.1 loop (`crate::h1::server`), its body
/// already read whole within [`limits::MAX_BODY`] and the body timeout: the same checks as
/// [`gate`], counted under the same route, then the pipeline.
pub async fn post_mcp_read(state: Arc<AppState>, headers: Incoming, body: Bytes) -> Reply {
    let tracked = metrics::Tracked::fixed(&Method::POST, MCP_ROUTE);
    let reply = match refusal(&state, &headers, true) {
        Some(refused) => refused.into(),
        None => super::mcp::post(state.clone(), super::mcp::Scope::All, headers, body).await,
    };
    tracked.finish(&state.metrics, reply.status());
    reply
}

/// The checks of the request head, first refusal wins: `Host`/`Origin`, then (on a
/// `protected` route) bearer auth.
fn refusal(state: &AppState, headers: &impl Lookup, protected: bool) -> Option<Response> {
    if let Some(refused) = origin::refusal(&state.origin, headers) {
        return Some(refused);
    }
    if protected && let Some(refused) = auth::refusal(&state.auth, headers) {
        return Some(refused);
    }
    None
}

async fn admit(state: &AppState, route: Option<&str>, request: Request, next: Next) -> Response {
    // Requests no route matched are not asked for a token: they get the 404 anyway.
    let protected = route.is_some_and(|r| !UNPROTECTED.contains(&r));
    if let Some(refused) = refusal(state, request.headers(), protected) {
        return refused;
    }
    match limits::buffer(state.body_timeout, request).await {
        Ok(request) => next.run(request).await,
        Err(refused) => refused,
    }
}
