//! Stage **gate** of the pipeline, for the listener: every request on the network listener
//! passes it before any handler runs. One middleware rather than a stack of four, because each
//! `from_fn` layer costs a boxed future and a clone of the inner service per request. The
//! control socket (the CLI's channel, already checked by peer uid) has none of this.
//!
//! Order, first refusal wins:
//! 1. metrics: outermost, so refusals below are counted too;
//! 2. `Host`/`Origin` ([`super::origin`]): a DNS-rebinding page gets nothing, not even a 401;
//! 3. authentication ([`super::auth`]) on every matched route except the [`unprotected`] ones
//!    (and the [`CONSOLE_SHELL`] asked for with no credential at all), on the head alone: no body byte is buffered for a request from no one. The [`Principal`]
//!    found goes with the request (an extension) to every stage after. A refusal is a 401 whose
//!    `WWW-Authenticate` points at the protected resource metadata (RFC 9728);
//! 4. the route's role ([`crate::access::required_role`]): a client gets 403
//!    (`insufficient_scope`) on admin routes;
//! 5. the principal's request rate ([`crate::access::quota`]): 429 with `Retry-After` past it;
//! 6. the body is read whole, bounded in size and time ([`super::limits`]);
//! 7. on the way out, a request to an administrator's route is written to the audit log
//!    ([`crate::access::audit`]; MCP requests are recorded by the pipeline's last stage).
//!
//! The listener's own HTTP/1.1 loop runs the same head checks ([`post_mcp_head`]) before it
//! reads a `POST /mcp` body (bounded the same way), then the pipeline ([`post_mcp_read`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use std::time::Instant;

use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::mcp::Reply;
use super::{AppState, auth, limits, metrics, origin};
use crate::access::{Connection, Principal, Role, audit, required_role};
use crate::h1::fields::Incoming;

/// Route templates served without a bearer token (liveness probes carry none).
pub const UNPROTECTED: &[&str] = &["/health"];

/// Whether `route` is served without a bearer token: [`UNPROTECTED`], and the protected
/// resource metadata, which is how an OAuth client learns where to get a token.
pub fn unprotected(route: &str) -> bool {
    UNPROTECTED.contains(&route) || auth::metadata::is_metadata_route(route)
}

/// The console's page and files ([`super::ui`]): the same bytes in every binary, holding no
/// data. A `GET` that carries no credential at all is served them, so that the page can ask
/// for a token (the console's login step); one that carries a credential is judged by it as
/// on any route, so a client's gets 403. What the page shows comes from `/ui/api/`, which
/// always needs an administrator.
pub const CONSOLE_SHELL: &[&str] = &["/ui", "/ui/", "/ui/{asset}"];

/// The route the listener's HTTP/1.1 loop serves itself.
pub const MCP_ROUTE: &str = "/mcp";

/// The middleware: applied with `Router::layer`, so it wraps each route (and the fallback)
/// where `MatchedPath` is already known.
pub async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let tracked = metrics::Tracked::start(&request);
    let http1 = request.version() <= axum::http::Version::HTTP_11;
    let mut response = admit(&state, tracked.route(), request, next).await;
    tracked.finish(&state.metrics, response.status());
    // Stopping: the connection closes after this answer, so that a balancer keeping it alive
    // never sends a request on it at the instant it is closed idle (see `drain_delay_ms`).
    if http1 && state.is_stopping() && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The head checks of a `POST /mcp` the listener's own HTTP/1.1 loop (`crate::h1::server`)
/// serves, before it reads the body: the same as [`gate`]'s, a refusal counted under the same
/// route.
#[allow(
    clippy::result_large_err,
    reason = "a refusal is the response itself, built off the hot path"
)]
pub async fn post_mcp_head(
    state: &AppState,
    headers: &Incoming,
    connection: &Connection,
) -> Result<Arc<Principal>, Response> {
    let checked = match origin::refusal(&state.origin, headers) {
        Some(refused) => Err(refused),
        None => authorized(state, headers, connection).await,
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

/// Who is asking on [`MCP_ROUTE`], whether their role reaches it, and whether this request is
/// within their rate.
#[allow(
    clippy::result_large_err,
    reason = "a refusal is the response itself, built off the hot path"
)]
async fn authorized(
    state: &AppState,
    headers: &Incoming,
    connection: &Connection,
) -> Result<Arc<Principal>, Response> {
    let refuse = |refused| state.auth.refusal(&refused, MCP_ROUTE, MCP_ROUTE);
    let principal = auth::authenticate(&state.auth, headers, connection.certificate.as_ref())
        .await
        .map_err(refuse)?;
    let needed = required_role(MCP_ROUTE);
    if !principal.may(needed) {
        return Err(refuse(auth::Refused::forbidden(&principal, needed)));
    }
    within_rate(state, &principal)?;
    Ok(principal)
}

