//! The MCP front door over Streamable HTTP: `/mcp` (every online upstream, names prefixed with
//! `<upstream><separator>`) and `/servers/{name}/mcp` (one upstream, names as it gives them).
//!
//! Both protocol eras are answered: `initialize` opens a session-era session (`Mcp-Session-Id`);
//! a request without a session header is served statelessly, which is how 2026-07-28 clients
//! (and the NET-01 report's bare `curl` of `tools/list`) talk.

mod call;
mod route;

use crate::hash::HashSet;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};

use crate::h1::fields::{Incoming, Lookup};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::relay::relay_to_upstream;
use crate::jsonrpc::{self, Kind, code};
use crate::upstream::connection::{MODERN_VERSION, SESSION_VERSIONS};
use crate::upstream::registry::Upstream;
use route::{cancel_upstream, route_completion, route_named, route_uri};

/// Requests in flight upstream, found by (session, client id).
pub type Inflight = Arc<Mutex<HashSet<route::ByKey>>>;

tokio::task_local! {
    /// The downstream session a request belongs to ("-" without one): requests in flight are
    /// remembered per session so that the client's `notifications/cancelled` finds them, and
    /// resource subscriptions so that updates reach it. On the connection-bound transports the
    /// connection is the session ([`SSE_SESSION`], [`WS_SESSION`]); a 2026-07-28
    /// `subscriptions/listen` stream is one too ([`super::listen::LISTEN_SESSION`]).
    pub(super) static CURRENT_SESSION: Arc<str>;
}

/// Which upstreams a request sees.
#[derive(Debug, Clone)]
pub enum Scope {
    /// All online upstreams, names prefixed.
    All,
    /// One upstream, names unprefixed.
    One(String),
}

pub use super::sessions::{SessionLimits, Sessions, too_many_sessions};

/// `POST /mcp` and `/mcp/http`.
pub async fn post_all(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match split(request).await {
        Ok((headers, body)) => post(state, Scope::All, Incoming::Map(headers), body)
            .await
            .into_response(),
        Err(refused) => refused,
    }
}

/// `POST /servers/{name}/mcp`.
pub async fn post_one(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let (headers, body) = match split(request).await {
        Ok(split) => split,
        Err(refused) => return refused,
    };
    if state.registry.get(&name).is_none() {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "not_found", "message": format!("no upstream named '{name}' is registered")}}))).into_response();
    }
    post(state, Scope::One(name), Incoming::Map(headers), body)
        .await
        .into_response()
}

/// `DELETE /mcp`: end a session.
pub async fn delete(State(state): State<Arc<AppState>>, headers: HeaderMap) -> StatusCode {
    match session_header(&headers) {
        Some(id) if state.sessions.close(id) => {
            prune_subscriptions(&state);
            StatusCode::NO_CONTENT
        }
        Some(_) => StatusCode::NOT_FOUND,
        None => StatusCode::BAD_REQUEST,
    }
}

/// The headers and the whole body. The headers are taken rather than copied (the `HeaderMap`
/// extractor clones them); the body goes through the `Bytes` extractor, so the body limit and
/// its refusal are axum's, as on any route.
async fn split(mut request: Request) -> Result<(HeaderMap, Bytes), Response> {
    let headers = std::mem::take(request.headers_mut());
    let body = Bytes::from_request(request, &())
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((headers, body))
}

fn session_header(headers: &impl Lookup) -> Option<&str> {
    headers.text(&crate::h1::fields::SESSION_ID)
}

/// What a message posted to an MCP endpoint is answered with.
#[derive(Debug)]
pub enum Reply {
    /// A JSON-RPC answer, serialized: as JSON, or (`sse_only`, for a client that accepts only
    /// an event stream) as one SSE event. What nearly every forwarded call gets; the
    /// listener's own HTTP/1.1 loop writes it without building a response.
    Answer {
        /// The answer.
        json: Vec<u8>,
        /// Whether to frame it as one SSE event.
        sse_only: bool,
    },
    /// Any other response.
    Response(Response),
}

