//! `Mcp-Param-{Name}` headers (2026-07-28): a tool may mark properties of its `inputSchema` with
//! `x-mcp-header: "Name"`, and a `tools/call` over Streamable HTTP then carries each marked
//! argument's value in that header as well as in the body, so that proxies and load balancers
//! can route on it without reading JSON. A server that finds a marked argument in the body
//! without its header (or the two disagreeing) refuses the call with -32020.
//!
//! The gateway stands on both sides of that rule: as a client it must write the headers a
//! 2026-07-28 upstream's tool declares (or every call of such a tool is refused), and as a server
//! it checks the ones its own clients send, since something in front of it may have routed on
//! them. Both sides read the declarations from here, so they agree on what counts.
//!
//! Only annotations the specification allows count: on a property reached from the root through
//! `properties` alone, of type string, integer or boolean, naming an RFC 9110 token unique
//! (ignoring case) in the schema. A schema with any other annotation declares nothing: conforming
//! clients leave such a tool out and send no header for it.

use std::borrow::Cow;

use http::HeaderName;
use serde_json::Value;

use super::message::header_safe;
use crate::h1::fields::Lookup;

/// What a declared name is joined to (field names are compared ignoring case).
const PREFIX: &str = "mcp-param-";

/// The properties of one tool's input that travel in headers too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeaders {
    fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    /// The `properties` keys from the root to the property.
    path: Vec<String>,
    /// `Mcp-Param-{token}`.
    header: HeaderName,
    /// The token as the schema writes it, for messages.
    token: String,
    /// The property's type is `integer` (compared as a number).
    integer: bool,
}

/// Keywords whose value is one subschema, a list of them, or a map of them. Crossing any of
/// them leaves the chain of `properties`: an annotation found beyond is not allowed.
const ONE: &[&str] = &[
    "items",
    "contains",
    "unevaluatedItems",
    "additionalProperties",
    "propertyNames",
    "unevaluatedProperties",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
];
const LIST: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
const MAP: &[&str] = &[
    "patternProperties",
    "dependentSchemas",
    "$defs",
    "definitions",
];

impl ParamHeaders {
    /// The declarations of a tool's `inputSchema`; `None` when it declares none, or any that
    /// the specification does not allow.
    pub fn of(input_schema: &Value) -> Option<Self> {
        let mut fields: Vec<Field> = Vec::new();
        // (path, or None once off the `properties` chain; schema), walked without recursion so
        // that no depth of nesting can exhaust the stack.
        let mut stack: Vec<(Option<Vec<String>>, &Value)> = vec![(Some(Vec::new()), input_schema)];
        while let Some((path, node)) = stack.pop() {
            let Some(schema) = node.as_object() else {
                continue;
            };
            if let Some(token) = schema.get("x-mcp-header") {
                let path = path.clone().filter(|p| !p.is_empty())?;
                let token = token.as_str().filter(|t| is_token(t))?;
                let kind = schema.get("type").and_then(Value::as_str)?;
                if !matches!(kind, "string" | "integer" | "boolean") {
                    return None;
                }
                let header = HeaderName::try_from(format!("{PREFIX}{token}")).ok()?;
                if fields.iter().any(|f| f.header == header) {
                    return None;
                }
                fields.push(Field {
                    path,
                    header,
                    token: token.to_owned(),
                    integer: kind == "integer",
                });
            }
            for (key, value) in schema {
                if key == "properties"
                    && let Some(props) = value.as_object()
                {
                    for (name, sub) in props {
                        let sub_path = path.as_ref().map(|p| {
                            let mut p = p.clone();
                            p.push(name.clone());
                            p
                        });
                        stack.push((sub_path, sub));
                    }
                } else if ONE.contains(&key.as_str()) {
                    stack.push((None, value));
                } else if LIST.contains(&key.as_str())
                    && let Some(list) = value.as_array()
                {
                    stack.extend(list.iter().map(|sub| (None, sub)));
                } else if MAP.contains(&key.as_str())
                    && let Some(map) = value.as_object()
                {
                    stack.extend(map.values().map(|sub| (None, sub)));
                }
            }
        }
        (!fields.is_empty()).then_some(Self { fields })
    }

