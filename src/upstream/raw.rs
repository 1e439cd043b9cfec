//! Forwarding a request without building its JSON tree.
//!
//! A forwarded `tools/call` only needs a few things read or changed: the tool's name (to route
//! it, then to strip the upstream prefix), the `_meta` envelope (stamped or stripped for the
//! upstream's era), and, on the way back, the id and the result's top-level fields. Everything
//! else (the arguments, the content of the result) is copied as the bytes it came in, rather
//! than parsed into a `serde_json::Value` and serialized again (the largest share of the
//! gateway's own work per call when it was; docs/PERFORMANCE.md).
//!
//! Anything unusual (duplicate keys, a body that is not the expected shape) is not handled here:
//! the caller falls back to the `Value` path, which answers it as before.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::UpstreamError;

/// The top-level members of a JSON object, in order, values as their JSON text (checked, not
/// parsed: see [`super::scan`]). `None` from [`Members::parse`] when the text is not an object
/// or repeats a key (a `Value` keeps the last of repeated keys; copying both would forward
/// something else than the slow path does).
///
/// A key is `Cow::Borrowed` exactly when it is the text between its quotes as written (it had
/// no escapes, so it has no quote, backslash or control character either), and is then copied
/// back between quotes as it is.
#[derive(Debug, Default)]
pub struct Members<'a>(pub Vec<(Cow<'a, str>, &'a str)>);

impl<'a> Members<'a> {
    /// Parse the members of the object `text`.
    pub fn parse(text: &'a str) -> Option<Self> {
        Self::unique(super::scan::members(text)?)
    }

    /// [`Members::parse`], with the members of the object under key `inner` read in the same
    /// pass: `(top, None)` when that member is absent, not an object or repeats a key (then
    /// `Members::parse` of its text says `None` too).
    pub fn parse_with(text: &'a str, inner: &str) -> Option<(Self, Option<Self>)> {
        let (top, nested) = super::scan::members_with(text, Some(inner))?;
        Some((Self::unique(top)?, nested.and_then(Self::unique)))
    }

    fn unique(members: Vec<super::scan::Member<'a>>) -> Option<Self> {
        let unique = members
            .iter()
            .enumerate()
            .all(|(i, (k, _))| members[..i].iter().all(|(other, _)| other != k));
        unique.then_some(Self(members))
    }

    /// The JSON text of member `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Member `key` when it is a JSON string.
    pub fn get_str(&self, key: &str) -> Option<Cow<'a, str>> {
        let raw = self.get(key)?;
        let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
        if inner.contains('\\') {
            serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(inner))
        }
    }
}

/// Append `s` as a JSON string.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    // What serde_json escapes: the quote, the backslash and the control characters. The strings
    // written here (methods, names, ids) seldom hold one, and copying them as they are costs a
    // fraction of a pass through the serializer.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Append `members` as an object, with `replace` deciding per member: `None` keeps it as it
/// came, `Some(None)` drops it, `Some(Some(text))` writes `text` (JSON) in its place.
pub fn push_object<'m>(
    out: &mut Vec<u8>,
    members: &'m Members<'_>,
    mut replace: impl FnMut(&str) -> Option<Option<Cow<'m, str>>>,
    extra: &[(&str, &str)],
) {
    out.push(b'{');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    for (key, value) in &members.0 {
        let text = match replace(key) {
            None => Cow::Borrowed(*value),
            Some(None) => continue,
            Some(Some(text)) => text,
        };
        sep(out);
        match key {
            // As written, and without escapes: copied between its quotes.
            Cow::Borrowed(key) => {
                out.push(b'"');
                out.extend_from_slice(key.as_bytes());
                out.push(b'"');
            }
            Cow::Owned(key) => push_str(out, key),
        }
        out.push(b':');
        out.extend_from_slice(text.as_bytes());
    }
    for (key, text) in extra {
        sep(out);
        push_str(out, key);
        out.push(b':');
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b'}');
}

