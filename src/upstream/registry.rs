//! The live set of upstreams: their connections, catalogs and health, backed by the store.
//!
//! Locks: the map is a std `RwLock` held only to clone an `Arc`; a connection is published
//! through `ArcSwapOption` and used without a lock; only (re)connecting takes a tokio mutex, so
//! concurrent callers wait for one initialize instead of each starting their own.

mod catalog;
mod collection;
mod health;
mod own;
mod send;
mod sync;
mod view;

use crate::session::SessionKey;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde_json::{Value, json};

use super::UpstreamError;
use super::clients::ClientCache;
use super::connection::{self, Connection};
use super::message::Caller;
use super::param_headers::ParamHeaders;
use super::raw::{RawAnswer, RawParams, Received};
use crate::metrics::{Metrics, UpstreamOutcome};
use crate::store::{Health, HealthStatus, Registration, Store};
use send::Payload;

pub use catalog::{Catalog, Entry};
pub use collection::{IdentityReport, RegisterError, Registry, UnusableIdentity};
pub use own::SessionIdentity;

/// Field added to a request an upstream sends to a client (and to a resource update it sends on
/// a client's own session), naming the upstream (removed before the client sees it).
pub const UPSTREAM_TAG: &str = "_mcpgw_upstream";

/// Tunables.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Per-request timeout towards upstreams.
    pub request_timeout: Duration,
    /// Time between health checks.
    pub health_interval: Duration,
    /// Consecutive failures before an upstream is offline.
    pub health_threshold: u32,
    /// Separator between upstream name and tool/prompt name.
    pub separator: String,
    /// Whether an admin may register a command over the HTTP listener (`[upstreams]
    /// allow_commands_over_http`): registering a command is running code on this host.
    pub allow_commands_over_http: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            health_interval: Duration::from_secs(30),
            health_threshold: 3,
            separator: "__".into(),
            allow_commands_over_http: false,
        }
    }
}

/// Why a downstream call could not be answered by its upstream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// Health checks mark it offline.
    #[error("upstream '{name}' is offline since {since}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Offline {
        /// Upstream.
        name: String,
        /// RFC 3339.
        since: String,
        /// Last error.
        last_error: Option<String>,
    },
    /// The request failed.
    #[error("upstream '{name}': {error}")]
    Failed {
        /// Upstream.
        name: String,
        /// What failed.
        error: UpstreamError,
    },
}

/// An upstream said that a resource changed.
#[derive(Debug, Clone)]
pub struct ResourceUpdate {
    /// The upstream's registered name.
    pub upstream: String,
    /// Its `notifications/resources/updated`, as it sent it.
    pub message: Value,
}

/// One registered upstream at run time.
pub struct Upstream {
    reg: ArcSwap<Registration>,
    conn: ArcSwapOption<Connection>,
    connecting: tokio::sync::Mutex<()>,
    catalog: ArcSwap<Catalog>,
    health: Mutex<Health>,
    legacy_warned: AtomicBool,
    /// Set once a catalog has been fetched; until then a successful check fetches it.
    catalog_loaded: AtomicBool,
    registry: Weak<RegistryInner>,
    /// Consecutive failed connection attempts.
    failed_opens: std::sync::atomic::AtomicU32,
    /// No new attempt before this instant; the error to give meanwhile.
    backoff: Mutex<Option<(std::time::Instant, UpstreamError)>>,
    /// Wakes this upstream's catalog refresher (list_changed notifications).
    refresh: tokio::sync::mpsc::Sender<()>,
    /// Downstream sessions subscribed to each resource URI here (`resources/subscribe`).
    subscriptions: Mutex<HashMap<String, HashSet<SessionKey>>>,
    /// Held while a subscription change goes upstream ([`Upstream::subscription_change`]).
    subscription_gate: tokio::sync::Mutex<()>,
    /// Each downstream session's own upstream session ([`own`]).
    own: own::ClientSessions,
    /// Requests in flight on the upstream's own connection, when it is a legacy SSE one.
    shared_calls: Arc<own::Calls>,
    /// Questions put to clients for this upstream ([`send`]), waiting for their answers.
    questions: Mutex<HashMap<String, tokio::sync::oneshot::Sender<Value>>>,
    /// Set once a stdio upstream's own child has started: each one after it is a restart.
    started: AtomicBool,
    /// The last failed health checks (Unix seconds, error), newest last, for the console.
    recent_errors: Mutex<std::collections::VecDeque<(i64, String)>>,
}

