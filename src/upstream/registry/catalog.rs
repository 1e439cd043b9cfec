//! An upstream's catalog: the tools, resources, resource templates and prompts it lists,
//! fetched when it connects and again when it says a list changed.
//!
//! Every registered upstream keeps its catalog for as long as it is registered, and most of
//! them sit idle. An entry is therefore kept as the JSON text the upstream sent, with the one
//! field the gateway finds it by (a tool's or prompt's name, a resource's URI, a template's URI
//! template): a parsed `serde_json::Value` costs several times its text (each object keeps an
//! index map of its own), and only a list request or the console needs the whole entry, which
//! it parses then. A list request cloned the parsed entries anyway, so it pays a parse instead
//! of a deep copy.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use super::Upstream;
use crate::upstream::UpstreamError;
use crate::upstream::connection::Connection;
use crate::upstream::param_headers::ParamHeaders;

/// What an upstream offers.
#[derive(Debug, Default)]
pub struct Catalog {
    /// `tools/list` entries, as the upstream sent them.
    pub tools: Vec<Entry>,
    /// `resources/list` entries.
    pub resources: Vec<Entry>,
    /// `resources/templates/list` entries.
    pub resource_templates: Vec<Entry>,
    /// `prompts/list` entries.
    pub prompts: Vec<Entry>,
    /// The tools whose input declares `Mcp-Param-*` headers (2026-07-28), by the upstream's
    /// own tool name: few tools do, and a call of any other needs no look at its arguments.
    pub param_headers: HashMap<String, Arc<ParamHeaders>>,
}

/// One entry of a list, as the upstream sent it.
#[derive(Debug)]
pub struct Entry {
    /// The string the entry is found by (`name`, `uri` or `uriTemplate`), when it has one.
    key: Option<Box<str>>,
    /// The entry, serialized.
    json: Box<str>,
}

impl Entry {
    /// `item`, found by its string field `field`.
    fn new(item: &Value, field: &str) -> Self {
        Self {
            key: item.get(field).and_then(Value::as_str).map(Box::from),
            json: item.to_string().into_boxed_str(),
        }
    }

    /// The name, URI or URI template the entry is found by.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The whole entry, parsed. The text is what serde_json wrote of a value it had parsed
    /// (within the same nesting limit), so it always parses back; `null` is never seen.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    /// The entries of a list, parsed.
    pub fn values(entries: &[Entry]) -> Vec<Value> {
        entries.iter().map(Entry::value).collect()
    }
}

impl Upstream {
    /// Fetch tools, resources and prompts and publish them.
    pub async fn refresh_catalog(self: &Arc<Self>) -> Result<(), UpstreamError> {
        let conn = self.connection().await?;
        let timeout = self.settings().request_timeout;
        let caps = conn.capabilities.clone();
        let has = |k: &str| caps.get(k).is_some() || caps.is_null();
        let mut catalog = Catalog::default();
        if has("tools") {
            let tools = list_all(&conn, "tools/list", "tools", timeout).await?;
            catalog.param_headers = tools
                .iter()
                .filter_map(|tool| {
                    let name = tool.get("name")?.as_str()?;
                    let declared = ParamHeaders::of(tool.get("inputSchema")?)?;
                    Some((name.to_owned(), Arc::new(declared)))
                })
                .collect();
            catalog.tools = entries(&tools, "name");
        }
        if has("resources") {
            let resources = list_all(&conn, "resources/list", "resources", timeout).await?;
            catalog.resources = entries(&resources, "uri");
            let templates = list_all(
                &conn,
                "resources/templates/list",
                "resourceTemplates",
                timeout,
            )
            .await
            .unwrap_or_default();
            catalog.resource_templates = entries(&templates, "uriTemplate");
        }
        if has("prompts") {
            let prompts = list_all(&conn, "prompts/list", "prompts", timeout).await?;
            catalog.prompts = entries(&prompts, "name");
        }
        self.catalog.store(Arc::new(catalog));
        self.catalog_loaded.store(true, Ordering::Release);
        if let Some(registry) = self.registry.upgrade() {
            let _ = registry.changes.send(());
        }
        Ok(())
    }
}

/// `items` as kept, each found by its field `field`.
fn entries(items: &[Value], field: &str) -> Vec<Entry> {
    items.iter().map(|item| Entry::new(item, field)).collect()
}

/// Every page of `method`'s list (its items in the result's `field`).
async fn list_all(
    conn: &Connection,
    method: &str,
    field: &str,
    timeout: Duration,
) -> Result<Vec<Value>, UpstreamError> {
    let mut out = Vec::new();
    let mut cursor: Option<Value> = None;
    // Bounded: a misbehaving upstream cannot page forever.
    for _ in 0..100 {
        let params = cursor.as_ref().map(|c| json!({"cursor": c}));
        let mut answer = conn.request(method, params, timeout).await?;
        if let Some(err) = answer.get("error") {
            if err.get("code").and_then(Value::as_i64)
                == Some(crate::jsonrpc::code::METHOD_NOT_FOUND)
            {
                return Ok(out);
            }
            return Err(UpstreamError::Protocol {
                detail: format!("{method} failed: {err}"),
            });
        }
        let mut result = answer
            .get_mut("result")
            .map(Value::take)
            .unwrap_or_default();
        if let Some(items) = result.get_mut(field).and_then(Value::as_array_mut) {
            out.append(items);
        }
        match result.get("nextCursor").filter(|c| !c.is_null()) {
            Some(next) => cursor = Some(next.clone()),
            None => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_gives_back_what_the_upstream_sent_and_is_found_by_its_field() {
        let tool = json!({
            "name": "echo",
            "description": "Return the text unchanged.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string", "x-n": 1.5}}, "required": ["text"]},
        });
        let entry = Entry::new(&tool, "name");
        assert_eq!(entry.key(), Some("echo"));
        assert_eq!(entry.value(), tool);
        let nameless = Entry::new(&json!({"uri": 7}), "uri");
        assert_eq!(nameless.key(), None);
        assert_eq!(Entry::values(&[nameless]), vec![json!({"uri": 7})]);
    }
}
