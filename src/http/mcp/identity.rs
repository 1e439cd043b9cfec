//! What the gateway says about itself in `initialize` and `server/discover` (docs/ARCHITECTURE.md,
//! "What the gateway says about itself").
//!
//! - `/servers/{name}/mcp` is that upstream, as transparent as the gateway can make it: the
//!   upstream's `serverInfo`, `instructions` and capabilities as it sent them (less what the
//!   gateway cannot carry), and the gateway's own identity only under [`META_GATEWAY`].
//! - `/mcp` is the gateway: mcpgw's `serverInfo`, every online upstream's instructions in one
//!   section each, and the union of the capabilities the gateway carries.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::dispatch::in_scope;
use super::{AppState, Scope};
use crate::upstream::connection::META_SERVER_INFO;
use crate::upstream::registry::Upstream;

/// The `_meta` key under which `/servers/{name}/mcp` names the gateway in `initialize` and
/// `server/discover`: `{"name": "mcpgw", "version": ...}`.
pub const META_GATEWAY: &str = "dev.mcpgw/gateway";

/// The capabilities the gateway carries between a client and an upstream (`tasks` through
/// [`super::tasks`]): anything else an upstream announces (`experimental`, `extensions`) names
/// methods the gateway answers with -32601, so it is never passed on.
const CARRIED: [&str; 6] = [
    "tools",
    "resources",
    "prompts",
    "logging",
    "completions",
    "tasks",
];

/// Who answers for a scope.
pub(super) struct Identity {
    server_info: Value,
    instructions: Option<String>,
    capabilities: Value,
    /// Whether the gateway names itself under [`META_GATEWAY`] (it speaks for an upstream).
    behind: bool,
}

impl Identity {
    /// The identity of `scope`, for a client of the session era (`initialize`) or not
    /// (`server/discover`). For one upstream, its connection is opened if there is none, so
    /// that what it announces is known; `Err` says why it cannot be.
    pub(super) async fn of(
        state: &AppState,
        scope: &Scope,
        session_era: bool,
    ) -> Result<Self, String> {
        let name = match scope {
            Scope::All => return Ok(Self::gateway(state)),
            Scope::One(name) => name,
        };
        let up = state
            .registry
            .get(name)
            .ok_or_else(|| format!("no upstream named '{name}' is registered"))?;
        if !up.registration().enabled {
            return Err(format!("upstream '{name}' is disabled"));
        }
        up.connection()
            .await
            .map_err(|e| format!("upstream '{name}': {e}"))?;
        // A client that initializes gets a session-era session of its own: what the upstream
        // says there is what it would say to the client directly.
        let own = match session_era {
            true => up.session_identity().await,
            false => Ok(None),
        };
        if let Some(own) = own.map_err(|e| format!("upstream '{name}': {e}"))? {
            return Ok(Self {
                server_info: named(&own.server_info, name),
                instructions: own.instructions.clone(),
                capabilities: carried(&own.capabilities),
                behind: true,
            });
        }
        Ok(Self {
            server_info: named(&up.server_info(), name),
            instructions: up.instructions(),
            capabilities: carried(&up.capabilities()),
            behind: true,
        })
    }

    fn gateway(state: &AppState) -> Self {
        let sep = &state.registry.settings().separator;
        Self {
            server_info: gateway_info(),
            instructions: merged_instructions(&in_scope(state, &Scope::All), sep),
            capabilities: union(&state.registry.list()),
            behind: false,
        }
    }

    /// The `initialize` result in session-era `version`.
    pub(super) fn initialize(self, version: &str) -> Value {
        let mut out = json!({
            "protocolVersion": version,
            "capabilities": self.capabilities,
            "serverInfo": self.server_info,
        });
        if let Some(text) = self.instructions {
            out["instructions"] = Value::String(text);
        }
        if self.behind {
            out["_meta"] = json!({META_GATEWAY: gateway_info()});
        }
        out
    }

    /// The `server/discover` result (2026-07-28, which puts `serverInfo` in `_meta`), offering
    /// `versions`.
    pub(super) fn discover(self, versions: Vec<&str>) -> Value {
        let mut meta = Map::new();
        meta.insert(META_SERVER_INFO.into(), self.server_info);
        if self.behind {
            meta.insert(META_GATEWAY.into(), gateway_info());
        }
        let mut out = json!({
            "supportedVersions": versions,
            "capabilities": self.capabilities,
            "_meta": meta,
        });
        if let Some(text) = self.instructions {
            out["instructions"] = Value::String(text);
        }
        out
    }
}

/// `info` as the upstream gave it, or (a 2026-07-28 upstream need not identify itself, and
/// `serverInfo` is required in `initialize`) named by its registration.
fn named(info: &Value, name: &str) -> Value {
    match info {
        Value::Null => json!({"name": name, "version": "unknown"}),
        info => info.clone(),
    }
}

