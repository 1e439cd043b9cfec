//! `tools/call` and `prompts/get` over Streamable HTTP, forwarded without a JSON tree: the
//! request is read only at its top level and in `params` (see [`crate::upstream::raw`]), and
//! the answer is written from the upstream's bytes with the client's id put back and the
//! result's top-level fields shaped for the client's era.
//!
//! The checks and their answers are the tree path's, in the same order. A request this path
//! does not carry (a batch, another method, a missing name, repeated keys, an id that is not a
//! string or number) goes back to the tree path untouched.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::Response;
use memchr::memmem::Finder;
use serde_json::Value;

use super::route::{call_error, resolve_name, tracked, with_id};
use super::{AppState, CURRENT_SESSION, Reply, Scope, finish, request_span, rpc_http};
use crate::h1::fields::{Incoming, Lookup};
use crate::http::era;
use crate::jsonrpc::{self, code};
use crate::upstream::connection::{META_PROTOCOL_VERSION, REQUEST_SINK};
use crate::upstream::raw::{self, Members, RawAnswer, RawParams};

/// The methods this path carries: both name what they call with `params.name`.
const METHODS: [&str; 2] = ["tools/call", "prompts/get"];

/// A call read at its top level.
struct Call<'a> {
    /// The client's id, as it wrote it (a string or a number).
    id: &'a str,
    method: &'static str,
    params: RawParams<'a>,
}

