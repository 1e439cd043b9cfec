//! `subscriptions/listen` (protocol 2026-07-28): the sessionless era's only way to hear of
//! changes. The request's answer is the stream: a `notifications/subscriptions/acknowledged`
//! event naming what the gateway will deliver, then `notifications/{tools,prompts,resources}/
//! list_changed` and `notifications/resources/updated` as they happen, each stamped with the
//! request's id under `_meta["io.modelcontextprotocol/subscriptionId"]`. It ends when the
//! client hangs up (nothing to resume: the client listens again and refetches) or, gracefully,
//! with the request's result when the gateway shuts down.
//!
//! Each open stream is a subscriber like a session of the other transports, under a key of its
//! own ([`SessionKey::Listen`]): resource subscriptions go upstream through the same path as a
//! `resources/subscribe` (one upstream subscription per URI whoever wants it), and are dropped
//! when the stream ends. A URI is acknowledged only when the gateway can deliver its updates:
//! it is offered by an upstream that took the subscription and can send updates outside a
//! request (a 2026-07-28 upstream only if it serves `subscriptions/listen` itself). On SSE and
//! WebSocket the frames go on the connection, and the stream ends with it or with the client's
//! `notifications/cancelled` of the listen request.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::{AppState, Ctx, Scope, handle};
use crate::access::Principal;
use crate::access::quota::SessionSlot;
use crate::http::delivery;
use crate::jsonrpc::{self, code};
use crate::session::SessionKey;

/// The `_meta` key every frame of a listen stream carries.
pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
/// Events queued for a client that does not read; past this the stream is ended (the client
/// listens again and refetches, as after any drop).
const BACKLOG: usize = 256;

/// What one stream asked for and was granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Filter {
    tools: bool,
    prompts: bool,
    resources: bool,
    uris: Vec<String>,
}

impl Filter {
    /// The `notifications` filter of a request: `Err` says what is wrong with it.
    fn parse(params: Option<&Value>) -> Result<Self, String> {
        let Some(wanted) = params.and_then(|p| p.get("notifications")) else {
            return Err("subscriptions/listen needs params.notifications (an object)".into());
        };
        let Some(wanted) = wanted.as_object() else {
            return Err("params.notifications must be an object".into());
        };
        let flag = |name: &str| match wanted.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(format!("params.notifications.{name} must be true or false")),
        };
        let uris = match wanted.get("resourceSubscriptions") {
            None | Some(Value::Null) => Some(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|u| u.as_str().map(str::to_owned))
                .collect(),
            Some(_) => None,
        }
        .ok_or("params.notifications.resourceSubscriptions must be a list of URIs")?;
        Ok(Self {
            tools: flag("toolsListChanged")?,
            prompts: flag("promptsListChanged")?,
            resources: flag("resourcesListChanged")?,
            uris,
        })
    }

    /// The filter as the acknowledgement names it: only what is granted.
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        for (name, on) in [
            ("toolsListChanged", self.tools),
            ("promptsListChanged", self.prompts),
            ("resourcesListChanged", self.resources),
        ] {
            if on {
                out.insert(name.into(), Value::Bool(true));
            }
        }
        if !self.uris.is_empty() {
            out.insert("resourceSubscriptions".into(), json!(self.uris));
        }
        Value::Object(out)
    }

    fn wants(&self, msg: &Value) -> bool {
        match jsonrpc::method(msg).unwrap_or_default() {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            "notifications/resources/updated" => msg
                .pointer("/params/uri")
                .and_then(Value::as_str)
                .is_some_and(|uri| self.uris.iter().any(|u| u == uri)),
            _ => false,
        }
    }
}

/// An open stream's entry.
#[derive(Debug)]
struct Listener {
    filter: Filter,
    /// The listen request's id, stamped on every frame.
    id: Value,
    out: Out,
    /// Until the acknowledgement is out, what comes is kept here, to follow it.
    held: Option<Vec<Value>>,
    /// Its place in its principal's session quota, given back when it leaves the table.
    _slot: SessionSlot,
    /// The principal it serves.
    owner: Arc<str>,
}

