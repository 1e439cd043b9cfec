//! A small, fast MCP upstream for tests and benchmarks: Streamable HTTP at `/mcp` (session era,
//! plus stateless 2026-07-28 requests), legacy HTTP+SSE at `/sse` + `/message`, optional TLS
//! with required client certificates, and the tools `echo`, `sleep`, `whoami`, and per session
//! `client` (its `initialize` params), `remember` and `recall` (a note kept in the session).
//!
//! It is an example (built by `cargo test`) rather than a second binary of the package:
//! it is test equipment, not part of what mcpgw ships.
//!
//! ```text
//! upstream [--listen 127.0.0.1:0] [--tls-cert F --tls-key F [--client-ca F]] [--name N]
//! upstream --stdio [--name N]
//! ```
//! With `--stdio` it serves the same on stdin/stdout (`stdio.rs`). Otherwise it prints
//! `READY <url-base>` once listening. `GET /stats` returns request counters and the
//! number of accepted connections. A session's `GET /mcp` stream carries
//! `notifications/resources/updated` for the URIs it subscribed to, sent when a test posts
//! `/touch?uri=U`, and (with `--list-changed`) `notifications/tools/list_changed` when it
//! posts `/tools-changed`; its events have ids, and a `GET` with `Last-Event-ID` gets those it
//! missed first. `POST /drop-streams` ends every `GET` stream.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use clap::Parser;
use futures_util::stream::Stream;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

mod conformance;
mod stdio;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Require client certificates issued by this CA.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    #[arg(long, default_value = "rust-upstream")]
    name: String,
    /// Speak the session era only: refuse the 2026-07-28 `server/discover` probe (HTTP 400,
    /// as a session-era server without a session does).
    #[arg(long)]
    session_only: bool,
    /// Announce `tools.listChanged`; `POST /tools-changed` then adds the tool `extra` and says
    /// so on every session's `GET` stream.
    #[arg(long)]
    list_changed: bool,
    /// Answer every `GET /mcp` with 404, as servers that route only `POST` do.
    #[arg(long)]
    get_404: bool,
    /// Announce tasks: a `tools/call` with `params.task` is answered with a task (done at
    /// once), which `tasks/get`, `tasks/result` and `tasks/list` then report, per session.
    #[arg(long)]
    tasks: bool,
    /// Refuse a request naming an unknown session with 400 "Bad Request: No valid session ID
    /// provided", as the official TypeScript SDK's server does (the spec says 404).
    #[arg(long)]
    unknown_session_400: bool,
    /// Take this many milliseconds over each `resources/unsubscribe`, applying it at the end
    /// (a subscribe sent meanwhile is applied first).
    #[arg(long, default_value_t = 0)]
    slow_unsubscribe_ms: u64,
    /// Take this many milliseconds over each `resources/subscribe`, applying it at the start
    /// (the subscription holds, and updates go out, before the answer).
    #[arg(long, default_value_t = 0)]
    slow_subscribe_ms: u64,
    /// Also announce an `experimental` capability and an extension, neither of which it
    /// serves (what a gateway must not pass on).
    #[arg(long)]
    uncarried: bool,
    /// Serve on stdin/stdout (newline-delimited JSON-RPC) instead of listening; prints no
    /// ready line (stdout carries messages only).
    #[arg(long)]
    stdio: bool,
    /// Offer one more tool, `NAME|DESCRIPTION` (repeatable): names and descriptions chosen by
    /// the test (hostile markup for the console's test, hence a separator markup lacks).
    #[arg(long = "tool", value_name = "NAME|DESCRIPTION")]
    tools: Vec<String>,
}

#[derive(Default)]
struct Stats {
    posts: AtomicU64,
    initializes: AtomicU64,
    calls: AtomicU64,
    /// TCP connections accepted (benchmarks count TLS handshakes with it).
    accepts: AtomicU64,
    /// `GET /mcp` requests.
    gets: AtomicU64,
    /// `sleep` calls that slept their whole time (a cancelled one does not).
    slept: AtomicU64,
    /// `ping` and `server/discover` requests: a gateway's health checks of a live connection
    /// (one or the other by era), and its first contact.
    probes: AtomicU64,
    /// `probes` on `POST /mcp?QUERY`, by QUERY: a test that registers the fixture under several
    /// URLs (`/mcp?u=1`, `/mcp?u=2`, ...) counts each registration's checks apart.
    probes_by_query: Mutex<HashMap<String, u64>>,
}