/// Whether this request of `principal`'s is within its rate; the 429 when it is not.
#[allow(
    clippy::result_large_err,
    reason = "a refusal is the response itself, built off the hot path"
)]
fn within_rate(state: &AppState, principal: &Principal) -> Result<(), Response> {
    state
        .quotas
        .request(principal)
        .map_err(|over| limits::over_quota(&over))
}

async fn admit(
    state: &AppState,
    route: Option<&str>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(refused) = origin::refusal(&state.origin, request.headers()) {
        return refused;
    }
    // Requests no route matched are not asked for a token: they get the 404 anyway.
    let Some(route) = route.filter(|r| !unprotected(r)) else {
        return buffered(state, request, next).await;
    };
    let connection = request.extensions().get::<Arc<Connection>>().cloned();
    let certificate = connection.as_ref().and_then(|c| c.certificate.as_ref());
    let principal = match auth::authenticate(&state.auth, request.headers(), certificate).await {
        Ok(principal) => principal,
        Err(auth::Refused::Missing)
            if request.method() == Method::GET && CONSOLE_SHELL.contains(&route) =>
        {
            return buffered(state, request, next).await;
        }
        Err(refused) => return state.auth.refusal(&refused, route, request.uri().path()),
    };
    let needed = required_role(route);
    let (started, method) = (Instant::now(), request.method().clone());
    let response = if !principal.may(needed) {
        let refused = auth::Refused::forbidden(&principal, needed);
        state.auth.refusal(&refused, route, request.uri().path())
    } else if let Err(refused) = within_rate(state, &principal) {
        refused
    } else {
        request.extensions_mut().insert(principal.clone());
        buffered(state, request, next).await
    };
    if needed == Role::Admin {
        audit_admin(
            state,
            &principal,
            &method,
            route,
            response.status(),
            started,
        );
    }
    response
}

/// The body read whole within its limits, then the route.
async fn buffered(state: &AppState, request: Request, next: Next) -> Response {
    match limits::buffer(state.body_timeout, request).await {
        Ok(request) => next.run(request).await,
        Err(refused) => refused,
    }
}

/// The audit line of a request to an administrator's route, from the listener or the control
/// socket; scrapes of `/metrics` are not actions and are left out.
fn audit_admin(
    state: &AppState,
    principal: &Principal,
    method: &Method,
    route: &str,
    status: StatusCode,
    started: Instant,
) {
    if !state.audit.enabled() || route == "/metrics" {
        return;
    }
    let (who, auth) = audit::Entry::who(principal);
    let action = format!("{method} {route}");
    let decision = if status == StatusCode::FORBIDDEN {
        "deny"
    } else {
        "allow"
    };
    state.audit.record(&audit::Entry {
        kind: audit::Kind::Admin,
        principal: who,
        auth,
        session: None,
        method: &action,
        upstream: None,
        target: None,
        decision,
        status: status.as_u16().into(),
        duration_ms: audit::since(started),
    });
}

/// The control socket's one layer: its requests to administrators' routes go in the audit log
/// like the listener's (the control socket is the CLI's channel: nothing else applies to it).
pub async fn audit_control(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let Some(route) = route.filter(|r| required_role(r) == Role::Admin && state.audit.enabled())
    else {
        return next.run(request).await;
    };
    let (started, method) = (Instant::now(), request.method().clone());
    let response = next.run(request).await;
    let control = Principal::control();
    audit_admin(
        &state,
        &control,
        &method,
        &route,
        response.status(),
        started,
    );
    response
}