impl<'a> Call<'a> {
    fn parse(body: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?;
        let (top, params) = Members::parse_with(text, "params")?;
        if top.get_str("jsonrpc").as_deref() != Some("2.0") {
            return None;
        }
        let method = top.get_str("method")?;
        let method = METHODS.into_iter().find(|m| *m == method)?;
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

    /// The id as a `Value` (for error answers and the table of requests in flight).
    fn id_value(&self) -> Value {
        serde_json::from_str(self.id).unwrap_or(Value::Null)
    }

    /// The id as the table of requests in flight files it: its JSON text as serde_json prints
    /// it (as a cancellation's `requestId` will be printed). A small integer, or a string with
    /// no escapes, is already printed so: its text is taken as written, without a parse.
    fn id_key(&self) -> String {
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

/// The byte searches of this path, built once: `memmem::find` builds its searcher on every
/// call, which costs more than searching a body of a few hundred bytes.
struct Needles {
    methods: [Finder<'static>; 2],
    result_type: Finder<'static>,
    ttl: Finder<'static>,
    cache_scope: Finder<'static>,
    /// In `Accept`, searched as bytes: the value needs no check that it is text for this.
    event_stream: Finder<'static>,
    json: Finder<'static>,
}

static NEEDLES: LazyLock<Needles> = LazyLock::new(|| Needles {
    methods: METHODS.map(Finder::new),
    result_type: Finder::new("\"resultType\""),
    ttl: Finder::new("\"ttlMs\""),
    cache_scope: Finder::new("\"cacheScope\""),
    event_stream: Finder::new("text/event-stream"),
    json: Finder::new("application/json"),
});

/// Whether `body` may be a call this path carries (a byte search, before any parsing).
fn candidate(body: &[u8]) -> bool {
    NEEDLES.methods.iter().any(|m| m.find(body).is_some())
}

/// What became of a request on this path.
enum Outcome {
    /// Not a call this path carries: the tree path answers it.
    NotMine(Incoming, Bytes),
    /// Refused before dispatch (the 2026-07-28 ladder, a missing session header).
    Refused(Response),
    /// The JSON-RPC answer, serialized.
    Answer(Vec<u8>),
}

impl Outcome {
    /// The answer as a message, for the SSE stream of a call whose upstream streamed.
    fn into_message(self) -> Option<Value> {
        match self {
            Self::Answer(bytes) => serde_json::from_slice(&bytes).ok(),
            Self::NotMine(..) | Self::Refused(_) => None,
        }
    }
}

/// Answer a request posted to an MCP endpoint, if this path carries it; `Err` gives the
/// headers and body back for the tree path.
pub(super) async fn post(
    state: &Arc<AppState>,
    scope: &Scope,
    headers: Incoming,
    body: Bytes,
    session: Option<Arc<str>>,
) -> Result<Reply, (Incoming, Bytes)> {
    if !candidate(&body) {
        return Err((headers, body));
    }
    let accept = headers.value(&header::ACCEPT).unwrap_or_default();
    let streams = NEEDLES.event_stream.find(accept).is_some();
    let sse_only = streams && NEEDLES.json.find(accept).is_none();
    let has_session = session.is_some();
    let session = session.unwrap_or_else(|| "-".into());
    let (worker, scope) = (state.clone(), scope.clone());
    // Boxed where it is made: the forwarding chain is a large future, and moving it by value
    // (into the relay, into a task-local scope) copied it several times per call.
    let work = Box::pin(async move {
        let work = forward(&worker, &scope, headers, body, has_session);
        CURRENT_SESSION.scope(session, work).await
    });
    let outcome = if streams {
        // The upstream may stream progress or log notifications before it answers.
        let work = move |sink| REQUEST_SINK.scope(sink, work);
        match super::super::relay::answer_or_stream(state.clone(), work, Outcome::into_message)
            .await
        {
            Ok(outcome) => outcome,
            Err(streamed) => return Ok(Reply::Response(streamed)),
        }
    } else {
        work.await
    };
    match outcome {
        Outcome::NotMine(headers, body) => Err((headers, body)),
        Outcome::Refused(response) => Ok(Reply::Response(response)),
        Outcome::Answer(json) => Ok(Reply::Answer { json, sse_only }),
    }
}

/// Check, route and forward one call; runs with the session set (the table of requests in
/// flight files the call under it).
async fn forward(
    state: &AppState,
    scope: &Scope,
    headers: Incoming,
    body: Bytes,
    has_session: bool,
) -> Outcome {
    let Some(mut call) = Call::parse(&body) else {
        return Outcome::NotMine(headers, body);
    };
    let version_field = headers.value(&crate::h1::fields::PROTOCOL_VERSION);
    let version = version_field.and_then(crate::h1::fields::visible);
    if let Some(v) = version
        && !era::is_supported(v)
    {
        return Outcome::Refused(rpc_http(
            StatusCode::BAD_REQUEST,
            jsonrpc::error(
                call.id_value(),
                code::UNSUPPORTED_VERSION,
                format!("unsupported MCP-Protocol-Version {v}"),
            ),
        ));
    }
    let modern = version.is_some_and(era::version_is_modern)
        || call
            .params
            .meta()
            .is_some_and(|m| m.contains_key(META_PROTOCOL_VERSION));
    if modern {
        if let Err((status, body)) = era::check(Some(&headers), &call.ladder_view()) {
            return Outcome::Refused(rpc_http(status, body));
        }
    } else if !has_session && version_field.is_some() {
        // A session-era client past initialize must name its session.
        return Outcome::Refused(rpc_http(
            StatusCode::BAD_REQUEST,
            jsonrpc::error(
                call.id_value(),
                code::INVALID_REQUEST,
                "missing Mcp-Session-Id header (initialize first)",
            ),
        ));
    }
    let span = CURRENT_SESSION
        .try_with(|s| request_span(Some(&**s).filter(|s| *s != "-"), call.method))
        .ok()
        .flatten();
    let work = dispatch(state, scope, &mut call, modern);
    Outcome::Answer(match span {
        Some(span) => tracing::Instrument::instrument(work, span).await,
        None => work.await,
    })
}

/// Route the call to its upstream and write the answer for the client.
async fn dispatch(state: &AppState, scope: &Scope, call: &mut Call<'_>, modern: bool) -> Vec<u8> {
    let sep = state.registry.settings().separator.as_str();
    let (up, original) = match resolve_name(state, scope, sep, call.params.name()) {
        Ok((up, original)) => (up, original.to_owned()),
        Err(message) => {
            let error = jsonrpc::error(call.id_value(), code::INVALID_PARAMS, message);
            return tree_answer(error, call.method, modern);
        }
    };
    call.params.rename(original);
    let (method, params) = (call.method, &call.params);
    let send = || up.request_raw(method, params);
    match tracked(state, &up, || call.id_key(), method, send).await {
        Ok(RawAnswer::Result(result)) => {
            let shaped = shaped(result.text(), || result.members(), call.method, modern);
            write_answer(call.id, "result", &shaped)
        }
        Ok(RawAnswer::Error(error)) => write_answer(call.id, "error", &error),
        Ok(RawAnswer::Value(answer)) => {
            tree_answer(with_id(answer, call.id_value()), call.method, modern)
        }
        Err(err) => tree_answer(call_error(call.id_value(), &err), call.method, modern),
    }
}

/// An answer built as a tree (errors mcpgw makes, unusual upstream answers), finished and
/// serialized as the tree path does.
fn tree_answer(mut answer: Value, method: &str, modern: bool) -> Vec<u8> {
    finish(modern.then_some(method), &mut answer);
    serde_json::to_vec(&answer).unwrap_or_default()
}

fn write_answer(id: &str, member: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + id.len() + 40);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id.as_bytes());
    out.push(b',');
    raw::push_str(&mut out, member);
    out.push(b':');
    out.extend_from_slice(value.as_bytes());
    out.push(b'}');
    out
}

/// A result shaped for the client's era, as [`era::decorate`] / [`era::undecorate`] shape a
/// tree (neither method's result is cacheable): a 2026-07-28 client gets `resultType`; a
/// session-era client gets none of the 2026-07-28 fields. Copied as it came when nothing
/// changes, which is the common case.
fn shaped<'r>(
    text: &'r str,
    members: impl FnOnce() -> Option<Members<'r>>,
    method: &str,
    modern: bool,
) -> Cow<'r, str> {
    let needles = &*NEEDLES;
    let mentions = |key: &Finder<'_>| key.find(text.as_bytes()).is_some();
    // The common cases, decided by a byte search instead of a parse: a result that names none
    // of the 2026-07-28 fields anywhere is passed to a session-era client as it is, and gets
    // `resultType` put first for a 2026-07-28 client.
    if !mentions(&needles.result_type) {
        if !modern && !mentions(&needles.ttl) && !mentions(&needles.cache_scope) {
            return Cow::Borrowed(text);
        }
        if modern && let Some(rest) = text.trim_start().strip_prefix('{') {
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            return Cow::Owned(format!("{{\"resultType\":\"complete\"{sep}{rest}"));
        }
    }
    let Some(members) = members() else {
        // Not an object (or repeated keys): shaped as a tree.
        let mut answer = serde_json::json!({"result": serde_json::from_str::<Value>(text).unwrap_or(Value::Null)});
        finish(modern.then_some(method), &mut answer);
        return Cow::Owned(answer["result"].to_string());
    };
    let mut out = Vec::with_capacity(text.len() + 32);
    if modern {
        if members.get("resultType").is_some() {
            return Cow::Borrowed(text);
        }
        raw::push_object(
            &mut out,
            &members,
            |_| None,
            &[("resultType", r#""complete""#)],
        );
    } else {
        let drop = |key: &str| match key {
            "resultType" => members.get_str(key).as_deref() == Some("complete"),
            "ttlMs" | "cacheScope" => true,
            _ => false,
        };
        if !members.0.iter().any(|(k, _)| drop(k)) {
            return Cow::Borrowed(text);
        }
        raw::push_object(&mut out, &members, |k| drop(k).then_some(None), &[]);
    }
    // Only JSON text and `push_str` output went in.
    Cow::Owned(String::from_utf8(out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The tree path's shaping of the same result, for comparison.
    fn tree_shaped(result: &Value, modern: bool) -> Value {
        let mut answer = json!({"jsonrpc": "2.0", "id": 1, "result": result});
        finish(modern.then_some("tools/call"), &mut answer);
        answer["result"].clone()
    }

    #[test]
    fn results_are_shaped_as_the_tree_path_shapes_them() {
        let results = [
            json!({"content": [{"type": "text", "text": "hi"}], "isError": false}),
            json!({"content": [], "resultType": "complete", "ttlMs": 5, "cacheScope": "private"}),
            json!({"content": [], "resultType": "input_required"}),
            json!({}),
            json!({"content": [{"type": "text", "text": "resultType"}]}),
            json!({"structuredContent": {"ttlMs": 1}}),
            json!([1, 2]),
            json!("text"),
        ];
        for result in &results {
            for modern in [true, false] {
                let raw = result.to_string();
                let got: Value = serde_json::from_str(&shaped(
                    &raw,
                    || Members::parse(&raw),
                    "tools/call",
                    modern,
                ))
                .unwrap();
                assert_eq!(got, tree_shaped(result, modern), "{result} modern={modern}");
            }
        }
    }

    #[test]
    fn an_unchanged_result_is_copied_byte_for_byte() {
        let text = r#"{"content": [{"type":"text","text":"1e2 \u00e9"}], "isError":false}"#;
        assert_eq!(
            shaped(text, || Members::parse(text), "tools/call", false),
            text
        );
    }

    #[test]
    fn answers_carry_the_client_id_as_written() {
        let out = write_answer(r#""abc-1""#, "result", r#"{"ok":true}"#);
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap(),
            json!({"jsonrpc": "2.0", "id": "abc-1", "result": {"ok": true}})
        );
    }

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
    fn only_well_formed_calls_take_this_path() {
        let ok = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"a__b","arguments":{}}}"#;
        let call = Call::parse(ok).unwrap();
        assert_eq!(
            (call.id, call.method, call.params.name()),
            ("7", "tools/call", "a__b")
        );
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
        }
        assert!(candidate(ok));
        assert!(!candidate(br#"{"method":"tools/list"}"#));
    }
}