struct AppState {
    name: String,
    session_only: bool,
    list_changed: bool,
    get_404: bool,
    uncarried: bool,
    unknown_session_400: bool,
    tasks: bool,
    /// Each session's tasks: (task id, result), in the order they started.
    task_results: Mutex<HashMap<String, Vec<(String, Value)>>>,
    slow_unsubscribe_ms: u64,
    slow_subscribe_ms: u64,
    /// Whether `POST /tools-changed` added the tool `extra`.
    extra_tool: std::sync::atomic::AtomicBool,
    /// `--tool` entries, listed after the built-in tools.
    more_tools: Vec<Value>,
    sessions: Mutex<HashSet<String>>,
    sse: Mutex<HashMap<String, mpsc::Sender<Value>>>,
    stats: Stats,
    next: AtomicU64,
    /// `requestId`s of the `notifications/cancelled` received.
    cancelled: Mutex<Vec<Value>>,
    /// (request id, ms) of every `sleep` call, to tell which request a cancellation named.
    sleeps: Mutex<Vec<(Value, u64)>>,
    /// The same with the session each came in (ids are per session): (session, id, ms).
    sleeps_in: Mutex<Vec<(Value, Value, u64)>>,
    /// (session, request id) of every `notifications/cancelled`.
    cancelled_in: Mutex<Vec<(Value, Value)>>,
    /// Requests this server sent to a client, waiting for the client's POSTed answer.
    asks: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// The open `GET /mcp` stream of each session.
    standing: Mutex<HashMap<String, mpsc::UnboundedSender<(u64, Value)>>>,
    /// What each session's `GET` stream was sent, by event id, for a resume (`Last-Event-ID`).
    history: Mutex<HashMap<String, Vec<(u64, Value)>>>,
    /// Sessions subscribed to each resource URI.
    subscribed: Mutex<HashMap<String, HashSet<String>>>,
    /// The `initialize` params of each session (the tool `client` shows them).
    hellos: Mutex<HashMap<String, Value>>,
    /// What the tool `remember` kept, per session (`recall` reads it back).
    notes: Mutex<HashMap<String, String>>,
    /// Sessions ended by `DELETE /mcp`.
    deleted: AtomicU64,
}

/// Subject CN of the client certificate on this connection.
#[derive(Clone)]
struct PeerCn(Option<String>);

fn tools() -> Value {
    let mut all = base_tools();
    all.as_array_mut().unwrap().extend(conformance::tools());
    all
}

