//! Upstream sessions of one client each.
//!
//! A server keeps state per session: what a client toggled, the resources it made, its log
//! level, which of its tools it offers given the client's capabilities. So by default every
//! downstream session that uses a session-era upstream gets an upstream session of its own,
//! opened on its first request there with the client's capabilities and `clientInfo`, and
//! ended (`DELETE`d) when the downstream session ends or expires. They are bounded by the
//! downstream session table (`max_sessions`), since each belongs to one of its sessions.
//!
//! A stdio upstream's client sessions are children of their own, only when registered
//! `--isolate` (a child costs a process, a session does not): at most [`MAX_ISOLATED`] at once,
//! each stopped when its session ends.
//!
//! The upstream's own connection ([`Upstream::connection`]) stays: it checks health, fetches the
//! catalog, holds resource subscriptions, and carries the requests of clients without a session
//! (2026-07-28 clients) and every request of an upstream registered with `--shared-session`
//! (a server known to keep nothing per session), or with `--era 2026-07-28` (no sessions).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use serde_json::Value;

use super::super::UpstreamError;
use super::super::connection::{self, Connection, MessageSink, Owner};
use super::{UPSTREAM_TAG, Upstream};
use crate::hash::HashMap;
use crate::session::SessionKey;
use crate::store::EraChoice;

/// The most children an `--isolate`d stdio upstream runs for client sessions at once.
const MAX_ISOLATED: usize = 32;

/// Every downstream session's upstream session on one upstream.
#[derive(Default)]
pub(super) struct ClientSessions {
    slots: Mutex<HashMap<SessionKey, Arc<Slot>>>,
    /// Set once the upstream refused a session-era `initialize` while speaking 2026-07-28: its
    /// clients share its stateless connection, which keeps nothing between requests anyway.
    stateless_only: AtomicBool,
    /// Upstream sessions opened for clients, ever (for metrics and the benchmark's check that
    /// a downstream session opens at most one per upstream).
    opened: AtomicU64,
    /// What the upstream says of itself in a session-era `initialize`, which its clients'
    /// sessions get (it may differ from what it says in 2026-07-28 on the gateway's own
    /// connection: `listChanged`, for one).
    identity: ArcSwapOption<SessionIdentity>,
}

/// An upstream's `initialize` answer, as a client's session gets it.
#[derive(Debug)]
pub struct SessionIdentity {
    /// `serverInfo`.
    pub server_info: Value,
    /// `instructions`.
    pub instructions: Option<String>,
    /// `capabilities`.
    pub capabilities: Value,
}

impl SessionIdentity {
    fn of(conn: &Connection) -> Self {
        Self {
            server_info: conn.server_info.clone(),
            instructions: conn.instructions.clone(),
            capabilities: conn.capabilities.clone(),
        }
    }
}

/// One client's upstream session.
pub(super) struct Slot {
    conn: ArcSwapOption<Connection>,
    /// Held while (re)opening, so that concurrent requests wait for one `initialize`.
    connecting: tokio::sync::Mutex<()>,
    /// Its requests in flight.
    pub(super) calls: Arc<Calls>,
    /// The resource URIs its client subscribed to there: a new session after a restart of the
    /// upstream subscribes to them again.
    subscribed: Mutex<std::collections::BTreeSet<String>>,
}

/// The sinks of the requests in flight on one upstream session, oldest first: what the upstream
/// sends on a stream that is not a request's own (a legacy SSE upstream's only stream) goes
/// to one of them, so that it arrives inline with the call that caused it.
#[derive(Default)]
pub(super) struct Calls {
    active: Mutex<Vec<(u64, MessageSink)>>,
    next: AtomicU64,
}

/// A request's place in its [`Calls`], removed when the request ends.
pub(super) struct Active {
    calls: Arc<Calls>,
    n: u64,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.calls.lock().retain(|(n, _)| *n != self.n);
    }
}

impl Calls {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, MessageSink)>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a request's sink while it is in flight.
    pub(super) fn enter(self: &Arc<Self>, sink: Option<&MessageSink>) -> Option<Active> {
        let sink = sink?.clone();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push((n, sink));
        Some(Active {
            calls: self.clone(),
            n,
        })
    }

    /// The newest request's sink (a client's own session: every call is that client's).
    pub(super) fn newest(&self) -> Option<MessageSink> {
        self.lock().last().map(|(_, sink)| sink.clone())
    }

    /// The sink of the only request in flight; `None` when there are none or several (a
    /// session shared by clients: which one the upstream means cannot be told).
    pub(super) fn only(&self) -> Option<MessageSink> {
        let active = self.lock();
        (active.len() == 1).then(|| active[0].1.clone())
    }
}

impl Slot {
    fn new() -> Self {
        Self {
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            calls: Arc::default(),
            subscribed: Mutex::default(),
        }
    }

    /// Its session's connection, if one is open.
    pub(super) fn conn(&self) -> Option<Arc<Connection>> {
        self.conn.load_full()
    }

    /// Forget the connection: the next request opens a new session.
    pub(super) fn invalidate(&self) {
        self.conn.store(None);
    }
}

