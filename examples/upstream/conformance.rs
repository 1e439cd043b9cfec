//! The tools, resources and prompts the official conformance suite's server scenarios expect
//! (`tests/fixtures/conformance/SCENARIOS.md`), so the suite can be run against this fixture
//! directly and through mcpgw, scenario by scenario.

use serde_json::{Value, json};

pub const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
pub const WAV: &str =
    "UklGRjQAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YRAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn tool(name: &str, description: &str, props: Value, required: &[&str]) -> Value {
    json!({"name": name, "description": description,
           "inputSchema": {"type": "object", "properties": props, "required": required}})
}

pub fn tools() -> Vec<Value> {
    let none = json!({});
    vec![
        tool(
            "test_simple_text",
            "Returns simple text.",
            none.clone(),
            &[],
        ),
        tool("test_image_content", "Returns an image.", none.clone(), &[]),
        tool("test_audio_content", "Returns audio.", none.clone(), &[]),
        tool(
            "test_embedded_resource",
            "Returns an embedded resource.",
            none.clone(),
            &[],
        ),
        tool(
            "test_multiple_content_types",
            "Returns text, image and resource.",
            none.clone(),
            &[],
        ),
        tool(
            "test_tool_with_logging",
            "Logs three messages while running.",
            none.clone(),
            &[],
        ),
        tool(
            "test_tool_with_progress",
            "Reports progress while running.",
            none.clone(),
            &[],
        ),
        tool(
            "test_error_handling",
            "Always returns a tool error.",
            none.clone(),
            &[],
        ),
        tool(
            "test_sampling",
            "Asks the client's LLM.",
            json!({"prompt": {"type": "string"}}),
            &["prompt"],
        ),
        tool(
            "test_elicitation",
            "Asks the user.",
            json!({"message": {"type": "string"}}),
            &["message"],
        ),
        tool(
            "test_elicitation_sep1034_defaults",
            "Elicitation with defaults.",
            none.clone(),
            &[],
        ),
        tool(
            "test_elicitation_sep1330_enums",
            "Elicitation with enums.",
            none.clone(),
            &[],
        ),
        json!({"name": "json_schema_2020_12_tool", "description": "Tool with JSON Schema 2020-12 features",
               "inputSchema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                   "$defs": {"address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
                   "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
                   "additionalProperties": false}}),
    ]
}

/// What a conformance tool does.
pub enum Action {
    /// Answer at once.
    Result(Value),
    /// Send these notifications ~50 ms apart, then answer.
    Notify(Vec<Value>, Value),
    /// Ask the client (method, params), then build the answer from its reply.
    Ask(&'static str, Value, fn(&Value) -> Value),
    /// Not a conformance tool.
    Unknown,
}

fn text(t: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": t.into()}]})
}

fn log(msg: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "logger": "conformance", "data": msg}})
}

pub fn call(name: &str, args: &Value, meta: &Value) -> Action {
    match name {
        "test_simple_text" => Action::Result(text("This is a simple text response for testing.")),
        "test_image_content" => Action::Result(
            json!({"content": [{"type": "image", "data": PNG, "mimeType": "image/png"}]}),
        ),
        "test_audio_content" => Action::Result(
            json!({"content": [{"type": "audio", "data": WAV, "mimeType": "audio/wav"}]}),
        ),
        "test_embedded_resource" => {
            Action::Result(json!({"content": [{"type": "resource", "resource": {
            "uri": "test://embedded-resource", "mimeType": "text/plain", "text": "This is an embedded resource content."}}]}))
        }
        "test_multiple_content_types" => Action::Result(json!({"content": [
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "test://mixed-content-resource", "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}"}}]})),
        "test_error_handling" => Action::Result(
            json!({"isError": true, "content": [{"type": "text", "text": "This tool intentionally returns an error for testing"}]}),
        ),
        "test_tool_with_logging" => Action::Notify(
            vec![
                log("Tool execution started"),
                log("Tool processing data"),
                log("Tool execution completed"),
            ],
            text("Logging completed"),
        ),
        "test_tool_with_progress" => {
            let token = meta
                .get("progressToken")
                .cloned()
                .unwrap_or(json!("progress"));
            let p = |n: u32| json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": n, "total": 100}});
            Action::Notify(vec![p(0), p(50), p(100)], text("Progress completed"))
        }
        "test_sampling" => Action::Ask(
            "sampling/createMessage",
            json!({"messages": [{"role": "user", "content": {"type": "text", "text": args.get("prompt").cloned().unwrap_or_default()}}], "maxTokens": 100}),
            |reply| {
                text(format!(
                    "LLM response: {}",
                    reply
                        .pointer("/result/content/text")
                        .and_then(Value::as_str)
                        .unwrap_or("<none>")
                ))
            },
        ),
        "test_elicitation" => Action::Ask(
            "elicitation/create",
            json!({"message": args.get("message").cloned().unwrap_or_default(), "requestedSchema": {"type": "object",
                "properties": {"username": {"type": "string", "description": "User's response"}, "email": {"type": "string", "description": "User's email address"}},
                "required": ["username", "email"]}}),
            |reply| {
                text(format!(
                    "User response: {}",
                    reply.get("result").cloned().unwrap_or_default()
                ))
            },
        ),
        "test_elicitation_sep1034_defaults" => Action::Ask(
            "elicitation/create",
            json!({"message": "Defaults", "requestedSchema": {"type": "object", "properties": {
                "name": {"type": "string", "default": "John Doe"}, "age": {"type": "integer", "default": 30},
                "score": {"type": "number", "default": 95.5},
                "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
                "verified": {"type": "boolean", "default": true}}}}),
            |reply| {
                text(format!(
                    "Elicitation completed: {}",
                    reply.get("result").cloned().unwrap_or_default()
                ))
            },
        ),
        "test_elicitation_sep1330_enums" => Action::Ask(
            "elicitation/create",
            json!({"message": "Enums", "requestedSchema": {"type": "object", "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {"type": "string", "oneOf": [{"const": "value1", "title": "First Option"}, {"const": "value2", "title": "Second Option"}, {"const": "value3", "title": "Third Option"}]},
                "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"]},
                "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                "titledMulti": {"type": "array", "items": {"anyOf": [{"const": "value1", "title": "First Choice"}, {"const": "value2", "title": "Second Choice"}, {"const": "value3", "title": "Third Choice"}]}}}}}),
            |reply| {
                text(format!(
                    "Elicitation completed: {}",
                    reply.get("result").cloned().unwrap_or_default()
                ))
            },
        ),
        _ => Action::Unknown,
    }
}