fn base_tools() -> Value {
    json!([
        {"name": "echo", "description": "Return the text unchanged.",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"name": "sleep", "description": "Wait ms milliseconds, then answer.",
         "inputSchema": {"type": "object", "properties": {"ms": {"type": "integer"}}, "required": ["ms"]}},
        {"name": "whoami", "description": "Subject CN of the TLS client certificate.",
         "inputSchema": {"type": "object", "properties": {}}},
        {"name": "client", "description": "The initialize params of this session.",
         "inputSchema": {"type": "object", "properties": {}}},
        {"name": "remember", "description": "Keep a note in this session.",
         "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}},
        {"name": "recall", "description": "The note this session kept.",
         "inputSchema": {"type": "object", "properties": {}}}
    ])
}

fn capabilities() -> Value {
    json!({"tools": {}, "resources": {"subscribe": true}, "prompts": {}, "logging": {}, "completions": {}})
}

fn text_result(text: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": text.into()}], "isError": false})
}

async fn answer(
    state: &AppState,
    peer: &PeerCn,
    session: Option<&str>,
    msg: &Value,
) -> Option<Value> {
    // Over 100 lines on purpose: one match arm per method the fixture serves, each a few lines.
    let id = msg.get("id")?.clone();
    let method = msg.get("method")?.as_str()?;
    let params = msg.get("params").cloned().unwrap_or(json!({}));
    let modern = params
        .pointer("/_meta/io.modelcontextprotocol~1protocolVersion")
        .is_some();
    if state.tasks
        && let Some(result) = tasks(state, session.unwrap_or_default(), method, &params)
    {
        return Some(match result {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err(message) => {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": message}})
            }
        });
    }
    let mut result = match method {
        "initialize" => {
            state.stats.initializes.fetch_add(1, Ordering::Relaxed);
            let mut caps = capabilities();
            if state.tasks {
                caps["tasks"] =
                    json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}});
            }
            if state.list_changed {
                caps["tools"]["listChanged"] = json!(true);
            }
            if state.uncarried {
                caps["experimental"] = json!({"dev.example/x": {}});
                caps["extensions"] = json!({"dev.example/y": {}});
            }
            json!({"protocolVersion": params.get("protocolVersion").and_then(Value::as_str).unwrap_or("2025-11-25"),
                   "capabilities": caps, "serverInfo": {"name": state.name, "version": "1"}})
        }
        "server/discover" => {
            state.stats.probes.fetch_add(1, Ordering::Relaxed);
            // On 2026-07-28, `subscribe` means "served by subscriptions/listen", which this
            // fixture does not serve.
            let mut caps = capabilities();
            caps["resources"] = json!({});
            json!({"supportedVersions": ["2025-11-25", "2026-07-28"],
                   "capabilities": caps, "serverInfo": {"name": state.name, "version": "1"}})
        }
        "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe" => json!({}),
        "completion/complete" => json!({"completion": {"values": [], "hasMore": false}}),
        "resources/list" => json!({"resources": conformance::resources()}),
        "resources/templates/list" => json!({"resourceTemplates": conformance::templates()}),
        "resources/read" => match conformance::read(
            params
                .get("uri")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ) {
            Some(r) => r,
            None => {
                return Some(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32002, "message": "resource not found"}}),
                );
            }
        },
        "prompts/list" => json!({"prompts": conformance::prompts()}),
        "prompts/get" => match conformance::prompt(
            params
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            &params.get("arguments").cloned().unwrap_or(json!({})),
        ) {
            Some(r) => r,
            None => {
                return Some(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "unknown prompt"}}),
                );
            }
        },
        "ping" => {
            state.stats.probes.fetch_add(1, Ordering::Relaxed);
            json!({})
        }
        "tools/list" => {
            let mut all = tools();
            all.as_array_mut()
                .unwrap()
                .extend(state.more_tools.iter().cloned());
            if state.extra_tool.load(Ordering::Relaxed) {
                all.as_array_mut()
                    .unwrap()
                    .push(json!({"name": "extra", "description": "Added later.",
                    "inputSchema": {"type": "object", "properties": {}}}));
            }
            json!({"tools": all})
        }
        "tools/call" => {
            state.stats.calls.fetch_add(1, Ordering::Relaxed);
            let args = params.get("arguments").cloned().unwrap_or(json!({}));
            match params.get("name").and_then(Value::as_str) {
                Some("echo") => {
                    text_result(args.get("text").and_then(Value::as_str).unwrap_or_default())
                }
                Some("sleep") => {
                    let ms = args
                        .get("ms")
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                        .min(60_000);
                    state.sleeps.lock().unwrap().push((id.clone(), ms));
                    state
                        .sleeps_in
                        .lock()
                        .unwrap()
                        .push((json!(session), id.clone(), ms));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    state.stats.slept.fetch_add(1, Ordering::Relaxed);
                    text_result(format!("slept {ms} ms"))
                }
                Some("whoami") => text_result(
                    peer.0
                        .clone()
                        .unwrap_or_else(|| "<no client certificate>".into()),
                ),
                // Per-session state, as servers keep it: what the session's client said at
                // `initialize`, and a note it left.
                Some("client") => text_result(
                    session
                        .and_then(|s| state.hellos.lock().unwrap().get(s).cloned())
                        .map_or_else(|| "<no session>".into(), |v| v.to_string()),
                ),
                Some("remember") => {
                    let text = args.get("text").and_then(Value::as_str).unwrap_or_default();
                    if let Some(s) = session {
                        state.notes.lock().unwrap().insert(s.into(), text.into());
                    }
                    text_result("kept")
                }
                Some("recall") => text_result(
                    session
                        .and_then(|s| state.notes.lock().unwrap().get(s).cloned())
                        .unwrap_or_else(|| "<nothing>".into()),
                ),
                Some(name)
                    if let conformance::Action::Result(r) = conformance::call(
                        name,
                        &args,
                        &params.get("_meta").cloned().unwrap_or_default(),
                    ) =>
                {
                    r
                }
                other => {
                    return Some(
                        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": format!("unknown tool {other:?}")}}),
                    );
                }
            }
        }
        _ => {
            return Some(
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("method not found: {method}")}}),
            );
        }
    };
    // As the official SDK does: every 2026-07-28 result but an empty one says it is complete.
    if modern
        && let Some(obj) = result.as_object_mut()
        && !obj.is_empty()
    {
        obj.insert("resultType".into(), json!("complete"));
    }
    Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