/// Where a stream's frames go.
#[derive(Debug, Clone)]
enum Out {
    /// The response of a POST: its own queue.
    Stream(mpsc::Sender<Arc<str>>),
    /// A connection-bound session (SSE, WebSocket), by its key: the connection's own queue.
    Connection(SessionKey),
}

/// The open listen streams, by key.
#[derive(Debug, Default)]
pub struct Listeners {
    open: std::sync::Mutex<HashMap<u64, Listener>>,
    next: AtomicU64,
}

impl Listeners {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Listener>> {
        // Single inserts and removes: a poisoned lock still holds a whole map.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many streams are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open streams by principal (the console's sessions page).
    pub fn by_owner(&self) -> std::collections::BTreeMap<String, usize> {
        crate::http::sessions::tally(self.lock().values().map(|listener| &*listener.owner))
    }

    /// Whether the stream `key` names is open.
    pub fn contains(&self, key: u64) -> bool {
        self.lock().contains_key(&key)
    }

    /// Offer a notification to the stream `key` names, if its filter takes it: `false` when
    /// the stream is gone.
    pub fn notify(&self, state: &AppState, key: u64, msg: &Value) -> bool {
        let mut open = self.lock();
        let Some(listener) = open.get_mut(&key) else {
            return false;
        };
        if !listener.filter.wants(msg) {
            return true;
        }
        let frame = stamped(msg, &listener.id);
        if let Some(held) = listener.held.as_mut() {
            hold(held, frame, key);
            return true;
        }
        let out = listener.out.clone();
        drop(open);
        deliver(state, &out, &frame, key) || self.end(key)
    }

    /// Drop the stream `key` from the table (a POST's queue closes once drained): `false`.
    fn end(&self, key: u64) -> bool {
        self.lock().remove(&key);
        false
    }

    /// Offer a notification to every open stream ([`Self::notify`]: list changes).
    pub fn broadcast(&self, state: &AppState, msg: &Value) {
        let keys: Vec<u64> = self.lock().keys().copied().collect();
        for key in keys {
            self.notify(state, key, msg);
        }
    }

    /// Drop the streams of connections that `open` says are gone.
    pub fn retain_connected(&self, open: impl Fn(&SessionKey) -> bool) {
        self.lock().retain(|_, l| match &l.out {
            Out::Stream(_) => true,
            Out::Connection(conn) => open(conn),
        });
    }

    /// The client of connection `conn` cancelled its listen request `id`: its stream ends.
    /// Whether there was one.
    pub fn cancel(&self, conn: &SessionKey, id: &Value) -> bool {
        let mut open = self.lock();
        let before = open.len();
        open.retain(|_, l| !matches!(&l.out, Out::Connection(c) if c == conn) || l.id != *id);
        before != open.len()
    }
}

/// Keep a frame until the acknowledgement is out (at most [`BACKLOG`]; past that, the stream
/// would be ended for not reading anyway, so the frame is dropped and said so).
fn hold(held: &mut Vec<Value>, frame: Value, key: u64) {
    if held.len() < BACKLOG {
        held.push(frame);
    } else {
        tracing::warn!(subscription = %SessionKey::Listen(key), "too much came before the listen stream was acknowledged; a frame was dropped");
    }
}

/// Hand a frame to a stream's queue: whether it was taken. A full queue ends the stream (the
/// caller drops it from the table, so a POST's stream sees its queue close once drained):
/// better than a stream that silently misses changes.
fn deliver(state: &AppState, out: &Out, frame: &Value, key: u64) -> bool {
    match out {
        Out::Connection(conn) => delivery::notify_session(state, conn, frame),
        Out::Stream(queue) => match queue.try_send(Arc::from(frame.to_string())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(subscription = %SessionKey::Listen(key), "the client is not reading its listen stream; ending it");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        },
    }
}

/// `msg` with `_meta[subscriptionId]` set to `id`.
fn stamped(msg: &Value, id: &Value) -> Value {
    let mut msg = msg.clone();
    if let Some(obj) = msg.as_object_mut() {
        let params = obj
            .entry("params")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(params) = params.as_object_mut() {
            let meta = params
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert(SUBSCRIPTION_ID.into(), id.clone());
            }
        }
    }
    msg
}

