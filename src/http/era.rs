//! The stateless 2026-07-28 revision on the downstream side: recognising its requests, the
//! validation ladder the spec requires before dispatch, and the result fields its clients
//! require on the wire.
//!
//! Ladder, first failure wins (as the official SDK orders it): `params._meta` carries protocol
//! version and client capabilities (-32602); the `MCP-Protocol-Version`, `Mcp-Method` and (for
//! name-bearing methods) `Mcp-Name` headers agree with the body (-32020); the version is one
//! mcpgw speaks (-32022, with the supported list).

use axum::http::{HeaderName, StatusCode};
use serde_json::{Value, json};

use crate::h1::fields::{self as names, Lookup};
use crate::jsonrpc::{self, code};
use crate::upstream::connection::{
    META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION, META_SERVER_INFO, MODERN_VERSION,
    SESSION_VERSIONS, header_safe,
};

/// Whether mcpgw answers `version` (the same list, without building it).
pub fn is_supported(version: &str) -> bool {
    crate::upstream::connection::is_known_version(version)
}

fn header<'a>(headers: &'a dyn Lookup, name: &HeaderName) -> Option<&'a str> {
    headers.text(name)
}

/// Whether a request's `MCP-Protocol-Version` header names a version after the session era.
pub fn header_is_modern(headers: &dyn Lookup) -> bool {
    header(headers, &names::PROTOCOL_VERSION).is_some_and(version_is_modern)
}

/// Whether `version` is after the session era.
pub fn version_is_modern(version: &str) -> bool {
    !SESSION_VERSIONS.contains(&version)
}

/// Whether a request speaks 2026-07-28: by its header (on transports with per-message
/// headers) or by its `_meta` envelope.
pub fn is_modern(headers: Option<&dyn Lookup>, msg: &Value) -> bool {
    headers.is_some_and(header_is_modern)
        || msg
            .get("params")
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get(META_PROTOCOL_VERSION))
            .is_some()
}

/// Run the ladder; `Err` is the HTTP status and JSON-RPC error to answer with. `headers` is
/// `None` on transports without per-message headers (SSE, WebSocket): that rung is skipped.
pub fn check(headers: Option<&dyn Lookup>, msg: &Value) -> Result<(), (StatusCode, Value)> {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let reject = |c: i64, m: String, data: Option<Value>| {
        let mut e = jsonrpc::error(id.clone(), c, m);
        if let Some(d) = data {
            e["error"]["data"] = d;
        }
        Err((StatusCode::BAD_REQUEST, e))
    };
    let meta = msg.get("params").and_then(|p| p.get("_meta"));
    let Some(meta) = meta.filter(|m| m.is_object()) else {
        return reject(
            code::INVALID_PARAMS,
            format!(
                "params._meta must be an object carrying '{META_PROTOCOL_VERSION}' and '{META_CLIENT_CAPABILITIES}'"
            ),
            None,
        );
    };
    let missing: Vec<&str> = [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]
        .into_iter()
        .filter(|k| meta.get(*k).is_none())
        .collect();
    if !missing.is_empty() {
        return reject(
            code::INVALID_PARAMS,
            format!(
                "params._meta is missing the required key(s): {}",
                missing.join(", ")
            ),
            None,
        );
    }
    let version = meta.get(META_PROTOCOL_VERSION).and_then(Value::as_str);
    if let Some(headers) = headers {
        if header(headers, &names::PROTOCOL_VERSION) != version || version.is_none() {
            return reject(
                code::HEADER_MISMATCH,
                "the MCP-Protocol-Version header does not match params._meta's protocol version"
                    .into(),
                None,
            );
        }
        let method = jsonrpc::method(msg).unwrap_or_default();
        if header(headers, &names::METHOD) != Some(method) {
            return reject(
                code::HEADER_MISMATCH,
                "the Mcp-Method header does not match the request's method".into(),
                None,
            );
        }
        let name_key = match method {
            "tools/call" | "prompts/get" => Some("name"),
            "resources/read" => Some("uri"),
            _ => None,
        };
        if let Some(key) = name_key
            && let Some(value) = msg
                .get("params")
                .and_then(|p| p.get(key))
                .and_then(Value::as_str)
            && header(headers, &names::NAME) != Some(&*header_safe(value))
        {
            return reject(
                code::HEADER_MISMATCH,
                format!("the Mcp-Name header does not match params.{key}"),
                None,
            );
        }
    }
    let version = version.unwrap_or_default();
    if version != MODERN_VERSION {
        return reject(
            code::UNSUPPORTED_VERSION,
            format!("unsupported protocol version {version}"),
            Some(json!({"supported": [MODERN_VERSION], "requested": version})),
        );
    }
    Ok(())
}

/// Methods whose results are cacheable in 2026-07-28 (they carry `ttlMs` and `cacheScope`).
fn cacheable(method: &str) -> bool {
    matches!(
        method,
        "server/discover"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// Add the fields a 2026-07-28 client requires to a result that came from a session-era
/// upstream (or from mcpgw itself). Fields already present are left alone.
pub fn decorate(method: &str, answer: &mut Value) {
    let Some(result) = answer.get_mut("result").and_then(Value::as_object_mut) else {
        return;
    };
    if method == "ping" && result.is_empty() {
        return;
    }
    result
        .entry("resultType")
        .or_insert_with(|| json!("complete"));
    if cacheable(method) {
        result.entry("ttlMs").or_insert_with(|| json!(0));
        result
            .entry("cacheScope")
            .or_insert_with(|| json!("private"));
    }
}

/// The reverse of [`decorate`], for a session-era client answered by a 2026-07-28 upstream:
/// strict session-era clients refuse keys they do not know (an empty result must be `{}`), and
/// the `serverInfo` stamp a 2026-07-28 server puts in every result's `_meta` is not theirs to
/// see ([`unstamp`]).
pub fn undecorate(answer: &mut Value) {
    match answer {
        Value::Array(batch) => batch.iter_mut().for_each(undecorate_one),
        single => undecorate_one(single),
    }
}

fn undecorate_one(item: &mut Value) {
    let Some(result) = item.get_mut("result").and_then(Value::as_object_mut) else {
        return;
    };
    if result.get("resultType").and_then(Value::as_str) == Some("complete") {
        result.remove("resultType");
    }
    result.remove("ttlMs");
    result.remove("cacheScope");
    if let Some(meta) = result.get_mut("_meta")
        && !unstamp(meta)
    {
        result.remove("_meta");
    }
}

/// Take the 2026-07-28 `serverInfo` stamp out of a result's `_meta`, for a session-era client
/// (other keys, such as 2025-11-25's `io.modelcontextprotocol/related-task`, stay); whether
/// anything is left of it.
pub fn unstamp(meta: &mut Value) -> bool {
    match meta.as_object_mut() {
        Some(keys) => {
            keys.remove(META_SERVER_INFO);
            !keys.is_empty()
        }
        None => true,
    }
}