/// The params of a request forwarded as they came, but for their name (the upstream's own,
/// the routing prefix cut off) and the era's `_meta` envelope, which the connection applies.
#[derive(Debug)]
pub struct RawParams<'a> {
    members: Members<'a>,
    /// Which member carries the name (`name` for tools and prompts).
    name_key: &'static str,
    name: String,
    /// `_meta`, parsed (it is small, and the envelope is edited inside it).
    meta: Option<Map<String, Value>>,
}

impl<'a> RawParams<'a> {
    /// Params named by their `name_key` member (a string). `None` when that member is not a
    /// string, or `_meta` is present but not an object: the `Value` path answers those.
    pub fn new(members: Members<'a>, name_key: &'static str) -> Option<Self> {
        let name = members.get_str(name_key)?.into_owned();
        let meta = match members.get("_meta") {
            None => None,
            Some(raw) => match serde_json::from_str::<Value>(raw).ok()? {
                Value::Object(m) => Some(m),
                _ => return None,
            },
        };
        Some(Self {
            members,
            name_key,
            name,
            meta,
        })
    }

    /// The name: as the client gave it, until [`RawParams::rename`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Forward under another name (the upstream's own).
    pub fn rename(&mut self, name: String) {
        self.name = name;
    }

    /// The `arguments` member, parsed: only for the few tools whose arguments travel in
    /// headers too (`upstream::param_headers`).
    pub fn arguments(&self) -> Option<Value> {
        serde_json::from_str(self.members.get("arguments")?).ok()
    }

    /// `_meta`, when the client sent one.
    pub fn meta(&self) -> Option<&Map<String, Value>> {
        self.meta.as_ref()
    }

    /// The params as a `Value` (for transports that need one: legacy SSE).
    pub fn to_value(&self) -> Result<Value, UpstreamError> {
        let mut out = Vec::new();
        self.write(&mut out, None);
        serde_json::from_slice(&out).map_err(|e| UpstreamError::Protocol {
            detail: format!("cannot serialize the params ({e})"),
        })
    }

    /// Append the params. `envelope`: `Some` stamps its 2026-07-28 keys into `_meta`; `None`
    /// strips every `io.modelcontextprotocol/` key from it (session era), and drops `_meta`
    /// when nothing else is left.
    pub fn write(&self, out: &mut Vec<u8>, envelope: Option<&Envelope>) {
        let meta_text = self.meta_text(envelope);
        let mut name = Vec::with_capacity(self.name.len() + 2);
        push_str(&mut name, &self.name);
        // JSON text from `push_str` is UTF-8.
        let name = String::from_utf8(name).unwrap_or_default();
        let has_meta = self.meta.is_some();
        let stamp_new = envelope.is_some() && !has_meta;
        let stamp;
        let extra: &[(&str, &str)] = match (&meta_text, stamp_new) {
            (Some(text), true) => {
                stamp = [("_meta", &**text)];
                &stamp
            }
            _ => &[],
        };
        push_object(
            out,
            &self.members,
            |key| {
                if key == self.name_key {
                    Some(Some(Cow::Borrowed(name.as_str())))
                } else if key == "_meta" {
                    Some(meta_text.as_deref().map(Cow::Borrowed))
                } else {
                    None
                }
            },
            extra,
        );
    }

    /// The `_meta` text to send, `None` to send none.
    fn meta_text<'e>(&self, envelope: Option<&'e Envelope>) -> Option<Cow<'e, str>> {
        match (envelope, &self.meta) {
            (Some(stamp), None) => Some(Cow::Borrowed(&stamp.text)),
            (Some(stamp), Some(meta)) => {
                let mut meta = meta.clone();
                fill_envelope(&mut meta, &stamp.keys);
                serde_json::to_string(&meta).ok().map(Cow::Owned)
            }
            (None, meta) => {
                let mut meta = meta.clone()?;
                meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
                (!meta.is_empty())
                    .then(|| serde_json::to_string(&meta).ok().map(Cow::Owned))
                    .flatten()
            }
        }
    }
}