/// The table entry of a stream, removed (and its upstream subscriptions released) when the
/// stream ends, however it ends, unless disarmed (a connection-bound stream, which ends with
/// its connection or its cancellation).
struct Entry<S: std::ops::Deref<Target = AppState>> {
    state: S,
    key: u64,
    armed: bool,
}

impl<S: std::ops::Deref<Target = AppState>> Drop for Entry<S> {
    fn drop(&mut self) {
        if self.armed {
            self.state.listens.lock().remove(&self.key);
            delivery::sessions_ended(&self.state);
        }
    }
}

impl Listeners {
    /// A new stream in the table, with the list changes `asked` names and no URI yet: in the
    /// table before its URIs are subscribed upstream, so that a clean-up meanwhile does not
    /// take their subscriber for gone. What comes for it is held until [`Self::grant`].
    fn reserve(
        &self,
        id: Value,
        out: Out,
        asked: &Filter,
        slot: SessionSlot,
        owner: Arc<str>,
    ) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let listener = Listener {
            filter: Filter {
                uris: Vec::new(),
                ..asked.clone()
            },
            id,
            out,
            held: Some(Vec::new()),
            _slot: slot,
            owner,
        };
        self.lock().insert(key, listener);
        key
    }

    /// The URI the upstream just took: its updates are kept from now on.
    fn allow(&self, key: u64, uri: &str) {
        if let Some(listener) = self.lock().get_mut(&key) {
            listener.filter.uris.push(uri.to_owned());
        }
    }

    /// The acknowledgement is out (or queued first): what was held meanwhile follows it, and
    /// from now on the stream `key` gets what `granted` names as it comes.
    fn grant(&self, state: &AppState, key: u64, granted: Filter) {
        let mut open = self.lock();
        let Some(listener) = open.get_mut(&key) else {
            return;
        };
        listener.filter = granted;
        let held = listener.held.take().unwrap_or_default();
        let out = listener.out.clone();
        // Under the lock, so that nothing that comes next overtakes them (a connection's
        // queue is locked after this table, as in `retain_connected`).
        for frame in held {
            if !deliver(state, &out, &frame, key) {
                open.remove(&key);
                return;
            }
        }
    }
}

/// A listen request that may open: its id and filter.
struct Checked {
    id: Value,
    asked: Filter,
    /// Its place in its principal's session quota (a listen stream is what a 2026-07-28
    /// client holds instead of a session).
    slot: SessionSlot,
}

/// The request's id, filter and quota slot, or its refusal (status for HTTP, and the error).
fn check(
    state: &AppState,
    principal: &Principal,
    msg: &Value,
) -> Result<Checked, (StatusCode, Value)> {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let refuse = |status, code, why: String| Err((status, jsonrpc::error(id.clone(), code, why)));
    let asked = match Filter::parse(msg.get("params")) {
        Ok(f) => f,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, code::INVALID_PARAMS, why),
    };
    // Bounded like the sessions of each transport (`[mcp] max_sessions`).
    let max = state.sessions.limits().max;
    if state.listens.len() >= max {
        let why = format!("too many listen streams are open (at most {max}; [mcp] max_sessions)");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, code::INTERNAL_ERROR, why);
    }
    match state.quotas.session(principal) {
        Ok(slot) => Ok(Checked { id, asked, slot }),
        Err(held) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            held.code(),
            held.to_string(),
        ),
    }
}

/// Subscribe the stream `key` to what `asked` names: what is granted, and the acknowledgement
/// that says so.
async fn subscribe(
    state: &AppState,
    scope: &Scope,
    principal: &Arc<Principal>,
    key: u64,
    id: &Value,
    asked: Filter,
) -> (Filter, Value) {
    let granted = Filter {
        uris: subscribe_all(state, scope, principal, key, &asked.uris).await,
        ..asked
    };
    let ack = json!({
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {"_meta": {SUBSCRIPTION_ID: id}, "notifications": granted.to_json()},
    });
    (granted, ack)
}