pub fn resources() -> Value {
    json!([
        {"uri": "test://static-text", "name": "static-text", "description": "Static text", "mimeType": "text/plain"},
        {"uri": "test://static-binary", "name": "static-binary", "description": "Static binary", "mimeType": "image/png"},
        {"uri": "test://watched-resource", "name": "watched-resource", "description": "Subscribable", "mimeType": "text/plain"}
    ])
}

pub fn templates() -> Value {
    json!([{"uriTemplate": "test://template/{id}/data", "name": "template", "description": "Templated data", "mimeType": "application/json"}])
}

pub fn read(uri: &str) -> Option<Value> {
    let content = match uri {
        "test://static-text" => {
            json!({"uri": uri, "mimeType": "text/plain", "text": "This is the content of the static text resource."})
        }
        "test://static-binary" => json!({"uri": uri, "mimeType": "image/png", "blob": PNG}),
        "test://watched-resource" => {
            json!({"uri": uri, "mimeType": "text/plain", "text": "watched"})
        }
        _ => {
            let id = uri
                .strip_prefix("test://template/")?
                .strip_suffix("/data")?;
            json!({"uri": uri, "mimeType": "application/json", "text": json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")}).to_string()})
        }
    };
    Some(json!({"contents": [content]}))
}

pub fn prompts() -> Value {
    json!([
        {"name": "test_simple_prompt", "description": "A simple prompt."},
        {"name": "test_prompt_with_arguments", "description": "A prompt with arguments.",
         "arguments": [{"name": "arg1", "description": "First", "required": true}, {"name": "arg2", "description": "Second", "required": true}]},
        {"name": "test_prompt_with_embedded_resource", "description": "A prompt with a resource.",
         "arguments": [{"name": "resourceUri", "description": "URI", "required": true}]},
        {"name": "test_prompt_with_image", "description": "A prompt with an image."}
    ])
}

pub fn prompt(name: &str, args: &Value) -> Option<Value> {
    let arg = |k: &str| {
        args.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let user = |content: Value| json!({"role": "user", "content": content});
    let messages = match name {
        "test_simple_prompt" => vec![user(
            json!({"type": "text", "text": "This is a simple prompt for testing."}),
        )],
        "test_prompt_with_arguments" => vec![user(
            json!({"type": "text", "text": format!("Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1"), arg("arg2"))}),
        )],
        "test_prompt_with_embedded_resource" => vec![
            user(
                json!({"type": "resource", "resource": {"uri": arg("resourceUri"), "mimeType": "text/plain", "text": "Embedded resource content for testing."}}),
            ),
            user(json!({"type": "text", "text": "Please process the embedded resource above."})),
        ],
        "test_prompt_with_image" => vec![
            user(json!({"type": "image", "data": PNG, "mimeType": "image/png"})),
            user(json!({"type": "text", "text": "Please analyze the image above."})),
        ],
        _ => return None,
    };
    Some(json!({"messages": messages}))
}