    /// The headers a call with `arguments` carries: one per declared argument that is present,
    /// not null and a scalar; its value header-safe (`=?base64?…?=` when it must be).
    pub fn headers(&self, arguments: Option<&Value>) -> Vec<(HeaderName, String)> {
        self.fields
            .iter()
            .filter_map(|f| {
                let value = render(value_at(arguments, &f.path)?)?;
                Some((f.header.clone(), header_safe(&value).into_owned()))
            })
            .collect()
    }

    /// Whether the headers a client sent agree with its call's `arguments`: each declared
    /// argument present with its header and equal to it, or absent (or null) together. The
    /// error says which header and why.
    pub fn check(&self, arguments: Option<&Value>, headers: &dyn Lookup) -> Result<(), String> {
        for f in &self.fields {
            let name = format!("Mcp-Param-{}", f.token);
            let argument = f.path.join(".");
            if headers.repeated(&f.header) {
                return Err(format!("the {name} header appears more than once"));
            }
            let value = value_at(arguments, &f.path);
            let rendered = value.and_then(render);
            let raw = headers
                .value(&f.header)
                .map(|v| std::str::from_utf8(v).ok().and_then(decode));
            match (rendered, raw) {
                (None, None) => {}
                (None, Some(_)) => {
                    return Err(format!(
                        "the {name} header is present but the '{argument}' argument is {}",
                        if value.is_some() {
                            "not a scalar"
                        } else {
                            "absent"
                        }
                    ));
                }
                (Some(_), None) => {
                    return Err(format!(
                        "the {name} header is missing but the '{argument}' argument is present"
                    ));
                }
                (Some(_), Some(None)) => {
                    return Err(format!(
                        "the {name} header is not a valid value (bad base64 or not UTF-8)"
                    ));
                }
                (Some(rendered), Some(Some(sent))) => {
                    let same = if f.integer {
                        same_integer(value, &sent).unwrap_or(*sent == *rendered)
                    } else {
                        *sent == *rendered
                    };
                    if !same {
                        return Err(format!(
                            "the {name} header does not match the '{argument}' argument"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// An RFC 9110 token: what a field name may be.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The value at `path` in `arguments`; `None` when a step is missing, not an object, or null.
fn value_at<'v>(arguments: Option<&'v Value>, path: &[String]) -> Option<&'v Value> {
    let mut node = arguments?;
    for key in path {
        node = node.as_object()?.get(key)?;
    }
    (!node.is_null()).then_some(node)
}

/// A scalar as a header carries it: `true`/`false`, a number as written, a string as it is.
fn render(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::String(s) => Some(Cow::Borrowed(s)),
        _ => None,
    }
}

/// A header value as sent: verbatim, or the text inside `=?base64?…?=`; `None` when that is not
/// canonical base64 of UTF-8.
fn decode(sent: &str) -> Option<Cow<'_, str>> {
    let Some(payload) = sent
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    else {
        return Some(Cow::Borrowed(sent));
    };
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

/// An integer argument against a decimal header: equal as numbers (`42` and `42.0` agree).
/// `None` when either side is not such a number, and the texts are compared instead.
fn same_integer(value: Option<&Value>, sent: &str) -> Option<bool> {
    let number = value?.as_number()?;
    let (whole, fraction) = sent.split_once('.').unwrap_or((sent, ""));
    let digits = whole.strip_prefix('-').unwrap_or(whole);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b == b'0')
    {
        return None;
    }
    let sent: i128 = whole.parse().ok()?;
    let body: i128 = match (number.as_i64(), number.as_u64(), number.as_f64()) {
        (Some(i), _, _) => i128::from(i),
        (None, Some(u), _) => i128::from(u),
        (None, None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e30 => f as i128,
        _ => return Some(false),
    };
    Some(sent == body)
}

#[cfg(test)]
mod tests;
