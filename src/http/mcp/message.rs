//! Stage 1 of the pipeline, **decode**: a posted body becomes one [`Message`].
//!
//! The message keeps what it can as the bytes it came in and parses only what a stage reads. A
//! `tools/call` or `prompts/get` is read at its top level and in `params` ([`Call`], over
//! [`crate::upstream::raw`]): its arguments are never parsed, and go upstream as they came.
//! Anything else (other methods, batches, notifications, a client's answers, a call this reader
//! does not take: repeated keys, an id that is not a string or number) is parsed as a tree.
//! Every later stage reads either form through the same methods, so there is one path with
//! two representations, not two paths.

use std::sync::LazyLock;

use axum::http::StatusCode;
use memchr::memmem::Finder;
use serde_json::Value;

use crate::h1::fields::Lookup;
use crate::http::era;
use crate::jsonrpc::{self, Kind};
use crate::upstream::connection::META_PROTOCOL_VERSION;
use crate::upstream::raw::{Members, RawParams};

/// The methods read without a tree: both name what they call with `params.name`.
const RAW_METHODS: [&str; 2] = ["tools/call", "prompts/get"];

/// The byte searches of [`Message::decode`], built once: `memmem::find` builds its searcher on
/// every call, which costs more than searching a body of a few hundred bytes.
static RAW_METHOD_FINDERS: LazyLock<[Finder<'static>; 2]> =
    LazyLock::new(|| RAW_METHODS.map(Finder::new));

/// One JSON-RPC message (or batch) posted to an MCP endpoint.
#[derive(Debug)]
pub enum Message<'b> {
    /// A `tools/call` or `prompts/get` request, read at its top level.
    Call(Call<'b>),
    /// Anything else, as a tree.
    Tree(Value),
}

impl<'b> Message<'b> {
    /// Decode `body`; `Err` when it is not JSON.
    pub fn decode(body: &'b [u8]) -> Result<Self, serde_json::Error> {
        // A byte search first: most bodies that are not calls never reach the reader.
        if RAW_METHOD_FINDERS.iter().any(|m| m.find(body).is_some())
            && let Some(call) = Call::parse(body)
        {
            return Ok(Self::Call(call));
        }
        serde_json::from_slice(body).map(Self::Tree)
    }

    /// The id, for an answer mcpgw writes itself (`null` when there is none).
    pub fn id(&self) -> Value {
        match self {
            Self::Call(call) => call.id_value(),
            Self::Tree(tree) => tree.get("id").cloned().unwrap_or(Value::Null),
        }
    }

    /// Request, notification, response or neither.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Call(_) => Kind::Request,
            Self::Tree(tree) => jsonrpc::kind(tree),
        }
    }

    /// The method, when it has one.
    pub fn method(&self) -> Option<&str> {
        match self {
            Self::Call(call) => Some(call.method),
            Self::Tree(tree) => jsonrpc::method(tree),
        }
    }

    /// Whether it is a batch.
    pub fn is_batch(&self) -> bool {
        matches!(self, Self::Tree(Value::Array(_)))
    }

    /// Whether its `params._meta` names a protocol version (2026-07-28's envelope).
    pub fn declares_version(&self) -> bool {
        match self {
            Self::Call(call) => call
                .params
                .meta()
                .is_some_and(|m| m.contains_key(META_PROTOCOL_VERSION)),
            Self::Tree(tree) => tree
                .get("params")
                .and_then(|p| p.get("_meta"))
                .and_then(|m| m.get(META_PROTOCOL_VERSION))
                .is_some(),
        }
    }

    /// The 2026-07-28 validation ladder ([`era::check`]) on this request.
    pub fn ladder(&self, headers: Option<&dyn Lookup>) -> Result<(), (StatusCode, Value)> {
        match self {
            Self::Call(call) => era::check(headers, &call.ladder_view()),
            Self::Tree(tree) => era::check(headers, tree),
        }
    }
}

/// A `tools/call` or `prompts/get` read at its top level.
#[derive(Debug)]
pub struct Call<'b> {
    /// The client's id, as it wrote it (a string or a number).
    pub id: &'b str,
    /// One of [`RAW_METHODS`].
    pub method: &'static str,
    /// `params`, member by member, with the name it calls.
    pub params: RawParams<'b>,
}

