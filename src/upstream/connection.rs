//! One established conversation with an upstream, in whichever protocol era it speaks.
//!
//! Connecting probes `server/discover` at the stateless 2026-07-28 revision first (as the
//! official SDKs do); an upstream that does not answer it as a modern server gets the
//! session-era `initialize` handshake instead. Requests get ids assigned here, so many downstream
//! clients can share one upstream session without their ids colliding; callers map them back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderMap;
use serde_json::{Map, Value, json};

mod handshake;

use super::UpstreamError;
use super::clients::UpstreamClient;
pub use super::message::{
    Caller, ClientProfile, IdSink, META_CLIENT_CAPABILITIES, META_CLIENT_INFO,
    META_PROTOCOL_VERSION, META_SERVER_INFO, MODERN_VERSION, MessageSink, Owner, Routing,
    SESSION_GONE, SESSION_VERSIONS, header_safe, is_known_version, strip_envelope,
};
use super::message::{routing_for, routing_headers};
use super::raw::{self, Envelope, RawParams, Received};
use super::sse::SseConn;
use super::stdio::StdioConn;
use super::streamable::{self, Endpoint};
use crate::h1::client::request::Extra;
use crate::h1::fields as names;
use crate::jsonrpc;
use crate::store::{EraChoice, Transport};

/// Which protocol era an upstream speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Era {
    /// `initialize` handshake, optional session id.
    Session {
        /// Negotiated version.
        version: String,
    },
    /// Per-request envelope, no session.
    Stateless {
        /// Version used in each request.
        version: String,
    },
}

impl Era {
    /// The protocol version in use.
    pub fn version(&self) -> &str {
        match self {
            Self::Session { version } | Self::Stateless { version } => version,
        }
    }
}

/// What carries a connection's messages: one transport per variant, each in its own module.
#[allow(
    clippy::large_enum_variant,
    reason = "one per connection, inside its Arc: boxing the common variant would cost every request a pointer chase and save nothing"
)]
enum Carrier {
    /// Streamable HTTP ([`streamable`]): every message a POST to one endpoint, with the
    /// upstream's client (its TLS identity and pool).
    Http(UpstreamClient, Endpoint),
    /// Legacy HTTP+SSE ([`super::sse`]): POSTs to the endpoint a long `GET` announced, answers
    /// on that stream.
    Sse(Box<SseConn>),
    /// A local program ([`super::stdio`]): messages on its stdin, answers on its stdout.
    Stdio(Box<StdioConn>),
}

/// How to reach an upstream: what [`Connection::open`] greets.
pub enum Link {
    /// Over HTTP, with the upstream's client, in `transport`, sending `headers`.
    Http {
        /// The upstream's client (its URL, TLS identity and pool).
        client: UpstreamClient,
        /// Streamable HTTP or legacy SSE.
        transport: Transport,
        /// Headers sent with every request (auth).
        headers: HeaderMap,
    },
    /// A child already started ([`super::stdio::Children::start`]).
    Stdio(StdioConn),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers carry credentials: not shown.
        match self {
            Self::Http {
                client, transport, ..
            } => f
                .debug_struct("Http")
                .field("url", &client.url.as_str())
                .field("transport", transport)
                .finish_non_exhaustive(),
            Self::Stdio(conn) => f.debug_tuple("Stdio").field(conn).finish(),
        }
    }
}

/// An initialized (or discovered) upstream.
pub struct Connection {
    carrier: Carrier,
    /// Protocol era and version.
    pub era: Era,
    /// `serverInfo` from initialize/discover.
    pub server_info: Value,
    /// Server capabilities.
    pub capabilities: Value,
    /// `instructions` from initialize/discover, if the upstream gave any.
    pub instructions: Option<String>,
    next_id: AtomicU64,
    sink: MessageSink,
    /// Who the gateway says the client is: at `initialize`, or in each 2026-07-28 envelope.
    hello: std::sync::Arc<ClientProfile>,
    /// The stateless era's `_meta` envelope, built at the first forwarded call.
    envelope: std::sync::OnceLock<Envelope>,
    /// The standing stream (if one was opened), which ends with the connection.
    listening: std::sync::OnceLock<Listening>,
}

