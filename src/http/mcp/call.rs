//! Stages route, forward and encode for a `tools/call` or `prompts/get` read at its top level
//! ([`super::message::Call`]): the name picks the upstream, the request goes there as the
//! bytes it came in (the name's prefix cut, `_meta` shaped for the upstream's era, see
//! [`crate::upstream::raw`]), and the answer is written from the upstream's bytes with the
//! client's id put back and the result's top-level fields shaped for the client's era.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde_json::Value;

use super::Ctx;
use super::audit::Status;
use super::message::Call;
use super::route::{
    call_error, named_kind, params_agree, permitted, resolve_name, tracked, with_id,
};
use super::rules::Era;
use super::{AppState, Scope, finish};
use crate::jsonrpc::{self, code};
use crate::upstream::connection::{Caller, META_SERVER_INFO};
use crate::upstream::raw::{self, Members, RawAnswer};

/// The byte searches of [`shaped`], built once: `memmem::find` builds its searcher on every
/// call, which costs more than searching a result of a few hundred bytes.
struct Needles {
    result_type: Finder<'static>,
    ttl: Finder<'static>,
    cache_scope: Finder<'static>,
    server_info: Finder<'static>,
    task_id: Finder<'static>,
}

static NEEDLES: LazyLock<Needles> = LazyLock::new(|| Needles {
    result_type: Finder::new("\"resultType\""),
    ttl: Finder::new("\"ttlMs\""),
    cache_scope: Finder::new("\"cacheScope\""),
    server_info: Finder::new(&format!("\"{META_SERVER_INFO}\"")).into_owned(),
    task_id: Finder::new("\"taskId\""),
});

/// Route the call to its upstream, forward it, and write the answer for the client.
pub(super) async fn forward(
    state: &AppState,
    scope: &Scope,
    ctx: &Ctx<'_>,
    call: &mut Call<'_>,
    era: Era,
) -> (Vec<u8>, Status) {
    let modern = era.is_modern();
    let sep = state.registry.settings().separator.as_str();
    let (up, original) = match resolve_name(state, scope, sep, call.params.name()) {
        Ok((up, original)) => (up, original.to_owned()),
        Err(message) => {
            let error = jsonrpc::error(call.id_value(), code::INVALID_PARAMS, message);
            return tree_answer(error, call.method, modern);
        }
    };
    if let Err(why) = permitted(state, ctx, named_kind(call.method), &up, &original) {
        let error = jsonrpc::error(call.id_value(), code::FORBIDDEN, why);
        return tree_answer(error, call.method, modern);
    }
    if call.method == "tools/call"
        && let Err(why) = params_agree(ctx, &up, &original, || call.params.arguments())
    {
        let error = jsonrpc::error(call.id_value(), code::HEADER_MISMATCH, why);
        return tree_answer(error, call.method, modern);
    }
    call.params.rename(original);
    let (method, params) = (call.method, &call.params);
    let upstream = &up;
    let send = |caller: Caller| async move { upstream.request_raw(&caller, method, params).await };
    match tracked(state, ctx, &up, || call.id_key(), method, send).await {
        Ok(RawAnswer::Result(result)) => {
            if super::tasks::tracked(state, scope)
                && NEEDLES.task_id.find(result.text().as_bytes()).is_some()
                && let Ok(result) = serde_json::from_str::<Value>(result.text())
            {
                let answer = serde_json::json!({ "result": result });
                super::tasks::learn(state, scope, ctx, &up.name(), &answer).await;
            }
            let shaped = shaped(result.text(), || result.members(), call.method, modern);
            (write_answer(call.id, "result", &shaped), Status::Ok)
        }
        Ok(RawAnswer::Error(error)) => {
            (write_answer(call.id, "error", &error), Status::Error(None))
        }
        Ok(RawAnswer::Value(answer)) => {
            tree_answer(with_id(answer, call.id_value()), call.method, modern)
        }
        Err(err) => tree_answer(call_error(call.id_value(), &err), call.method, modern),
    }
}

/// An answer built as a tree (errors mcpgw makes, unusual upstream answers), finished and
/// serialized as the tree path does.
fn tree_answer(mut answer: Value, method: &str, modern: bool) -> (Vec<u8>, Status) {
    let status = Status::of(&answer);
    finish(modern.then_some(method), &mut answer);
    (serde_json::to_vec(&answer).unwrap_or_default(), status)
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
        if !modern
            && !mentions(&needles.ttl)
            && !mentions(&needles.cache_scope)
            && !mentions(&needles.server_info)
        {
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
        // `_meta` without the `serverInfo` stamp (`None`: as it came; `Some(None)`: dropped).
        let meta = members.get("_meta").and_then(|text| {
            let mut meta: Value = serde_json::from_str(text).ok()?;
            meta.get(META_SERVER_INFO)?;
            Some(crate::http::era::unstamp(&mut meta).then(|| Cow::Owned(meta.to_string())))
        });
        if meta.is_none() && !members.0.iter().any(|(k, _)| drop(k)) {
            return Cow::Borrowed(text);
        }
        let replace = |k: &str| match k {
            "_meta" => meta.clone(),
            _ => drop(k).then_some(None),
        };
        raw::push_object(&mut out, &members, replace, &[]);
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
            json!({"content": [], "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "up"}}}),
            json!({"content": [], "resultType": "complete", "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "up"}, "k": 1}}),
            json!({"content": [], "_meta": {"k": {"io.modelcontextprotocol/serverInfo": 1}}}),
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
    fn a_session_era_client_gets_no_server_info_stamp_and_a_2026_07_28_client_keeps_it() {
        let text =
            r#"{"content":[],"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"up"},"k":1}}"#;
        let old: Value =
            serde_json::from_str(&shaped(text, || Members::parse(text), "tools/call", false))
                .unwrap();
        assert_eq!(old, json!({"content": [], "_meta": {"k": 1}}));
        let new: Value =
            serde_json::from_str(&shaped(text, || Members::parse(text), "tools/call", true))
                .unwrap();
        assert_eq!(new["_meta"][META_SERVER_INFO]["name"], "up", "{new}");
        let only = r#"{"content":[],"_meta":{"io.modelcontextprotocol/serverInfo":{}}}"#;
        let old = shaped(only, || Members::parse(only), "tools/call", false);
        assert_eq!(old, r#"{"content":[]}"#);
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
}
