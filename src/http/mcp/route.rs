//! Where a request goes upstream: a tool or prompt name (prefixed with `<upstream><separator>`
//! under `/mcp`), a resource URI or a completion reference picks the upstream, and the request is
//! forwarded there with the downstream id restored on the answer. Requests in flight are tracked
//! per session here so that a client's `notifications/cancelled` reaches the upstream working on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use super::Ctx;
use super::{AppState, Inflight, Scope, uris};
use crate::access::policy::{Kind, Target};
use crate::jsonrpc::{self, code};
use crate::session::SessionKey;
use crate::upstream::connection::Caller;
use crate::upstream::registry::{CallError, Upstream};

pub(super) fn call_error(id: Value, err: &CallError) -> Value {
    let c = match err {
        CallError::Failed {
            error: crate::upstream::UpstreamError::Timeout { .. },
            ..
        } => code::UPSTREAM_TIMEOUT,
        _ => code::UPSTREAM_UNAVAILABLE,
    };
    // A stdio child's stderr lines stay with the operator (log, `gateway show`).
    let message = err.to_string();
    let message = crate::upstream::stdio::without_note(&message);
    jsonrpc::error(id, c, message)
}

/// Restore the downstream id on an upstream answer.
pub(super) fn with_id(mut answer: Value, id: Value) -> Value {
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("id".into(), id);
    }
    answer
}

/// Stage **policy**: whether the principal of `ctx` may reach the `kind` named `name` on `up`;
/// otherwise why not, naming the rule (a [`code::FORBIDDEN`] error). Every request that names a tool, prompt or
/// resource passes here once its upstream is known, whatever transport it came by.
pub(super) fn permitted(
    state: &AppState,
    ctx: &Ctx<'_>,
    kind: Kind,
    up: &Upstream,
    name: &str,
) -> Result<(), String> {
    let policy = state.policy.current();
    if policy.lets_everything(&ctx.principal) {
        return Ok(());
    }
    let upstream = up.name();
    let target = Target {
        kind,
        upstream: &upstream,
        name,
    };
    let decision = policy.check(&ctx.principal, &target);
    if decision.allows() {
        return Ok(());
    }
    Err(decision.explain(&target))
}

/// The policy's kind for a method that names a tool or prompt.
pub(super) fn named_kind(method: &str) -> Kind {
    if method.starts_with("prompts/") {
        Kind::Prompt
    } else {
        Kind::Tool
    }
}

pub(super) async fn route_named(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    sep: &str,
    id: Value,
    method: &str,
    params: Option<Value>,
) -> Value {
    let Some(Value::Object(mut params)) = params else {
        return jsonrpc::error(
            id,
            code::INVALID_PARAMS,
            format!("{method} needs params with a name"),
        );
    };
    let Some(Value::String(name)) = params.get_mut("name") else {
        return jsonrpc::error(
            id,
            code::INVALID_PARAMS,
            format!("{method} needs params.name"),
        );
    };
    let (up, prefix) = match resolve_name(state, scope, sep, name) {
        Ok((up, original)) => (up, name.len() - original.len()),
        Err(message) => return jsonrpc::error(id, code::INVALID_PARAMS, message),
    };
    if let Err(why) = permitted(state, ctx, named_kind(method), &up, &name[prefix..]) {
        return jsonrpc::error(id, code::FORBIDDEN, why);
    }
    // The upstream's own name: the prefix cut off in place.
    name.drain(..prefix);
    if method == "tools/call" {
        let own = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Err(why) = params_agree(ctx, &up, own, || params.get("arguments").cloned()) {
            return jsonrpc::error(id, code::HEADER_MISMATCH, why);
        }
    }
    let answer = forward(state, ctx, &up, id, method, Value::Object(params)).await;
    super::tasks::learn(state, scope, ctx, &up.name(), &answer).await;
    answer
}