/// A standing stream of what the upstream sends outside any request.
struct Listening {
    /// Ends it.
    _stop: tokio_util::sync::DropGuard,
    /// On 2026-07-28, the resource URIs its `subscriptions/listen` asks for.
    uris: Option<tokio::sync::watch::Sender<Vec<String>>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("Connection");
        match &self.carrier {
            Carrier::Http(client, _) => f.field("url", &client.url.as_str()),
            Carrier::Sse(conn) => f.field("sse", conn),
            Carrier::Stdio(conn) => f.field("stdio", conn),
        }
        .field("era", &self.era)
        .finish()
    }
}

/// How the gateway introduces itself on its own upstream sessions (health checks, catalogs,
/// the requests of 2026-07-28 clients, and every client's with `--shared-session`): as mcpgw,
/// declaring what it can put to the client whose call is in flight (sampling, elicitation in
/// form and URL modes: as a request, or as `input_required` to a 2026-07-28 client), and not `roots`,
/// which a server may ask outside any call, when there is no one client to ask.
///
/// Built once and shared: every upstream's connection keeps it for its life, and its JSON
/// values are a few small maps each.
pub fn gateway_hello() -> std::sync::Arc<ClientProfile> {
    static HELLO: std::sync::LazyLock<std::sync::Arc<ClientProfile>> =
        std::sync::LazyLock::new(|| {
            std::sync::Arc::new(ClientProfile {
                protocol_version: SESSION_VERSIONS[0].into(),
                capabilities: json!({"sampling": {}, "elicitation": {"form": {}, "url": {}}}),
                client_info: json!({"name": "mcpgw", "version": env!("CARGO_PKG_VERSION")}),
            })
        });
    HELLO.clone()
}

impl Connection {
    /// Connect and learn the upstream's era, info and capabilities. `era` says whether to ask
    /// `server/discover` first (auto), only (2026-07-28), or never (session era); `hello` is
    /// who the gateway says the client is.
    pub async fn open(
        link: Link,
        timeout: Duration,
        sink: MessageSink,
        era: EraChoice,
        hello: std::sync::Arc<ClientProfile>,
    ) -> Result<Self, UpstreamError> {
        match link {
            Link::Http {
                client,
                transport: Transport::Sse,
                headers,
            } => {
                let conn = SseConn::open(client, headers, timeout, sink.clone()).await?;
                let mut this = Self::new(Carrier::Sse(Box::new(conn)), sink, hello);
                this.initialize(timeout).await?;
                Ok(this)
            }
            Link::Http {
                client,
                transport: Transport::StreamableHttp,
                headers,
            } => {
                let target = super::message::target(&client.url)?;
                let carrier = Carrier::Http(client, Endpoint { target, headers });
                let mut this = Self::new(carrier, sink, hello);
                this.greet(era, timeout).await?;
                Ok(this)
            }
            Link::Http {
                transport: Transport::Stdio,
                ..
            } => Err(UpstreamError::Connect {
                diagnosis: "a stdio upstream is a program to start, not a URL".into(),
            }),
            Link::Stdio(conn) => {
                let mut this = Self::new(Carrier::Stdio(Box::new(conn)), sink, hello);
                match this.greet(era, timeout).await {
                    Ok(()) => Ok(this),
                    Err(error) => match &this.carrier {
                        Carrier::Stdio(conn) => Err(conn.explain_start(error).await),
                        _ => Err(error),
                    },
                }
            }
        }
    }

    fn new(carrier: Carrier, sink: MessageSink, hello: std::sync::Arc<ClientProfile>) -> Self {
        Self {
            carrier,
            era: Era::Session {
                version: SESSION_VERSIONS[0].into(),
            },
            server_info: Value::Null,
            capabilities: Value::Null,
            instructions: None,
            next_id: AtomicU64::new(1),
            sink,
            hello,
            envelope: std::sync::OnceLock::new(),
            listening: std::sync::OnceLock::new(),
        }
    }

