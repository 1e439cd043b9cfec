//! Stage 5 of the pipeline for every message but a raw call, **route**: a request is answered
//! from the catalog (`tools/list`, ...), by mcpgw itself (`initialize`, `ping`), or routed to
//! its upstream ([`super::route`]); a notification may cancel a request in flight.

use std::sync::Arc;

use serde_json::{Value, json};

use super::Ctx;
use super::identity::Identity;
use super::route::{cancel_upstream, forward, route_completion, route_named, route_uri};
use super::{AppState, Scope, uris};
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
        "initialize" => match initialize(state, scope, ctx, params.as_ref(), new_session).await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => {
                let busy = "too many open sessions; close one or try again later";
                return Some(jsonrpc::error(id, -32000, busy));
            }
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
            return Some(forward(state, ctx, &up, id, method, params).await);
        }
        "tools/list" => Ok(json!({"tools": listing(state, scope, sep, |c| &c.tools, "name")})),
        "prompts/list" => {
            Ok(json!({"prompts": listing(state, scope, sep, |c| &c.prompts, "name")}))
        }
        "resources/list" => {
            Ok(json!({"resources": listing(state, scope, sep, |c| &c.resources, "uri")}))
        }
        "resources/templates/list" => Ok(
            json!({"resourceTemplates": listing(state, scope, sep, |c| &c.resource_templates, "uriTemplate")}),
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
/// when mcpgw speaks it, answered with the scope's [`Identity`]; `Ok(None)` when the session
/// table is full, `Err` when the one upstream of the scope cannot be reached.
async fn initialize(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    params: Option<&Value>,
    new_session: &mut Option<String>,
) -> Result<Option<Value>, String> {
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
    let Some(id) = state.sessions.open() else {
        return Ok(None);
    };
    // On SSE and WebSocket the connection is the session; over Streamable HTTP the new id is.
    let key = ctx
        .session
        .cloned()
        .unwrap_or_else(|| SessionKey::Streamable(id.as_str().into()));
    state
        .clients
        .insert(key, ClientProfile::from_initialize(params, version));
    *new_session = Some(id);
    Ok(Some(identity.initialize(version)))
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

/// Merge one kind of catalog entry. With `Scope::All`, a name (`field` "name") is prefixed
/// with its upstream, and a URI or template (`field` "uri" or "uriTemplate") that upstreams
/// share is put in the gateway's scheme ([`super::uris`]).
fn listing(
    state: &AppState,
    scope: &Scope,
    sep: &str,
    pick: impl Fn(&crate::upstream::registry::Catalog) -> &Vec<Value>,
    field: &str,
) -> Vec<Value> {
    let ups = in_scope(state, scope);
    let catalogs: Vec<_> = ups.iter().map(|up| up.catalog()).collect();
    let all = matches!(scope, Scope::All);
    let shared = match field {
        "uri" | "uriTemplate" if all => uris::shared(catalogs.iter().map(|c| pick(c)), field),
        _ => Default::default(),
    };
    let mut out = Vec::new();
    for (up, catalog) in ups.iter().zip(&catalogs) {
        let upstream = up.name();
        for item in pick(catalog) {
            let mut item = item.clone();
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
    out
}
