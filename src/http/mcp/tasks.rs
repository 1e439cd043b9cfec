//! Tasks (2025-11-25): a task-augmented request is answered at once with a task, which the
//! client then follows with `tasks/get`, `tasks/result`, `tasks/cancel` and `tasks/list`. They
//! go to the upstream that runs the task, on the client's own upstream session (where a server
//! keeps its tasks). On `/servers/{name}/mcp` that is the one upstream; on `/mcp` the gateway
//! remembers which upstream answered a call with a task, by (session, task id) ([`learn`]), and
//! `tasks/list` asks every upstream in scope that announced tasks and lists them all.
//! Status notifications (`notifications/tasks/status`) reach the client as every notification
//! of its upstream sessions does.
//!
//! Instances sharing a store each open their own upstream session for a client session, so a
//! task lives on the instance whose upstream session started it. The store records that
//! instance, and a `tasks/get`, `tasks/result` or `tasks/cancel` reaching another one is passed
//! on to it ([`elsewhere`]). A `tasks/list` is also asked of every other instance the store
//! names for the session's tasks, and their lists join the one of the instance asked
//! ([`listed_elsewhere`]).

use std::sync::Mutex;

use serde_json::{Map, Value, json};

use super::dispatch::in_scope;
use super::route::forward;
use super::{AppState, Ctx, Scope};
use crate::hash::HashMap;
use crate::jsonrpc::{self, code};
use crate::session::SessionKey;

/// Task ids remembered on `/mcp` at most (the oldest half goes when full).
const REMEMBERED: usize = 10_000;

/// (session, task id) -> (when it was learned, upstream).
type Owners = HashMap<(Option<SessionKey>, String), (u64, String)>;

/// Which upstream runs each task, by (session, task id).
#[derive(Debug, Default)]
pub struct TaskOwners {
    owners: Mutex<Owners>,
    next: std::sync::atomic::AtomicU64,
}