    /// Make sure what the upstream sends outside any request (list changes, resource updates)
    /// reaches the connection's sink: a legacy SSE upstream sends it on the stream that is
    /// already open; a session-era Streamable-HTTP upstream on a standing `GET` stream, a
    /// 2026-07-28 one on a `subscriptions/listen` stream, opened here once. Whether resource
    /// updates can come (a 2026-07-28 upstream must announce `resources.subscribe`).
    pub fn listen(&self) -> bool {
        match (&self.carrier, &self.era) {
            // Everything comes on the one stream that is already open.
            (Carrier::Sse(_) | Carrier::Stdio(_), _) => true,
            (Carrier::Http(client, Endpoint { target, headers }), Era::Stateless { version }) => {
                let subscribe =
                    self.capabilities.pointer("/resources/subscribe") == Some(&Value::Bool(true));
                let mut notifications = Map::new();
                for (kind, key) in [
                    ("tools", "toolsListChanged"),
                    ("prompts", "promptsListChanged"),
                    ("resources", "resourcesListChanged"),
                ] {
                    if self.capabilities.pointer(&format!("/{kind}/listChanged"))
                        == Some(&Value::Bool(true))
                    {
                        notifications.insert(key.into(), Value::Bool(true));
                    }
                }
                if !subscribe && notifications.is_empty() {
                    return false;
                }
                self.listening.get_or_init(|| {
                    let stop = tokio_util::sync::CancellationToken::new();
                    let (uris, wanted) = tokio::sync::watch::channel(Vec::new());
                    let ask = streamable::ListenAsk {
                        notifications,
                        meta: json!({
                            META_PROTOCOL_VERSION: version,
                            META_CLIENT_CAPABILITIES: self.hello.capabilities,
                            META_CLIENT_INFO: self.hello.client_info,
                        }),
                        extra: routing_headers(version, "subscriptions/listen", None).into_owned(),
                    };
                    tokio::spawn(streamable::listen_modern(
                        client.clone(),
                        target.clone(),
                        headers.clone(),
                        ask,
                        wanted,
                        self.sink.clone(),
                        stop.clone(),
                    ));
                    Listening {
                        _stop: stop.drop_guard(),
                        uris: Some(uris),
                    }
                });
                subscribe
            }
            (Carrier::Http(client, Endpoint { target, headers }), Era::Session { .. }) => {
                self.listening.get_or_init(|| {
                    let stop = tokio_util::sync::CancellationToken::new();
                    tokio::spawn(streamable::listen(
                        client.clone(),
                        target.clone(),
                        headers.clone(),
                        self.sink.clone(),
                        stop.clone(),
                    ));
                    Listening {
                        _stop: stop.drop_guard(),
                        uris: None,
                    }
                });
                true
            }
        }
    }

    /// Whether resource subscriptions are made by listening (2026-07-28, [`Self::listen_for`])
    /// rather than by `resources/subscribe` requests.
    pub fn subscribes_by_listening(&self) -> bool {
        matches!(
            (&self.carrier, &self.era),
            (Carrier::Http(..), Era::Stateless { .. })
        )
    }

    /// On 2026-07-28, the resource URIs the `subscriptions/listen` stream must ask for (opened
    /// by [`Self::listen`]); the stream is replaced when they change.
    pub fn listen_for(&self, mut uris: Vec<String>) {
        uris.sort();
        if let Some(Listening {
            uris: Some(wanted), ..
        }) = self.listening.get()
        {
            wanted.send_if_modified(|now| {
                let changed = *now != uris;
                *now = std::mem::take(&mut uris);
                changed
            });
        }
    }

    /// Send a request and return the upstream's whole response message (result or error),
    /// with the upstream-side id. The caller restores its own id.
    pub async fn request(
        &self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        let mut params = params;
        self.request_with(method, &mut params, timeout, &Caller::default())
            .await
    }

    /// [`Connection::request`] with borrowed params, so a caller can send them again (after a
    /// reconnect) without having copied them. The envelope of the era is stamped in place.
    pub async fn request_with(
        &self,
        method: &str,
        params: &mut Option<Value>,
        timeout: Duration,
        caller: &Caller,
    ) -> Result<Value, UpstreamError> {
        let id = self.request_id(caller);
        let hello = caller.owner.as_ref().map_or(&*self.hello, |o| &*o.profile);
        let extra = self.stamp(method, params, Some(hello));
        let extra = match (&caller.param_headers, &self.era) {
            (Some(declared), Era::Stateless { .. }) => {
                let arguments = params.as_ref().and_then(|p| p.get("arguments"));
                extra.with_params(declared.headers(arguments))
            }
            _ => extra,
        };
        let body = outgoing(Some(id), method, params.as_ref())?;
        self.send_request(method, id, body, &extra.extras(), timeout, caller)
            .await?
            .into_value()
    }