/// Put the envelope `keys` into a request's own `_meta`: the protocol version always (the
/// upstream's), the others only where the request has none. A 2026-07-28 client's own envelope
/// (its capabilities, its `clientInfo`, its log level) reaches the upstream as it sent it.
pub fn fill_envelope(meta: &mut Map<String, Value>, keys: &Map<String, Value>) {
    for (k, v) in keys {
        if k == super::message::META_PROTOCOL_VERSION || !meta.contains_key(k) {
            meta.insert(k.clone(), v.clone());
        }
    }
}

/// The 2026-07-28 keys a stateless upstream gets in every request's `_meta`, and the same as
/// JSON text (what most requests, which carry no `_meta` of their own, get as it is).
#[derive(Debug, Clone)]
pub struct Envelope {
    keys: Map<String, Value>,
    text: String,
}

impl Envelope {
    /// The envelope of these keys.
    pub fn new(keys: Map<String, Value>) -> Self {
        let text = Value::Object(keys.clone()).to_string();
        Self { keys, text }
    }
}

/// An upstream's answer as it came off the wire: the JSON body of a plain answer, or a message
/// already parsed (from an event stream, or a JSON-RPC error on an HTTP error status).
#[derive(Debug)]
pub enum Received {
    /// An `application/json` body, not parsed yet.
    Json(Bytes),
    /// A parsed message.
    Value(Value),
}

impl From<Value> for Received {
    fn from(message: Value) -> Self {
        Self::Value(message)
    }
}

impl Received {
    /// The answer as a `Value`.
    pub fn into_value(self) -> Result<Value, UpstreamError> {
        match self {
            Self::Value(v) => Ok(v),
            Self::Json(body) => serde_json::from_slice(&body).map_err(not_json),
        }
    }

    /// The answer split at its top level: a result or an error, copied as they came; any other
    /// shape (unknown members, neither member) as a `Value`.
    pub fn into_answer(self) -> Result<RawAnswer, UpstreamError> {
        let body = match self {
            Self::Value(v) => return Ok(RawAnswer::Value(v)),
            Self::Json(body) => body,
        };
        let text = std::str::from_utf8(&body).map_err(|e| UpstreamError::Protocol {
            detail: format!("the answer is not JSON ({e})"),
        })?;
        let Some((members, result_members)) = Members::parse_with(text, "result") else {
            return serde_json::from_str(text)
                .map(RawAnswer::Value)
                .map_err(not_json);
        };
        let mut result = None;
        let mut error = None;
        for (key, value) in &members.0 {
            match key.as_ref() {
                "jsonrpc" | "id" => {}
                "result" => result = Some(*value),
                "error" => error = Some(*value),
                _ => {
                    return serde_json::from_str(text)
                        .map(RawAnswer::Value)
                        .map_err(not_json);
                }
            }
        }
        Ok(match (result, error) {
            (Some(r), None) => RawAnswer::Result(RawResult::new(r, result_members)),
            (None, Some(e)) => RawAnswer::Error(e.into()),
            _ => RawAnswer::Value(serde_json::from_str(text).map_err(not_json)?),
        })
    }
}

fn not_json(e: serde_json::Error) -> UpstreamError {
    UpstreamError::Protocol {
        detail: format!("the answer is not JSON ({e})"),
    }
}

/// A `result` as the upstream wrote it, with where its top-level members are when it is an
/// object without repeated keys: found in the answer's own scan, so that shaping it for the
/// client does not scan it again.
#[derive(Debug)]
pub struct RawResult {
    text: Box<str>,
    members: Option<Vec<(Key, Range<usize>)>>,
}

/// A member's key in [`RawResult`]: where it is written, or unescaped when it has escapes.
#[derive(Debug)]
enum Key {
    At(Range<usize>),
    Unescaped(String),
}