async fn mcp_post(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<PeerCn>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.stats.posts.fetch_add(1, Ordering::Relaxed);
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}}))).into_response();
    };
    // The methods `answer` counts in `probes`.
    if let Some(query) = query
        && matches!(
            msg.get("method").and_then(Value::as_str),
            Some("ping" | "server/discover")
        )
    {
        *state
            .stats
            .probes_by_query
            .lock()
            .unwrap()
            .entry(query)
            .or_default() += 1;
    }
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(sid) = &session
        && !state.sessions.lock().unwrap().contains(sid)
    {
        if state.unknown_session_400 {
            let refusal = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000,
                "message": "Bad Request: No valid session ID provided"}});
            return (StatusCode::BAD_REQUEST, Json(refusal)).into_response();
        }
        return (StatusCode::NOT_FOUND, "unknown session").into_response();
    }
    if take_cancel_or_answer(&state, session.as_deref(), &msg) {
        return StatusCode::ACCEPTED.into_response();
    }
    if state.session_only && msg.get("method").and_then(Value::as_str) == Some("server/discover") {
        return (StatusCode::BAD_REQUEST, "missing Mcp-Session-Id").into_response();
    }
    if let (Some(method @ ("resources/subscribe" | "resources/unsubscribe")), Some(sid)) =
        (msg.get("method").and_then(Value::as_str), &session)
    {
        let uri = msg.pointer("/params/uri").and_then(Value::as_str);
        if method == "resources/unsubscribe" && state.slow_unsubscribe_ms > 0 {
            tokio::time::sleep(Duration::from_millis(state.slow_unsubscribe_ms)).await;
        }
        {
            let mut subscribed = state.subscribed.lock().unwrap();
            let sessions = subscribed
                .entry(uri.unwrap_or_default().to_owned())
                .or_default();
            if method == "resources/subscribe" {
                sessions.insert(sid.clone());
            } else {
                sessions.remove(sid);
            }
        }
        if method == "resources/subscribe" && state.slow_subscribe_ms > 0 {
            tokio::time::sleep(Duration::from_millis(state.slow_subscribe_ms)).await;
        }
    }
    if msg.get("method").and_then(Value::as_str) == Some("tools/call") {
        let name = msg
            .pointer("/params/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(response) = fault(name) {
            return response;
        }
    }
    if let Some(action) = talking_call(&msg) {
        return stream_call(state, msg.get("id").cloned().unwrap_or_default(), action);
    }
    let Some(reply) = answer(&state, &peer, session.as_deref(), &msg).await else {
        return StatusCode::ACCEPTED.into_response();
    };
    let mut response = Json(reply).into_response();
    if msg.get("method").and_then(Value::as_str) == Some("initialize") {
        let sid = format!("s{}", state.next.fetch_add(1, Ordering::Relaxed));
        state.sessions.lock().unwrap().insert(sid.clone());
        let hello = msg.get("params").cloned().unwrap_or_default();
        state.hellos.lock().unwrap().insert(sid.clone(), hello);
        response
            .headers_mut()
            .insert("mcp-session-id", sid.parse().unwrap());
    }
    response
}