impl Reply {
    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Answer { .. } => StatusCode::OK,
            Self::Response(response) => response.status(),
        }
    }

    /// The content type and body of an [`Reply::Answer`].
    pub fn framed(json: Vec<u8>, sse_only: bool) -> (&'static str, Vec<u8>) {
        if !sse_only {
            return ("application/json", json);
        }
        let mut framed = Vec::with_capacity(json.len() + 24);
        framed.extend_from_slice(b"event: message\ndata: ");
        framed.extend_from_slice(&json);
        framed.extend_from_slice(b"\n\n");
        ("text/event-stream", framed)
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let (json, sse_only) = match self {
            Self::Answer { json, sse_only } => (json, sse_only),
            Self::Response(response) => return response,
        };
        let (content_type, body) = Self::framed(json, sse_only);
        let mut response = Bytes::from(body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if sse_only {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        response
    }
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Self::Response(response)
    }
}

/// Answer a message posted to an MCP endpoint (the body already read, within its limits).
pub(super) async fn post(
    state: Arc<AppState>,
    scope: Scope,
    headers: Incoming,
    body: Bytes,
) -> Reply {
    let session = session_header(&headers);
    if let Some(id) = session
        && !state.sessions.touch(id)
    {
        return Reply::Response(rpc_http(
            StatusCode::NOT_FOUND,
            jsonrpc::error(
                Value::Null,
                code::INVALID_REQUEST,
                "session not found (it ended or expired); initialize a new one",
            ),
        ));
    }
    // Calls go upstream without a JSON tree when they can (see `call`).
    let session = session.map(Arc::<str>::from);
    let (headers, body) = match call::post(&state, &scope, headers, body, session).await {
        Ok(answered) => return answered,
        Err(not_a_call) => not_a_call,
    };
    // Boxed, so that its (large) future is not part of every call's.
    Reply::Response(Box::pin(post_tree(state, scope, headers, body)).await)
}

/// [`post`] for what `call` does not carry: the message parsed as a tree.
async fn post_tree(state: Arc<AppState>, scope: Scope, headers: Incoming, body: Bytes) -> Response {
    let session = session_header(&headers);
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return rpc_http(
                StatusCode::BAD_REQUEST,
                jsonrpc::error(Value::Null, code::PARSE_ERROR, format!("parse error: {e}")),
            );
        }
    };
    if let Some(v) = headers.text(&crate::h1::fields::PROTOCOL_VERSION)
        && !super::era::is_supported(v)
    {
        return rpc_http(
            StatusCode::BAD_REQUEST,
            jsonrpc::error(
                msg.get("id").cloned().unwrap_or(Value::Null),
                code::UNSUPPORTED_VERSION,
                format!("unsupported MCP-Protocol-Version {v}"),
            ),
        );
    }
    let modern = super::era::is_modern(Some(&headers), &msg);
    if modern {
        if msg.is_array() {
            return rpc_http(
                StatusCode::BAD_REQUEST,
                jsonrpc::error(
                    Value::Null,
                    code::INVALID_REQUEST,
                    "batches are not part of protocol version 2026-07-28",
                ),
            );
        }
        if jsonrpc::kind(&msg) == Kind::Request
            && let Err((status, body)) = super::era::check(Some(&headers), &msg)
        {
            return rpc_http(status, body);
        }
    } else if session.is_none()
        && headers.contains(&crate::h1::fields::PROTOCOL_VERSION)
        && jsonrpc::method(&msg).is_some_and(|m| m != "initialize")
        && jsonrpc::kind(&msg) == Kind::Request
    {
        // A session-era client past initialize must name its session.
        return rpc_http(
            StatusCode::BAD_REQUEST,
            jsonrpc::error(
                msg.get("id").cloned().unwrap_or(Value::Null),
                code::INVALID_REQUEST,
                "missing Mcp-Session-Id header (initialize first)",
            ),
        );
    }
    if let Some(done) = relay_to_upstream(&state, &msg).await {
        return done;
    }
    let method = jsonrpc::method(&msg).unwrap_or_default();
    // Only 2026-07-28 answers need the method once the message is consumed (`era::decorate`).
    let decorate = modern.then(|| method.to_owned());
    let span = request_span(session, method);
    if modern && method == "subscriptions/listen" && jsonrpc::kind(&msg) == Kind::Request {
        return super::listen::open(state, scope, msg, accepts_event_stream(&headers)).await;
    }
    if streams_notifications(method)
        && jsonrpc::kind(&msg) == Kind::Request
        && accepts_event_stream(&headers)
    {
        let session = session.unwrap_or("-").into();
        return stream_answer(state, scope, msg, decorate, session, span).await;
    }
    if method == "initialize" && state.sessions.is_full() && state.sessions.sweep() == 0 {
        return too_many_sessions(state.sessions.limits(), "Streamable HTTP");
    }
    if msg.as_array().is_some_and(Vec::is_empty) {
        return rpc_http(
            StatusCode::BAD_REQUEST,
            jsonrpc::error(Value::Null, code::INVALID_REQUEST, "empty batch"),
        );
    }
    let mut new_session = None;
    let work = async {
        match msg {
            Value::Array(batch) => {
                let mut out = Vec::new();
                for item in batch {
                    if let Some(a) = handle(&state, &scope, item, &mut new_session).await {
                        out.push(a);
                    }
                }
                (!out.is_empty()).then_some(Value::Array(out))
            }
            single => handle(&state, &scope, single, &mut new_session).await,
        }
    };
    let work = CURRENT_SESSION.scope(session.unwrap_or("-").into(), work);
    let answer = match span {
        Some(span) => tracing::Instrument::instrument(work, span).await,
        None => work.await,
    };
    let Some(mut answer) = answer else {
        return StatusCode::ACCEPTED.into_response();
    };
    finish(decorate.as_deref(), &mut answer);
    let mut response = respond(&headers, answer);
    if let Some(id) = new_session.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response
            .headers_mut()
            .insert(crate::h1::fields::SESSION_ID.clone(), id);
    }
    response
}

