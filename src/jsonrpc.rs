//! JSON-RPC 2.0 envelopes, kept as `serde_json::Value` so fields mcpgw does not model pass
//! through untouched. Only ids and namespaced names are ever rewritten.

use serde_json::{Value, json};

/// Standard and mcpgw-specific error codes.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Bad params.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The upstream serving this request is offline or failed (server-defined range).
    pub const UPSTREAM_UNAVAILABLE: i64 = -32001;
    /// The upstream did not answer in time.
    pub const UPSTREAM_TIMEOUT: i64 = -32002;
    /// The gateway's policy does not let this principal reach what it asked for.
    pub const FORBIDDEN: i64 = -32003;
    /// 2026-07-28: `Mcp-Method`/`Mcp-Name` headers disagree with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// 2026-07-28: unsupported protocol version.
    pub const UNSUPPORTED_VERSION: i64 = -32022;
}

/// A request object.
pub fn request(id: impl Into<Value>, method: &str, params: Option<Value>) -> Value {
    let mut msg = json!({"jsonrpc": "2.0", "id": id.into(), "method": method});
    if let Some(p) = params {
        msg["params"] = p;
    }
    msg
}

/// A notification object.
pub fn notification(method: &str, params: Option<Value>) -> Value {
    let mut msg = json!({"jsonrpc": "2.0", "method": method});
    if let Some(p) = params {
        msg["params"] = p;
    }
    msg
}

/// A success response.
pub fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response.
pub fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// What kind of message a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has `method` and `id`.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and `result` or `error`.
    Response,
    /// None of the above.
    Invalid,
}

/// Classify a message.
pub fn kind(msg: &Value) -> Kind {
    let Some(obj) = msg.as_object() else {
        return Kind::Invalid;
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Kind::Invalid;
    }
    let id_ok = obj
        .get("id")
        .is_some_and(|id| id.is_string() || id.is_number() || id.is_null());
    match (obj.get("method"), obj.contains_key("id")) {
        (Some(m), true) if m.is_string() && id_ok => Kind::Request,
        (Some(m), false) if m.is_string() => Kind::Notification,
        (None, true) if id_ok && (obj.contains_key("result") || obj.contains_key("error")) => {
            Kind::Response
        }
        _ => Kind::Invalid,
    }
}

/// The method of a request or notification.
pub fn method(msg: &Value) -> Option<&str> {
    msg.get("method").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        assert_eq!(kind(&request(1, "ping", None)), Kind::Request);
        assert_eq!(
            kind(&notification("notifications/initialized", None)),
            Kind::Notification
        );
        assert_eq!(kind(&result(json!("a"), json!({}))), Kind::Response);
        assert_eq!(
            kind(&json!({"jsonrpc": "2.0", "id": {}, "method": "x"})),
            Kind::Invalid
        );
        assert_eq!(kind(&json!({"id": 1, "method": "x"})), Kind::Invalid);
        assert_eq!(kind(&json!([1])), Kind::Invalid);
    }
}