impl TaskOwners {
    fn lock(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `upstream` answered a request of `session` with task `task_id`.
    fn remember(&self, session: Option<&SessionKey>, task_id: &str, upstream: String) {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut owners = self.lock();
        if owners.len() >= REMEMBERED {
            let cut = n.saturating_sub(REMEMBERED as u64 / 2);
            owners.retain(|_, (at, _)| *at >= cut);
        }
        owners.insert((session.cloned(), task_id.to_owned()), (n, upstream));
    }

    /// The upstreams that answered a request of `session` with a task.
    fn upstreams_of(&self, session: Option<&SessionKey>) -> crate::hash::HashSet<String> {
        let owners = self.lock();
        owners
            .iter()
            .filter(|((s, _), _)| s.as_ref() == session)
            .map(|(_, (_, up))| up.clone())
            .collect()
    }

    fn owner(&self, session: Option<&SessionKey>, task_id: &str) -> Option<String> {
        let owners = self.lock();
        owners
            .get(&(session.cloned(), task_id.to_owned()))
            .map(|(_, up)| up.clone())
    }
}

/// Whether the tasks answers name are worth remembering: on `/mcp` (which upstream runs each),
/// and with peers (which instance holds each). On `/servers/{name}/mcp` of a lone instance
/// nothing is, and its calls' answers are not even looked at.
pub(super) fn tracked(state: &AppState, scope: &Scope) -> bool {
    matches!(scope, Scope::All) || state.peers.me().is_some()
}

/// Remember the task a call's answer names, if any, as run here by `upstream` (when
/// [`tracked`]); with peers, the store learns that this instance holds it before the answer
/// goes, so that `tasks/*` reaching another instance come here ([`elsewhere`]).
pub(super) async fn learn(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    upstream: &str,
    answer: &Value,
) {
    if !tracked(state, scope) {
        return;
    }
    let Some(task_id) = answer
        .pointer("/result/task/taskId")
        .and_then(Value::as_str)
    else {
        return;
    };
    state
        .tasks
        .remember(ctx.session, task_id, upstream.to_owned());
    let (Some(me), Some(SessionKey::Streamable(id))) = (state.peers.me(), ctx.session) else {
        return;
    };
    let (hash, task_id, me) = (
        crate::store::sessions::id_hash(id),
        task_id.to_owned(),
        me.to_string(),
    );
    // Written before the task is answered, so that the client's next request finds it from
    // any instance (one store write per task started, none per call).
    let saved = state
        .registry
        .on_store(move |store| store.save_task_owner(&hash, &task_id, &me))
        .await;
    if let Err(err) = saved {
        tracing::warn!(error = %err, "a task's instance not written to the store; other instances cannot pass its tasks/* requests on");
    }
}

/// The instance holding the task a `tasks/get`, `tasks/result` or `tasks/cancel` of `session`
/// names, when it is another one: the task lives in the session's upstream session there.
/// `None` without peers, for a request already passed on, and for a task held here or unknown
/// to the store (answered here as usual).
pub(super) async fn elsewhere(
    state: &AppState,
    session: Option<&SessionKey>,
    msg: &Value,
    headers: &impl crate::h1::fields::Lookup,
) -> Option<url::Url> {
    let me = state.peers.me()?;
    if !matches!(
        jsonrpc::method(msg),
        Some("tasks/get" | "tasks/result" | "tasks/cancel")
    ) {
        return None;
    }
    let Some(SessionKey::Streamable(id)) = session else {
        return None;
    };
    if crate::http::peers::was_forwarded(headers) {
        return None;
    }
    let task_id = msg.pointer("/params/taskId")?.as_str()?;
    if state.tasks.owner(session, task_id).is_some() {
        return None;
    }
    let (hash, task) = (crate::store::sessions::id_hash(id), task_id.to_owned());
    let owner = state
        .registry
        .on_store(move |store| store.load_task_owner(&hash, &task))
        .await;
    match owner {
        Ok(Some(instance)) => url::Url::parse(&instance).ok().filter(|url| url != me),
        Ok(None) => None,
        Err(err) => {
            tracing::warn!(error = %err, "the store cannot say which instance holds a task; answered here");
            None
        }
    }
}

/// Answer a `tasks/*` request.
pub(super) async fn route(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    id: Value,
    method: &str,
    params: Option<Value>,
) -> Value {
    let params = params.unwrap_or_else(|| Value::Object(Map::new()));
    if method == "tasks/list" {
        let mut answer = match scope {
            Scope::One(_) => route_one(state, scope, ctx, id, method, params.clone()).await,
            Scope::All => list_all(state, scope, ctx, id, params.clone()).await,
        };
        let elsewhere = listed_elsewhere(state, scope, ctx, &params).await;
        if let Some(Value::Array(tasks)) = answer.pointer_mut("/result/tasks") {
            tasks.extend(elsewhere);
        }
        return answer;
    }
    if let Scope::One(_) = scope {
        return route_one(state, scope, ctx, id, method, params).await;
    }
    let Some(task_id) = params.get("taskId").and_then(Value::as_str) else {
        return jsonrpc::error(
            id,
            code::INVALID_PARAMS,
            format!("{method} needs params.taskId"),
        );
    };
    let owner = state
        .tasks
        .owner(ctx.session, task_id)
        .and_then(|name| state.registry.get(&name));
    match owner {
        Some(up) => forward(state, ctx, &up, id, method, params).await,
        None => jsonrpc::error(
            id,
            code::INVALID_PARAMS,
            format!("unknown task '{task_id}': no upstream answered this session with it"),
        ),
    }
}

/// A `tasks/*` request on `/servers/{name}/mcp`: to its one upstream.
async fn route_one(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    id: Value,
    method: &str,
    params: Value,
) -> Value {
    match in_scope(state, scope).into_iter().next() {
        Some(up) => forward(state, ctx, &up, id, method, params).await,
        None => jsonrpc::error(id, code::UPSTREAM_UNAVAILABLE, "the upstream is offline"),
    }
}

/// The largest `tasks/list` answer read from another instance.
const PEER_LIST_LIMIT: usize = 4 << 20;

/// The tasks of this `tasks/list`'s session that other instances hold (see the module's
/// documentation): each such instance, as the store names them, is asked the same request on
/// the same endpoint with the client's own headers, and its list (its first page) joins this
/// one; the instances are asked together. None without peers, for a request already passed on
/// (the instance asked lists only its own), or for a later page (a cursor is one upstream's).
async fn listed_elsewhere(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    params: &Value,
) -> Vec<Value> {
    let Some(me) = state.peers.me() else {
        return Vec::new();
    };
    let (Some(SessionKey::Streamable(id)), Some(headers)) = (ctx.session, ctx.headers) else {
        return Vec::new();
    };
    if params.get("cursor").is_some() || crate::http::peers::was_forwarded(headers) {
        return Vec::new();
    }
    let hash = crate::store::sessions::id_hash(id);
    let instances = match state
        .registry
        .on_store(move |store| store.load_task_instances(&hash))
        .await
    {
        Ok(instances) => instances,
        Err(err) => {
            tracing::warn!(error = %err, "the store cannot say which instances hold a session's tasks; tasks/list lists this instance's");
            return Vec::new();
        }
    };
    let mut headers = headers.to_map();
    headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static("application/json"),
    );
    let body = bytes::Bytes::from(
        json!({"jsonrpc": "2.0", "id": 0, "method": "tasks/list", "params": params}).to_string(),
    );
    let path = scope.path();
    let asks = instances
        .iter()
        .filter_map(|instance| url::Url::parse(instance).ok())
        .filter(|peer| peer != me)
        .map(|peer| list_of(state, peer, &path, &headers, body.clone()));
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The tasks `peer` lists for the `tasks/list` in `body`; none (said in the log) when it does
/// not answer with a list. Bounded by the upstream request timeout, as the peer's own bound is
/// made for resumed calls, which may wait minutes: a slow instance delays the list that long.
async fn list_of(
    state: &AppState,
    peer: url::Url,
    path: &http::Uri,
    headers: &http::HeaderMap,
    body: bytes::Bytes,
) -> Vec<Value> {
    let timeout = state.registry.settings().request_timeout;
    let exchange = async {
        let response = state.peers.forward(&peer, path, headers, body).await;
        let status = response.status();
        let answer = axum::body::to_bytes(response.into_body(), PEER_LIST_LIMIT)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        match answer.as_ref().and_then(|a| a.pointer("/result/tasks")) {
            Some(Value::Array(listed)) => Ok(listed.clone()),
            _ => Err(format!("it answered {status} without a list")),
        }
    };
    let listed = tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no list within {} s", timeout.as_secs())));
    listed.unwrap_or_else(|why| {
        tracing::warn!(peer = %peer, why, "another instance holding tasks of a session did not list them; tasks/list lists the others");
        Vec::new()
    })
}

/// `tasks/list` on `/mcp`: every upstream in scope that announced tasks or answered this
/// session with one, their lists joined (each upstream's first page). Both, because what the
/// gateway's own connection announced is of its era: an upstream that speaks both may list
/// tasks to a 2025-11-25 session and not say so to a 2026-07-28 connection.
async fn list_all(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    id: Value,
    params: Value,
) -> Value {
    let known = state.tasks.upstreams_of(ctx.session);
    let mut tasks = Vec::new();
    for up in in_scope(state, scope) {
        if up.capabilities().pointer("/tasks/list").is_none() && !known.contains(&up.name()) {
            continue;
        }
        let answer = forward(state, ctx, &up, Value::Null, "tasks/list", params.clone()).await;
        if let Some(listed) = answer.pointer("/result/tasks").and_then(Value::as_array) {
            for task in listed {
                if let Some(task_id) = task.get("taskId").and_then(Value::as_str) {
                    state.tasks.remember(ctx.session, task_id, up.name());
                }
                tasks.push(task.clone());
            }
        }
    }
    jsonrpc::result(id, json!({"tasks": tasks}))
}
