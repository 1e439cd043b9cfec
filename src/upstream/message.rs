//! What travels with a message to an upstream, whichever transport carries it: the protocol
//! revisions and their `_meta` keys, the 2026-07-28 routing headers and envelope, the sink for
//! what an upstream sends outside an answer, and the request target of a URL. Both transports
//! (`streamable`, `sse`) and the connection that picks one use it; it uses none of them.

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderName;
use serde_json::Value;

use super::UpstreamError;
use crate::h1::client::request::Extra;
use crate::h1::fields as names;

/// The stateless revision.
pub const MODERN_VERSION: &str = "2026-07-28";
/// Session-era revisions mcpgw speaks, newest first.
pub const SESSION_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Whether mcpgw speaks protocol `version` (a session-era one or [`MODERN_VERSION`]).
pub fn is_known_version(version: &str) -> bool {
    SESSION_VERSIONS.contains(&version) || version == MODERN_VERSION
}
/// `_meta` key of the per-request protocol version (2026-07-28).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of the per-request client capabilities (2026-07-28).
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of the server info in results (2026-07-28).
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// `_meta` key of the per-request client info (2026-07-28).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";

/// Handler for messages an upstream sends that are not answers to our requests.
pub type MessageSink = Arc<dyn Fn(Value) + Send + Sync>;

/// Told the id a connection gives a request.
pub trait IdSink: Send + Sync {
    /// The request about to be sent goes as `id`.
    fn sent_as(&self, id: u64);
}

/// Who a request is sent for, handed down with it: what the caller wants to hear while the
/// upstream works on it. The default is nobody (health checks, discovery, the gateway's own
/// bookkeeping).
#[derive(Clone, Default)]
pub struct Caller {
    /// Where what the upstream streams while answering goes (progress, logging, and its own
    /// requests such as sampling), so that it reaches the client that caused it and nobody else.
    pub sink: Option<MessageSink>,
    /// Told the id the connection gives the request, so that the client's cancellation can
    /// name it upstream.
    pub id_hook: Option<Arc<dyn IdSink>>,
    /// The downstream session the request is for, when it has one: its requests go on an
    /// upstream session of its own (see `registry::own`).
    pub owner: Option<Owner>,
    /// The client speaks the session era: questions a 2026-07-28 upstream answers with
    /// (`input_required`) are put to it as requests on `sink` (see `registry::send`).
    pub asks_as_requests: bool,
    /// For a `tools/call` of a tool that declares `Mcp-Param-*` headers: which arguments to
    /// copy into headers when the upstream speaks 2026-07-28 over HTTP.
    pub param_headers: Option<Arc<super::param_headers::ParamHeaders>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("sink", &self.sink.is_some())
            .field("id_hook", &self.id_hook.is_some())
            .field("owner", &self.owner.as_ref().map(|o| &o.key))
            .field("asks_as_requests", &self.asks_as_requests)
            .field("param_headers", &self.param_headers.is_some())
            .finish()
    }
}

/// What a downstream client said of itself when it initialized its session, which the upstream
/// sessions opened for it repeat: so that a server offers it what it would offer it directly
/// (a tool that needs `roots`, sampling, elicitation).
#[derive(Debug)]
pub struct ClientProfile {
    /// The protocol version the session was opened in.
    pub protocol_version: String,
    /// Its capabilities, as it declared them.
    pub capabilities: Value,
    /// Its `clientInfo`, as it sent it.
    pub client_info: Value,
}

impl ClientProfile {
    /// The profile of an `initialize` request's params (a client that sent none gets an empty
    /// one, as a server would read it).
    pub fn from_initialize(params: Option<&Value>, version: &str) -> Self {
        // Every capability is carried: what a server asks of the client (task-augmented
        // requests and `tasks/*` included) is relayed to it as it is, and its answers back.
        let capabilities = params
            .and_then(|p| p.get("capabilities"))
            .filter(|c| c.is_object())
            .cloned()
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        Self {
            protocol_version: version.to_owned(),
            capabilities,
            client_info: params
                .and_then(|p| p.get("clientInfo"))
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"name": "unknown", "version": "0"})),
        }
    }
}

