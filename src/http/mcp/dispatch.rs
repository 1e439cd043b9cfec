//! Stage 5 of the pipeline for every message but a raw call, **route**: a request is answered
//! from the catalog (`tools/list`, ...), by mcpgw itself (`initialize`, `ping`), or routed to
//! its upstream ([`super::route`]); a notification may cancel a request in flight.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Ctx;
use super::audit::Status;
use super::identity::Identity;
use super::route::{cancel_upstream, forward, permitted, route_completion, route_named, route_uri};
use super::{AppState, Scope, uris};
use crate::access::policy;
use crate::http::sessions::OpenError;
use crate::jsonrpc::{self, Kind, code};
use crate::session::SessionKey;
use crate::upstream::connection::{Caller, ClientProfile};
use crate::upstream::connection::{MODERN_VERSION, SESSION_VERSIONS};
use crate::upstream::registry::{Catalog, Entry, Upstream};

/// Answer one JSON-RPC message for any transport; `None` for notifications and responses.
/// `ctx` names the downstream session it came in and where the upstream's notifications go; `new_session`
/// is set when the message was an `initialize` that opened a session. A request is recorded in
/// the audit log when there is one ([`super::audit`]).
pub async fn handle(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    msg: Value,
    new_session: &mut Option<String>,
) -> Option<Value> {
    if !state.audit.enabled() || jsonrpc::kind(&msg) != Kind::Request {
        return answer(state, scope, ctx, msg, new_session).await;
    }
    let started = std::time::Instant::now();
    let method = jsonrpc::method(&msg).unwrap_or_default().to_owned();
    let target = super::audit::target_of(msg.get("params"));
    let answer = answer(state, scope, ctx, msg, new_session).await;
    let status = answer.as_ref().map_or(Status::Ok, Status::of);
    super::audit::record(
        state,
        scope,
        ctx,
        &method,
        target.as_deref(),
        status,
        started,
    );
    answer
}