/// The span a request's work runs in, which puts the session on its log lines (the
/// "forwarded" debug line); `None` unless debug logging is on, so that it costs nothing then.
fn request_span(session: Option<&str>, method: &str) -> Option<tracing::Span> {
    tracing::enabled!(tracing::Level::DEBUG)
        .then(|| tracing::debug_span!("mcp", session = session.unwrap_or("-"), %method))
}

/// Shape an answer for the client's era: the fields 2026-07-28 requires (given the method) or,
/// for a session-era client, without them.
fn finish(modern_method: Option<&str>, answer: &mut Value) {
    match modern_method {
        Some(method) => super::era::decorate(method, answer),
        None => super::era::undecorate(answer),
    }
}

/// Forwarded methods whose upstream may stream progress or log notifications before answering.
fn streams_notifications(method: &str) -> bool {
    matches!(
        method,
        "tools/call" | "prompts/get" | "resources/read" | "completion/complete"
    )
}

fn accepts_event_stream(headers: &impl Lookup) -> bool {
    headers
        .text(&ACCEPT)
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// Answer with JSON when the upstream just answers, or as an SSE stream when it streams
/// (see [`super::relay::answer_or_stream`]).
async fn stream_answer(
    state: Arc<AppState>,
    scope: Scope,
    msg: Value,
    decorate: Option<String>,
    session: Arc<str>,
    span: Option<tracing::Span>,
) -> Response {
    let worker = state.clone();
    let work = move |sink| async move {
        let mut new_session = None;
        let work = handle(&worker, &scope, msg, &mut new_session);
        let work = crate::upstream::connection::REQUEST_SINK
            .scope(sink, CURRENT_SESSION.scope(session, work));
        let answer = match span {
            Some(span) => tracing::Instrument::instrument(work, span).await,
            None => work.await,
        };
        answer.map(|mut answer| {
            finish(decorate.as_deref(), &mut answer);
            answer
        })
    };
    match super::relay::answer_or_stream(state, work, |answer| answer).await {
        Ok(Some(answer)) => Json(answer).into_response(),
        Ok(None) => StatusCode::ACCEPTED.into_response(),
        Err(streamed) => streamed,
    }
}

fn rpc_http(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// JSON, or a one-event SSE stream for a client that accepts only that.
fn respond(headers: &impl Lookup, answer: Value) -> Response {
    let accept = headers.text(&ACCEPT).unwrap_or("");
    if accept.contains("text/event-stream") && !accept.contains("application/json") {
        let body = format!("event: message\ndata: {answer}\n\n");
        return (
            [
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
            ],
            body,
        )
            .into_response();
    }
    Json(answer).into_response()
}

/// Answer one JSON-RPC message for any transport; `None` for notifications and responses.
/// `new_session` is set when the message was an `initialize` that opened a session.
pub async fn handle(
    state: &AppState,
    scope: &Scope,
    mut msg: Value,
    new_session: &mut Option<String>,
) -> Option<Value> {
    match jsonrpc::kind(&msg) {
        Kind::Request => {}
        Kind::Notification => {
            if jsonrpc::method(&msg) == Some("notifications/cancelled")
                && !super::listen::cancelled(state, &msg)
            {
                cancel_upstream(state, &msg).await;
            }
            return None;
        }
        Kind::Response => return None,
        Kind::Invalid => {
            let id = msg
                .get("id")
                .filter(|i| i.is_string() || i.is_number())
                .cloned()
                .unwrap_or(Value::Null);
            return Some(jsonrpc::error(
                id,
                code::INVALID_REQUEST,
                "invalid request: expected a JSON-RPC 2.0 request object",
            ));
        }
    }
    // A request is an object. Its id and params are taken out, not copied: params can be large,
    // and they are forwarded as they are.
    let Value::Object(request) = &mut msg else {
        return None;
    };
    let id = request.remove("id").unwrap_or(Value::Null);
    let params = request.remove("params");
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let sep = state.registry.settings().separator.as_str();
    let result = match method {
        "initialize" => {
            let requested = params
                .as_ref()
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let version = if SESSION_VERSIONS.contains(&requested) {
                requested
            } else {
                SESSION_VERSIONS[0]
            };
            match state.sessions.open() {
                Some(id) => *new_session = Some(id),
                None => {
                    return Some(jsonrpc::error(
                        id,
                        -32000,
                        "too many open sessions; close one or try again later",
                    ));
                }
            }
            Ok(
                json!({"protocolVersion": version, "capabilities": capabilities(state, scope), "serverInfo": server_info()}),
            )
        }
        "server/discover" => {
            let mut versions: Vec<&str> = SESSION_VERSIONS.iter().rev().copied().collect();
            versions.push(MODERN_VERSION);
            Ok(
                json!({"supportedVersions": versions, "capabilities": capabilities(state, scope), "serverInfo": server_info()}),
            )
        }
        "ping" => Ok(json!({})),
        "logging/setLevel" => {
            for up in in_scope(state, scope) {
                if up.capabilities().get("logging").is_some() {
                    // Best effort: one upstream refusing does not fail the others.
                    let _ = up.request("logging/setLevel", params.clone()).await;
                }
            }
            Ok(json!({}))
        }
        "completion/complete" => {
            return Some(route_completion(state, scope, sep, id, params).await);
        }
        "tools/list" => Ok(json!({"tools": listing(state, scope, sep, |c| &c.tools, "name")})),
        "prompts/list" => {
            Ok(json!({"prompts": listing(state, scope, sep, |c| &c.prompts, "name")}))
        }
        "resources/list" => {
            Ok(json!({"resources": listing(state, scope, sep, |c| &c.resources, "")}))
        }
        "resources/templates/list" => Ok(
            json!({"resourceTemplates": listing(state, scope, sep, |c| &c.resource_templates, "")}),
        ),
        "tools/call" | "prompts/get" => {
            return Some(route_named(state, scope, sep, id, method, params).await);
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            return Some(route_uri(state, scope, id, method, params).await);
        }
        _ => Err((
            code::METHOD_NOT_FOUND,
            format!("method not found: {method}"),
        )),
    };
    Some(match result {
        Ok(r) => jsonrpc::result(id, r),
        Err((c, m)) => jsonrpc::error(id, c, m),
    })
}

/// What this scope can do: for one upstream, what it announced (plus logging, which mcpgw
/// answers); for all, the union, with list changes always announced since upstreams come and go.
fn capabilities(state: &AppState, scope: &Scope) -> Value {
    let ups = match scope {
        Scope::All => state.registry.list(),
        Scope::One(name) => state.registry.get(name).into_iter().collect(),
    };
    let caps: Vec<Value> = ups.iter().map(|u| u.capabilities()).collect();
    let any = |f: &dyn Fn(&Value) -> bool| caps.iter().any(f);
    if let Scope::One(_) = scope
        && let Some(Value::Object(one)) = caps.first()
    {
        let mut one = one.clone();
        one.entry("logging").or_insert_with(|| json!({}));
        return Value::Object(one);
    }
    let mut out = json!({
        "tools": {"listChanged": true},
        "resources": {"listChanged": true, "subscribe": any(&|c| c.pointer("/resources/subscribe") == Some(&json!(true)))},
        "prompts": {"listChanged": true},
        "logging": {},
    });
    if any(&|c| c.get("completions").is_some()) {
        out["completions"] = json!({});
    }
    out
}

fn server_info() -> Value {
    json!({"name": "mcpgw", "version": env!("CARGO_PKG_VERSION")})
}

fn in_scope(state: &AppState, scope: &Scope) -> Vec<Arc<Upstream>> {
    match scope {
        Scope::All => state
            .registry
            .list()
            .into_iter()
            .filter(|u| u.is_online())
            .collect(),
        Scope::One(name) => state
            .registry
            .get(name)
            .filter(|u| u.is_online())
            .into_iter()
            .collect(),
    }
}

/// Merge one kind of catalog entry; with `Scope::All`, prefix `name_field` with the upstream.
fn listing(
    state: &AppState,
    scope: &Scope,
    sep: &str,
    pick: impl Fn(&crate::upstream::registry::Catalog) -> &Vec<Value>,
    name_field: &str,
) -> Vec<Value> {
    let prefix = matches!(scope, Scope::All);
    let mut out = Vec::new();
    for up in in_scope(state, scope) {
        let upstream = up.name();
        let catalog = up.catalog();
        for item in pick(&catalog) {
            let mut item = item.clone();
            if prefix
                && !name_field.is_empty()
                && let Some(Value::String(name)) = item.get_mut(name_field)
            {
                *name = format!("{upstream}{sep}{name}");
            }
            out.push(item);
        }
    }
    out
}

/// Session keys of the connection-bound transports, as [`CURRENT_SESSION`] and the tables
/// that hold sessions (requests in flight, resource subscriptions) name them.
pub const SSE_SESSION: &str = "sse:";
/// See [`SSE_SESSION`].
pub const WS_SESSION: &str = "ws:";

/// Which transport's table holds the session a key names, and its name there.
enum SessionKey<'k> {
    /// A legacy SSE session, by its id (the key without [`SSE_SESSION`]).
    Sse(&'k str),
    /// A WebSocket connection, by its whole key.
    Ws(&'k str),
    /// A Streamable-HTTP session, by its `Mcp-Session-Id`.
    Streamable(&'k str),
    /// A `subscriptions/listen` stream, by its whole key.
    Listen(&'k str),
}

impl<'k> SessionKey<'k> {
    fn of(key: &'k str) -> Self {
        if let Some(id) = key.strip_prefix(SSE_SESSION) {
            Self::Sse(id)
        } else if key.starts_with(WS_SESSION) {
            Self::Ws(key)
        } else if key.starts_with(super::listen::LISTEN_SESSION) {
            Self::Listen(key)
        } else {
            Self::Streamable(key)
        }
    }
}

/// Queue a server-to-client notification for the session `key` names, on whichever transport
/// it is: `false` when that session is gone.
pub fn notify_session(state: &AppState, key: &str, msg: &Value) -> bool {
    match SessionKey::of(key) {
        SessionKey::Sse(id) => state.sse.notify(id, msg),
        SessionKey::Ws(key) => state.ws_outlets.notify(key, msg),
        SessionKey::Streamable(id) => state.sessions.notify(id, msg),
        SessionKey::Listen(key) => state.listens.notify(state, key, msg),
    }
}

/// Whether a notification offered to session `session`'s queue was taken: a full queue (a
/// client not reading) drops this one notification and keeps the session; a closed one means
/// the session is gone.
pub(super) fn offered<T>(
    sent: Result<(), tokio::sync::mpsc::error::TrySendError<T>>,
    session: &str,
) -> bool {
    match sent {
        Ok(()) => true,
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(%session, "the client is not reading its stream; a notification was dropped");
            true
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Whether the session `key` names is still open, on whichever transport it is.
fn session_open(state: &AppState, key: &str) -> bool {
    match SessionKey::of(key) {
        SessionKey::Sse(id) => state.sse.contains(id),
        SessionKey::Ws(key) => state.ws_outlets.contains(key),
        SessionKey::Streamable(id) => state.sessions.contains(id),
        SessionKey::Listen(key) => state.listens.contains(key),
    }
}

/// Drop the resource subscriptions of sessions that ended (closed, expired, disconnected); an
/// upstream left with no subscriber for a URI is told to unsubscribe, in the background.
pub fn prune_subscriptions(state: &AppState) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    // Listen streams on connections that ended go first, so that theirs are released too.
    state
        .listens
        .retain_connected(|conn| session_open(state, conn));
    for up in state.registry.list() {
        let emptied = up.retain_subscribers(|key| session_open(state, key));
        // A 2026-07-28 upstream's listen stream already follows the table.
        if up.subscribes_by_listening() {
            continue;
        }
        for uri in emptied {
            let up = up.clone();
            runtime.spawn(async move {
                // Someone may have subscribed again meanwhile; one who is subscribing now
                // waits for this change to be done.
                let _change = up.subscription_change().await;
                if !up.subscribers(&uri).is_empty() {
                    return;
                }
                let params = serde_json::json!({ "uri": uri });
                if let Err(err) = up.request("resources/unsubscribe", Some(params)).await {
                    tracing::debug!(upstream = %up.name(), %uri, error = %err, "could not unsubscribe");
                }
            });
        }
    }
}

/// Answer a message that came on an SSE or WebSocket connection, which is the session `key`.
pub(super) async fn answer_on_connection(
    state: &AppState,
    scope: &Scope,
    key: impl Into<Arc<str>>,
    msg: Value,
) -> Option<Value> {
    CURRENT_SESSION
        .scope(key.into(), answer_on_connection_all(state, scope, msg))
        .await
}

/// [`answer_on_connection`] within its session: answered the way `/mcp` does; `None` when
/// nothing needs an answer.
async fn answer_on_connection_all(state: &AppState, scope: &Scope, msg: Value) -> Option<Value> {
    match msg {
        Value::Array(batch) if batch.is_empty() => Some(jsonrpc::error(
            Value::Null,
            code::INVALID_REQUEST,
            "empty batch",
        )),
        Value::Array(batch) => {
            let mut out = Vec::new();
            for item in batch {
                if let Some(a) = answer_on_connection_one(state, scope, item).await {
                    out.push(a);
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        single => answer_on_connection_one(state, scope, single).await,
    }
}

async fn answer_on_connection_one(state: &AppState, scope: &Scope, msg: Value) -> Option<Value> {
    // 2026-07-28 requests may come over these transports too (the envelope says so); there
    // are no per-message headers to check, the rest of the ladder applies.
    let modern = super::era::is_modern(None, &msg);
    if modern
        && jsonrpc::kind(&msg) == Kind::Request
        && let Err((_, body)) = super::era::check(None, &msg)
    {
        return Some(body);
    }
    if modern
        && jsonrpc::kind(&msg) == Kind::Request
        && jsonrpc::method(&msg) == Some("subscriptions/listen")
        && let Ok(conn) = CURRENT_SESSION.try_with(Clone::clone)
    {
        return super::listen::open_on_connection(state, scope, conn, msg).await;
    }
    let decorate = modern.then(|| jsonrpc::method(&msg).unwrap_or_default().to_owned());
    let mut new_session = None;
    let mut answer = handle(state, scope, msg, &mut new_session).await;
    if let Some(a) = answer.as_mut() {
        finish(decorate.as_deref(), a);
    }
    // On SSE and WebSocket the connection is the session; an `Mcp-Session-Id` minted by
    // `initialize` would never be used or deleted, so end it at once rather than leak it.
    if let Some(id) = new_session {
        state.sessions.close(&id);
    }
    answer
}
