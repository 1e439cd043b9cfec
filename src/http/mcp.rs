//! The MCP pipeline: every JSON-RPC message a client sends, whatever carried it, runs down one
//! sequence of named stages, each written once.
//!
//! | stage | where | what |
//! | --- | --- | --- |
//! | gate | [`super::front`] | `Host`/`Origin`, who is asking (a [`Principal`]), their role and request rate, body limits |
//! | session | [`post`] | an `Mcp-Session-Id` must name a session its principal opened (404 otherwise) |
//! | decode | [`message`] | the body becomes a [`Message`]: a call read at its top level, or a tree |
//! | era rules | [`rules`] | protocol version, the 2026-07-28 ladder, a missing session |
//! | route | [`dispatch`], [`route`] | catalog answers, or the upstream that serves a name or URI |
//! | policy | [`route::permitted`] | may the principal reach that tool, prompt or resource (lists filtered alike) |
//! | forward | [`call`], [`route`] | sent upstream, tracked for cancellation, id restored |
//! | encode | [`Reply`] | JSON, one SSE event, or an SSE stream when the upstream streamed |
//! | audit | [`audit`] | one line per request in the audit log, when there is one |
//!
//! Entrances: Streamable HTTP `POST` ([`post`]: the listener's HTTP/1.1 loop, hyper's HTTP/1.1
//! and HTTP/2, the control socket) and the connection-bound transports, legacy SSE's
//! `POST /message` and WebSocket ([`on_connection`]), whose connection is the session and
//! which have no per-message headers. `/mcp` serves every online upstream, names prefixed
//! with `<upstream><separator>`; `/servers/{name}/mcp` one upstream, names as it gives them.
//! A request without a session header is served statelessly, which is how 2026-07-28
//! clients (and the NET-01 report's bare `curl` of `tools/list`) talk.

mod audit;
mod call;
mod dispatch;
pub mod held;
mod identity;
pub mod listen;
mod message;
mod route;
mod rules;
pub mod tasks;
mod uris;

use crate::hash::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, Path, Request, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use memchr::memmem::Finder;
use serde_json::{Value, json};

use super::AppState;
use super::relay::relay_to_upstream;
use crate::access::Principal;
use crate::h1::fields::{Incoming, Lookup};
use crate::jsonrpc::{self, Kind, code};
use crate::session::SessionKey;
use crate::upstream::connection::{MessageSink, Owner};
pub use dispatch::handle;
pub use message::Message;
use rules::Era;
pub use uris::SubscribedAs;

/// Requests in flight upstream, found by (session, client id).
pub type Inflight = Arc<Mutex<HashSet<route::ByKey>>>;

/// What a message carries through the stages besides itself.
pub struct Ctx<'s> {
    /// Who sent it.
    pub principal: Arc<Principal>,
    /// The downstream session it came in; `None` for a stateless request.
    pub session: Option<&'s SessionKey>,
    /// Where what the upstream streams while answering goes, for a request whose client
    /// accepts an event stream.
    pub sink: Option<MessageSink>,
    /// The session's client as upstreams are to see it (its own upstream sessions), when it
    /// initialized one.
    pub owner: Option<Owner>,
    /// The client speaks 2026-07-28 (no server-to-client requests).
    pub modern: bool,
    /// The request's own headers, where it has them (Streamable HTTP): what a tool's
    /// `Mcp-Param-*` declarations are checked against.
    pub headers: Option<&'s (dyn Lookup + Sync)>,
}

impl Ctx<'_> {
    /// The owner requests forwarded for this message carry.
    pub(super) fn owner(&self) -> Option<Owner> {
        self.owner.clone()
    }
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("principal", &self.principal.id)
            .field("session", &self.session)
            .field("sink", &self.sink.is_some())
            .field("owner", &self.owner.is_some())
            .finish()
    }
}

/// Which upstreams a request sees.
#[derive(Debug, Clone)]
pub enum Scope {
    /// All online upstreams, names prefixed.
    All,
    /// One upstream, names unprefixed.
    One(String),
}

impl Scope {
    /// The Streamable HTTP endpoint serving it (`/mcp`, `/servers/NAME/mcp`), as another
    /// instance is asked on it.
    pub(super) fn path(&self) -> http::Uri {
        let path = match self {
            Self::All => "/mcp".to_owned(),
            Self::One(name) => format!("/servers/{name}/mcp"),
        };
        path.parse().unwrap_or_default()
    }
}

