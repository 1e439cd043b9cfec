//! Stage 5 of the pipeline for every message but a raw call, **route**: a request is answered
//! from the catalog (`tools/list`, ...), by mcpgw itself (`initialize`, `ping`), or routed to
//! its upstream ([`super::route`]); a notification may cancel a request in flight.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Ctx;
use super::route::{cancel_upstream, forward, route_completion, route_named, route_uri};
use super::{AppState, Scope};
use crate::jsonrpc::{self, Kind, code};
use crate::session::SessionKey;
use crate::upstream::connection::{Caller, ClientProfile};
use crate::upstream::connection::{MODERN_VERSION, SESSION_VERSIONS};
use crate::upstream::registry::Upstream;

/// Answer one JSON-RPC message for any transport; `None` for notifications and responses.
/// `ctx` names the downstream session it came in and where the upstream's notifications go; `new_session`
/// is set when the message was an `initialize` that opened a session.
pub async fn handle(
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
        "initialize" => match initialize(state, scope, ctx, params.as_ref(), new_session) {
            Some(result) => Ok(result),
            None => {
                let busy = "too many open sessions; close one or try again later";
                return Some(jsonrpc::error(id, -32000, busy));
            }
        },
        "server/discover" => Ok(discover(state, scope)),
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
            return Some(forward(state, ctx, &up, id, method, params).await);
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
/// when mcpgw speaks it; `None` when the session table is full.
fn initialize(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    params: Option<&Value>,
    new_session: &mut Option<String>,
) -> Option<Value> {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let version = if SESSION_VERSIONS.contains(&requested) {
        requested
    } else {
        SESSION_VERSIONS[0]
    };
    let id = state.sessions.open()?;
    // On SSE and WebSocket the connection is the session; over Streamable HTTP the new id is.
    let key = ctx
        .session
        .cloned()
        .unwrap_or_else(|| SessionKey::Streamable(id.as_str().into()));
    state
        .clients
        .insert(key, ClientProfile::from_initialize(params, version));
    *new_session = Some(id);
    Some(
        json!({"protocolVersion": version, "capabilities": capabilities(state, scope), "serverInfo": server_info()}),
    )
}

/// `server/discover` (2026-07-28): every version mcpgw speaks, newest last.
fn discover(state: &AppState, scope: &Scope) -> Value {
    let mut versions: Vec<&str> = SESSION_VERSIONS.iter().rev().copied().collect();
    versions.push(MODERN_VERSION);
    json!({"supportedVersions": versions, "capabilities": capabilities(state, scope), "serverInfo": server_info()})
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
/// each client a session of its own. `/mcp` lists the merged catalog.
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