/// Stage *route*, for a 2026-07-28 `tools/call` that came with headers: the `Mcp-Param-*`
/// copies of the arguments its tool declares must agree with them, since something in front of
/// the gateway may have routed on them (-32020 otherwise). `arguments` is read only for such a
/// tool.
pub(super) fn params_agree(
    ctx: &Ctx<'_>,
    up: &Upstream,
    tool: &str,
    arguments: impl FnOnce() -> Option<Value>,
) -> Result<(), String> {
    let (true, Some(headers)) = (ctx.modern, ctx.headers) else {
        return Ok(());
    };
    let Some(declared) = up.param_headers(tool) else {
        return Ok(());
    };
    declared.check(arguments().as_ref(), headers)
}

/// The upstream a (possibly prefixed) tool or prompt name belongs to, and its own name there
/// (a suffix of `name`).
pub(super) fn resolve_name<'n>(
    state: &AppState,
    scope: &Scope,
    sep: &str,
    name: &'n str,
) -> Result<(Arc<Upstream>, &'n str), String> {
    let (upstream, original) = match scope {
        Scope::One(u) => (u.as_str(), name),
        Scope::All => split_once(name, sep)
            .ok_or_else(|| format!("unknown name '{name}': expected <upstream>{sep}<name>"))?,
    };
    let up = state
        .registry
        .get(upstream)
        .ok_or_else(|| format!("unknown name '{name}': no upstream named '{upstream}'"))?;
    Ok((up, original))
}

/// `name.split_once(sep)`, without the general substring searcher `str` sets up on every call
/// (most of the routing's cost per forwarded call): names are short, and the separator's first
/// byte seldom occurs in them.
fn split_once<'n>(name: &'n str, sep: &str) -> Option<(&'n str, &'n str)> {
    let (bytes, sep_bytes) = (name.as_bytes(), sep.as_bytes());
    let at = memchr::memchr_iter(*sep_bytes.first()?, bytes)
        .find(|&at| bytes[at..].starts_with(sep_bytes))?;
    // A match starts with the separator's first byte, which (in UTF-8) starts a character, and
    // ends with its last, which ends one: both slices fall on character boundaries.
    Some((name.get(..at)?, name.get(at + sep.len()..)?))
}

pub(super) async fn route_completion(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
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
                Ok((up, original)) => (up, original.to_owned()),
                Err(message) => return jsonrpc::error(id, code::INVALID_PARAMS, message),
            };
            if let Err(why) = permitted(state, ctx, Kind::Prompt, &up, &original) {
                return jsonrpc::error(id, code::FORBIDDEN, why);
            }
            params["ref"]["name"] = Value::String(original);
            forward(state, ctx, &up, id, "completion/complete", params).await
        }
        Some("ref/resource") => {
            let uri = params
                .pointer("/ref/uri")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match uris::owner(state, scope, &uri) {
                Ok((up, own)) => {
                    if let Err(why) = permitted(state, ctx, Kind::Resource, &up, &own) {
                        return jsonrpc::error(id, code::FORBIDDEN, why);
                    }
                    params["ref"]["uri"] = Value::String(own);
                    forward(state, ctx, &up, id, "completion/complete", params).await
                }
                Err(message) => jsonrpc::error(id, code::INVALID_PARAMS, message),
            }
        }
        _ => jsonrpc::error(
            id,
            code::INVALID_PARAMS,
            "completion/complete needs params.ref of type ref/prompt or ref/resource",
        ),
    }
}