/// Take a message that is not a request: a `notifications/cancelled` is recorded, a client's
/// answer to a request this server sent it (sampling, elicitation) goes to the call waiting for
/// it. Whether `msg` was one of them.
fn take_cancel_or_answer(state: &AppState, session: Option<&str>, msg: &Value) -> bool {
    if msg.get("method").and_then(Value::as_str) == Some("notifications/cancelled") {
        let id = msg
            .pointer("/params/requestId")
            .cloned()
            .unwrap_or_default();
        state.cancelled.lock().unwrap().push(id.clone());
        state
            .cancelled_in
            .lock()
            .unwrap()
            .push((json!(session), id));
        return true;
    }
    if msg.get("method").is_none()
        && let Some(id) = msg.get("id").map(Value::to_string)
    {
        if let Some(tx) = state.asks.lock().unwrap().remove(&id) {
            let _ = tx.send(msg.clone());
        }
        return true;
    }
    false
}

/// The action of a `tools/call` that sends notifications or a request of its own before it
/// answers (so its answer is a stream); `None` for any other message.
fn talking_call(msg: &Value) -> Option<conformance::Action> {
    if msg.get("method").and_then(Value::as_str) != Some("tools/call") {
        return None;
    }
    let params = msg.get("params").cloned().unwrap_or_default();
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let args = params.get("arguments").cloned().unwrap_or_default();
    let meta = params.get("_meta").cloned().unwrap_or_default();
    let action = conformance::call(name, &args, &meta);
    matches!(
        action,
        conformance::Action::Notify(..) | conformance::Action::Ask(..)
    )
    .then_some(action)
}

/// `--tasks`: a task-augmented `echo` and the `tasks/*` methods; `None` for anything else.
fn tasks(
    state: &AppState,
    session: &str,
    method: &str,
    params: &Value,
) -> Option<Result<Value, String>> {
    let mut all = state.task_results.lock().unwrap();
    let mine = all.entry(session.to_owned()).or_default();
    let status = |task_id: &str| {
        json!({"taskId": task_id, "status": "completed",
        "createdAt": "2026-12-07T00:00:00Z", "lastUpdatedAt": "2026-12-07T00:00:00Z", "ttl": 60000})
    };
    let find = |mine: &Vec<(String, Value)>| {
        let task_id = params
            .get("taskId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        mine.iter()
            .find(|(t, _)| t == task_id)
            .cloned()
            .ok_or_else(|| format!("no task {task_id} in this session"))
    };
    Some(match method {
        "tools/call" if params.get("task").is_some() => {
            let text = params
                .pointer("/arguments/text")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let task_id = format!("task-{}", state.next.fetch_add(1, Ordering::Relaxed));
            mine.push((task_id.clone(), text_result(text)));
            Ok(json!({"task": status(&task_id)}))
        }
        "tasks/get" => find(mine).map(|(t, _)| status(&t)),
        "tasks/result" => find(mine).map(|(_, result)| result),
        "tasks/list" => {
            Ok(json!({"tasks": mine.iter().map(|(t, _)| status(t)).collect::<Vec<_>>()}))
        }
        _ => return None,
    })
}

/// Misbehaviour on demand, for the gateway's fault tests.
fn fault(tool: &str) -> Option<Response> {
    let body = |ct: &'static str, body: axum::body::Body| {
        Response::builder()
            .header("content-type", ct)
            .body(body)
            .unwrap()
    };
    Some(match tool {
        "fault_malformed_json" => {
            body("application/json", "{\"jsonrpc\": \"2.0\", \"id\": ".into())
        }
        "fault_html" => body(
            "text/html",
            "<html><body>502 Bad Gateway</body></html>".into(),
        ),
        "fault_huge_event" => {
            // One SSE event of 20 MiB without an end.
            let chunk = Bytes::from(vec![b'x'; 1024 * 1024]);
            let head = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(b"event: message\ndata: "))
            });
            let rest = futures_util::stream::iter((0..20).map(move |_| Ok(chunk.clone())));
            body(
                "text/event-stream",
                axum::body::Body::from_stream(futures_util::StreamExt::chain(head, rest)),
            )
        }
        "fault_endless" => {
            // Trickles bytes of one event forever.
            let stream = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Some((
                    Ok::<_, std::io::Error>(Bytes::from_static(b"xxxxxxxxxxxxxxxx")),
                    (),
                ))
            });
            let head = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(b"data: "))
            });
            body(
                "text/event-stream",
                axum::body::Body::from_stream(futures_util::StreamExt::chain(head, stream)),
            )
        }
        _ => return None,
    })
}

