//! The MCP front door over Streamable HTTP: `/mcp` (every online upstream, names prefixed with
//! `<upstream><separator>`) and `/servers/{name}/mcp` (one upstream, names as it gives them).
//!
//! Both protocol eras are answered: `initialize` opens a session-era session (`Mcp-Session-Id`);
//! a request without a session header is served statelessly, which is how 2026-07-28 clients
//! (and the NET-01 report's bare `curl` of `tools/list`) talk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use crate::jsonrpc::{self, Kind, code};
use crate::upstream::connection::{MODERN_VERSION, SESSION_VERSIONS};
use crate::upstream::registry::{CallError, Upstream};

/// Requests in flight upstream: (session, client id) -> (upstream, upstream id).
pub type Inflight = Arc<Mutex<HashMap<(String, String), (String, u64)>>>;

tokio::task_local! {
    /// The downstream session a request belongs to ("-" without one): requests in flight are
    /// remembered per session so that the client's `notifications/cancelled` finds them.
    static CURRENT_SESSION: String;
    /// The gateway's table of requests in flight (set with the session).
    static INFLIGHT: Inflight;
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
pub async fn post_all(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    post(state, Scope::All, headers, body).await
}

/// `POST /servers/{name}/mcp`.
pub async fn post_one(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if state.registry.get(&name).is_none() {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "not_found", "message": format!("no upstream named '{name}' is registered")}}))).into_response();
    }
    post(state, Scope::One(name), headers, body).await
}

/// `DELETE /mcp`: end a session.
pub async fn delete(State(state): State<Arc<AppState>>, headers: HeaderMap) -> StatusCode {
    match session_header(&headers) {
        Some(id) if state.sessions.close(&id) => StatusCode::NO_CONTENT,
        Some(_) => StatusCode::NOT_FOUND,
        None => StatusCode::BAD_REQUEST,
    }
}

fn session_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn post(state: Arc<AppState>, scope: Scope, headers: HeaderMap, body: Bytes) -> Response {
    let session = session_header(&headers);
    if let Some(id) = &session
        && !state.sessions.touch(id)
    {
        return rpc_http(
            StatusCode::NOT_FOUND,
            jsonrpc::error(
                Value::Null,
                code::INVALID_REQUEST,
                "session not found (it ended or expired); initialize a new one",
            ),
        );
    }
    let msg: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return rpc_http(
                StatusCode::BAD_REQUEST,
                jsonrpc::error(Value::Null, code::PARSE_ERROR, format!("parse error: {e}")),
            );
        }
    };
    if let Some(v) = headers
        .get("mcp-protocol-version")
        .and_then(|v| v.to_str().ok())
        && !super::era::supported_versions().contains(&v)
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
    let modern = super::era::is_modern(&headers, &msg);
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
        && headers.contains_key("mcp-protocol-version")
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
    let method = jsonrpc::method(&msg).unwrap_or_default().to_owned();
    if streams_notifications(&method)
        && jsonrpc::kind(&msg) == Kind::Request
        && accepts_event_stream(&headers)
    {
        return stream_answer(
            state,
            scope,
            msg,
            method,
            modern,
            session.clone().unwrap_or_else(|| "-".into()),
        )
        .await;
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
    let span = tracing::debug_span!("mcp", session = session.as_deref().unwrap_or("-"), %method);
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
    let work = CURRENT_SESSION.scope(
        session.clone().unwrap_or_else(|| "-".into()),
        INFLIGHT.scope(state.inflight.clone(), work),
    );
    let answer = tracing::Instrument::instrument(work, span).await;
    let Some(mut answer) = answer else {
        return StatusCode::ACCEPTED.into_response();
    };
    if modern {
        super::era::decorate(&method, &mut answer);
    } else {
        super::era::undecorate(&mut answer);
    }
    let mut response = respond(&headers, answer);
    if let Some(id) = new_session.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("mcp-session-id", id);
    }
    response
}

/// Forwarded methods whose upstream may stream progress or log notifications before answering.
fn streams_notifications(method: &str) -> bool {
    matches!(
        method,
        "tools/call" | "prompts/get" | "resources/read" | "completion/complete"
    )
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// Prepare a message an upstream sent during a request for the client: a request (sampling,
/// elicitation) gets an id of the gateway's own, remembered with the upstream and its id, so
/// that the client's answer can be routed back and never collides with another client's.
fn relay_to_client(state: &AppState, mut msg: Value) -> Value {
    use std::sync::atomic::Ordering;
    let Some(obj) = msg.as_object_mut() else {
        return msg;
    };
    let upstream = obj.remove(crate::upstream::registry::UPSTREAM_TAG);
    if let (Some(Value::String(upstream)), Some(id)) = (upstream, obj.get("id").cloned()) {
        let ours = format!(
            "mcpgw-{}",
            state.next_client_request.fetch_add(1, Ordering::Relaxed)
        );
        state
            .client_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ours.clone(), (upstream, id));
        obj.insert("id".into(), Value::String(ours));
    }
    msg
}