pub(super) async fn route_uri(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    id: Value,
    method: &str,
    params: Option<Value>,
) -> Value {
    let asked = params
        .as_ref()
        .and_then(|p| p.get("uri"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let (up, uri) = match uris::owner(state, scope, &asked) {
        Ok(found) => found,
        Err(message) => return jsonrpc::error(id, code::INVALID_PARAMS, message),
    };
    if let Err(why) = permitted(state, ctx, Kind::Resource, &up, &uri) {
        return jsonrpc::error(id, code::FORBIDDEN, why);
    }
    let mut params = params.unwrap_or_else(|| Value::Object(Map::new()));
    if uri != asked {
        params["uri"] = Value::String(uri.clone());
    }
    let mut answer = if ctx.owner.is_some() && up.gives_clients_sessions() {
        // A client with an upstream session of its own subscribes there, as it would
        // directly: the server keeps subscriptions per session, and sends the updates on that
        // session's stream, which reaches this client alone.
        let answer = forward(state, ctx, &up, id, method, params).await;
        if answer.get("result").is_some()
            && let Some(session) = ctx.session
        {
            let subscribed = method == "resources/subscribe";
            if method != "resources/read" {
                up.client_subscription(session, &uri, subscribed);
            }
            if subscribed {
                up.client_listens(session);
            }
        }
        answer
    } else {
        on_shared_session(state, ctx, &up, &uri, method, id, params).await
    };
    // A subscription made by an `mcpgw://` URI hears of its updates under it; remembered once
    // the change is made (a subscribe the upstream refused changes nothing).
    let change = matches!(method, "resources/subscribe" | "resources/unsubscribe");
    let made = method == "resources/unsubscribe" || answer.get("result").is_some();
    if change
        && made
        && let Some(session) = ctx.session
    {
        let subscribed = method == "resources/subscribe";
        let subscribed_as = &state.subscribed_as;
        subscribed_as.record(session, &up.name(), &uri, subscribed, uri != asked);
        super::super::portable::subscription_changed(state, scope, session, &asked, subscribed)
            .await;
    }
    if uri != asked {
        as_asked(&mut answer, &uri, &asked);
    }
    answer
}

/// A resource request on the upstream's own session, which every client without one of its own
/// shares (see [`route_uri`]): subscriptions are kept per client here, and the upstream's.
async fn on_shared_session(
    state: &AppState,
    ctx: &Ctx<'_>,
    up: &Arc<Upstream>,
    uri: &str,
    method: &str,
    id: Value,
    params: Value,
) -> Value {
    let _change = match method {
        "resources/subscribe" | "resources/unsubscribe" => Some(up.subscription_change().await),
        _ => None,
    };
    // A 2026-07-28 upstream has no resources/subscribe: its URIs are named by the gateway's
    // listen stream, which follows the table.
    if _change.is_some() && up.subscribes_by_listening() {
        return subscribe_by_listening(up, ctx.session, id, method, uri);
    }
    // One upstream session carries every client's subscriptions: the upstream is told to stop
    // only when the last subscriber of the URI leaves.
    if method == "resources/unsubscribe"
        && let Some(session) = ctx.session
        && up.unsubscribe(uri, session)
    {
        return jsonrpc::result(id, Value::Object(Map::new()));
    }
    let answer = forward(state, ctx, up, id, method, params).await;
    if method == "resources/subscribe" && answer.get("result").is_some() {
        track_subscription(up, ctx.session, uri);
    }
    answer
}

/// The contents of a resource read by its gateway URI name it as the client did.
fn as_asked(answer: &mut Value, own: &str, asked: &str) {
    let contents = answer
        .pointer_mut("/result/contents")
        .and_then(Value::as_array_mut);
    for content in contents.into_iter().flatten() {
        if let Some(uri) = content.get_mut("uri").filter(|u| *u == own) {
            *uri = Value::String(asked.to_owned());
        }
    }
}

/// `resources/subscribe` or `resources/unsubscribe` of `uri` on a 2026-07-28 upstream, answered
/// here: the table changes and the listen stream follows it. An upstream that does not serve
/// `subscriptions/listen` takes the subscription as a session-era upstream that never sends
/// an update would (`subscribe` is not announced for it).
fn subscribe_by_listening(
    up: &Upstream,
    session: Option<&SessionKey>,
    id: Value,
    method: &str,
    uri: &str,
) -> Value {
    let Some(session) = session else {
        return jsonrpc::error(
            id,
            code::INVALID_REQUEST,
            "resource subscriptions need a session (on 2026-07-28, use subscriptions/listen)",
        );
    };
    if method == "resources/unsubscribe" {
        up.unsubscribe(uri, session);
    } else if !up.subscribe(uri, session.clone()) {
        tracing::debug!(upstream = %up.name(), %uri, "subscribed, but this upstream does not serve subscriptions/listen");
    }
    jsonrpc::result(id, Value::Object(Map::new()))
}

/// Remember which session subscribed to `uri` on `up`, once the upstream accepted, so that its
/// `notifications/resources/updated` reach that session, on whichever transport it is
/// ([`crate::http::delivery::notify_session`]). 2026-07-28 requests have no session. (Unsubscribing is
/// settled before forwarding, in [`route_uri`].)
fn track_subscription(up: &Upstream, session: Option<&SessionKey>, uri: &str) {
    if let Some(session) = session
        && !up.subscribe(uri, session.clone())
    {
        tracing::debug!(upstream = %up.name(), %uri, "subscribed, but this upstream cannot send updates outside a request");
    }
}

/// A client cancels a request: tell the upstream working on it, in the upstream's own id.
pub(super) async fn cancel_upstream(state: &AppState, session: Option<&SessionKey>, msg: &Value) {
    let Some(request_id) = msg.pointer("/params/requestId") else {
        return;
    };
    let key = (session.cloned(), request_id.to_string());
    let found = state
        .inflight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .map(|entry| {
            (
                entry.0.upstream.name(),
                entry.0.upstream_id.load(Ordering::Relaxed),
            )
        });
    // Not yet sent: the upstream has no id for it to cancel.
    let Some((upstream, upstream_id)) = found.filter(|(_, id)| *id != NOT_SENT) else {
        return;
    };
    let Some(up) = state.registry.get(&upstream) else {
        return;
    };
    let session = key.0;
    let mut params = serde_json::json!({"requestId": upstream_id});
    if let Some(reason) = msg.pointer("/params/reason") {
        params["reason"] = reason.clone();
    }
    if let Err(err) = up
        .notify(session.as_ref(), "notifications/cancelled", params)
        .await
    {
        tracing::debug!(%upstream, error = %err, "could not forward a cancellation");
    }
}

/// `upstream_id` of a request not sent yet.
const NOT_SENT: u64 = u64::MAX;

/// A request in flight upstream, as the table of requests in flight knows it.
pub struct InFlight {
    /// (session, client id); a stateless request's session is `None`.
    key: (Option<SessionKey>, String),
    /// Where it went (looked up by name again when cancelling: it may have been re-registered).
    upstream: Arc<Upstream>,
    /// The id the upstream knows it by, once the connection picked one.
    upstream_id: AtomicU64,
}

impl crate::upstream::connection::IdSink for InFlight {
    fn sent_as(&self, id: u64) {
        self.upstream_id.store(id, Ordering::Relaxed);
    }
}

/// An entry of the table, hashed and compared by its key alone, so that the table can be
/// searched by (session, client id) without a second copy of the key.
pub struct ByKey(Arc<InFlight>);

impl std::borrow::Borrow<(Option<SessionKey>, String)> for ByKey {
    fn borrow(&self) -> &(Option<SessionKey>, String) {
        &self.0.key
    }
}

impl std::hash::Hash for ByKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for ByKey {}

impl std::fmt::Debug for ByKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ByKey").field(&self.0.key).finish()
    }
}