/// Answer a tools/call as an SSE stream: notifications or a request to the client first.
fn stream_call(state: Arc<AppState>, id: Value, action: conformance::Action) -> Response {
    let mut rx = run_action(state, id, action);
    let events = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|m| {
            m.map(|v| {
                Ok::<_, std::convert::Infallible>(
                    Event::default().event("message").data(v.to_string()),
                )
            })
        })
    });
    Sse::new(events).into_response()
}

/// Run a tools/call that talks before it answers: the notifications or the request to the
/// client, then the answer, in the order they are to be sent (whatever the transport).
fn run_action(
    state: Arc<AppState>,
    id: Value,
    action: conformance::Action,
) -> mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        let result = match action {
            conformance::Action::Notify(notes, result) => {
                for n in notes {
                    let _ = tx.send(n);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                result
            }
            conformance::Action::Ask(method, params, build) => {
                let ask_id = format!("srv-{}", state.next.fetch_add(1, Ordering::Relaxed));
                let (reply_tx, reply_rx) = oneshot::channel();
                state
                    .asks
                    .lock()
                    .unwrap()
                    .insert(json!(ask_id).to_string(), reply_tx);
                let _ = tx.send(
                    json!({"jsonrpc": "2.0", "id": ask_id, "method": method, "params": params}),
                );
                match tokio::time::timeout(Duration::from_secs(30), reply_rx).await {
                    Ok(Ok(reply)) => build(&reply),
                    _ => {
                        json!({"isError": true, "content": [{"type": "text", "text": "the client did not answer"}]})
                    }
                }
            }
            _ => return,
        };
        let _ = tx.send(json!({"jsonrpc": "2.0", "id": id, "result": result}));
    });
    rx
}

/// `GET /mcp`: the session's stream of messages sent outside any request.
async fn mcp_get(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    state.stats.gets.fetch_add(1, Ordering::Relaxed);
    if state.get_404 {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(sid) = headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) else {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    };
    if !state.sessions.lock().unwrap().contains(sid) {
        return (StatusCode::NOT_FOUND, "unknown session").into_response();
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Value)>();
    // A resume gets what was sent after the last event it saw, first.
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(after) = after {
        let history = state.history.lock().unwrap();
        for (id, msg) in history.get(sid).into_iter().flatten() {
            if *id > after {
                let _ = tx.send((*id, msg.clone()));
            }
        }
    }
    state.standing.lock().unwrap().insert(sid.to_owned(), tx);
    let events = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|m| {
            m.map(|(id, v)| {
                Ok::<_, std::convert::Infallible>(
                    Event::default()
                        .event("message")
                        .id(id.to_string())
                        .data(v.to_string()),
                )
            })
        })
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[derive(serde::Deserialize)]
struct Touch {
    uri: String,
}

/// `POST /touch?uri=U` (test control): tell every session subscribed to `U`, on its `GET`
/// stream, that the resource changed. Answers how many streams it went to.
async fn touch(State(state): State<Arc<AppState>>, Query(t): Query<Touch>) -> Json<Value> {
    let sessions: Vec<String> = state
        .subscribed
        .lock()
        .unwrap()
        .get(&t.uri)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": t.uri}});
    let sent = sessions
        .iter()
        .filter(|sid| send_standing(&state, sid, &note))
        .count();
    Json(json!({"subscribed": sessions.len(), "sent": sent}))
}

#[derive(serde::Deserialize)]
struct Log {
    /// The note (`remember`) of the sessions to tell.
    to: String,
    text: String,
}