/// A client's answer to a request an upstream made: back to that upstream with its own id.
/// `None` when the message is not such an answer.
async fn relay_to_upstream(state: &AppState, msg: &Value) -> Option<Response> {
    if jsonrpc::kind(msg) != Kind::Response {
        return None;
    }
    let ours = msg.get("id")?.as_str()?;
    let (upstream, their_id) = state
        .client_requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(ours)?;
    let Some(up) = state.registry.get(&upstream) else {
        return Some(StatusCode::ACCEPTED.into_response());
    };
    let mut answer = msg.clone();
    answer["id"] = their_id;
    if let Err(err) = up.respond(&answer).await {
        tracing::warn!(upstream = %upstream, error = %err, "could not deliver a client's answer upstream");
    }
    Some(StatusCode::ACCEPTED.into_response())
}

/// What a forwarded request produces, in order.
enum Streamed {
    /// A notification the upstream sent while working (progress, logging).
    Notice(Value),
    /// The answer.
    Final(Value),
}

/// Answer with JSON when the upstream just answers, or as an SSE stream when it streams: every
/// notification it sends while working on this request (progress, logging), then the answer.
async fn stream_answer(
    state: Arc<AppState>,
    scope: Scope,
    msg: Value,
    method: String,
    modern: bool,
    session: String,
) -> Response {
    use axum::response::sse::{Event, Sse};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Streamed>();
    let sink_tx = tx.clone();
    let sink_state = state.clone();
    let sink: crate::upstream::connection::MessageSink = Arc::new(move |m: Value| {
        let _ = sink_tx.send(Streamed::Notice(relay_to_client(&sink_state, m)));
    });
    tokio::spawn(async move {
        let mut new_session = None;
        let work = handle(&state, &scope, msg, &mut new_session);
        let answer = crate::upstream::connection::REQUEST_SINK
            .scope(
                sink,
                CURRENT_SESSION.scope(session, INFLIGHT.scope(state.inflight.clone(), work)),
            )
            .await;
        if let Some(mut answer) = answer {
            if modern {
                super::era::decorate(&method, &mut answer);
            } else {
                super::era::undecorate(&mut answer);
            }
            let _ = tx.send(Streamed::Final(answer));
        }
    });
    let first = match rx.recv().await {
        Some(Streamed::Final(answer)) => return Json(answer).into_response(),
        Some(Streamed::Notice(n)) => n,
        None => return StatusCode::ACCEPTED.into_response(),
    };
    let head = futures_util::stream::once(async move { first });
    let rest = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|m| {
            m.map(|item| match item {
                Streamed::Notice(v) | Streamed::Final(v) => v,
            })
        })
    });
    let events = futures_util::StreamExt::map(futures_util::StreamExt::chain(head, rest), |v| {
        Ok::<_, std::convert::Infallible>(Event::default().event("message").data(v.to_string()))
    });
    Sse::new(events).into_response()
}