impl Upstream {
    /// Whether a client that initialized a session gets an upstream session of its own here
    /// (see the module's documentation).
    pub fn gives_clients_sessions(&self) -> bool {
        let reg = self.reg.load();
        // A stdio upstream's client gets a child of its own only when registered `--isolate`.
        let shared = match &reg.command {
            Some(spec) => !spec.isolate,
            None => reg.shared_session,
        };
        !(shared
            || reg.era == EraChoice::Stateless
            || self.own.stateless_only.load(Ordering::Relaxed))
    }

    /// The slot of `owner`'s own upstream session here, made if it has none yet; `None` when
    /// its requests go on the upstream's own connection.
    pub(super) fn own_slot(&self, owner: Option<&Owner>) -> Option<Arc<Slot>> {
        let owner = owner?;
        if !self.gives_clients_sessions() {
            return None;
        }
        let mut slots = self.own.slots.lock().unwrap_or_else(|p| p.into_inner());
        Some(
            slots
                .entry(owner.key.clone())
                .or_insert_with(|| Arc::new(Slot::new()))
                .clone(),
        )
    }

    /// The slot of `session`'s upstream session here, if it has one.
    pub(super) fn slot_of(&self, session: Option<&SessionKey>) -> Option<Arc<Slot>> {
        let slots = self.own.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.get(session?).cloned()
    }