impl RawResult {
    /// The result `text` (a slice of the answer), and its members as the scan found them.
    fn new(text: &str, members: Option<Members<'_>>) -> Self {
        let base = text.as_ptr() as usize;
        let at = |part: &str| {
            let start = part.as_ptr() as usize - base;
            start..start + part.len()
        };
        let members = members.map(|m| {
            m.0.into_iter()
                .map(|(key, value)| {
                    let key = match key {
                        Cow::Borrowed(k) => Key::At(at(k)),
                        Cow::Owned(k) => Key::Unescaped(k),
                    };
                    (key, at(value))
                })
                .collect()
        });
        Self {
            text: text.into(),
            members,
        }
    }

    /// The result's JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its members, as [`Members::parse`] of [`RawResult::text`] gives them, without a scan.
    pub fn members(&self) -> Option<Members<'_>> {
        let members = self.members.as_ref()?;
        let text = &*self.text;
        Some(Members(
            members
                .iter()
                .map(|(key, value)| {
                    let key = match key {
                        Key::At(r) => Cow::Borrowed(&text[r.clone()]),
                        Key::Unescaped(k) => Cow::Owned(k.clone()),
                    };
                    (key, &text[value.clone()])
                })
                .collect(),
        ))
    }
}

/// An upstream's answer to a forwarded request.
#[derive(Debug)]
pub enum RawAnswer {
    /// `result`, as the upstream wrote it.
    Result(RawResult),
    /// `error`, as the upstream wrote it.
    Error(Box<str>),
    /// Any other answer, parsed.
    Value(Value),
}