/// `POST /log?to=NOTE&text=T` (test control): a `notifications/message` on the `GET` stream of
/// every session whose note is NOTE, outside any request.
async fn log_to(State(state): State<Arc<AppState>>, Query(l): Query<Log>) -> Json<Value> {
    let sessions: Vec<String> = state
        .notes
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, note)| **note == l.to)
        .map(|(sid, _)| sid.clone())
        .collect();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
        "params": {"level": "info", "logger": "fixture", "data": l.text}});
    let sent = sessions
        .iter()
        .filter(|sid| send_standing(&state, sid, &note))
        .count();
    Json(json!({"sessions": sessions.len(), "sent": sent}))
}

/// Send `msg` on session `sid`'s `GET` stream, keeping it for a resume: whether a stream was
/// open to take it.
fn send_standing(state: &AppState, sid: &str, msg: &Value) -> bool {
    let id = state.next.fetch_add(1, Ordering::Relaxed);
    let mut history = state.history.lock().unwrap();
    let kept = history.entry(sid.to_owned()).or_default();
    kept.push((id, msg.clone()));
    if kept.len() > 100 {
        kept.remove(0);
    }
    state
        .standing
        .lock()
        .unwrap()
        .get(sid)
        .is_some_and(|tx| tx.send((id, msg.clone())).is_ok())
}

/// `POST /drop-streams` (test control): end every open `GET` stream.
async fn drop_streams(State(state): State<Arc<AppState>>) -> Json<Value> {
    let dropped = std::mem::take(&mut *state.standing.lock().unwrap()).len();
    Json(json!({"dropped": dropped}))
}

/// `POST /tools-changed` (test control): add the tool `extra` and tell every open `GET`
/// stream. Answers how many streams it went to.
async fn tools_changed(State(state): State<Arc<AppState>>) -> Json<Value> {
    state.extra_tool.store(true, Ordering::Relaxed);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
    let sessions: Vec<String> = state.standing.lock().unwrap().keys().cloned().collect();
    let sent = sessions
        .iter()
        .filter(|sid| send_standing(&state, sid, &note))
        .count();
    Json(json!({"sent": sent}))
}

async fn mcp_delete(State(state): State<Arc<AppState>>, headers: HeaderMap) -> StatusCode {
    let sid = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if state.sessions.lock().unwrap().remove(sid) {
        state.deleted.fetch_add(1, Ordering::Relaxed);
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn sse_open(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let sid = format!("e{}", state.next.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = mpsc::channel::<Value>(256);
    state.sse.lock().unwrap().insert(sid.clone(), tx);
    let stream = event_stream(sid, rx);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// The endpoint event, then every queued message.
fn event_stream(
    sid: String,
    mut rx: mpsc::Receiver<Value>,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    let first = futures_util::stream::once(async move {
        Ok(Event::default()
            .event("endpoint")
            .data(format!("/message?session_id={sid}")))
    });
    let rest = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|m| m.map(|v| Ok(Event::default().event("message").data(v.to_string()))))
    });
    futures_util::StreamExt::chain(first, rest)
}

async fn sse_message(
    State(state): State<Arc<AppState>>,
    Extension(peer): Extension<PeerCn>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> StatusCode {
    state.stats.posts.fetch_add(1, Ordering::Relaxed);
    let sid = q.get("session_id").cloned().unwrap_or_default();
    let Some(tx) = state.sse.lock().unwrap().get(&sid).cloned() else {
        return StatusCode::NOT_FOUND;
    };
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if msg.get("method").and_then(Value::as_str) == Some("initialize") {
        let hello = msg.get("params").cloned().unwrap_or_default();
        state.hellos.lock().unwrap().insert(sid.clone(), hello);
    }
    tokio::spawn(async move {
        if let Some(reply) = answer(&state, &peer, Some(&sid), &msg).await {
            let _ = tx.send(reply).await;
        }
    });
    StatusCode::ACCEPTED
}

async fn stats(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "posts": state.stats.posts.load(Ordering::Relaxed),
        "initializes": state.stats.initializes.load(Ordering::Relaxed),
        "sessions": state.sessions.lock().unwrap().len(),
        "deleted": state.deleted.load(Ordering::Relaxed),
        "calls": state.stats.calls.load(Ordering::Relaxed),
        "cancelled": *state.cancelled.lock().unwrap(),
        "sleeps": *state.sleeps.lock().unwrap(),
        "sleeps_in": *state.sleeps_in.lock().unwrap(),
        "cancelled_in": *state.cancelled_in.lock().unwrap(),
        "accepts": state.stats.accepts.load(Ordering::Relaxed),
        "gets": state.stats.gets.load(Ordering::Relaxed),
        "slept": state.stats.slept.load(Ordering::Relaxed),
        "probes": state.stats.probes.load(Ordering::Relaxed),
        "probes_by_query": *state.stats.probes_by_query.lock().unwrap(),
        // Subscriptions held, (URI, session) pairs: read without touching anything.
        "subscribed": state.subscribed.lock().unwrap().values().map(HashSet::len).sum::<usize>(),
    }))
}

