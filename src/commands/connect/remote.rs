//! The remote side of `mcpgw connect`: one MCP endpoint over Streamable HTTP, reached through
//! the gateway's one upstream path (`ClientCache::client_for`, its HTTP/1.1 pool and the
//! `streamable` answer reader), with what keeps a long-lived desktop session working while the
//! server restarts or rotates its certificate:
//!
//! - a connection refused is dialled again with a short backoff, for up to the timeout (the
//!   client is built again each time, so rotated client certificate files are read again);
//! - a 404 on the session id means the server forgot the session (a restarted gateway): the
//!   client's own `initialize` and `notifications/initialized` are sent again, the new session
//!   id taken, and the message that failed sent once more;
//! - a 401 with `--bearer-file` reads the file again and, if the token changed, sends once more.
//!
//! Nothing else is retried: a request whose connection broke after it left may have run.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::out::Out;
use crate::h1::client::PoolError;
use crate::h1::client::request;
use crate::h1::fields::{self as names, Lookup};
use crate::store::{TlsSettings, UpstreamAuth};
use crate::upstream::UpstreamError;
use crate::upstream::answer;
use crate::upstream::clients::{ClientCache, UpstreamClient};
use crate::upstream::identity::PathPolicy;
use crate::upstream::message::{self, META_PROTOCOL_VERSION, Routing};
use crate::upstream::streamable::{self, Answer};