/// Removes the request from the table when the forwarding ends, however it ends (answered,
/// failed, or dropped because the client went away). Dropped unanswered after it was sent,
/// the request is cancelled upstream: the client's hang-up is its cancellation (2026-07-28
/// says so over HTTP), and the upstream should not work on for nobody.
struct InFlightGuard<'a> {
    table: &'a Inflight,
    entry: Arc<InFlight>,
    answered: bool,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        let sent_as = self.entry.upstream_id.load(Ordering::Relaxed);
        if !self.answered
            && sent_as != NOT_SENT
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (up, session) = (self.entry.upstream.clone(), self.entry.key.0.clone());
            runtime.spawn(async move { up.abandoned(session.as_ref(), sent_as).await });
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        // Only this request's own entry: a later request reusing the client id keeps its own.
        if table
            .get(&self.entry.key)
            .is_some_and(|e| Arc::ptr_eq(&e.0, &self.entry))
        {
            table.remove(&self.entry.key);
        }
    }
}

/// Forward a request to `up` and answer with the client's id.
pub(super) async fn forward(
    state: &AppState,
    ctx: &Ctx<'_>,
    up: &Arc<Upstream>,
    id: Value,
    method: &str,
    params: Value,
) -> Value {
    let send = |caller: Caller| async move { up.request(&caller, method, Some(params)).await };
    let outcome = tracked(state, ctx, up, || id.to_string(), method, send).await;
    match outcome {
        Ok(answer) => with_id(answer, id),
        Err(err) => call_error(id, &err),
    }
}