fn tls_config(args: &Args) -> Option<Arc<rustls::ServerConfig>> {
    let (cert, key) = (args.tls_cert.as_ref()?, args.tls_key.as_ref()?);
    let chain = mcpgw::tls::pem::certs_from_file(cert).expect("server certificate");
    let key = mcpgw::tls::pem::key_from_file(key).expect("server key");
    let builder = rustls::ServerConfig::builder();
    let builder = match &args.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in mcpgw::tls::pem::certs_from_file(ca).expect("client CA") {
                roots.add(c).expect("client CA certificate");
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(Arc::new(config))
}

fn peer_cn(conn: &rustls::ServerConnection) -> Option<String> {
    let der = conn.peer_certificates()?.first()?;
    let cert = mcpgw::tls::x509::parse("client", der).ok()?;
    mcpgw::tls::x509::common_name(&cert)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let state = Arc::new(AppState {
        name: args.name.clone(),
        session_only: args.session_only,
        list_changed: args.list_changed,
        get_404: args.get_404,
        uncarried: args.uncarried,
        unknown_session_400: args.unknown_session_400,
        tasks: args.tasks,
        task_results: Mutex::default(),
        slow_unsubscribe_ms: args.slow_unsubscribe_ms,
        slow_subscribe_ms: args.slow_subscribe_ms,
        extra_tool: std::sync::atomic::AtomicBool::new(false),
        more_tools: args
            .tools
            .iter()
            .map(|t| {
                let (name, description) = t.split_once('|').unwrap_or((t, ""));
                json!({"name": name, "description": description,
                       "inputSchema": {"type": "object", "properties": {}}})
            })
            .collect(),
        sessions: Mutex::default(),
        sse: Mutex::default(),
        stats: Stats::default(),
        next: AtomicU64::new(1),
        asks: Mutex::default(),
        cancelled: Mutex::default(),
        sleeps: Mutex::default(),
        standing: Mutex::default(),
        history: Mutex::default(),
        subscribed: Mutex::default(),
        hellos: Mutex::default(),
        sleeps_in: Mutex::default(),
        cancelled_in: Mutex::default(),
        notes: Mutex::default(),
        deleted: AtomicU64::new(0),
    });
    if args.stdio {
        stdio::serve(state).await;
        return;
    }
    let app = Router::new()
        .route("/mcp", post(mcp_post).get(mcp_get).delete(mcp_delete))
        .route("/touch", post(touch))
        .route("/log", post(log_to))
        .route("/tools-changed", post(tools_changed))
        .route("/drop-streams", post(drop_streams))
        .route("/sse", get(sse_open))
        .route("/message", post(sse_message))
        .route("/stats", get(stats))
        .with_state(state.clone());
    let tls = tls_config(&args);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    println!(
        "READY {}://{addr}",
        if tls.is_some() { "https" } else { "http" }
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        state.stats.accepts.fetch_add(1, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            match tls {
                None => {
                    let svc = hyper_util::service::TowerToHyperService::new(
                        app.layer(Extension(PeerCn(None))),
                    );
                    let _ = builder
                        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                }
                Some(config) => {
                    let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                    else {
                        return;
                    };
                    let cn = peer_cn(stream.get_ref().1);
                    let svc = hyper_util::service::TowerToHyperService::new(
                        app.layer(Extension(PeerCn(cn))),
                    );
                    let _ = builder
                        .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                }
            }
        });
    }
}