use super::sessions::OpenError;
pub use super::sessions::{SessionLimits, Sessions, too_many_sessions};

/// `POST /mcp` and `/mcp/http`.
pub async fn post_all(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    request: Request,
) -> Response {
    match split(request).await {
        Ok((headers, body)) => post(state, Scope::All, principal, Incoming::Map(headers), body)
            .await
            .into_response(),
        Err(refused) => refused,
    }
}

/// `POST /servers/{name}/mcp`.
pub async fn post_one(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
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
    post(
        state,
        Scope::One(name),
        principal,
        Incoming::Map(headers),
        body,
    )
    .await
    .into_response()
}

/// `DELETE /mcp`: end a session.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
    headers: HeaderMap,
) -> StatusCode {
    let Some(id) = session_header(&headers) else {
        return StatusCode::BAD_REQUEST;
    };
    // A session another instance opened is taken in first, so that its owner is checked the
    // same way and its end reaches every instance.
    let here = state.sessions.is_owned_by(id, &principal.id)
        || super::portable::recover(&state, id, &principal).await;
    if !here || !state.sessions.close(id, &principal.id) {
        return StatusCode::NOT_FOUND;
    }
    super::delivery::session_ended(&state, &SessionKey::Streamable(id.into()));
    super::portable::ended(&state, id).await;
    StatusCode::NO_CONTENT
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

/// Stage **encode**: what a message posted to an MCP endpoint is answered with.
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

    /// A JSON-RPC message mcpgw answers with `status` (a refusal, an error).
    fn rpc(status: StatusCode, body: Value) -> Self {
        Self::Response((status, Json(body)).into_response())
    }

    /// The answer as a message, for the SSE stream of a request whose upstream streamed.
    fn into_message(self) -> Option<Value> {
        match self {
            Self::Answer { json, .. } => serde_json::from_slice(&json).ok(),
            Self::Response(_) => None,
        }
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

impl From<rules::Refusal> for Reply {
    fn from(refused: rules::Refusal) -> Self {
        Self::rpc(refused.status, refused.body)
    }
}

/// What a client's `Accept` lets the answer be.
#[derive(Debug, Clone, Copy)]
struct Accept {
    /// An SSE stream is accepted: the upstream's notifications can be relayed before the answer.
    streams: bool,
    /// Only an SSE stream is: even a plain answer is framed as one event.
    sse_only: bool,
}

/// The searches of `Accept`, built once (as bytes: the value needs no check that it is text).
static ACCEPT_FINDERS: LazyLock<[Finder<'static>; 2]> = LazyLock::new(|| {
    [
        Finder::new("text/event-stream"),
        Finder::new("application/json"),
    ]
});

impl Accept {
    fn of(headers: &impl Lookup) -> Self {
        let accept = headers.value(&ACCEPT).unwrap_or_default();
        let [event_stream, json] = &*ACCEPT_FINDERS;
        let streams = event_stream.find(accept).is_some();
        Self {
            streams,
            sse_only: streams && json.find(accept).is_none(),
        }
    }
}

/// The pipeline for a message posted to a Streamable-HTTP endpoint (past the gate, the body
/// read within its limits).
pub(super) async fn post(
    state: Arc<AppState>,
    scope: Scope,
    principal: Arc<Principal>,
    headers: Incoming,
    body: Bytes,
) -> Reply {
    let wait = state.registry.wait().clone();
    let _serving = wait.serving();
    // Stage: session.
    let session = session_header(&headers);
    if let Some(id) = session
        && !state.sessions.touch(id, &principal.id)
        && !super::portable::recover(&state, id, &principal).await
    {
        return Reply::rpc(
            StatusCode::NOT_FOUND,
            jsonrpc::error(
                Value::Null,
                code::INVALID_REQUEST,
                "session not found (it ended or expired); initialize a new one",
            ),
        );
    }
    let session = session.map(Arc::<str>::from);
    let accept = Accept::of(&headers);
    let message = Posted {
        state: state.clone(),
        scope,
        principal,
        headers,
        session,
        accept,
    };
    if !accept.streams {
        // Boxed where it is made: the pipeline is a large future, and moving it by value
        // copied it several times per call.
        return Box::pin(message.run(body, None)).await;
    }
    if held::candidate(&message.headers) {
        // The answers to a call another instance holds go to it.
        if let Some(peer) = held::elsewhere(&state, &body, &message.headers) {
            return to_peer(&state, &peer, &message.scope, &message.headers, body).await;
        }
        // A 2026-07-28 call: if its upstream asks the client something, the call is held
        // and the client asked in its own era ([`held`]).
        let held_state = state.clone();
        let work = move |sink| {
            let run_body = body.clone();
            held::serve(held_state, sink, body, move |inner| {
                message.run(run_body, Some(inner))
            })
        };
        return match super::relay::answer_or_stream(state, work, Reply::into_message).await {
            Ok(reply) => reply,
            Err(streamed) => Reply::Response(streamed),
        };
    }
    // The upstream may stream notifications before it answers: relayed as an SSE stream.
    let work = move |sink| message.run(body, Some(sink));
    match super::relay::answer_or_stream(state, work, Reply::into_message).await {
        Ok(reply) => reply,
        Err(streamed) => Reply::Response(streamed),
    }
}

/// Pass a message posted here on to the instance `peer` that holds what it is for (the call
/// an upstream's question came from), on the same endpoint, with the client's headers.
async fn to_peer(
    state: &AppState,
    peer: &url::Url,
    scope: &Scope,
    headers: &Incoming,
    body: Bytes,
) -> Reply {
    let headers = headers.to_map();
    Reply::Response(
        state
            .peers
            .forward(peer, &scope.path(), &headers, body)
            .await,
    )
}

/// A message posted over Streamable HTTP, past the session stage.
struct Posted {
    state: Arc<AppState>,
    scope: Scope,
    principal: Arc<Principal>,
    headers: Incoming,
    /// The session it names, checked open.
    session: Option<Arc<str>>,
    accept: Accept,
}

impl Posted {
    /// The stages after the session: decode, era rules, route, forward, encode. `sink` takes
    /// what the upstream sends while it works, when the client accepts a stream.
    async fn run(self, body: Bytes, sink: Option<MessageSink>) -> Reply {
        // Stage: decode.
        let msg = match Message::decode(&body) {
            Ok(msg) => msg,
            Err(e) => {
                return Reply::rpc(
                    StatusCode::BAD_REQUEST,
                    jsonrpc::error(Value::Null, code::PARSE_ERROR, format!("parse error: {e}")),
                );
            }
        };
        // Stage: era rules.
        let era = match rules::admit(Some(&self.headers), &msg, self.session.is_some()) {
            Ok(era) => era,
            Err(refused) => return refused.into(),
        };
        let span = request_span(self.session.as_deref(), msg.method().unwrap_or_default());
        let key = self.session.clone().map(SessionKey::Streamable);
        // Stages: route, forward, encode.
        let work = self.dispatch(msg, era, key.as_ref(), sink);
        match span {
            Some(span) => tracing::Instrument::instrument(work, span).await,
            None => work.await,
        }
    }

    async fn dispatch(
        &self,
        msg: Message<'_>,
        era: Era,
        session: Option<&SessionKey>,
        sink: Option<MessageSink>,
    ) -> Reply {
        let (state, scope) = (&*self.state, &self.scope);
        let sse_only = self.accept.sse_only;
        let tree = match msg {
            Message::Call(mut call) => {
                let owner = super::clients::owner(&self.state, session);
                let ctx = Ctx {
                    principal: self.principal.clone(),
                    session,
                    sink,
                    owner,
                    modern: era.is_modern(),
                    headers: Some(&self.headers),
                };
                // What the audit log needs of the call, taken before it is forwarded.
                let audited = state
                    .audit
                    .enabled()
                    .then(|| (std::time::Instant::now(), call.params.name().to_owned()));
                let (json, status) = call::forward(state, scope, &ctx, &mut call, era).await;
                if let Some((started, target)) = audited {
                    audit::record(
                        state,
                        scope,
                        &ctx,
                        call.method,
                        Some(&target),
                        status,
                        started,
                    );
                }
                if matches!(status, audit::Status::Error(Some(code::HEADER_MISMATCH))) {
                    return header_mismatch(json);
                }
                return Reply::Answer { json, sse_only };
            }
            Message::Tree(tree) => tree,
        };
        if let Some(refused) = batch_refusal(state, &tree) {
            return Reply::rpc(StatusCode::BAD_REQUEST, refused);
        }
        // A client's answer to a request an upstream made of it: here, or on the instance
        // that asked.
        if let Some(done) = relay_to_upstream(state, session, &tree).await {
            return done.into();
        }
        // An answer to a question another instance asked, or a `tasks/*` request for a task
        // another instance holds: passed on to it.
        let peer = match super::relay::answer_for_peer(state, &tree, &self.headers) {
            Some(peer) => Some(peer),
            None => tasks::elsewhere(state, session, &tree, &self.headers).await,
        };
        if let Some(peer) = peer {
            let body = Bytes::from(serde_json::to_vec(&tree).unwrap_or_default());
            return to_peer(state, &peer, scope, &self.headers, body).await;
        }
        let is_request = jsonrpc::kind(&tree) == Kind::Request;
        let method = jsonrpc::method(&tree).unwrap_or_default();
        if era.is_modern() && is_request && method == "subscriptions/listen" {
            let listen = listen::open(
                self.state.clone(),
                scope.clone(),
                self.principal.clone(),
                tree,
                self.accept.streams,
            );
            return Reply::Response(listen.await);
        }
        // Refused before any work for the session is done; `Sessions::open` decides again.
        if method == "initialize" {
            match state.sessions.may_open(&self.principal) {
                Ok(()) => {}
                Err(OpenError::Full { .. }) => {
                    return too_many_sessions(state.sessions.limits(), "Streamable HTTP").into();
                }
                Err(OpenError::Quota(held)) => return super::limits::over_quota(&held).into(),
            }
        }
        // Only 2026-07-28 answers need the method once the message is consumed (`era::decorate`).
        let decorate = era.is_modern().then(|| method.to_owned());
        let ctx = Ctx {
            principal: self.principal.clone(),
            session,
            sink: sink.filter(|_| is_request && streams_notifications(method)),
            owner: super::clients::owner(&self.state, session),
            modern: era.is_modern(),
            headers: Some(&self.headers),
        };
        let mut new_session = None;
        let answer = handle_all(state, scope, &ctx, tree, &mut new_session).await;
        let Some(mut answer) = answer else {
            return StatusCode::ACCEPTED.into_response().into();
        };
        finish(decorate.as_deref(), &mut answer);
        let mismatch = answer.pointer("/error/code") == Some(&json!(code::HEADER_MISMATCH));
        let json = serde_json::to_vec(&answer).unwrap_or_default();
        if mismatch {
            return header_mismatch(json);
        }
        let reply = Reply::Answer { json, sse_only };
        let Some(id) = new_session.and_then(|id| HeaderValue::from_str(&id).ok()) else {
            return reply;
        };
        let mut response = reply.into_response();
        response
            .headers_mut()
            .insert(crate::h1::fields::SESSION_ID.clone(), id);
        Reply::Response(response)
    }
}

/// Stage **encode** of a -32020: headers that disagree with the body are a bad request
/// (400), as the 2026-07-28 transport says, on every path that finds them.
fn header_mismatch(json: Vec<u8>) -> Reply {
    Reply::Response(
        (
            StatusCode::BAD_REQUEST,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            json,
        )
            .into_response(),
    )
}

/// A batch the pipeline does not split: an empty one, or one over `[limits] max_batch`, refused
/// whole before any entry is forwarded; the JSON-RPC error it is answered with.
fn batch_refusal(state: &AppState, msg: &Value) -> Option<Value> {
    let batch = msg.as_array()?;
    if batch.is_empty() {
        return Some(jsonrpc::error(
            Value::Null,
            code::INVALID_REQUEST,
            "empty batch",
        ));
    }
    let refused = state.quotas.batch(batch.len()).err()?;
    Some(refused.rpc_error(Value::Null))
}

/// A message or a batch through [`handle`], the batch's answers gathered.
async fn handle_all(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    msg: Value,
    new_session: &mut Option<String>,
) -> Option<Value> {
    match msg {
        Value::Array(batch) => {
            let mut out = Vec::new();
            for item in batch {
                if let Some(a) = handle(state, scope, ctx, item, new_session).await {
                    out.push(a);
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        single => handle(state, scope, ctx, single, new_session).await,
    }
}

/// The span a request's work runs in, which puts the session on its log lines (the
/// "forwarded" debug line); `None` unless debug logging is on, so that it costs nothing then.
fn request_span(session: Option<&str>, method: &str) -> Option<tracing::Span> {
    tracing::enabled!(tracing::Level::DEBUG).then(|| {
        let session = session.map_or_else(|| "-".to_owned(), crate::session::fingerprint);
        tracing::debug_span!("mcp", %session, %method)
    })
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

/// The pipeline for a message that came on a legacy SSE or WebSocket connection, which is the
/// session `key` (so the session stage has nothing to check, and there are no per-message
/// headers); `None` when nothing needs an answer. A batch runs item by item. What an upstream
/// sends while it answers (progress, logging, its own requests) goes on the same connection,
/// ahead of the answer; the client's answers to those requests go back to that upstream.
pub(super) async fn on_connection(
    state: &Arc<AppState>,
    scope: &Scope,
    principal: &Arc<Principal>,
    key: &SessionKey,
    msg: Value,
) -> Option<Value> {
    if let Some(refused) = batch_refusal(state, &msg) {
        return Some(refused);
    }
    match msg {
        Value::Array(batch) => {
            let mut out = Vec::new();
            for item in batch {
                if let Some(a) = on_connection_one(state, scope, principal, key, item).await {
                    out.push(a);
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        single => on_connection_one(state, scope, principal, key, single).await,
    }
}

async fn on_connection_one(
    state: &Arc<AppState>,
    scope: &Scope,
    principal: &Arc<Principal>,
    key: &SessionKey,
    msg: Value,
) -> Option<Value> {
    // Stage: era rules (the message came decoded, as a tree).
    let msg = Message::Tree(msg);
    let era = match rules::admit(None, &msg, true) {
        Ok(era) => era,
        Err(refused) => return Some(refused.body),
    };
    let Message::Tree(msg) = msg else {
        return None;
    };
    // Stages: route, forward, encode.
    if relay_to_upstream(state, Some(key), &msg).await.is_some() {
        return None;
    }
    let is_request = jsonrpc::kind(&msg) == Kind::Request;
    if era.is_modern() && is_request && jsonrpc::method(&msg) == Some("subscriptions/listen") {
        return listen::open_on_connection(state, scope, principal, key.clone(), msg).await;
    }
    let decorate = era
        .is_modern()
        .then(|| jsonrpc::method(&msg).unwrap_or_default().to_owned());
    let streams = is_request && streams_notifications(jsonrpc::method(&msg).unwrap_or_default());
    if era.is_modern() && streams {
        // A 2026-07-28 client here too: an upstream's question mid-call becomes
        // `input_required` ([`held`]), as over Streamable HTTP.
        return on_connection_held(state, scope, principal, key, msg, decorate).await;
    }
    let ctx = Ctx {
        principal: principal.clone(),
        session: Some(key),
        sink: streams.then(|| super::clients::session_sink(state, key)),
        owner: super::clients::owner(state, Some(key)),
        modern: era.is_modern(),
        headers: None,
    };
    // On SSE and WebSocket the connection is the session: `initialize` issues no id.
    let mut answer = handle(state, scope, &ctx, msg, &mut None).await;
    if let Some(a) = answer.as_mut() {
        finish(decorate.as_deref(), a);
    }
    answer
}

/// A 2026-07-28 call that came on a connection, through [`held::serve`].
async fn on_connection_held(
    state: &Arc<AppState>,
    scope: &Scope,
    principal: &Arc<Principal>,
    key: &SessionKey,
    msg: Value,
    decorate: Option<String>,
) -> Option<Value> {
    let body = Bytes::from(serde_json::to_vec(&msg).unwrap_or_default());
    let client = super::clients::session_sink(state, key);
    let (run_state, scope, key) = (state.clone(), scope.clone(), key.clone());
    let principal = principal.clone();
    let owner = super::clients::owner(state, Some(&key));
    let run = move |inner: MessageSink| async move {
        let ctx = Ctx {
            principal,
            session: Some(&key),
            sink: Some(inner),
            owner,
            modern: true,
            headers: None,
        };
        let mut answer = handle(&run_state, &scope, &ctx, msg, &mut None).await;
        if let Some(a) = answer.as_mut() {
            finish(decorate.as_deref(), a);
        }
        Reply::Answer {
            json: serde_json::to_vec(&answer.unwrap_or(Value::Null)).unwrap_or_default(),
            sse_only: false,
        }
    };
    held::serve(state.clone(), client, body, run)
        .await
        .into_message()
}