    /// Forward a request whose params are copied as they came (see [`super::raw`]), stamped or
    /// stripped for this upstream's era on the way; the answer comes back unparsed when it was
    /// plain JSON.
    pub async fn request_raw(
        &self,
        method: &str,
        params: &RawParams<'_>,
        timeout: Duration,
        caller: &Caller,
    ) -> Result<Received, UpstreamError> {
        let id = self.request_id(caller);
        // A client's own envelope is made per request (its session's requests go on a session
        // of its own unless the upstream speaks only 2026-07-28, so this is rare); the
        // gateway's is made once.
        let own;
        let (extra, envelope) = match &self.era {
            Era::Stateless { version } => {
                let envelope = match &caller.owner {
                    Some(owner) => {
                        own = Envelope::new(envelope_meta(version, &owner.profile));
                        &own
                    }
                    None => self
                        .envelope
                        .get_or_init(|| Envelope::new(envelope_meta(version, &self.hello))),
                };
                let routing = routing_headers(version, method, Some(params.name()));
                let routing = match &caller.param_headers {
                    Some(declared) => {
                        routing.with_params(declared.headers(params.arguments().as_ref()))
                    }
                    None => routing,
                };
                (routing, Some(envelope))
            }
            Era::Session { .. } => (Routing::default(), None),
        };
        let mut body = Vec::with_capacity(128);
        body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        // Writing into a `Vec` cannot fail.
        let _ = std::io::Write::write_fmt(&mut body, format_args!("{id}"));
        body.extend_from_slice(br#","method":"#);
        raw::push_str(&mut body, method);
        body.extend_from_slice(br#","params":"#);
        params.write(&mut body, envelope);
        body.push(b'}');
        self.send_request(method, id, body.into(), &extra.extras(), timeout, caller)
            .await
    }

    /// Send request `id`, serialized in `body`, on whichever transport the upstream speaks, and
    /// wait for its answer: the one way every request goes upstream ([`Self::request_with`]
    /// and [`Self::request_raw`] only serialize it).
    async fn send_request(
        &self,
        method: &str,
        id: u64,
        body: bytes::Bytes,
        extra: &[Extra<'_>],
        timeout: Duration,
        caller: &Caller,
    ) -> Result<Received, UpstreamError> {
        let answer = match &self.carrier {
            Carrier::Http(client, endpoint) => {
                let sink = caller.sink.clone();
                self.post_request(client, endpoint, extra, body, id, timeout, sink)
                    .await?
            }
            Carrier::Sse(conn) => conn
                .send_raw(&body, Some(&Value::from(id)), timeout)
                .await?
                .map(Received::Value),
            Carrier::Stdio(conn) => {
                conn.send_raw(&body, Some(&Value::from(id)), timeout)
                    .await?
            }
        };
        answer.ok_or_else(|| no_answer(method))
    }

    /// The id of the next request, told to the caller if it asked ([`Caller::id_hook`]).
    fn request_id(&self, caller: &Caller) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = &caller.id_hook {
            hook.sent_as(id);
        }
        id
    }

    /// POST request `id` over Streamable HTTP; messages that stream in before the answer go to
    /// the caller's sink (`caller`) and to the connection's sink.
    #[allow(clippy::too_many_arguments)]
    async fn post_request(
        &self,
        client: &UpstreamClient,
        Endpoint { target, headers }: &Endpoint,
        extra: &[Extra<'_>],
        body: bytes::Bytes,
        id: u64,
        timeout: Duration,
        caller: Option<MessageSink>,
    ) -> Result<Option<Received>, UpstreamError> {
        let shared = self.sink.clone();
        let sink = move |m: Value| {
            // Notifications and requests (sampling, elicitation) go to the caller; the
            // connection's sink gets what no caller took, and list changes and resource updates
            // always (the gateway refreshes its catalog and tells subscribers).
            match &caller {
                Some(caller) if m.get("method").is_some() => {
                    let method = jsonrpc::method(&m).unwrap_or_default();
                    if method.ends_with("/list_changed")
                        || method == "notifications/resources/updated"
                    {
                        shared(m.clone());
                    }
                    caller(m);
                }
                _ => shared(m),
            }
        };
        let out = streamable::Outgoing {
            headers,
            extra,
            body,
            expect_id: Some(Value::from(id)),
        };
        Ok(streamable::post_raw(client, target, out, timeout, &sink)
            .await?
            .response)
    }

    /// Whether giving up a request's exchange already tells the upstream it is cancelled: on
    /// 2026-07-28 over HTTP the upstream sees the response stream closed (and a client may
    /// post no notification there). Elsewhere a `notifications/cancelled` must say it.
    pub fn hangup_cancels(&self) -> bool {
        matches!(
            (&self.era, &self.carrier),
            (Era::Stateless { .. }, Carrier::Http(..))
        )
    }

    /// Send a notification.
    pub async fn notify(
        &self,
        method: &str,
        params: Option<Value>,
        timeout: Duration,
    ) -> Result<(), UpstreamError> {
        let mut params = params;
        let extra = self.stamp(method, &mut params, None);
        match &self.carrier {
            Carrier::Http(client, Endpoint { target, headers }) => {
                let out = streamable::Outgoing {
                    headers,
                    extra: &extra.extras(),
                    body: outgoing(None, method, params.as_ref())?,
                    expect_id: None,
                };
                streamable::post_raw(client, target, out, timeout, &*self.sink).await?;
            }
            Carrier::Sse(_) | Carrier::Stdio(_) => {
                self.send_on_stream(&jsonrpc::notification(method, params), timeout)
                    .await?;
            }
        }
        Ok(())
    }

    /// Send `msg` where answers come on one stream (legacy SSE, a stdio child); for a request,
    /// wait for its answer there.
    async fn send_on_stream(
        &self,
        msg: &Value,
        timeout: Duration,
    ) -> Result<Option<Value>, UpstreamError> {
        let (body, expect) = super::pending::outgoing(msg)?;
        match &self.carrier {
            Carrier::Sse(conn) => conn.send_raw(&body, expect, timeout).await,
            Carrier::Stdio(conn) => conn
                .send_raw(&body, expect, timeout)
                .await?
                .map(Received::into_value)
                .transpose(),
            Carrier::Http(..) => Err(UpstreamError::Protocol {
                detail: "internal error: a Streamable-HTTP message sent as on a stream".into(),
            }),
        }
    }

    /// Send a client's answer to a request the upstream made (sampling, elicitation).
    pub async fn respond(&self, msg: &Value, timeout: Duration) -> Result<(), UpstreamError> {
        match &self.carrier {
            Carrier::Http(client, Endpoint { target, headers }) => {
                let sink = self.sink.clone();
                streamable::post(client, target, headers, msg, timeout, &*sink).await?;
            }
            Carrier::Sse(_) | Carrier::Stdio(_) => {
                self.send_on_stream(msg, timeout).await?;
            }
        }
        Ok(())
    }

    /// End the upstream session, as a client that is done with it does: a Streamable-HTTP
    /// session is `DELETE`d (best effort: an upstream that does not allow it keeps it until it
    /// expires); a legacy SSE session ends when its stream is dropped with the connection; a
    /// stdio child is stopped (and reaped) now, whoever else still holds the connection.
    pub async fn close(&self, timeout: Duration) {
        let (client, target, headers) = match &self.carrier {
            Carrier::Http(client, Endpoint { target, headers }) => (client, target, headers),
            Carrier::Sse(_) => return,
            Carrier::Stdio(conn) => return conn.stop().await,
        };
        if !headers.contains_key(&names::SESSION_ID) {
            return;
        }
        let request = crate::h1::client::request::delete(target, client.pool.authority(), headers);
        let sent = super::deadline::within(timeout, client.pool.send(&request)).await;
        if let Some(Ok(answered)) = sent {
            answered.body.finish();
        }
    }

    /// Whether the connection can still carry requests.
    pub fn is_usable(&self) -> bool {
        match &self.carrier {
            Carrier::Http(..) => true,
            Carrier::Sse(conn) => conn.is_alive(),
            Carrier::Stdio(conn) => conn.is_alive(),
        }
    }

    /// A health probe in the upstream's own terms: `ping`, or `server/discover` on 2026-07-28.
    pub async fn probe(&self, timeout: Duration) -> Result<(), UpstreamError> {
        let method = match self.era {
            Era::Session { .. } => "ping",
            Era::Stateless { .. } => "server/discover",
        };
        let answer = self.request(method, None, timeout).await?;
        match answer.get("error") {
            None => Ok(()),
            Some(err) => Err(UpstreamError::Protocol {
                detail: format!("{method} failed: {err}"),
            }),
        }
    }

    /// The HTTP client (and TLS identity) this connection uses; `None` for a stdio child.
    pub fn client(&self) -> Option<&UpstreamClient> {
        match &self.carrier {
            Carrier::Http(client, _) => Some(client),
            Carrier::Sse(conn) => Some(conn.client()),
            Carrier::Stdio(_) => None,
        }
    }

    /// Whether a [`SESSION_GONE`] notice is about this connection: a stdio child's names the
    /// child, which may be an earlier one than this connection's; any other is.
    pub fn is_gone(&self, notice: &Value) -> bool {
        match notice.pointer(&format!("/params/{}", super::message::GONE_PID)) {
            Some(pid) => self.pid().map(u64::from) == pid.as_u64(),
            None => true,
        }
    }

    /// The pid of the stdio child carrying this connection, if it is one.
    pub fn pid(&self) -> Option<u32> {
        match &self.carrier {
            Carrier::Stdio(conn) => Some(conn.pid()),
            _ => None,
        }
    }

    /// On 2026-07-28, stamp the per-request envelope into `params._meta` (requests only) and
    /// return the routing headers. A session-era upstream refuses (or misreads) a 2026-07-28
    /// envelope that a modern downstream client put in `_meta`; it has no use for it, so it goes.
    /// Stamping twice gives the same result (a request may be sent again after a reconnect).
    /// `hello` is who the request is for; `None` for a notification.
    fn stamp(
        &self,
        method: &str,
        params: &mut Option<Value>,
        hello: Option<&ClientProfile>,
    ) -> Routing<'static> {
        let Era::Stateless { version } = &self.era else {
            if let Some(params) = params.as_mut() {
                strip_envelope(params);
            }
            return Routing::default();
        };
        let Some(hello) = hello else {
            return routing_headers(version, method, None).into_owned();
        };
        let params = params.get_or_insert_with(|| Value::Object(Map::new()));
        if let Some(obj) = params.as_object_mut() {
            let meta = obj
                .entry("_meta")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                raw::fill_envelope(meta, &envelope_meta(version, hello));
            }
        }
        routing_for(version, method, Some(params)).into_owned()
    }
}

/// The `instructions` of an initialize or discover result (the same field in both eras).
fn instructions(result: &Value) -> Option<String> {
    result
        .get("instructions")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The 2026-07-28 `_meta` envelope keys of a request made for `hello` in `version`.
fn envelope_meta(version: &str, hello: &ClientProfile) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert(META_PROTOCOL_VERSION.into(), Value::String(version.into()));
    meta.insert(META_CLIENT_CAPABILITIES.into(), hello.capabilities.clone());
    meta.insert(META_CLIENT_INFO.into(), hello.client_info.clone());
    meta
}

fn no_answer(method: &str) -> UpstreamError {
    UpstreamError::Protocol {
        detail: format!("no answer to {method}"),
    }
}

/// A JSON-RPC request (with `id`) or notification, serialized from borrowed parts.
fn outgoing(
    id: Option<u64>,
    method: &str,
    params: Option<&Value>,
) -> Result<bytes::Bytes, UpstreamError> {
    #[derive(serde::Serialize)]
    struct Message<'a> {
        jsonrpc: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        method: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        params: Option<&'a Value>,
    }
    let msg = Message {
        jsonrpc: "2.0",
        id,
        method,
        params,
    };
    serde_json::to_vec(&msg)
        .map(bytes::Bytes::from)
        .map_err(|e| UpstreamError::Protocol {
            detail: format!("cannot serialize {method} ({e})"),
        })
}