/// The downstream session a request is for.
#[derive(Clone)]
pub struct Owner {
    /// The session.
    pub key: crate::session::SessionKey,
    /// What its client said of itself.
    pub profile: Arc<ClientProfile>,
    /// Where what its upstream sessions send outside any request goes (their `GET` streams:
    /// log messages, list changes, requests such as `roots/list`).
    pub deliver: MessageSink,
    /// Whether the client has a stream for such messages (an SSE or WebSocket connection, or a
    /// Streamable-HTTP `GET` stream): only then do its upstream sessions open theirs.
    pub listening: bool,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("key", &self.key)
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

/// The method of a notice a connection's sink gets (from mcpgw itself, never from the upstream
/// or for a client) when the upstream's standing `GET` stream finds the session gone: the
/// owner reconnects now rather than at its next request or health check.
pub const SESSION_GONE: &str = "mcpgw/upstream-session-gone";

/// The param of a [`SESSION_GONE`] notice that names the stdio child that exited (a
/// connection opened since, on another child, is not the one gone).
pub const GONE_PID: &str = "pid";

/// The request target for an upstream URL: its path and query (origin-form), parsed once per
/// connection (or endpoint) rather than per request.
pub fn target(url: &url::Url) -> Result<http::Uri, UpstreamError> {
    url[url::Position::BeforePath..]
        .parse()
        .map_err(|e| UpstreamError::Connect {
            diagnosis: format!("invalid upstream URL '{url}': {e}"),
        })
}

/// The 2026-07-28 routing headers of a message: version, method and (for requests that name
/// a tool, prompt or resource) the name. A version or method a header cannot carry is left
/// out; a name is made header-safe ([`header_safe`]).
pub fn routing_headers<'a>(
    version: &'a str,
    method: &'a str,
    name: Option<&'a str>,
) -> Routing<'a> {
    let mut routing = Routing::default();
    // Known versions and methods, and names made header-safe, need no check.
    if is_known_version(version) || names::can_carry(version) {
        routing.push(&names::PROTOCOL_VERSION, Cow::Borrowed(version));
    }
    if ROUTED_METHODS.contains(&method) || names::can_carry(method) {
        routing.push(&names::METHOD, Cow::Borrowed(method));
    }
    if let Some(name) = name {
        routing.push(&names::NAME, header_safe(name));
    }
    routing
}

/// The routing headers of a 2026-07-28 message of `method` with `params`: [`routing_headers`]
/// with the name a request carries (a tool's or prompt's `name`, a resource's `uri`).
pub fn routing_for<'a>(
    version: &'a str,
    method: &'a str,
    params: Option<&'a Value>,
) -> Routing<'a> {
    let name_key = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    let name = name_key
        .and_then(|k| params?.get(k))
        .and_then(Value::as_str);
    routing_headers(version, method, name)
}

/// Methods whose `Mcp-Method` header needs no check.
const ROUTED_METHODS: [&str; 4] = ["tools/call", "prompts/get", "resources/read", "ping"];

/// A message's routing headers: at most three without an allocation, and the `Mcp-Param-*`
/// copies of a call's arguments for the few tools that declare them.
#[derive(Debug)]
pub struct Routing<'a> {
    fields: [(&'static HeaderName, Cow<'a, str>); 3],
    len: usize,
    params: Vec<(HeaderName, String)>,
}

impl Default for Routing<'_> {
    fn default() -> Self {
        let empty = || (&names::METHOD, Cow::Borrowed(""));
        Self {
            fields: [empty(), empty(), empty()],
            len: 0,
            params: Vec::new(),
        }
    }
}

impl<'a> Routing<'a> {
    fn push(&mut self, name: &'static HeaderName, value: Cow<'a, str>) {
        self.fields[self.len] = (name, value);
        self.len += 1;
    }

    /// Add the `Mcp-Param-*` headers of a `tools/call` (`upstream::param_headers`).
    pub fn with_params(mut self, params: Vec<(HeaderName, String)>) -> Self {
        self.params = params;
        self
    }

    /// The headers, in order: borrowed as they are unless `Mcp-Param-*` ones follow.
    pub fn extras(&self) -> Cow<'_, [Extra<'_>]> {
        let routing = &self.fields[..self.len];
        if self.params.is_empty() {
            return Cow::Borrowed(routing);
        }
        let mut all: Vec<Extra<'_>> = routing
            .iter()
            .map(|(name, value)| (*name, Cow::Borrowed(&**value)))
            .collect();
        all.extend(
            self.params
                .iter()
                .map(|(name, value)| (name, Cow::Borrowed(value.as_str()))),
        );
        Cow::Owned(all)
    }

    /// The same headers, owning their values.
    pub fn into_owned(self) -> Routing<'static> {
        let Self {
            fields,
            len,
            params,
        } = self;
        Routing {
            fields: fields.map(|(name, value)| (name, Cow::Owned(value.into_owned()))),
            len,
            params,
        }
    }
}

/// Remove the 2026-07-28 envelope keys (`io.modelcontextprotocol/...`) from `params._meta`.
pub fn strip_envelope(params: &mut Value) {
    let Some(obj) = params.as_object_mut() else {
        return;
    };
    let empty = match obj.get_mut("_meta").and_then(Value::as_object_mut) {
        Some(meta) => {
            meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
            meta.is_empty()
        }
        None => false,
    };
    if empty {
        obj.remove("_meta");
    }
}

/// A header value as 2026-07-28 wants it: verbatim if printable ASCII that a field keeps as it
/// is (no space at either end: parsers trim it), else `=?base64?…?=`.
pub fn header_safe(value: &str) -> Cow<'_, str> {
    if value.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !value.starts_with("=?base64?")
        && !value.starts_with(' ')
        && !value.ends_with(' ')
    {
        Cow::Borrowed(value)
    } else {
        use base64::Engine;
        Cow::Owned(format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(value)
        ))
    }
}
