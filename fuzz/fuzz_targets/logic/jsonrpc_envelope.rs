//! Bytes as a downstream JSON-RPC message, through the pure steps mcpgw runs before and after
//! dispatch: classification, the 2026-07-28 validation ladder (with no headers and with headers
//! derived from the body, so the deep rungs are reached), result decoration, envelope
//! stripping, and the `Mcp-Name` header encoding.
//!
//! Properties: nothing panics; `header_safe` always yields a valid HTTP header value; a message
//! whose headers were derived from its own body never fails on a header mismatch.

use http::{HeaderMap, HeaderValue};
use mcpgw::http::era;
use mcpgw::jsonrpc::{self, Kind};
use mcpgw::upstream::connection::{header_safe, strip_envelope};
use serde_json::Value;

/// One input.
pub fn run(data: &[u8]) {
    let Ok(msg) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let kind = jsonrpc::kind(&msg);
    let method = jsonrpc::method(&msg).unwrap_or_default().to_owned();
    if kind == Kind::Request || kind == Kind::Notification {
        assert!(msg.get("method").is_some_and(Value::is_string));
    }

    let _ = era::is_modern(None, &msg);
    let _ = era::is_modern(Some(&HeaderMap::new()), &msg);
    let _ = era::check(None, &msg);

    let derived = derived_headers(&msg, &method);
    let _ = era::is_modern(Some(&derived), &msg);
    if let Err((_, answer)) = era::check(Some(&derived), &msg) {
        let code = answer["error"]["code"].as_i64();
        // Headers taken from the body agree with it whenever they could be represented.
        if version(&msg).is_some() && derived.len() == expected_headers(&msg, &method) {
            assert_ne!(
                code,
                Some(jsonrpc::code::HEADER_MISMATCH),
                "self-consistent headers refused: {answer}"
            );
        }
    }

    let mut answer = msg.clone();
    era::decorate(&method, &mut answer);
    if let Some(params) = msg.get("params") {
        let mut params = params.clone();
        strip_envelope(&mut params);
        if let Some(meta) = params.get("_meta").and_then(Value::as_object) {
            assert!(
                meta.keys()
                    .all(|k| !k.starts_with("io.modelcontextprotocol/")),
                "envelope key survived stripping"
            );
        }
    }

    for text in strings(&msg) {
        let safe = header_safe(text);
        assert!(
            HeaderValue::from_str(&safe).is_ok(),
            "header_safe produced an invalid header value"
        );
    }
}

fn name_key(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

fn version(msg: &Value) -> Option<&str> {
    msg.get("params")?
        .get("_meta")?
        .get(mcpgw::upstream::connection::META_PROTOCOL_VERSION)?
        .as_str()
}

fn name(msg: &Value, method: &str) -> Option<String> {
    let key = name_key(method)?;
    Some(header_safe(msg.get("params")?.get(key)?.as_str()?).into_owned())
}

/// How many headers a fully representable body yields.
fn expected_headers(msg: &Value, method: &str) -> usize {
    usize::from(version(msg).is_some()) + 1 + usize::from(name(msg, method).is_some())
}

fn derived_headers(msg: &Value, method: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // Only values that survive the wire as text (`HeaderValue::to_str`): visible ASCII.
    let mut put = |key: &'static str, value: &str| {
        if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return;
        }
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(key, v);
        }
    };
    if let Some(v) = version(msg) {
        put("mcp-protocol-version", v);
    }
    put("mcp-method", method);
    if let Some(n) = name(msg, method) {
        put("mcp-name", &n);
    }
    headers
}

/// Every string in the message (bounded, so deep inputs stay fast).
fn strings(msg: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    let mut stack = vec![msg];
    while let Some(v) = stack.pop() {
        if out.len() >= 64 {
            break;
        }
        match v {
            Value::String(s) => out.push(s.as_str()),
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                out.extend(map.keys().map(String::as_str));
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    out
}