async fn answer(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    mut msg: Value,
    new_session: &mut Option<String>,
) -> Option<Value> {
    match jsonrpc::kind(&msg) {
        Kind::Request => {}
        Kind::Notification => {
            match jsonrpc::method(&msg) {
                Some("notifications/cancelled")
                    if !super::listen::cancelled(state, ctx.session, &msg) =>
                {
                    cancel_upstream(state, ctx.session, &msg).await;
                }
                Some("notifications/roots/list_changed") => roots_changed(state, ctx).await,
                _ => {}
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
        "initialize" => match initialize(state, scope, ctx, params.as_ref(), new_session).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(refused)) => return Some(jsonrpc::error(id, -32000, refused.to_string())),
            Err(message) => Err((code::UPSTREAM_UNAVAILABLE, message)),
        },
        "server/discover" => discover(state, scope)
            .await
            .map_err(|message| (code::UPSTREAM_UNAVAILABLE, message)),
        "ping" => Ok(json!({})),
        "logging/setLevel" => {
            set_level(state, scope, ctx, params).await;
            Ok(json!({}))
        }
        "completion/complete" => {
            return Some(route_completion(state, scope, ctx, sep, id, params).await);
        }
        "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list"
            if let Some(up) = own_listing(state, scope, ctx) =>
        {
            let params = params.unwrap_or_else(|| json!({}));
            let mut answer = forward(state, ctx, &up, id, method, params).await;
            let list = List::of(method);
            if let Some(Value::Array(items)) =
                answer.pointer_mut(&format!("/result/{}", list.member))
            {
                visible(state, ctx, &up, list, items);
            }
            return Some(answer);
        }
        "tools/list" => Ok(listing(state, scope, ctx, sep, &List::TOOLS).await),
        "prompts/list" => Ok(listing(state, scope, ctx, sep, &List::PROMPTS).await),
        "resources/list" => Ok(listing(state, scope, ctx, sep, &List::RESOURCES).await),
        "resources/templates/list" => Ok(listing(state, scope, ctx, sep, &List::TEMPLATES).await),
        "tools/call" | "prompts/get" => {
            return Some(route_named(state, scope, ctx, sep, id, method, params).await);
        }
        "tasks/get" | "tasks/result" | "tasks/cancel" | "tasks/list" => {
            return Some(super::tasks::route(state, scope, ctx, id, method, params).await);
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            return Some(route_uri(state, scope, ctx, id, method, params).await);
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

/// `initialize`: a new session-era session (its id in `new_session`), in the version asked for
/// when mcpgw speaks it, answered with the scope's [`Identity`]; `Ok(Err)` when no session
/// could be opened (the table full, the principal's quota held), `Err` when the one upstream of
/// the scope cannot be reached.
async fn initialize(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    params: Option<&Value>,
    new_session: &mut Option<String>,
) -> Result<Result<Value, OpenError>, String> {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let version = if SESSION_VERSIONS.contains(&requested) {
        requested
    } else {
        SESSION_VERSIONS[0]
    };
    let identity = Identity::of(state, scope, true).await?;
    // On SSE and WebSocket the connection is the session, and holds its place in the
    // principal's quota: no id is issued (it would never be used or deleted). Over Streamable
    // HTTP the new id is the session.
    let key = match ctx.session {
        Some(key @ (SessionKey::Sse(_) | SessionKey::Ws(_))) => key.clone(),
        _ => {
            let id = match state.sessions.open(&ctx.principal) {
                Ok(id) => id,
                Err(refused) => return Ok(Err(refused)),
            };
            let key = ctx
                .session
                .cloned()
                .unwrap_or_else(|| SessionKey::Streamable(id.as_str().into()));
            *new_session = Some(id);
            key
        }
    };
    let profile = ClientProfile::from_initialize(params, version);
    // Every instance on the store can serve it from now on (a legacy SSE session's client
    // can take it up again on a new stream: `portable::resume_sse`).
    let kept = match (new_session.as_deref(), ctx.session) {
        (Some(id), _) => Some(id),
        (None, Some(SessionKey::Sse(id))) => Some(&**id),
        _ => None,
    };
    if let Some(id) = kept {
        super::super::portable::keep(state, id, &ctx.principal, &profile).await;
    }
    state.clients.insert(key, profile);
    Ok(Ok(identity.initialize(version)))
}

/// `server/discover` (2026-07-28): every version mcpgw speaks, newest last, and the scope's
/// [`Identity`].
async fn discover(state: &AppState, scope: &Scope) -> Result<Value, String> {
    let mut versions: Vec<&str> = SESSION_VERSIONS.iter().rev().copied().collect();
    versions.push(MODERN_VERSION);
    Ok(Identity::of(state, scope, false).await?.discover(versions))
}

/// `logging/setLevel`, passed to every upstream in scope that announced logging, on the
/// client's own upstream session there (a log level is per session). Best effort: one upstream
/// refusing does not fail the others.
async fn set_level(state: &AppState, scope: &Scope, ctx: &Ctx<'_>, params: Option<Value>) {
    let caller = Caller {
        owner: ctx.owner(),
        ..Caller::default()
    };
    for up in in_scope(state, scope) {
        if up.capabilities().get("logging").is_some() {
            let _ = up
                .request(&caller, "logging/setLevel", params.clone())
                .await;
        }
    }
}

/// The upstream whose lists a session's client gets from its own upstream session, as the
/// server would list them to it directly (what a server offers may depend on the client's
/// capabilities and on what the session did): one upstream (`/servers/{name}/mcp`) that gives
/// each client a session of its own, its answer passed on whole (cursors included). `/mcp`
/// merges every upstream's ([`listing`]).
fn own_listing(state: &AppState, scope: &Scope, ctx: &Ctx<'_>) -> Option<Arc<Upstream>> {
    ctx.owner.as_ref()?;
    let up = in_scope(state, scope).into_iter().next()?;
    (matches!(scope, Scope::One(_)) && up.gives_clients_sessions()).then_some(up)
}

/// The client's roots changed: told to each of its own upstream sessions (a server asks for
/// the roots again when it needs them).
async fn roots_changed(state: &AppState, ctx: &Ctx<'_>) {
    let Some(session) = ctx.session else {
        return;
    };
    for up in state.registry.list() {
        if up.has_client_session(session)
            && let Err(err) = up
                .notify(Some(session), "notifications/roots/list_changed", json!({}))
                .await
        {
            tracing::debug!(upstream = %up.name(), error = %err, "could not relay a roots change");
        }
    }
}

pub(super) fn in_scope(state: &AppState, scope: &Scope) -> Vec<Arc<Upstream>> {
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

/// One kind of list: the method, the member of its result that holds the items, and the
/// item's field that names it.
struct List {
    method: &'static str,
    member: &'static str,
    field: &'static str,
    /// What the policy calls its items.
    kind: policy::Kind,
    /// The items in a catalog.
    pick: fn(&Catalog) -> &[Entry],
}

impl List {
    /// The list `method` asks for (one of the four list methods).
    fn of(method: &str) -> &'static Self {
        match method {
            "tools/list" => &Self::TOOLS,
            "prompts/list" => &Self::PROMPTS,
            "resources/list" => &Self::RESOURCES,
            _ => &Self::TEMPLATES,
        }
    }

    const TOOLS: Self = Self {
        method: "tools/list",
        member: "tools",
        field: "name",
        kind: policy::Kind::Tool,
        pick: |c| &c.tools,
    };
    const PROMPTS: Self = Self {
        method: "prompts/list",
        member: "prompts",
        field: "name",
        kind: policy::Kind::Prompt,
        pick: |c| &c.prompts,
    };
    const RESOURCES: Self = Self {
        method: "resources/list",
        member: "resources",
        field: "uri",
        kind: policy::Kind::Resource,
        pick: |c| &c.resources,
    };
    const TEMPLATES: Self = Self {
        method: "resources/templates/list",
        member: "resourceTemplates",
        field: "uriTemplate",
        kind: policy::Kind::Resource,
        pick: |c| &c.resource_templates,
    };
}

/// Merge one kind of list over the upstreams in scope. A client with sessions of its own
/// gets each such upstream's list from its own session (what the server offers *it*, and what
/// its session made); otherwise the catalog. With `Scope::All`, a name (`field` "name") is
/// prefixed with its upstream, and a URI or template (`field` "uri" or "uriTemplate") that
/// upstreams share is put in the gateway's scheme ([`super::uris`]).
async fn listing(state: &AppState, scope: &Scope, ctx: &Ctx<'_>, sep: &str, list: &List) -> Value {
    let ups = in_scope(state, scope);
    let mut lists: Vec<Vec<Value>> = Vec::with_capacity(ups.len());
    for up in &ups {
        let own = match ctx.owner.as_ref().filter(|_| up.gives_clients_sessions()) {
            Some(_) => own_list(ctx, up, list).await,
            None => None,
        };
        let mut items = own.unwrap_or_else(|| Entry::values((list.pick)(&up.catalog())));
        visible(state, ctx, up, list, &mut items);
        lists.push(items);
    }
    let field = list.field;
    let all = matches!(scope, Scope::All);
    let shared = match field {
        "uri" | "uriTemplate" if all => uris::shared(lists.iter(), field),
        _ => Default::default(),
    };
    let mut out = Vec::new();
    for (up, items) in ups.iter().zip(lists) {
        let upstream = up.name();
        for mut item in items {
            if all && let Some(Value::String(value)) = item.get_mut(field) {
                if field == "name" {
                    *value = format!("{upstream}{sep}{value}");
                } else if shared.contains(value.as_str()) {
                    *value = uris::gateway_uri(&upstream, value);
                }
            }
            out.push(item);
        }
    }
    let mut result = serde_json::Map::new();
    result.insert(list.member.into(), Value::Array(out));
    Value::Object(result)
}

/// Leave out of `items` (one upstream's list) what the policy does not let the principal reach:
/// a list shows what its calls would be allowed.
fn visible(state: &AppState, ctx: &Ctx<'_>, up: &Upstream, list: &List, items: &mut Vec<Value>) {
    items.retain(|item| {
        let name = item
            .get(list.field)
            .and_then(Value::as_str)
            .unwrap_or_default();
        permitted(state, ctx, list.kind, up, name).is_ok()
    });
}

/// Every page of `list` from the client's own session on `up`; `None` (the catalog is used)
/// when it cannot be had.
async fn own_list(ctx: &Ctx<'_>, up: &Arc<Upstream>, list: &List) -> Option<Vec<Value>> {
    let caller = Caller {
        owner: ctx.owner(),
        ..Caller::default()
    };
    let mut items = Vec::new();
    let mut cursor: Option<Value> = None;
    // Bounded: a misbehaving upstream cannot page forever.
    for _ in 0..100 {
        let params = cursor.take().map(|c| json!({ "cursor": c }));
        let answer = up.request(&caller, list.method, params).await.ok()?;
        let result = answer.get("result")?;
        items.extend(result.get(list.member)?.as_array()?.iter().cloned());
        match result.get("nextCursor").filter(|c| !c.is_null()) {
            Some(next) => cursor = Some(next.clone()),
            None => return Some(items),
        }
    }
    Some(items)
}