    /// `owner`'s upstream session in `slot`, opened if it has none. `Ok(None)`: the upstream
    /// speaks only 2026-07-28 (its `initialize` was refused), so the request goes on the
    /// upstream's own connection.
    pub(super) async fn own_connection(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        owner: &Owner,
    ) -> Result<Option<Arc<Connection>>, UpstreamError> {
        if let Some(conn) = slot.conn.load_full().filter(|c| c.is_usable()) {
            return Ok(Some(conn));
        }
        let _guard = slot.connecting.lock().await;
        if let Some(conn) = slot.conn.load_full().filter(|c| c.is_usable()) {
            return Ok(Some(conn));
        }
        match Box::pin(self.open_own(slot, owner)).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                self.own
                    .identity
                    .store(Some(Arc::new(SessionIdentity::of(&conn))));
                Box::pin(self.subscribe_again(slot, &conn)).await;
                slot.conn.store(Some(conn.clone()));
                self.own.opened.fetch_add(1, Ordering::Relaxed);
                Ok(Some(conn))
            }
            // A 2026-07-28-only server refuses `initialize`: its clients share its stateless
            // connection from now on (it keeps no sessions to leak between them).
            Err(UpstreamError::Protocol { .. } | UpstreamError::Status { .. })
                if self.speaks_only_stateless() =>
            {
                self.own.stateless_only.store(true, Ordering::Relaxed);
                tracing::info!(upstream = %self.name(), "the upstream has no session era; its clients share its stateless connection");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Whether the upstream's own connection is in the 2026-07-28 era.
    fn speaks_only_stateless(&self) -> bool {
        self.conn
            .load()
            .as_ref()
            .is_some_and(|c| matches!(c.era, connection::Era::Stateless { .. }))
    }

    /// Open an upstream session for `owner`: `initialize` with its capabilities and
    /// `clientInfo`. What the upstream sends outside a request's own answer goes to the newest
    /// request in flight on it, or else to the client's session (its `GET` stream, its SSE or
    /// WebSocket connection).
    async fn open_own(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        owner: &Owner,
    ) -> Result<Connection, UpstreamError> {
        let reg = self.reg.load_full();
        if reg.command.is_some() && self.client_sessions().0 >= MAX_ISOLATED {
            return Err(UpstreamError::Connect {
                diagnosis: format!(
                    "this stdio upstream already runs {MAX_ISOLATED} children, one per client session (--isolate), the most it may; try again when a session has ended"
                ),
            });
        }
        let weak_slot = Arc::downgrade(slot);
        let one_stream = super::one_stream(&reg);
        let (refresh, deliver, name) = (
            self.refresh.clone(),
            owner.deliver.clone(),
            reg.name.clone(),
        );
        let sink: MessageSink = Arc::new(move |mut msg: Value| {
            let method = crate::jsonrpc::method(&msg).unwrap_or_default();
            if method == connection::SESSION_GONE {
                if let Some(slot) = weak_slot.upgrade()
                    && slot.conn().is_some_and(|c| c.is_gone(&msg))
                {
                    slot.invalidate();
                }
                return;
            }
            if method.ends_with("/list_changed") {
                let _ = refresh.try_send(());
            }
            // A resource update is tagged too: a client may have subscribed to it by a name of
            // the gateway's that names the upstream (`mcpgw://` URIs on `/mcp`).
            let tagged = msg.get("id").is_some() || method == "notifications/resources/updated";
            if tagged && let Some(obj) = msg.as_object_mut() {
                obj.insert(UPSTREAM_TAG.into(), Value::String(name.clone()));
            }
            // A legacy SSE upstream has one stream for everything: what comes while a call is
            // in flight goes with the call. A Streamable-HTTP upstream sends a call's messages
            // on the call's own stream, so what reaches this sink came outside any request.
            let inline = one_stream
                .then(|| weak_slot.upgrade().and_then(|slot| slot.calls.newest()))
                .flatten();
            match inline {
                Some(call) => call(msg),
                None => deliver(msg),
            }
        });
        let conn = self
            .dial(sink, EraChoice::Session, owner.profile.clone())
            .await?;
        if owner.listening {
            conn.listen();
        }
        tracing::debug!(upstream = %reg.name, session = %owner.key, "upstream session opened for a client");
        Ok(conn)
    }

    /// What the upstream says of itself to a client's session: learned from the last one
    /// opened, or (when the gateway's own connection speaks 2026-07-28, whose answer may
    /// differ) from a session opened to ask and closed again. `None` when its clients share the
    /// gateway's connection, whose answer is theirs.
    pub async fn session_identity(
        self: &Arc<Self>,
    ) -> Result<Option<Arc<SessionIdentity>>, UpstreamError> {
        if !self.gives_clients_sessions() {
            return Ok(None);
        }
        if let Some(known) = self.own.identity.load_full() {
            return Ok(Some(known));
        }
        if !self.speaks_only_stateless() {
            return Ok(None);
        }
        let hello = connection::gateway_hello();
        let opened = self.dial(Arc::new(|_| {}), EraChoice::Session, hello).await;
        let timeout = self.request_timeout();
        match opened {
            Ok(conn) => {
                let identity = Arc::new(SessionIdentity::of(&conn));
                self.own.identity.store(Some(identity.clone()));
                conn.close(timeout).await;
                Ok(Some(identity))
            }
            // Not a session-era server after all: the gateway's connection speaks for it.
            Err(UpstreamError::Protocol { .. } | UpstreamError::Status { .. }) => {
                self.own.stateless_only.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Whether `session` has an upstream session open here.
    pub fn has_client_session(&self, session: &SessionKey) -> bool {
        self.slot_of(Some(session))
            .is_some_and(|s| s.conn().is_some())
    }

    /// A new session for a client who had subscribed to resources on the one it replaces (the
    /// upstream restarted): subscribed again, and listening for the updates.
    async fn subscribe_again(&self, slot: &Slot, conn: &Connection) {
        let uris: Vec<String> = {
            let subscribed = slot.subscribed.lock().unwrap_or_else(|p| p.into_inner());
            subscribed.iter().cloned().collect()
        };
        if uris.is_empty() {
            return;
        }
        conn.listen();
        let timeout = self.request_timeout();
        for uri in uris {
            let params = Some(serde_json::json!({ "uri": uri }));
            if let Err(err) = conn.request("resources/subscribe", params, timeout).await {
                tracing::warn!(upstream = %self.name(), %uri, error = %err, "could not subscribe a client again on its new session");
            }
        }
    }

    /// The client of `session` subscribed to `uri` here (`subscribed`), or unsubscribed, on its
    /// own session.
    pub fn client_subscription(&self, session: &SessionKey, uri: &str, subscribed: bool) {
        let Some(slot) = self.slot_of(Some(session)) else {
            return;
        };
        let mut uris = slot.subscribed.lock().unwrap_or_else(|p| p.into_inner());
        if subscribed {
            uris.insert(uri.to_owned());
        } else {
            uris.remove(uri);
        }
    }

    /// The client of `session` opened a stream for what servers send outside a request: its
    /// upstream session here (if it has one) starts listening for such messages too.
    pub fn client_listens(&self, session: &SessionKey) {
        if let Some(conn) = self.slot_of(Some(session)).and_then(|s| s.conn.load_full()) {
            conn.listen();
        }
    }

    /// End the upstream session of `session`, which ended, in the background.
    pub fn end_client_session(&self, session: &SessionKey) {
        let gone = {
            let mut slots = self.own.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.remove(session)
        };
        self.end_slots(gone.into_iter().collect());
    }

    /// End the upstream sessions of downstream sessions that `keep` says are gone, in the
    /// background; how many ended.
    pub fn end_client_sessions(&self, keep: impl Fn(&SessionKey) -> bool) -> usize {
        let gone: Vec<Arc<Slot>> = {
            let mut slots = self.own.slots.lock().unwrap_or_else(|p| p.into_inner());
            let mut gone = Vec::new();
            slots.retain(|key, slot| {
                let kept = keep(key);
                if !kept {
                    gone.push(slot.clone());
                }
                kept
            });
            gone
        };
        self.end_slots(gone)
    }

    /// End these sessions' upstream sessions (`DELETE`), in the background; how many.
    fn end_slots(&self, gone: Vec<Arc<Slot>>) -> usize {
        let ended = gone.len();
        let timeout = self.request_timeout();
        for slot in gone {
            let Some(conn) = slot.conn.swap(None) else {
                continue;
            };
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { conn.close(timeout).await });
            }
        }
        ended
    }

    /// Upstream sessions open here for clients now, and opened ever.
    pub fn client_sessions(&self) -> (usize, u64) {
        let open = self
            .own
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.conn.load().is_some())
            .count();
        (open, self.own.opened.load(Ordering::Relaxed))
    }
}