impl RawAnswer {
    /// Whether the upstream answered with a JSON-RPC error.
    pub fn is_error(&self) -> bool {
        match self {
            Self::Result(_) => false,
            Self::Error(_) => true,
            Self::Value(v) => v.get("error").is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_keep_order_and_raw_text() {
        let m = Members::parse(r#"{"b": [1, 2], "a\u0041": "x", "c": {"d": 1.50}}"#).unwrap();
        let keys: Vec<&str> = m.0.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["b", "aA", "c"]);
        assert_eq!(m.get("c").unwrap(), r#"{"d": 1.50}"#);
        assert_eq!(m.get_str("aA").as_deref(), Some("x"));
        assert_eq!(m.get_str("b"), None);
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for text in [
            "",
            "echo",
            "up__echo",
            "a\"b",
            "back\\slash",
            "tab\there",
            "nul\u{0}",
            "é ☃ 😀",
            "del\u{7f}",
        ] {
            let mut out = Vec::new();
            push_str(&mut out, text);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(text).unwrap()
            );
        }
    }

    #[test]
    fn members_refuse_what_a_value_would_read_differently() {
        assert!(Members::parse(r#"{"a": 1, "a": 2}"#).is_none());
        assert!(Members::parse("[1]").is_none());
        assert!(Members::parse(r#"{"a": 1} x"#).is_none());
        assert!(Members::parse(r#"{"a": 1"#).is_none());
    }

    fn params<'a>(text: &'a str, name: &str) -> RawParams<'a> {
        let mut p = RawParams::new(Members::parse(text).unwrap(), "name").unwrap();
        p.rename(name.into());
        p
    }

    fn written(p: &RawParams<'_>, envelope: Option<&Envelope>) -> Value {
        let mut out = Vec::new();
        p.write(&mut out, envelope);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn params_are_renamed_and_copied() {
        let p = params(
            r#"{"name": "up__echo", "arguments": {"text": "a\"b", "n": 1e2}}"#,
            "echo",
        );
        let mut out = Vec::new();
        p.write(&mut out, None);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"name":"echo","arguments":{"text": "a\"b", "n": 1e2}}"#
        );
    }

    #[test]
    fn envelope_is_stripped_for_the_session_era() {
        let p = params(
            r#"{"name": "x", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "progressToken": 7}}"#,
            "x",
        );
        assert_eq!(
            written(&p, None),
            json!({"name": "x", "_meta": {"progressToken": 7}})
        );
        let only = params(
            r#"{"name": "x", "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}"#,
            "x",
        );
        assert_eq!(written(&only, None), json!({"name": "x"}));
    }

    #[test]
    fn envelope_is_stamped_for_the_stateless_era() {
        let stamp = Envelope::new(
            serde_json::from_value(json!({"io.modelcontextprotocol/protocolVersion": "V"}))
                .unwrap(),
        );
        let bare = params(r#"{"name": "x"}"#, "x");
        assert_eq!(
            written(&bare, Some(&stamp)),
            json!({"name": "x", "_meta": {"io.modelcontextprotocol/protocolVersion": "V"}})
        );
        let theirs = params(
            r#"{"_meta": {"progressToken": "t", "io.modelcontextprotocol/protocolVersion": "old"}, "name": "x"}"#,
            "x",
        );
        assert_eq!(
            written(&theirs, Some(&stamp)),
            json!({"name": "x", "_meta": {"progressToken": "t", "io.modelcontextprotocol/protocolVersion": "V"}})
        );
    }

    #[test]
    fn a_meta_that_is_not_an_object_is_left_to_the_value_path() {
        let p = |text| RawParams::new(Members::parse(text).unwrap(), "name");
        assert!(p(r#"{"name": "x", "_meta": 1}"#).is_none());
        assert!(p(r#"{"name": 1}"#).is_none());
        assert!(p(r#"{"arguments": {}}"#).is_none());
    }

    #[test]
    fn a_result_keeps_the_members_its_answers_scan_found() {
        let results = [
            r#"{"a":1,"b\u0041":[2, {"x":3}],"c":{"d":"e"}}"#,
            r#"{ "x" : "y" , "z":null }"#,
            "{}",
            r#"{"a":1,"a":2}"#,
            "[1,2]",
            r#""s""#,
        ];
        for result in results {
            let text = format!(r#"{{"jsonrpc":"2.0","id":1,"result":{result}}}"#);
            let RawAnswer::Result(r) = Received::Json(Bytes::from(text)).into_answer().unwrap()
            else {
                panic!("{result}: not a result");
            };
            assert_eq!(r.text(), result);
            let want = Members::parse(result).map(|m| m.0);
            assert_eq!(r.members().map(|m| m.0), want, "{result}");
        }
    }

    #[test]
    fn params_are_read_in_the_top_levels_pass() {
        let cases = [
            (r#"{"params":{"name":"a","n":[1]},"id":1}"#, true),
            (r#"{"params":{"a":1,"a":2}}"#, false),
            (r#"{"params":[1]}"#, false),
            (r#"{"id":1}"#, false),
        ];
        for (text, nested) in cases {
            let (top, params) = Members::parse_with(text, "params").unwrap();
            assert_eq!(top.0, Members::parse(text).unwrap().0);
            let again = top.get("params").and_then(Members::parse);
            assert_eq!(params.is_some(), nested, "{text}");
            assert_eq!(params.map(|m| m.0), again.map(|m| m.0), "{text}");
        }
        assert!(Members::parse_with(r#"{"params":{"a":1}} x"#, "params").is_none());
    }

    #[test]
    fn answers_split_at_the_top_level() {
        let answer = |text: &str| {
            Received::Json(Bytes::from(text.to_owned()))
                .into_answer()
                .unwrap()
        };
        match answer(r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#) {
            RawAnswer::Result(r) => assert_eq!(r.text(), r#"{"content":[]}"#),
            other => panic!("{other:?}"),
        }
        let err = answer(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"m"}}"#);
        assert!(err.is_error());
        assert!(matches!(err, RawAnswer::Error(_)));
        // Shapes the raw path does not model are parsed whole.
        assert!(matches!(
            answer(r#"{"jsonrpc":"2.0","id":3,"result":1,"extra":true}"#),
            RawAnswer::Value(_)
        ));
        assert!(matches!(
            answer(r#"{"jsonrpc":"2.0","id":3,"result":1,"result":2}"#),
            RawAnswer::Value(v) if v["result"] == 2
        ));
        assert!(
            Received::Json(Bytes::from_static(b"not json"))
                .into_answer()
                .is_err()
        );
    }
}