fn refusal(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Answer a `subscriptions/listen` request (already checked as a 2026-07-28 request) posted to
/// an MCP endpoint: the stream, or the refusal.
pub(super) async fn open(
    state: Arc<AppState>,
    scope: Scope,
    principal: Arc<Principal>,
    msg: Value,
    accepts_stream: bool,
) -> Response {
    if !accepts_stream {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let why =
            "subscriptions/listen answers with a stream: Accept must include text/event-stream";
        let body = jsonrpc::error(id, code::INVALID_REQUEST, why);
        return refusal(StatusCode::NOT_ACCEPTABLE, body);
    }
    let Checked { id, asked, slot } = match check(&state, &principal, &msg) {
        Ok(checked) => checked,
        Err((status, body)) => return refusal(status, body),
    };
    let (tx, rx) = mpsc::channel::<Arc<str>>(BACKLOG);
    // The table holds the only sender: a stream dropped from it sees its queue close.
    let key = state.listens.reserve(
        id.clone(),
        Out::Stream(tx),
        &asked,
        slot,
        principal.id.clone(),
    );
    let entry = Entry {
        state: state.clone(),
        key,
        armed: true,
    };
    // The acknowledgement is the stream's first event, before anything queued.
    let (granted, ack) = subscribe(&state, &scope, &principal, key, &id, asked).await;
    state.listens.grant(&state, key, granted);
    let last = json!({
        "jsonrpc": "2.0",
        "id": id.clone(),
        "result": {"_meta": {SUBSCRIPTION_ID: id}},
    });
    let stream = Stream {
        ack: Some(ack),
        last: Some(last),
        rx,
        stop: state.streams_closing(),
        _entry: entry,
    };
    let events = futures_util::stream::unfold(stream, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<_, Infallible>(event), s))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// What an open stream still has to send.
struct Stream {
    ack: Option<Value>,
    /// The request's result, the graceful end.
    last: Option<Value>,
    rx: mpsc::Receiver<Arc<str>>,
    stop: tokio_util::sync::CancellationToken,
    _entry: Entry<Arc<AppState>>,
}

/// Answer a `subscriptions/listen` request (already checked as a 2026-07-28 request) that came
/// on an SSE or WebSocket connection, the session `conn`: its frames go on the connection, the
/// acknowledgement first; `None` then (the request is answered when the stream ends, which is
/// when the connection ends or the client cancels it), else the refusal.
pub(super) async fn open_on_connection(
    state: &AppState,
    scope: &Scope,
    principal: &Arc<Principal>,
    conn: SessionKey,
    msg: Value,
) -> Option<Value> {
    let Checked { id, asked, slot } = match check(state, principal, &msg) {
        Ok(checked) => checked,
        Err((_, body)) => return Some(body),
    };
    let key = state.listens.reserve(
        id.clone(),
        Out::Connection(conn.clone()),
        &asked,
        slot,
        principal.id.clone(),
    );
    let mut entry = Entry {
        state,
        key,
        armed: true,
    };
    let (granted, ack) = subscribe(state, scope, principal, key, &id, asked).await;
    // From here the stream ends with its connection or its cancellation, not with this call.
    entry.armed = false;
    delivery::notify_session(state, &conn, &ack);
    state.listens.grant(state, key, granted);
    None
}

impl Stream {
    async fn next(&mut self) -> Option<Event> {
        let message = |text: &str| Event::default().event("message").data(text);
        if let Some(ack) = self.ack.take() {
            return Some(message(&ack.to_string()));
        }
        let frame = tokio::select! {
            frame = self.rx.recv() => frame,
            () = self.stop.cancelled() => None,
        };
        match frame {
            Some(text) => Some(message(&text)),
            // The gateway is shutting down, or the stream was ended for not reading: the
            // graceful end, the request's result, then nothing.
            None => self.last.take().map(|result| message(&result.to_string())),
        }
    }
}

/// A client's `notifications/cancelled` of a listen request it sent on its connection: that
/// stream ends and its subscriptions are released. Whether it was one.
pub(super) fn cancelled(state: &AppState, session: Option<&SessionKey>, msg: &Value) -> bool {
    let Some(id) = msg.pointer("/params/requestId") else {
        return false;
    };
    let Some(conn) = session else {
        return false;
    };
    if !state.listens.cancel(conn, id) {
        return false;
    }
    delivery::sessions_ended(state);
    true
}

/// Subscribe the stream `key` to each URI upstream, the way a `resources/subscribe` is: the
/// URIs the gateway can deliver updates of.
async fn subscribe_all(
    state: &AppState,
    scope: &Scope,
    principal: &Arc<Principal>,
    key: u64,
    uris: &[String],
) -> Vec<String> {
    let session = SessionKey::Listen(key);
    let mut granted = Vec::new();
    let mut seen = HashSet::new();
    for (n, uri) in uris.iter().enumerate() {
        if !seen.insert(uri.as_str()) {
            continue;
        }
        let request = json!({
            "jsonrpc": "2.0", "id": format!("{session}/{n}"),
            "method": "resources/subscribe", "params": {"uri": uri},
        });
        let ctx = Ctx {
            principal: principal.clone(),
            session: Some(&session),
            sink: None,
            owner: None,
            modern: true,
            headers: None,
        };
        let answer = handle(state, scope, &ctx, request, &mut None).await;
        let taken = answer.as_ref().is_some_and(|a| a.get("result").is_some());
        // The upstream's own URI: `uri` may be in `/mcp`'s `mcpgw://` scheme.
        let relayed = super::uris::owner(state, scope, uri)
            .is_ok_and(|(up, own)| up.subscribers(&own).contains(&session) && up.relays_updates());
        if taken && relayed {
            state.listens.allow(key, uri);
            granted.push(uri.clone());
        } else {
            let why = answer
                .as_ref()
                .and_then(|a| a.pointer("/error/message"))
                .and_then(Value::as_str)
                .unwrap_or("its upstream cannot send updates outside a request");
            tracing::debug!(subscription = %session, %uri, reason = why, "resource subscription not granted");
        }
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_is_read_strictly_and_acknowledged_with_only_what_is_granted() {
        let f = Filter::parse(Some(&json!({"notifications": {
            "toolsListChanged": true, "promptsListChanged": false,
            "resourceSubscriptions": ["a://1", "b://2"]
        }})))
        .unwrap();
        assert!(f.tools && !f.prompts && !f.resources);
        assert_eq!(f.uris, ["a://1", "b://2"]);
        assert_eq!(
            f.to_json(),
            json!({"toolsListChanged": true, "resourceSubscriptions": ["a://1", "b://2"]})
        );
        assert_eq!(Filter::default().to_json(), json!({}));
        for bad in [
            json!({}),
            json!({"notifications": []}),
            json!({"notifications": {"toolsListChanged": "yes"}}),
            json!({"notifications": {"resourceSubscriptions": "a://1"}}),
            json!({"notifications": {"resourceSubscriptions": [1]}}),
        ] {
            assert!(Filter::parse(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stream_gets_only_the_changes_it_asked_for() {
        let f = Filter {
            tools: true,
            uris: vec!["a://1".into()],
            ..Filter::default()
        };
        let n = |m: &str, uri: Option<&str>| match uri {
            Some(u) => json!({"jsonrpc": "2.0", "method": m, "params": {"uri": u}}),
            None => json!({"jsonrpc": "2.0", "method": m}),
        };
        assert!(f.wants(&n("notifications/tools/list_changed", None)));
        assert!(!f.wants(&n("notifications/prompts/list_changed", None)));
        assert!(!f.wants(&n("notifications/resources/list_changed", None)));
        assert!(f.wants(&n("notifications/resources/updated", Some("a://1"))));
        assert!(!f.wants(&n("notifications/resources/updated", Some("a://2"))));
        assert!(!f.wants(&n("notifications/message", None)));
    }

    #[test]
    fn every_frame_carries_the_subscription_id() {
        let framed = stamped(
            &json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "a://1", "_meta": {"k": 1}}}),
            &json!("listen-1"),
        );
        let v = framed;
        assert_eq!(v["params"]["_meta"][SUBSCRIPTION_ID], "listen-1");
        assert_eq!(v["params"]["_meta"]["k"], 1);
        assert_eq!(v["params"]["uri"], "a://1");
        let bare = stamped(
            &json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
            &json!(7),
        );
        assert_eq!(bare["params"]["_meta"][SUBSCRIPTION_ID], 7);
    }
}