impl<'b> Call<'b> {
    /// Read `body` as a call; `None` when it is not one this reader takes.
    pub fn parse(body: &'b [u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?;
        let (top, params) = Members::parse_with(text, "params")?;
        if top.get_str("jsonrpc").as_deref() != Some("2.0") {
            return None;
        }
        let method = top.get_str("method")?;
        let method = RAW_METHODS.into_iter().find(|m| *m == method)?;
        let id = top.get("id")?;
        if !matches!(id.as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9')) {
            return None;
        }
        // Read in the top level's pass when it is an object without repeated keys; parsed
        // again only to come to the same `None` otherwise.
        let params = match params {
            Some(params) => params,
            None => Members::parse(top.get("params")?)?,
        };
        let params = RawParams::new(params, "name")?;
        Some(Self { id, method, params })
    }

    /// The id as a `Value` (for error answers).
    pub fn id_value(&self) -> Value {
        serde_json::from_str(self.id).unwrap_or(Value::Null)
    }

    /// The id as the table of requests in flight files it: its JSON text as serde_json prints
    /// it (as a cancellation's `requestId` will be printed). A small integer, or a string with
    /// no escapes, is already printed so: its text is taken as written, without a parse.
    pub fn id_key(&self) -> String {
        let t = self.id;
        let small_int = t == "0"
            || (t.len() <= 18
                && t.starts_with(|c: char| c.is_ascii_digit() && c != '0')
                && t.bytes().all(|b| b.is_ascii_digit()));
        let plain_str = t.len() >= 2 && t.starts_with('"') && !t.contains('\\');
        if small_int || plain_str {
            t.to_owned()
        } else {
            self.id_value().to_string()
        }
    }

    /// What the 2026-07-28 ladder ([`era::check`]) reads of a request, as a tree.
    fn ladder_view(&self) -> Value {
        let mut params = serde_json::Map::new();
        params.insert("name".into(), Value::String(self.params.name().to_owned()));
        if let Some(meta) = self.params.meta() {
            params.insert("_meta".into(), Value::Object(meta.clone()));
        }
        serde_json::json!({"jsonrpc": "2.0", "id": self.id_value(), "method": self.method, "params": params})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_filed_as_serde_json_prints_them() {
        for id in [
            "0",
            "7",
            "123456789012345678",
            "1234567890123456789012",
            "-3",
            "1e2",
            "1.50",
            r#""abc-1""#,
            r#""é ☃""#,
            r#""a\u0041""#,
            r#""tab\t""#,
            r#""""#,
        ] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"x"}}}}"#
            );
            let call = Call::parse(body.as_bytes()).unwrap();
            assert_eq!(call.id_key(), call.id_value().to_string(), "{id}");
        }
    }

    #[test]
    fn only_well_formed_calls_are_read_without_a_tree() {
        let ok = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a__b","arguments":{}}}"#;
        let call = Call::parse(ok).unwrap();
        assert_eq!(
            (call.id, call.method, call.params.name()),
            ("7", "tools/call", "a__b")
        );
        assert!(matches!(Message::decode(ok), Ok(Message::Call(_))));
        for body in [
            // Batches, other methods, notifications, null or object ids, bad versions.
            &br#"[{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}]"#[..],
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#,
            br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#,
            br#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"x"}}"#,
            br#"{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{"name":"x"}}"#,
            br#"{"jsonrpc":"1.0","id":7,"method":"tools/call","params":{"name":"x"}}"#,
            // No name, a name that is not a string, repeated keys, no params.
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":3}}"#,
            br#"{"jsonrpc":"2.0","id":7,"id":8,"method":"tools/call","params":{"name":"x"}}"#,
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#,
        ] {
            assert!(
                Call::parse(body).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
            // The same message, as a tree: one message type either way.
            assert!(
                matches!(Message::decode(body), Ok(Message::Tree(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(Message::decode(b"{\"jsonrpc\":").is_err());
    }

    #[test]
    fn both_forms_read_alike() {
        let body = br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let raw = Message::decode(body).unwrap();
        let tree = Message::Tree(serde_json::from_slice(body).unwrap());
        assert!(matches!(raw, Message::Call(_)));
        for m in [&raw, &tree] {
            assert_eq!(m.id(), serde_json::json!("a"));
            assert_eq!(m.kind(), Kind::Request);
            assert_eq!(m.method(), Some("tools/call"));
            assert!(m.declares_version());
            assert!(!m.is_batch());
        }
        assert_eq!(raw.ladder(None).is_ok(), tree.ladder(None).is_ok());
    }
}
