//! Stage **gate** of the pipeline, for the listener: every request on the network listener
//! passes it before any handler runs. One middleware rather than a stack of four, because each
//! `from_fn` layer costs a boxed future and a clone of the inner service per request. The
//! control socket (the CLI's channel, already checked by peer uid) has none of this.
//!
//! Order, first refusal wins:
//! 1. metrics: outermost, so refusals below are counted too;
//! 2. `Host`/`Origin` ([`super::origin`]): a DNS-rebinding page gets nothing, not even a 401;
//! 3. authentication ([`super::auth`]) on every matched route except [`UNPROTECTED`], on the
//!    head alone: no body byte is buffered for a request from no one. The [`Principal`] found
//!    goes with the request (an extension) to every stage after;
//! 4. the route's role ([`crate::access::required_role`]): a client gets 403 on admin routes;
//! 5. the body is read whole, bounded in size and time ([`super::limits`]).
//!
//! The listener's own HTTP/1.1 loop runs the same head checks ([`post_mcp_head`]) before it
//! reads a `POST /mcp` body (bounded the same way), then the pipeline ([`post_mcp_read`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::mcp::Reply;
use super::{AppState, auth, limits, metrics, origin};
use crate::access::{Connection, Principal, required_role};
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

/// The head checks of a `POST /mcp` the listener's own HTTP/1.1 loop (`crate::h1::server`)
/// serves, before it reads the body: the same as [`gate`]'s, a refusal counted under the same
/// route.
#[allow(
    clippy::result_large_err,
    reason = "a refusal is the response itself, built off the hot path"
)]
pub fn post_mcp_head(
    state: &AppState,
    headers: &Incoming,
    connection: &Connection,
) -> Result<Arc<Principal>, Response> {
    let checked = match origin::refusal(&state.origin, headers) {
        Some(refused) => Err(refused),
        None => {
            authorized(state, headers, connection, MCP_ROUTE).map_err(IntoResponse::into_response)
        }
    };
    match checked {
        Ok(principal) => Ok(principal),
        Err(refused) => {
            let tracked = metrics::Tracked::fixed(&Method::POST, MCP_ROUTE);
            tracked.finish(&state.metrics, refused.status());
            Err(refused)
        }
    }
}

/// `POST /mcp` past [`post_mcp_head`], its body read whole within [`limits::MAX_BODY`] and the
/// body timeout: the pipeline, counted under the same route as on hyper's path.
pub async fn post_mcp_read(
    state: Arc<AppState>,
    principal: Arc<Principal>,
    headers: Incoming,
    body: Bytes,
) -> Reply {
    let tracked = metrics::Tracked::fixed(&Method::POST, MCP_ROUTE);
    let reply = super::mcp::post(
        state.clone(),
        super::mcp::Scope::All,
        principal,
        headers,
        body,
    )
    .await;
    tracked.finish(&state.metrics, reply.status());
    reply
}

/// The checks of the request head, first refusal wins: `Host`/`Origin`, then, on a
/// `protected` route, who is asking and whether the route is open to their role (`None` for a
/// route that needs no one: `/health`, or one no route matched).
#[allow(
    clippy::result_large_err,
    reason = "a refusal is the response itself, built off the hot path"
)]
fn admitted(
    state: &AppState,
    headers: &impl Lookup,
    connection: &Connection,
    protected: Option<&str>,
) -> Result<Option<Arc<Principal>>, Response> {
    origin::refusal(&state.origin, headers).map_or(Ok(()), Err)?;
    protected
        .map(|route| {
            authorized(state, headers, connection, route).map_err(IntoResponse::into_response)
        })
        .transpose()
}

/// Who is asking, and whether `route` is open to their role.
fn authorized(
    state: &AppState,
    headers: &impl Lookup,
    connection: &Connection,
    route: &str,
) -> Result<Arc<Principal>, auth::Refused> {
    let principal = auth::authenticate(&state.auth, headers, connection.certificate.as_ref())?;
    let needed = required_role(route);
    if !principal.may(needed) {
        return Err(auth::Refused::forbidden(&principal, needed));
    }
    Ok(principal)
}

async fn admit(
    state: &AppState,
    route: Option<&str>,
    mut request: Request,
    next: Next,
) -> Response {
    // Requests no route matched are not asked for a token: they get the 404 anyway.
    let protected = route.filter(|r| !UNPROTECTED.contains(r));
    let connection = request.extensions().get::<Arc<Connection>>().cloned();
    let connection = connection.as_deref().cloned().unwrap_or_default();
    match admitted(state, request.headers(), &connection, protected) {
        Ok(principal) => {
            if let Some(principal) = principal {
                request.extensions_mut().insert(principal);
            }
        }
        Err(refused) => return refused,
    }
    match limits::buffer(state.body_timeout, request).await {
        Ok(request) => next.run(request).await,
        Err(refused) => refused,
    }
}
