//! Stage 3 of the pipeline, **era rules**: which protocol era a message speaks, and whether it
//! may be dispatched. Written once for every transport; a transport without per-message
//! headers (legacy SSE, WebSocket) passes `None` and its connection is the session.
//!
//! In order, first refusal wins:
//! 1. an `MCP-Protocol-Version` header mcpgw does not speak: 400, -32022;
//! 2. a 2026-07-28 message (by that header or by its `_meta` envelope): no batches, and a
//!    request must pass the spec's ladder ([`crate::http::era::check`]);
//! 3. a session-era request past `initialize` that names a version but no session: 400.

use axum::http::StatusCode;
use serde_json::Value;

use super::message::Message;
use crate::h1::fields::{Lookup, PROTOCOL_VERSION};
use crate::http::era;
use crate::jsonrpc::{self, Kind, code};

/// The protocol era a message speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// 2024-11-05 … 2025-11-25: `initialize`, sessions.
    Session,
    /// 2026-07-28: stateless, `_meta` on every request.
    Modern,
}

impl Era {
    /// Whether it is 2026-07-28.
    pub fn is_modern(self) -> bool {
        self == Self::Modern
    }
}

/// A message refused before dispatch: the HTTP status (on Streamable HTTP) and the JSON-RPC
/// error (on every transport).
#[derive(Debug)]
pub struct Refusal {
    /// The status a Streamable-HTTP answer carries.
    pub status: StatusCode,
    /// The JSON-RPC error.
    pub body: Value,
}

impl Refusal {
    fn bad_request(id: Value, code: i64, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: jsonrpc::error(id, code, message),
        }
    }
}

/// Apply the rules to `msg`. `headers` is `None` on transports without per-message headers;
/// `has_session` says whether the message came within a session (always, on a connection).
pub fn admit(
    headers: Option<&dyn Lookup>,
    msg: &Message<'_>,
    has_session: bool,
) -> Result<Era, Refusal> {
    let version = headers.and_then(|h| h.value(&PROTOCOL_VERSION));
    let version_text = version.and_then(crate::h1::fields::visible);
    if let Some(v) = version_text
        && !era::is_supported(v)
    {
        return Err(Refusal::bad_request(
            msg.id(),
            code::UNSUPPORTED_VERSION,
            format!("unsupported MCP-Protocol-Version {v}"),
        ));
    }
    let modern = version_text.is_some_and(era::version_is_modern) || msg.declares_version();
    if modern {
        if msg.is_batch() {
            return Err(Refusal::bad_request(
                Value::Null,
                code::INVALID_REQUEST,
                "batches are not part of protocol version 2026-07-28",
            ));
        }
        if msg.kind() == Kind::Request {
            msg.ladder(headers)
                .map_err(|(status, body)| Refusal { status, body })?;
        }
        return Ok(Era::Modern);
    }
    if !has_session
        && version.is_some()
        && msg.kind() == Kind::Request
        && msg.method() != Some("initialize")
    {
        return Err(Refusal::bad_request(
            msg.id(),
            code::INVALID_REQUEST,
            "missing Mcp-Session-Id header (initialize first)",
        ));
    }
    Ok(Era::Session)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(version: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            PROTOCOL_VERSION.clone(),
            HeaderValue::from_str(version).unwrap(),
        );
        h
    }

    /// Both forms of the same message meet the same rule with the same answer.
    fn both(body: &[u8]) -> [Message<'_>; 2] {
        [
            Message::decode(body).unwrap(),
            Message::Tree(serde_json::from_slice(body).unwrap()),
        ]
    }

    #[test]
    fn each_rule_answers_alike_for_a_call_and_a_tree() {
        let call = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"a__b"}}"#;
        for msg in both(call) {
            let unknown = admit(Some(&headers("1999-01-01")), &msg, true).unwrap_err();
            assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
            assert_eq!(unknown.body["error"]["code"], code::UNSUPPORTED_VERSION);
            assert_eq!(unknown.body["id"], 3);
            let no_session = admit(Some(&headers("2025-06-18")), &msg, false).unwrap_err();
            assert_eq!(no_session.body["error"]["code"], code::INVALID_REQUEST);
            assert!(
                no_session.body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("Mcp-Session-Id")
            );
            assert_eq!(
                admit(Some(&headers("2025-06-18")), &msg, true).unwrap(),
                Era::Session
            );
            assert_eq!(admit(None, &msg, false).unwrap(), Era::Session);
            // 2026-07-28 by its header, without the envelope: the ladder refuses it.
            let ladder = admit(Some(&headers("2026-07-28")), &msg, false).unwrap_err();
            assert_eq!(ladder.body["error"]["code"], code::INVALID_PARAMS);
        }
    }

    #[test]
    fn initialize_and_notifications_need_no_session() {
        let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        for body in [&init[..], &note[..]] {
            let msg = Message::decode(body).unwrap();
            assert_eq!(
                admit(Some(&headers("2025-06-18")), &msg, false).unwrap(),
                Era::Session
            );
        }
    }

    #[test]
    fn a_2026_batch_is_refused() {
        let batch = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#;
        let msg = Message::decode(batch).unwrap();
        let refused = admit(Some(&headers("2026-07-28")), &msg, false).unwrap_err();
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("batches")
        );
        assert_eq!(
            admit(Some(&headers("2025-06-18")), &msg, true).unwrap(),
            Era::Session
        );
    }
}