fn rpc_http(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// JSON, or a one-event SSE stream for a client that accepts only that.
fn respond(headers: &HeaderMap, answer: Value) -> Response {
    let accept = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
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
    msg: Value,
    new_session: &mut Option<String>,
) -> Option<Value> {
    match jsonrpc::kind(&msg) {
        Kind::Request => {}
        Kind::Notification => {
            if jsonrpc::method(&msg) == Some("notifications/cancelled") {
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
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let method = jsonrpc::method(&msg).unwrap_or_default().to_owned();
    let params = msg.get("params").cloned();
    let sep = state.registry.settings().separator.clone();
    let result = match method.as_str() {
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
            return Some(route_completion(state, scope, &sep, id, params).await);
        }
        "tools/list" => Ok(json!({"tools": listing(state, scope, &sep, |c| &c.tools, "name")})),
        "prompts/list" => {
            Ok(json!({"prompts": listing(state, scope, &sep, |c| &c.prompts, "name")}))
        }
        "resources/list" => {
            Ok(json!({"resources": listing(state, scope, &sep, |c| &c.resources, "")}))
        }
        "resources/templates/list" => Ok(
            json!({"resourceTemplates": listing(state, scope, &sep, |c| &c.resource_templates, "")}),
        ),
        "tools/call" | "prompts/get" => {
            return Some(route_named(state, scope, &sep, id, &method, params).await);
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            return Some(route_uri(state, scope, id, &method, params).await);
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

fn call_error(id: Value, err: &CallError) -> Value {
    let c = match err {
        CallError::Failed {
            error: crate::upstream::UpstreamError::Timeout { .. },
            ..
        } => code::UPSTREAM_TIMEOUT,
        _ => code::UPSTREAM_UNAVAILABLE,
    };
    jsonrpc::error(id, c, err.to_string())
}

/// Restore the downstream id on an upstream answer.
fn with_id(mut answer: Value, id: Value) -> Value {
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("id".into(), id);
    }
    answer
}

async fn route_named(
    state: &AppState,
    scope: &Scope,
    sep: &str,
    id: Value,
    method: &str,
    params: Option<Value>,
) -> Value {
    let Some(mut params) = params.and_then(|p| match p {
        Value::Object(m) => Some(m),
        _ => None,
    }) else {
        return jsonrpc::error(
            id,
            code::INVALID_PARAMS,
            format!("{method} needs params with a name"),
        );
    };
    let Some(name) = params
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return jsonrpc::error(
            id,
            code::INVALID_PARAMS,
            format!("{method} needs params.name"),
        );
    };
    let (up, original) = match resolve_name(state, scope, sep, &name) {
        Ok(found) => found,
        Err(message) => return jsonrpc::error(id, code::INVALID_PARAMS, message),
    };
    params.insert("name".into(), Value::String(original));
    forward(&up, id, method, Value::Object(params)).await
}

/// The upstream a (possibly prefixed) tool or prompt name belongs to, and its own name there.
fn resolve_name(
    state: &AppState,
    scope: &Scope,
    sep: &str,
    name: &str,
) -> Result<(Arc<Upstream>, String), String> {
    let (upstream, original) = match scope {
        Scope::One(u) => (u.clone(), name.to_owned()),
        Scope::All => name
            .split_once(sep)
            .map(|(u, rest)| (u.to_owned(), rest.to_owned()))
            .ok_or_else(|| format!("unknown name '{name}': expected <upstream>{sep}<name>"))?,
    };
    let up = state
        .registry
        .get(&upstream)
        .ok_or_else(|| format!("unknown name '{name}': no upstream named '{upstream}'"))?;
    Ok((up, original))
}

async fn route_completion(
    state: &AppState,
    scope: &Scope,
    sep: &str,
    id: Value,
    params: Option<Value>,
) -> Value {
    let mut params = params.unwrap_or_default();
    match params.pointer("/ref/type").and_then(Value::as_str) {
        Some("ref/prompt") => {
            let name = params
                .pointer("/ref/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let (up, original) = match resolve_name(state, scope, sep, &name) {
                Ok(found) => found,
                Err(message) => return jsonrpc::error(id, code::INVALID_PARAMS, message),
            };
            params["ref"]["name"] = Value::String(original);
            forward(&up, id, "completion/complete", params).await
        }
        Some("ref/resource") => {
            let uri = params
                .pointer("/ref/uri")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let owner = in_scope(state, scope).into_iter().find(|u| {
                let c = u.catalog();
                c.resources
                    .iter()
                    .chain(c.resource_templates.iter())
                    .any(|r| {
                        r.get("uri")
                            .or_else(|| r.get("uriTemplate"))
                            .and_then(Value::as_str)
                            == Some(&uri)
                    })
            });
            match owner {
                Some(up) => forward(&up, id, "completion/complete", params).await,
                None => jsonrpc::error(
                    id,
                    code::INVALID_PARAMS,
                    format!("no online upstream offers '{uri}'"),
                ),
            }
        }
        _ => jsonrpc::error(
            id,
            code::INVALID_PARAMS,
            "completion/complete needs params.ref of type ref/prompt or ref/resource",
        ),
    }
}

async fn route_uri(
    state: &AppState,
    scope: &Scope,
    id: Value,
    method: &str,
    params: Option<Value>,
) -> Value {
    let uri = params
        .as_ref()
        .and_then(|p| p.get("uri"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let candidates = in_scope(state, scope);
    let owner = candidates
        .iter()
        .find(|u| {
            u.catalog()
                .resources
                .iter()
                .any(|r| r.get("uri").and_then(Value::as_str) == Some(&uri))
        })
        .or_else(|| {
            // A URI made from a template: match the template's literal prefix.
            candidates.iter().find(|u| {
                u.catalog().resource_templates.iter().any(|t| {
                    t.get("uriTemplate")
                        .and_then(Value::as_str)
                        .and_then(|tpl| tpl.split('{').next())
                        .is_some_and(|prefix| !prefix.is_empty() && uri.starts_with(prefix))
                })
            })
        })
        .or_else(|| {
            if candidates.len() == 1 {
                candidates.first()
            } else {
                None
            }
        })
        .cloned();
    match owner {
        Some(up) => {
            forward(
                &up,
                id,
                method,
                params.unwrap_or_else(|| Value::Object(Map::new())),
            )
            .await
        }
        None => jsonrpc::error(
            id,
            code::INVALID_PARAMS,
            format!("no online upstream offers resource '{uri}'"),
        ),
    }
}

/// A client cancels a request: tell the upstream working on it, in the upstream's own id.
async fn cancel_upstream(state: &AppState, msg: &Value) {
    let Some(request_id) = msg.pointer("/params/requestId") else {
        return;
    };
    let Ok(session) = CURRENT_SESSION.try_with(Clone::clone) else {
        return;
    };
    let found = state
        .inflight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(session, request_id.to_string()))
        .cloned();
    let Some((upstream, upstream_id)) = found else {
        return;
    };
    let Some(up) = state.registry.get(&upstream) else {
        return;
    };
    let mut params = serde_json::json!({"requestId": upstream_id});
    if let Some(reason) = msg.pointer("/params/reason") {
        params["reason"] = reason.clone();
    }
    if let Err(err) = up.notify("notifications/cancelled", params).await {
        tracing::debug!(%upstream, error = %err, "could not forward a cancellation");
    }
}

async fn forward(up: &Arc<Upstream>, id: Value, method: &str, params: Value) -> Value {
    let started = std::time::Instant::now();
    let upstream = up.name();
    // Remember (session, client id) -> (upstream, upstream id) while the request is in flight.
    let key = CURRENT_SESSION
        .try_with(Clone::clone)
        .ok()
        .map(|session| (session, id.to_string()));
    let outcome = match (&key, INFLIGHT.try_with(Clone::clone).ok()) {
        (Some(key), Some(inflight)) => {
            let (hook_key, name, table) = (key.clone(), upstream.clone(), inflight.clone());
            let hook: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |upstream_id| {
                table
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(hook_key.clone(), (name.clone(), upstream_id));
            });
            let result = crate::upstream::connection::UPSTREAM_ID_HOOK
                .scope(hook, up.request(method, Some(params)))
                .await;
            inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
            result
        }
        _ => up.request(method, Some(params)).await,
    };
    match outcome {
        Ok(answer) => {
            // Per request, so debug: with RUST_LOG=debug every forwarded call is one line that
            // carries the downstream session (from the span) and the upstream.
            tracing::debug!(%upstream, method, elapsed_us = started.elapsed().as_micros() as u64, "forwarded");
            with_id(answer, id)
        }
        Err(err) => {
            tracing::warn!(%upstream, method, error = %err, "forwarding failed");
            call_error(id, &err)
        }
    }
}

/// Answer a message or batch that arrived on a connection-bound transport (SSE, WebSocket), the
/// way `/mcp` does; `None` when nothing needs an answer.
pub(super) async fn answer_on_connection(
    state: &AppState,
    scope: &Scope,
    msg: Value,
) -> Option<Value> {
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
    let modern = super::era::is_modern(&HeaderMap::new(), &msg);
    if modern
        && jsonrpc::kind(&msg) == Kind::Request
        && let Err((_, body)) = super::era::check(None, &msg)
    {
        return Some(body);
    }
    let method = jsonrpc::method(&msg).unwrap_or_default().to_owned();
    let mut new_session = None;
    let mut answer = handle(state, scope, msg, &mut new_session).await;
    if let Some(a) = answer.as_mut() {
        if modern {
            super::era::decorate(&method, a);
        } else {
            super::era::undecorate(a);
        }
    }
    // On SSE and WebSocket the connection is the session; an `Mcp-Session-Id` minted by
    // `initialize` would never be used or deleted, so end it at once rather than leak it.
    if let Some(id) = new_session {
        state.sessions.close(&id);
    }
    answer
}