/// Send a request upstream (the future `send` makes), remembering it while it is in flight
/// (under the session and `client_id`) so that the client can cancel it, and log how it went.
///
/// `send` makes the future here rather than being one: a future passed in would be stored
/// twice in this one's (as the argument, and moved into the task-local scope), which doubled
/// the size of every forwarded call's future.
pub(super) async fn tracked<T, F>(
    state: &AppState,
    ctx: &Ctx<'_>,
    up: &Arc<Upstream>,
    client_id: impl FnOnce() -> String,
    method: &str,
    send: impl FnOnce(Caller) -> F,
) -> Result<T, CallError>
where
    F: std::future::Future<Output = Result<T, CallError>>,
{
    // Timed for the debug line only.
    let started = tracing::enabled!(tracing::Level::DEBUG).then(std::time::Instant::now);
    // Remember (session, client id) -> (upstream, upstream id) while the request is in flight;
    // the upstream id is known once the connection picks it (the sink).
    let entry = Arc::new(InFlight {
        key: (ctx.session.cloned(), client_id()),
        upstream: up.clone(),
        upstream_id: AtomicU64::new(NOT_SENT),
    });
    state
        .inflight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(ByKey(entry.clone()));
    let mut tracked = InFlightGuard {
        table: &state.inflight,
        entry,
        answered: false,
    };
    let caller = Caller {
        sink: ctx.sink.clone(),
        id_hook: Some(tracked.entry.clone()),
        owner: ctx.owner(),
        asks_as_requests: !ctx.modern && ctx.sink.is_some(),
        // Set by the upstream, which knows its tools' declarations.
        param_headers: None,
    };
    let outcome = send(caller).await;
    tracked.answered = true;
    drop(tracked);
    match &outcome {
        // Per request, so debug: with RUST_LOG=debug every forwarded call is one line that
        // carries the downstream session (from the span) and the upstream.
        Ok(_) => {
            let elapsed_us = started.map_or(0, |t| t.elapsed().as_micros() as u64);
            tracing::debug!(upstream = %up.name(), method, elapsed_us, "forwarded");
        }
        Err(err) => {
            tracing::warn!(upstream = %up.name(), method, error = %err, "forwarding failed")
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::split_once;

    #[test]
    fn names_split_where_str_splits_them() {
        let names = [
            "up__echo",
            "up__echo__twice",
            "_up__echo",
            "up_echo",
            "__echo",
            "up__",
            "",
            "é__ü",
            "ü→x→y",
            "a→",
        ];
        for sep in ["__", "_", "→", "x→", "::"] {
            for name in names {
                assert_eq!(
                    split_once(name, sep),
                    name.split_once(sep),
                    "{name:?} at {sep:?}"
                );
            }
        }
    }
}