/// First pause before dialling a server that refused the connection again; it doubles up to
/// [`MAX_REDIAL_PAUSE`].
const FIRST_REDIAL_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between two dials of a server that refuses connections.
const MAX_REDIAL_PAUSE: Duration = Duration::from_secs(1);
/// How long the session's `DELETE` may take when stdin closes.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the bearer token comes from.
#[derive(Clone)]
pub enum Bearer {
    /// None is sent.
    Absent,
    /// Given on the command line (or in `MCPGW_BEARER`).
    Given(String),
    /// Read from this file at start and after a 401.
    File(PathBuf),
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent => f.write_str("Absent"),
            Self::Given(_) => f.write_str("Given(<redacted>)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// What the relay was told, validated.
pub struct Settings {
    /// The endpoint.
    pub url: String,
    /// CA, client certificate and key (as paths: read again whenever a client is built), and
    /// the server name override.
    pub tls: TlsSettings,
    /// The bearer token's source.
    pub bearer: Bearer,
    /// Extra headers, as (name, value).
    pub headers: Vec<(String, String)>,
    /// How long an answer may take, and how long a refusing server is dialled again.
    pub timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values often carry keys: their names only.
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("tls", &self.tls)
            .field("bearer", &self.bearer)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why the relay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The bearer token file cannot be read.
    #[error("cannot read --bearer-file {path}: {source}")]
    BearerFile {
        /// As given.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The bearer token file holds no token.
    #[error("--bearer-file {path} is empty")]
    EmptyBearerFile {
        /// As given.
        path: String,
    },
    /// The headers (bearer included) cannot be sent.
    #[error(transparent)]
    Headers(#[from] crate::upstream::headers::AuthHeaderError),
    /// No client can be made for the URL with these TLS settings.
    #[error(transparent)]
    Client(#[from] crate::upstream::clients::ClientError),
    /// The URL has no usable request target.
    #[error(transparent)]
    Target(#[from] UpstreamError),
}

/// How a message is sent.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    /// With the session's id and version (all but `initialize`).
    pub in_session: bool,
    /// A 404 on the session id opens the session again and sends the message once more.
    pub renew: bool,
    /// Its answer may take as long as it takes (`subscriptions/listen`, whose stream is its
    /// answer); otherwise the timeout holds.
    pub endless: bool,
}

/// The session-era conversation, as the client opened it.
#[derive(Debug, Default)]
struct Session {
    /// The server's `Mcp-Session-Id`.
    id: Option<HeaderValue>,
    /// The version the server chose at `initialize`, sent as `MCP-Protocol-Version` after.
    version: Option<String>,
    /// The client's own `initialize` request, replayed when the server forgets the session.
    initialize: Option<Value>,
    /// The client's `notifications/initialized`, replayed after it.
    initialized: Option<Value>,
    /// Incremented each time a session is opened: a failure seen under an older one needs no
    /// new session of its own.
    generation: u64,
    /// Opening it again failed: the next message tries first.
    lost: bool,
    /// The standing `GET` stream's stop.
    listening: Option<CancellationToken>,
}

/// What may change while the relay runs.
#[derive(Debug)]
struct State {
    /// The client (TLS identity and pool) as last built.
    client: UpstreamClient,
    /// A request failed to reach the server: the next one builds the client again first.
    stale: bool,
    /// The bearer token and extra headers, as last read (their values marked sensitive, so
    /// that no debug output shows them).
    base: HeaderMap,
    session: Session,
}

/// The remote endpoint and the conversation with it.
#[derive(Debug)]
pub struct Remote {
    settings: Settings,
    cache: ClientCache,
    target: http::Uri,
    state: Mutex<State>,
    /// One session renewal at a time.
    renewing: tokio::sync::Mutex<()>,
    out: Out,
    /// Stops the standing stream when the relay ends.
    stop: CancellationToken,
    /// Itself, for the standing stream's sink: a stream that finds the session gone renews it.
    me: Weak<Remote>,
}

impl Remote {
    /// Read the bearer token and certificate files and build the client: a file that cannot be
    /// read is an error now, not at the first message.
    pub fn new(settings: Settings, out: Out) -> Result<Arc<Self>, SetupError> {
        let cache = ClientCache::new(PathPolicy::default());
        let client = cache.client_for(&settings.url, &settings.tls)?;
        let target = message::target(&client.url)?;
        let base = base_headers(&settings, read_token(&settings.bearer)?)?;
        Ok(Arc::new_cyclic(|me| Self {
            state: Mutex::new(State {
                client,
                stale: false,
                base,
                session: Session::default(),
            }),
            settings,
            cache,
            target,
            renewing: tokio::sync::Mutex::new(()),
            out,
            stop: CancellationToken::new(),
            me: me.clone(),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client's `initialize`: sent without a session, its answer's session id and version
    /// kept for what follows, and the request kept to be sent again if the server forgets.
    pub async fn initialize(&self, msg: &Value) -> Result<Option<Value>, UpstreamError> {
        let _one = self.renewing.lock().await;
        {
            let mut state = self.state();
            let session = &mut state.session;
            if let Some(stop) = session.listening.take() {
                stop.cancel();
            }
            *session = Session {
                initialize: Some(msg.clone()),
                generation: session.generation + 1,
                ..Session::default()
            };
        }
        self.open_session(msg).await
    }

    /// The client's `notifications/initialized`, kept to be sent again with the `initialize`;
    /// then the session's standing stream is opened.
    pub async fn initialized(&self, msg: &Value) -> Result<(), UpstreamError> {
        self.state().session.initialized = Some(msg.clone());
        let sent = self.send(msg, SESSION_MESSAGE).await;
        self.listen();
        sent.map(|_| ())
    }

    /// Send `msg` (not `initialize`) and return the answer, if it is a request.
    pub async fn send(&self, msg: &Value, how: Sending) -> Result<Option<Value>, UpstreamError> {
        let body = serialize(msg)?;
        let method = crate::jsonrpc::method(msg);
        let expect_id = method.and(msg.get("id"));
        // A 2026-07-28 message names its version in `_meta`, and its routing headers must
        // match its body; a session-era one has none.
        let routing = method
            .zip(modern_version(msg))
            .map(|(method, version)| message::routing_for(version, method, msg.get("params")));
        let mut renewed = false;
        loop {
            let lost = self.state().session.lost;
            if lost && how.renew && !renewed {
                renewed = true;
                let generation = self.state().session.generation;
                self.renew(generation).await?;
            }
            let (sent, generation) = self
                .post_authorized(
                    how.in_session,
                    routing.as_ref(),
                    &body,
                    expect_id,
                    how.endless,
                )
                .await;
            match sent {
                Err(UpstreamError::SessionExpired) if how.renew && !renewed => {
                    renewed = true;
                    tracing::info!("the server forgot the session; opening it again");
                    self.renew(generation).await?;
                }
                other => return other.and_then(|a| a.response.map(|r| r.into_value()).transpose()),
            }
        }
    }

    /// [`Self::post`] with the current headers, once more if a 401 made the token file give a
    /// new token; and the session generation it went in.
    async fn post_authorized(
        &self,
        in_session: bool,
        routing: Option<&Routing<'_>>,
        body: &[u8],
        expect_id: Option<&Value>,
        endless: bool,
    ) -> (Result<Answer, UpstreamError>, u64) {
        let mut token_read = false;
        loop {
            let (headers, generation) = self.headers(in_session);
            let sent = self.post(&headers, routing, body, expect_id, endless).await;
            match sent {
                Err(UpstreamError::Status { status: 401, .. })
                    if !token_read && self.reread_token() =>
                {
                    token_read = true;
                }
                other => return (other, generation),
            }
        }
    }

    /// The headers of a message: the bearer and extra ones, then (in a session) its id and
    /// version; and the session's generation.
    fn headers(&self, in_session: bool) -> (HeaderMap, u64) {
        let state = self.state();
        let mut headers = state.base.clone();
        let session = &state.session;
        if in_session {
            if let Some(id) = &session.id {
                headers.insert(names::SESSION_ID.clone(), id.clone());
            }
            if let Some(version) = session.version.as_deref()
                && let Ok(value) = HeaderValue::from_str(version)
            {
                headers.insert(names::PROTOCOL_VERSION.clone(), value);
            }
        }
        (headers, session.generation)
    }

    /// POST one message and read its answer (the messages before it go to stdout). A refused
    /// connection is dialled again until the timeout; anything else is the caller's.
    async fn post(
        &self,
        headers: &HeaderMap,
        routing: Option<&Routing<'_>>,
        body: &[u8],
        expect_id: Option<&Value>,
        endless: bool,
    ) -> Result<Answer, UpstreamError> {
        let timeout = self.settings.timeout;
        let client = self.client();
        let extra = routing.map(Routing::extras).unwrap_or_default();
        let request =
            request::post_json(&self.target, client.pool.authority(), headers, &extra, body);
        let exchange = async {
            let (client, response) = self.dial(client, &request).await?;
            let out = &self.out;
            streamable::read_answer(&client, response, expect_id, &|m| out.send(&m), headers).await
        };
        if endless {
            return exchange.await;
        }
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout {
                secs: timeout.as_secs(),
            })?
    }

    /// Send `request` on `client`'s pool; while the server refuses connections (it is
    /// restarting), build the client again and retry with a growing pause, for up to the
    /// timeout. After any other failure the next message builds the client again (a handshake
    /// refused for an expired client certificate works once the files hold a new one).
    async fn dial(
        &self,
        mut client: UpstreamClient,
        request: &[u8],
    ) -> Result<(UpstreamClient, crate::h1::client::pool::Answered), UpstreamError> {
        let give_up = Instant::now() + self.settings.timeout;
        let mut pause = FIRST_REDIAL_PAUSE;
        loop {
            match client.pool.send(request).await {
                Ok(response) => return Ok((client, response)),
                Err(err) if is_refused(&err) && Instant::now() + pause < give_up => {
                    tracing::debug!(error = %err, "the server refuses connections; dialling again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_REDIAL_PAUSE);
                    client = self.rebuild()?;
                }
                Err(err) => {
                    self.state().stale = true;
                    return Err(answer::send_failed(&client, &err));
                }
            }
        }
    }

    /// The client for the next request: built again from the files if the last one failed.
    fn client(&self) -> UpstreamClient {
        if self.state().stale {
            match self.rebuild() {
                Ok(client) => {
                    self.state().stale = false;
                    return client;
                }
                Err(err) => tracing::debug!(error = %err, "the TLS files are not usable now"),
            }
        }
        self.state().client.clone()
    }

    /// A client built again from the files (a rotated client certificate is read here).
    fn rebuild(&self) -> Result<UpstreamClient, UpstreamError> {
        let client = self
            .cache
            .client_for(&self.settings.url, &self.settings.tls)
            .map_err(|e| UpstreamError::Connect {
                diagnosis: e.to_string(),
            })?;
        self.state().client = client.clone();
        Ok(client)
    }

    /// POST `init` without a session and keep the session id and version its answer brings.
    async fn open_session(&self, init: &Value) -> Result<Option<Value>, UpstreamError> {
        let body = serialize(init)?;
        let answer = self
            .post_authorized(false, None, &body, init.get("id"), false)
            .await
            .0?;
        let response = answer.response.map(|r| r.into_value()).transpose()?;
        let version = response
            .as_ref()
            .and_then(|r| r.pointer("/result/protocolVersion"))
            .and_then(Value::as_str);
        let mut state = self.state();
        state.session.id = answer
            .headers
            .text(&names::SESSION_ID)
            .and_then(|id| HeaderValue::from_str(id).ok());
        state.session.version = version.map(str::to_owned);
        Ok(response)
    }

    /// The server forgot the session that was current at `generation`: send the client's
    /// `initialize` and `notifications/initialized` again, and open the standing stream
    /// again. Done once for all the messages that found the session gone.
    async fn renew(&self, generation: u64) -> Result<(), UpstreamError> {
        let _one = self.renewing.lock().await;
        let (init, initialized) = {
            let mut state = self.state();
            let session = &mut state.session;
            if session.generation != generation && !session.lost {
                return Ok(());
            }
            if let Some(stop) = session.listening.take() {
                stop.cancel();
            }
            session.id = None;
            (session.initialize.clone(), session.initialized.clone())
        };
        // Only a session-era client's session can be forgotten; this is a 404 otherwise.
        let Some(init) = init else {
            return Err(UpstreamError::SessionExpired);
        };
        let renewed = async {
            let answer = self.open_session(&init).await?;
            if let Some(error) = answer.as_ref().and_then(|a| a.get("error")) {
                return Err(UpstreamError::Protocol {
                    detail: format!("the server refused the client's initialize again: {error}"),
                });
            }
            if let Some(initialized) = &initialized {
                // Sent as the client's was, but not through `send`: a 404 here is not renewed.
                let body = serialize(initialized)?;
                self.post_authorized(true, None, &body, None, false)
                    .await
                    .0?;
            }
            Ok(())
        };
        let renewed = renewed.await;
        let mut state = self.state();
        state.session.generation += 1;
        state.session.lost = renewed.is_err();
        drop(state);
        if renewed.is_ok() && initialized.is_some() {
            self.listen();
        }
        renewed
    }

    /// Open the session's standing `GET` stream (what the server sends outside any request
    /// goes to stdout), replacing any open one. A stream that finds the session gone renews it.
    fn listen(&self) {
        let stop = self.stop.child_token();
        let (headers, generation) = self.headers(true);
        let client = {
            let mut state = self.state();
            if state.session.initialize.is_none() {
                return;
            }
            if let Some(old) = state.session.listening.replace(stop.clone()) {
                old.cancel();
            }
            state.client.clone()
        };
        let out = self.out.clone();
        let me = self.me.clone();
        let sink: message::MessageSink = Arc::new(move |msg: Value| {
            if crate::jsonrpc::method(&msg) != Some(message::SESSION_GONE) {
                return out.send(&msg);
            }
            if let Some(me) = me.upgrade() {
                tokio::spawn(async move {
                    tracing::info!("the server forgot the session; opening it again");
                    if let Err(err) = me.renew(generation).await {
                        tracing::warn!(error = %me.describe(&err), "cannot open the session again");
                    }
                });
            }
        });
        tokio::spawn(streamable::listen(
            client,
            self.target.clone(),
            headers,
            sink,
            stop,
        ));
    }

    /// The relay is over: stop the standing stream and end the session (`DELETE`; a server
    /// that does not allow it answers 405, which is fine).
    pub async fn close(&self) {
        self.stop.cancel();
        let (headers, _) = self.headers(true);
        if !headers.contains_key(&names::SESSION_ID) {
            return;
        }
        let client = self.state().client.clone();
        let request = request::delete(&self.target, client.pool.authority(), &headers);
        match tokio::time::timeout(CLOSE_TIMEOUT, client.pool.send(&request)).await {
            Ok(Ok(response)) => response.body.finish(),
            Ok(Err(err)) => tracing::debug!(error = %err, "the session's DELETE failed"),
            Err(_) => tracing::debug!("the session's DELETE took too long"),
        }
    }

    /// Read the bearer token file again after a 401: whether it holds a new token.
    fn reread_token(&self) -> bool {
        if !matches!(self.settings.bearer, Bearer::File(_)) {
            return false;
        }
        let token = match read_token(&self.settings.bearer) {
            Ok(token) => token,
            Err(err) => {
                tracing::warn!(error = %err, "the server answered 401");
                return false;
            }
        };
        let mut state = self.state();
        match base_headers(&self.settings, token) {
            Ok(base) if base.get(AUTHORIZATION) == state.base.get(AUTHORIZATION) => false,
            Ok(base) => {
                tracing::info!("the server answered 401; sending the token now in --bearer-file");
                state.base = base;
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "the server answered 401");
                false
            }
        }
    }

    /// What the client is told when a message could not be relayed.
    pub fn describe(&self, err: &UpstreamError) -> String {
        let given = match &self.settings.bearer {
            Bearer::Absent => None,
            Bearer::Given(_) => Some("--bearer"),
            Bearer::File(_) => Some("--bearer-file"),
        };
        match (err, given) {
            (UpstreamError::Status { status: 401, .. }, None) => format!(
                "{} requires authentication (HTTP 401) and mcpgw connect was given no bearer \
                 token: pass --bearer-file FILE (or --bearer TOKEN)",
                self.origin()
            ),
            (UpstreamError::Status { status: 401, .. }, Some(option)) => format!(
                "{} refused the bearer token of {option} (HTTP 401): it is unknown, expired or \
                 revoked",
                self.origin()
            ),
            (UpstreamError::Status { status: 403, .. }, _) => format!(
                "{} refused access (HTTP 403): the token or certificate lacks the role or scope",
                self.origin()
            ),
            _ => format!("{}: {err}", self.origin()),
        }
    }

    /// The endpoint's origin, for messages (never its path or query, which may carry a key).
    fn origin(&self) -> String {
        self.state().client.url.origin().ascii_serialization()
    }
}

/// How a session-era message other than `initialize` is sent while a session is renewed:
/// in the session, without renewing it again.
const SESSION_MESSAGE: Sending = Sending {
    in_session: true,
    renew: false,
    endless: false,
};

/// Whether the server refused the connection (nobody listens: it is restarting).
fn is_refused(err: &PoolError) -> bool {
    matches!(err, PoolError::Connect { source, .. }
        if source.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// The 2026-07-28 version a message names in its `_meta`: a message that names none is of
/// the session era.
pub fn modern_version(msg: &Value) -> Option<&str> {
    msg.get("params")?
        .get("_meta")?
        .get(META_PROTOCOL_VERSION)?
        .as_str()
}

fn serialize(msg: &Value) -> Result<Bytes, UpstreamError> {
    serde_json::to_vec(msg)
        .map(Bytes::from)
        .map_err(|e| UpstreamError::Protocol {
            detail: format!("cannot serialize the message ({e})"),
        })
}

/// The bearer token as its source holds it now.
fn read_token(bearer: &Bearer) -> Result<Option<String>, SetupError> {
    match bearer {
        Bearer::Absent => Ok(None),
        Bearer::Given(token) => Ok(Some(token.clone())),
        Bearer::File(path) => {
            let shown = || path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| SetupError::BearerFile {
                path: shown(),
                source,
            })?;
            let token = text.trim();
            if token.is_empty() {
                return Err(SetupError::EmptyBearerFile { path: shown() });
            }
            Ok(Some(token.to_owned()))
        }
    }
}

/// The headers every message carries: the extra ones and the bearer token, checked as a
/// registration's are.
fn base_headers(settings: &Settings, token: Option<String>) -> Result<HeaderMap, SetupError> {
    Ok(crate::upstream::headers::auth_headers(&UpstreamAuth {
        bearer: token,
        headers: settings.headers.clone(),
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_show_no_token_and_no_header_value() {
        let settings = Settings {
            url: "https://gw.example/mcp".into(),
            tls: TlsSettings::default(),
            bearer: Bearer::Given("s3cret-token".into()),
            headers: vec![("X-Api-Key".into(), "s3cret-key".into())],
            timeout: Duration::from_secs(1),
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("X-Api-Key"), "{shown}");
        let headers = base_headers(&settings, read_token(&settings.bearer).unwrap()).unwrap();
        assert!(!format!("{headers:?}").contains("s3cret"), "{headers:?}");
    }

    #[test]
    fn a_message_is_modern_by_the_version_in_its_meta() {
        let modern = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {META_PROTOCOL_VERSION: "2026-07-28"}}});
        assert_eq!(modern_version(&modern), Some("2026-07-28"));
        let session = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
            "params": {"_meta": {"progressToken": 1}}});
        assert_eq!(modern_version(&session), None);
    }
}