/// Failed health checks an upstream keeps for [`Upstream::recent_errors`].
pub const RECENT_ERRORS: usize = 20;

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name())
            .finish()
    }
}

/// Whether everything the upstream sends comes on one stream (legacy SSE, a stdio child's
/// stdout), so that what is not an answer must be routed to the call it concerns by the gateway
/// ([`Upstream::on_shared_stream`], and `own::open_own`) rather than arriving on the call's own
/// stream.
fn one_stream(reg: &Registration) -> bool {
    matches!(
        reg.transport,
        crate::store::Transport::Sse | crate::store::Transport::Stdio
    )
}

/// Delay after `n` failed connection attempts: 250 ms doubling up to 10 s, times a random
/// factor in [0.5, 1.5) so that many gateways (or upstreams) do not retry in step.
fn backoff_delay(n: u32) -> Duration {
    use ring::rand::SecureRandom;
    let base = Duration::from_millis(250)
        .saturating_mul(1u32 << n.min(6))
        .min(Duration::from_secs(10));
    let mut byte = [0u8; 1];
    let _ = ring::rand::SystemRandom::new().fill(&mut byte);
    base.mul_f64(0.5 + f64::from(byte[0]) / 256.0)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(ts: i64) -> String {
    crate::tls::x509::rfc3339(
        time::OffsetDateTime::from_unix_timestamp(ts).unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    )
}

impl Upstream {
    /// Wait for the right to send a subscription change (`resources/subscribe` or
    /// `resources/unsubscribe`) to this upstream; hold it until the answer is in and the table
    /// updated. One session carries every client's subscriptions, so a subscribe and an
    /// unsubscribe of the same URI by different clients must not cross on the way: the
    /// upstream would be left in whichever state it happened to apply last. Changes are rare;
    /// one at a time per upstream.
    pub async fn subscription_change(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.subscription_gate.lock().await
    }

    /// Downstream `session` subscribed to `uri` here (the upstream accepted it): its updates
    /// are relayed to that session from now on. `false` when this upstream cannot send them
    /// outside a request (a 2026-07-28 upstream), or has no connection.
    pub fn subscribe(&self, uri: &str, session: SessionKey) -> bool {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(uri.to_owned())
            .or_default()
            .insert(session);
        let relayed = self.relays_updates();
        self.sync_listened();
        relayed
    }

    /// Whether subscriptions to this upstream are made by listening (2026-07-28: no
    /// `resources/subscribe`; the gateway's `subscriptions/listen` stream names the URIs).
    pub fn subscribes_by_listening(&self) -> bool {
        self.conn
            .load()
            .as_ref()
            .is_some_and(|conn| conn.subscribes_by_listening())
    }

    /// On 2026-07-28, tell the connection's listen stream which URIs are subscribed now.
    fn sync_listened(&self) {
        let conn = self.conn.load();
        let Some(conn) = conn.as_ref().filter(|c| c.subscribes_by_listening()) else {
            return;
        };
        let uris = self
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        conn.listen_for(uris);
    }

    /// Whether this upstream can send resource updates outside a request (see
    /// [`Upstream::subscribe`]).
    pub fn relays_updates(&self) -> bool {
        self.conn.load().as_ref().is_some_and(|conn| conn.listen())
    }

    /// `session` no longer wants updates of `uri` (unsubscribed, or gone). Whether other
    /// sessions still do.
    pub fn unsubscribe(&self, uri: &str, session: &SessionKey) -> bool {
        let mut subscriptions = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sessions) = subscriptions.get_mut(uri) else {
            return false;
        };
        sessions.remove(session);
        if sessions.is_empty() {
            subscriptions.remove(uri);
            drop(subscriptions);
            self.sync_listened();
            return false;
        }
        true
    }

    /// Keep only the subscribers `keep` says are still there; the URIs left without any (the
    /// upstream may be told to stop sending their updates).
    pub fn retain_subscribers(&self, keep: impl Fn(&SessionKey) -> bool) -> Vec<String> {
        let mut subscriptions = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        let mut emptied = Vec::new();
        subscriptions.retain(|uri, sessions| {
            sessions.retain(|s| keep(s));
            if sessions.is_empty() {
                emptied.push(uri.clone());
            }
            !sessions.is_empty()
        });
        drop(subscriptions);
        if !emptied.is_empty() {
            self.sync_listened();
        }
        emptied
    }

    /// The sessions subscribed to `uri`.
    pub fn subscribers(&self, uri: &str) -> Vec<SessionKey> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uri)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn questions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, tokio::sync::oneshot::Sender<Value>>> {
        self.questions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registered name.
    pub fn name(&self) -> String {
        self.reg.load().name.clone()
    }

    /// Current registration.
    pub fn registration(&self) -> Arc<Registration> {
        self.reg.load_full()
    }

    /// The capabilities the upstream announced (null before the first connection). Resource
    /// updates are relayed on every transport and era ([`Connection::listen`]), so
    /// `resources.subscribe` is passed on as it came.
    pub fn capabilities(&self) -> Value {
        let conn = self.conn.load();
        conn.as_ref()
            .map_or(Value::Null, |conn| conn.capabilities.clone())
    }

    /// The `serverInfo` the upstream gave (null before the first connection, or when a
    /// 2026-07-28 upstream did not identify itself).
    pub fn server_info(&self) -> Value {
        let conn = self.conn.load();
        conn.as_ref()
            .map_or(Value::Null, |conn| conn.server_info.clone())
    }

    /// The `instructions` the upstream gave, if any (none before the first connection).
    pub fn instructions(&self) -> Option<String> {
        let conn = self.conn.load();
        conn.as_ref().and_then(|conn| conn.instructions.clone())
    }

    /// The `Mcp-Param-*` declarations of its tool `tool` (its own name), if it makes any.
    pub fn param_headers(&self, tool: &str) -> Option<Arc<ParamHeaders>> {
        self.catalog.load().param_headers.get(tool).cloned()
    }

    /// Current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// Current health.
    pub fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether calls are routed to it.
    pub fn is_online(&self) -> bool {
        self.reg.load().enabled
            && self.health.lock().unwrap_or_else(|p| p.into_inner()).status == HealthStatus::Online
    }

    fn settings(&self) -> Settings {
        self.registry
            .upgrade()
            .map(|r| r.settings.clone())
            .unwrap_or_default()
    }

    fn request_timeout(&self) -> Duration {
        self.registry.upgrade().map_or_else(
            || Settings::default().request_timeout,
            |r| r.settings.request_timeout,
        )
    }

    /// The live connection, opening one if there is none.
    pub async fn connection(self: &Arc<Self>) -> Result<Arc<Connection>, UpstreamError> {
        if let Some(conn) = self.conn.load_full().filter(|c| c.is_usable()) {
            return Ok(conn);
        }
        // Opening is rare and its future large (an initialize handshake): boxed, so that the
        // future of every call does not carry its space (docs/PERFORMANCE.md, fifth pass).
        Box::pin(self.reconnect()).await
    }

    /// [`Upstream::connection`] when there is no usable connection: open one, once for all the
    /// callers waiting, unless a recent failure says to wait.
    async fn reconnect(self: &Arc<Self>) -> Result<Arc<Connection>, UpstreamError> {
        let _guard = self.connecting.lock().await;
        if let Some(conn) = self.conn.load_full().filter(|c| c.is_usable()) {
            return Ok(conn);
        }
        // A flapping upstream is not re-initialized by every caller: after a failed attempt,
        // callers get the last error until a jittered, growing delay has passed.
        if let Some((until, error)) = self
            .backoff
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && std::time::Instant::now() < *until
        {
            return Err(error.clone());
        }
        match self.open().await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                self.conn.store(Some(conn.clone()));
                self.failed_opens.store(0, Ordering::Relaxed);
                *self.backoff.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(conn)
            }
            Err(error) => {
                let n = self.failed_opens.fetch_add(1, Ordering::Relaxed).min(16);
                let delay = backoff_delay(n);
                *self.backoff.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((std::time::Instant::now() + delay, error.clone()));
                Err(error)
            }
        }
    }

    /// Open a connection here: with the registration's URL, TLS identity and headers, or by
    /// starting its program (a stdio upstream). `sink` takes what the upstream sends outside an
    /// answer, `era` and `hello` say how to greet it. The one way every connection to an
    /// upstream is opened.
    async fn dial(
        &self,
        sink: connection::MessageSink,
        era: crate::store::EraChoice,
        hello: Arc<connection::ClientProfile>,
    ) -> Result<Connection, UpstreamError> {
        let registry = self.registry.upgrade().ok_or(UpstreamError::Closed)?;
        let reg = self.reg.load_full();
        let link = match &reg.command {
            Some(spec) => connection::Link::Stdio(
                registry
                    .children
                    .start(&reg.name, spec, sink.clone())
                    .await?,
            ),
            None => connection::Link::Http {
                client: registry.client_for(reg.clone()).await?,
                transport: reg.transport,
                headers: super::headers::auth_headers(&reg.auth).map_err(|e| {
                    UpstreamError::Connect {
                        diagnosis: e.to_string(),
                    }
                })?,
            },
        };
        let timeout = registry.settings.request_timeout;
        Connection::open(link, timeout, sink, era, hello).await
    }

    async fn open(self: &Arc<Self>) -> Result<Connection, UpstreamError> {
        let registry = self.registry.upgrade().ok_or(UpstreamError::Closed)?;
        let reg = self.reg.load_full();
        let refresh = self.refresh.clone();
        let (updates, name) = (registry.updates.clone(), reg.name.clone());
        let one_stream = one_stream(&reg);
        let this = Arc::downgrade(self);
        let sink: connection::MessageSink = Arc::new(move |msg: Value| {
            let method = crate::jsonrpc::method(&msg).unwrap_or_default();
            if method == connection::SESSION_GONE {
                // Reconnected by the refresh (which subscribes again), not at the next call.
                if let Some(up) = this.upgrade()
                    && up.conn.load().as_ref().is_some_and(|c| c.is_gone(&msg))
                {
                    up.invalidate();
                }
                let _ = refresh.try_send(());
            } else if method.ends_with("/list_changed") {
                // A full channel already holds a pending refresh; one is enough.
                let _ = refresh.try_send(());
            } else if method == "notifications/resources/updated" {
                // Nobody listening (no session subscribed anywhere) is not an error.
                let _ = updates.send(ResourceUpdate {
                    upstream: name.clone(),
                    message: msg,
                });
            } else if one_stream && let Some(up) = this.upgrade() {
                up.on_shared_stream(msg);
            }
        });
        let hello = connection::gateway_hello();
        let conn = self.dial(sink, reg.era, hello).await?;
        if conn.pid().is_some() && self.started.swap(true, Ordering::Relaxed) {
            registry.metrics.upstream_restart(&reg.name);
        }
        if conn
            .client()
            .is_some_and(|c| c.observations.legacy_cn_accepted.load(Ordering::Relaxed))
            && !self.legacy_warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(upstream = %reg.name, "legacy CN-only certificate accepted; reissue with SANs");
        }
        // A new upstream session knows nothing of the old one's subscriptions: made again.
        let uris: Vec<String> = {
            let subscriptions = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
            subscriptions.keys().cloned().collect()
        };
        // An upstream that announces list changes sends them on its GET stream too.
        let announces = ["tools", "prompts", "resources"].iter().any(|kind| {
            conn.capabilities.pointer(&format!("/{kind}/listChanged")) == Some(&Value::Bool(true))
        });
        if announces {
            conn.listen();
        }
        if !uris.is_empty() && conn.listen() && conn.subscribes_by_listening() {
            conn.listen_for(uris);
        } else if !uris.is_empty() && conn.listen() {
            for uri in uris {
                let params = Some(json!({"uri": uri}));
                if let Err(err) = conn
                    .request(
                        "resources/subscribe",
                        params,
                        registry.settings.request_timeout,
                    )
                    .await
                {
                    tracing::warn!(upstream = %reg.name, %uri, error = %err, "could not subscribe again after reconnecting");
                }
            }
        }
        Ok(conn)
    }

    /// A message that came on the legacy SSE stream of the upstream's own connection, outside
    /// any answer: progress, logging, or a question for a client. It goes with the one call in
    /// flight there; with several (clients sharing the session) which one it concerns cannot be
    /// told, so a question is refused at once rather than left unanswered, and a notification
    /// dropped.
    fn on_shared_stream(self: &Arc<Self>, mut msg: Value) {
        let is_request = msg.get("id").is_some();
        if let Some(call) = self.shared_calls.only() {
            if is_request && let Some(obj) = msg.as_object_mut() {
                obj.insert(UPSTREAM_TAG.into(), Value::String(self.name()));
            }
            call(msg);
            return;
        }
        if !is_request {
            return;
        }
        let refusal = crate::jsonrpc::error(
            msg.get("id").cloned().unwrap_or(Value::Null),
            crate::jsonrpc::code::INTERNAL_ERROR,
            "mcpgw cannot tell which client to ask: several calls are in flight on this shared session",
        );
        let up = self.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { up.respond(None, &refusal).await });
        }
    }

    /// Drop the connection so the next use opens a new one.
    pub fn invalidate(&self) {
        self.conn.store(None);
    }

    /// Close its connections, its own and its clients', in the background (it was removed): a
    /// stdio upstream's children stop now, not when the last call holding one ends.
    fn shut(&self) {
        if let Some(conn) = self.conn.swap(None) {
            let timeout = self.request_timeout();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { conn.close(timeout).await });
            }
        }
        self.end_client_sessions(|_| false);
    }

    /// Send a request for `caller` and return the upstream's answer message, reconnecting
    /// once if the upstream expired the session. Every call is counted in the registry's
    /// metrics.
    pub async fn request(
        self: &Arc<Self>,
        caller: &Caller,
        method: &str,
        params: Option<Value>,
    ) -> Result<Value, CallError> {
        let started = std::time::Instant::now();
        let mut params = params;
        let result = self
            .request_uncounted(caller, method, Payload::Tree(&mut params))
            .await
            .and_then(|reply| reply.into_value().map_err(|e| self.failed(e)));
        self.count(started, &result, |answer| answer.get("error").is_some());
        result
    }

    /// Forward a request whose params are copied as they came (see [`super::raw`]); the
    /// answer is split at its top level only.
    pub async fn request_raw(
        self: &Arc<Self>,
        caller: &Caller,
        method: &str,
        params: &RawParams<'_>,
    ) -> Result<RawAnswer, CallError> {
        let started = std::time::Instant::now();
        let result = self
            .request_uncounted(caller, method, Payload::Raw(params))
            .await
            .and_then(|reply| reply.into_answer().map_err(|e| self.failed(e)));
        self.count(started, &result, RawAnswer::is_error);
        result
    }

    fn failed(&self, error: UpstreamError) -> CallError {
        CallError::Failed {
            name: self.name(),
            error,
        }
    }

    /// Count a request in the upstream's metrics.
    fn count<T>(
        &self,
        started: std::time::Instant,
        result: &Result<T, CallError>,
        is_error: impl Fn(&T) -> bool,
    ) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let outcome = match result {
            Ok(answer) if is_error(answer) => UpstreamOutcome::RpcError,
            Ok(_) => UpstreamOutcome::Ok,
            Err(CallError::Offline { .. }) => UpstreamOutcome::Offline,
            Err(CallError::Failed {
                error: UpstreamError::Timeout { .. },
                ..
            }) => UpstreamOutcome::Timeout,
            Err(CallError::Failed { .. }) => UpstreamOutcome::Failed,
        };
        registry
            .metrics
            .upstream_request(&self.reg.load().name, outcome, started.elapsed());
    }

    async fn request_uncounted(
        self: &Arc<Self>,
        caller: &Caller,
        method: &str,
        mut payload: Payload<'_, '_>,
    ) -> Result<Received, CallError> {
        if !self.is_online() {
            let h = self.health();
            return Err(CallError::Offline {
                name: self.name(),
                since: rfc3339(h.since),
                last_error: h.last_error,
            });
        }
        let timeout = self.request_timeout();
        let fail = |error| CallError::Failed {
            name: self.name(),
            error,
        };
        // Requests the upstream makes while answering (sampling, elicitation) are tagged with
        // its name, so the client's answer can be routed back here.
        let tagged: Option<connection::MessageSink> = caller.sink.clone().map(|caller| {
            // The name is read when such a request comes, which is seldom.
            let upstream = self.clone();
            Arc::new(move |mut m: Value| {
                if m.get("id").is_some()
                    && let Some(obj) = m.as_object_mut()
                {
                    obj.insert(UPSTREAM_TAG.into(), Value::String(upstream.name()));
                }
                caller(m);
            }) as connection::MessageSink
        });
        let param_headers = match (&payload, method) {
            (Payload::Tree(params), "tools/call") => params
                .as_ref()
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .and_then(|name| self.param_headers(name)),
            (Payload::Raw(params), "tools/call") => self.param_headers(params.name()),
            _ => None,
        };
        let caller = Caller {
            sink: tagged,
            id_hook: caller.id_hook.clone(),
            owner: caller.owner.clone(),
            asks_as_requests: caller.asks_as_requests,
            param_headers,
        };
        match self.own_slot(caller.owner.as_ref()) {
            Some(slot) => {
                let _active = slot.calls.enter(caller.sink.as_ref());
                self.send_own(&slot, &caller, method, &mut payload, timeout)
                    .await
                    .map_err(fail)
            }
            None => {
                // A legacy SSE upstream's (or a stdio child's) questions and notifications come
                // on its one stream: the call in flight is told who may get them.
                let one_stream = one_stream(&self.reg.load());
                let _active = one_stream
                    .then(|| self.shared_calls.enter(caller.sink.as_ref()))
                    .flatten();
                self.send_shared(&caller, method, &mut payload, timeout)
                    .await
                    .map_err(fail)
            }
        }
    }

    /// The connection that carries `session`'s messages: its own upstream session if it has
    /// one open, else the upstream's own connection.
    async fn connection_of(
        self: &Arc<Self>,
        session: Option<&SessionKey>,
    ) -> Result<Arc<Connection>, UpstreamError> {
        match self.slot_of(session).and_then(|slot| slot.conn()) {
            Some(conn) => Ok(conn),
            None => self.connection().await,
        }
    }

    /// Send a notification for `session` (its own upstream session, if it has one).
    pub async fn notify(
        self: &Arc<Self>,
        session: Option<&SessionKey>,
        method: &str,
        params: Value,
    ) -> Result<(), UpstreamError> {
        let timeout = self.settings().request_timeout;
        self.connection_of(session)
            .await?
            .notify(method, Some(params), timeout)
            .await
    }

    /// A request whose client went away before its answer (`upstream_id` as this upstream
    /// knows it): where dropping the exchange does not tell the upstream, a
    /// `notifications/cancelled` does, so it stops working for nobody. A connection that has
    /// gone since is not opened again for it.
    pub async fn abandoned(self: &Arc<Self>, session: Option<&SessionKey>, upstream_id: u64) {
        let conn = self
            .slot_of(session)
            .and_then(|slot| slot.conn())
            .or_else(|| self.conn.load_full())
            .filter(|c| c.is_usable() && !c.hangup_cancels());
        let Some(conn) = conn else {
            return;
        };
        let params = json!({"requestId": upstream_id, "reason": "the client went away"});
        let timeout = self.settings().request_timeout;
        if let Err(err) = conn
            .notify("notifications/cancelled", Some(params), timeout)
            .await
        {
            tracing::debug!(upstream = %self.name(), error = %err, "could not cancel an abandoned request");
        }
    }

    /// Deliver `session`'s answer to a request this upstream made of it, on the upstream
    /// session that asked (or to the gateway, when it asked for the upstream).
    pub async fn respond(
        self: &Arc<Self>,
        session: Option<&SessionKey>,
        msg: &Value,
    ) -> Result<(), UpstreamError> {
        if self.answers_question(msg) {
            return Ok(());
        }
        let timeout = self.settings().request_timeout;
        self.connection_of(session)
            .await?
            .respond(msg, timeout)
            .await
    }
}

struct RegistryInner {
    /// Fires when any upstream's catalog (or the set of upstreams) changes.
    changes: tokio::sync::broadcast::Sender<()>,
    /// `notifications/resources/updated` from any upstream.
    updates: tokio::sync::broadcast::Sender<ResourceUpdate>,
    upstreams: RwLock<BTreeMap<String, Arc<Upstream>>>,
    clients: Arc<ClientCache>,
    store: Arc<dyn Store>,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// The stdio upstreams' children.
    children: super::stdio::Children,
}

#[cfg(test)]
mod tests {
    use super::backoff_delay;
    use std::time::Duration;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert!(backoff_delay(0) < Duration::from_millis(376));
        assert!(backoff_delay(0) >= Duration::from_millis(125));
        assert!(backoff_delay(20) <= Duration::from_secs(15));
        assert!(backoff_delay(20) >= Duration::from_secs(5));
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff_delay(3)).collect();
        assert!(samples.len() > 1, "no jitter");
    }
}