fn gateway_info() -> Value {
    json!({"name": "mcpgw", "version": env!("CARGO_PKG_VERSION")})
}

/// An upstream's capabilities, as it announced them, less those the gateway cannot carry.
fn carried(caps: &Value) -> Value {
    let mut out = Map::new();
    if let Value::Object(caps) = caps {
        for (key, value) in caps {
            if CARRIED.contains(&key.as_str()) {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

/// `/mcp`'s capabilities: tools, resources and prompts always, with list changes announced
/// since upstreams come and go (the gateway tells every session when a catalog changes);
/// `resources.subscribe`, `logging` and `completions` when an upstream announced them (the
/// gateway relays subscriptions, passes `logging/setLevel` on, and routes completions); `tasks`
/// as the union of what upstreams announced of it (each task is followed on the upstream that
/// runs it, and `tasks/list` joins them).
fn union(ups: &[Arc<Upstream>]) -> Value {
    let caps: Vec<Value> = ups.iter().map(|u| u.capabilities()).collect();
    let any = |f: &dyn Fn(&Value) -> bool| caps.iter().any(f);
    let mut out = json!({
        "tools": {"listChanged": true},
        "resources": {"listChanged": true, "subscribe": any(&|c| c.pointer("/resources/subscribe") == Some(&json!(true)))},
        "prompts": {"listChanged": true},
    });
    for key in ["logging", "completions"] {
        if any(&|c| c.get(key).is_some()) {
            out[key] = json!({});
        }
    }
    let mut tasks = Map::new();
    for announced in caps.iter().filter_map(|c| c.get("tasks")?.as_object()) {
        merge(&mut tasks, announced);
    }
    if any(&|c| c.get("tasks").is_some()) {
        out["tasks"] = Value::Object(tasks);
    }
    out
}

/// Add to `into` what `from` has that it has not, object members merged at every depth.
fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (key, value) in from {
        match (into.get_mut(key), value) {
            (Some(Value::Object(mine)), Value::Object(theirs)) => merge(mine, theirs),
            (Some(_), _) => {}
            (None, _) => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

/// `/mcp`'s `instructions`: a line saying what follows, then one section per online upstream
/// that gave instructions, in the order upstreams are listed, headed `## <upstream>` and holding
/// its text as it came. `None` when no upstream gave any.
fn merged_instructions(ups: &[Arc<Upstream>], sep: &str) -> Option<String> {
    let sections: Vec<String> = ups
        .iter()
        .filter_map(|up| {
            let text = up.instructions()?;
            let text = text.trim();
            (!text.is_empty()).then(|| format!("## {}\n\n{text}", up.name()))
        })
        .collect();
    if sections.is_empty() {
        return None;
    }
    let head = format!(
        "mcpgw serves several MCP servers here; each section below is one server's own \
         instructions, headed by its name. A server's tools and prompts are named \
         `<server>{sep}<name>` here."
    );
    Some(format!("{head}\n\n{}", sections.join("\n\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_gateway_carries_is_passed_on() {
        let caps = json!({
            "tools": {"listChanged": false},
            "resources": {"subscribe": true},
            "tasks": {"list": {}, "requests": {"tools": {"call": {}}}},
            "experimental": {"x": {}},
            "extensions": {"io.example/y": {}},
            "completions": {},
        });
        assert_eq!(
            carried(&caps),
            json!({"tools": {"listChanged": false}, "resources": {"subscribe": true}, "completions": {},
                   "tasks": {"list": {}, "requests": {"tools": {"call": {}}}}})
        );
        assert_eq!(carried(&Value::Null), json!({}));
    }

    #[test]
    fn task_capabilities_are_merged_at_every_depth() {
        let mut tasks = Map::new();
        for one in [
            json!({"list": {}, "requests": {"tools": {"call": {}}}}),
            json!({"cancel": {}, "requests": {"sampling": {"createMessage": {}}}}),
        ] {
            merge(&mut tasks, one.as_object().unwrap());
        }
        assert_eq!(
            Value::Object(tasks),
            json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}, "sampling": {"createMessage": {}}}})
        );
    }

    #[test]
    fn one_upstreams_identity_names_the_gateway_only_under_its_meta_key() {
        let identity = || Identity {
            server_info: json!({"name": "up", "version": "2"}),
            instructions: Some("use echo".into()),
            capabilities: json!({"tools": {}}),
            behind: true,
        };
        let init = identity().initialize("2025-11-25");
        assert_eq!(init["serverInfo"], json!({"name": "up", "version": "2"}));
        assert_eq!(init["instructions"], "use echo");
        assert_eq!(init["_meta"][META_GATEWAY]["name"], "mcpgw");
        let discover = identity().discover(vec!["2026-07-28"]);
        assert_eq!(discover["_meta"][META_SERVER_INFO]["name"], "up");
        assert_eq!(discover["_meta"][META_GATEWAY]["name"], "mcpgw");
        assert!(discover.get("serverInfo").is_none(), "{discover}");
    }
}
