//! Downstream Streamable-HTTP sessions: ids issued at `initialize`, when each was last used,
//! their server-to-client event logs, and the bounds (how many, how long idle, how many per
//! principal: each session holds a slot of its principal's quota, `crate::access::quota`).

use crate::hash::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::access::Principal;
use crate::access::quota::{Exceeded, SessionQuota, SessionSlot};
pub use crate::config::SessionLimits;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::events::EventLog;

/// Session ids issued at `initialize`, with when each was last used and whose each is.
#[derive(Debug)]
pub struct Sessions {
    ids: Mutex<HashMap<String, Entry>>,
    /// Server-to-client events of each session (`GET /mcp`).
    logs: Mutex<HashMap<String, Log>>,
    limits: SessionLimits,
    /// Sessions per principal, shared with the other transports.
    quota: Arc<SessionQuota>,
}

/// Why no session was opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The table is full, even after dropping idle sessions.
    #[error("too many open Streamable HTTP sessions (limit {max}); close one or try again later")]
    Full {
        /// `[mcp] max_sessions`.
        max: usize,
    },
    /// The principal holds its quota of sessions.
    #[error(transparent)]
    Quota(#[from] Exceeded),
}

/// A session's entry in the id table.
#[derive(Debug)]
struct Entry {
    /// When it was last used.
    seen: Instant,
    /// The principal that opened it: the only one it is open to. Anyone else naming it is
    /// told it does not exist, as if the id were never issued.
    owner: Arc<str>,
    /// How the store names it ([`crate::store::sessions::id_hash`]), worked out once.
    hash: Arc<str>,
    /// Its place in the owner's quota, given back when the entry goes.
    _slot: SessionSlot,
}

/// A session's entry in the log table. However it leaves the table (DELETE, expiry, sweep),
/// dropping it ends the session's open `GET /mcp` streams.
#[derive(Debug, Default)]
struct Log(Arc<EventLog>);

impl Drop for Log {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Sessions {
    /// An empty table with these limits, its sessions counted in `quota`.
    pub fn new(limits: SessionLimits, quota: Arc<SessionQuota>) -> Self {
        Self {
            ids: Mutex::default(),
            logs: Mutex::default(),
            limits,
            quota,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session id for `owner`, unless the table is full even after dropping idle
    /// sessions, or `owner` holds its quota.
    pub(crate) fn open(&self, owner: &Principal) -> Result<String, OpenError> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 16];
        let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
        let id = hex::encode(bytes);
        self.insert(&id, owner)?;
        Ok(id)
    }

    /// Take in a session another instance (or an earlier process) opened, which the store
    /// vouches is `owner`'s: `Ok(false)` when it is here already (a request that came at the
    /// same time took it in first).
    pub(crate) fn adopt(&self, id: &str, owner: &Principal) -> Result<bool, OpenError> {
        self.insert(id, owner)
    }

    /// Add the session `id` unless the table is full even after dropping idle sessions, or
    /// `owner` holds its quota; `Ok(false)` when it is there already.
    fn insert(&self, id: &str, owner: &Principal) -> Result<bool, OpenError> {
        let mut ids = self.lock();
        if ids.contains_key(id) {
            return Ok(false);
        }
        if ids.len() >= self.limits.max {
            let idle = self.limits.idle;
            ids.retain(|_, entry| entry.seen.elapsed() < idle);
            if ids.len() >= self.limits.max {
                return Err(OpenError::Full {
                    max: self.limits.max,
                });
            }
        }
        let slot = self.quota.take(owner)?;
        let entry = Entry {
            seen: Instant::now(),
            owner: owner.id.clone(),
            hash: crate::store::sessions::id_hash(id).into(),
            _slot: slot,
        };
        ids.insert(id.to_owned(), entry);
        self.logs_lock().insert(id.to_owned(), Log::default());
        Ok(true)
    }

    /// How the store names the sessions used since `since`, each with the elapsed time since
    /// its last use (their last use goes to the store in one batch, not on each request).
    pub(crate) fn used_since(&self, since: Instant) -> Vec<(String, Duration)> {
        self.lock()
            .values()
            .filter(|entry| entry.seen >= since)
            .map(|entry| (entry.hash.to_string(), entry.seen.elapsed()))
            .collect()
    }

    /// Let go of the session the store names `hash` (it ended on another instance); its id if
    /// it was here.
    pub(crate) fn forget_hashed(&self, hash: &str) -> Option<String> {
        let id = self.id_of(hash)?;
        self.lock().remove(&id);
        self.logs_lock().remove(&id);
        Some(id)
    }

    /// The id of the session held here that the store names `hash`.
    fn id_of(&self, hash: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(_, entry)| &*entry.hash == hash)
            .map(|(id, _)| id.clone())
    }

    /// Whether `owner` may open a session now: the table has room and `owner` is within its
    /// quota, once idle sessions are dropped if that would make the difference. For a refusal
    /// before any work for the session is done; [`Self::open`] decides again.
    pub(crate) fn may_open(&self, owner: &Principal) -> Result<(), OpenError> {
        if self.is_full() || !self.quota.within(owner) {
            self.sweep();
        }
        if self.is_full() {
            return Err(OpenError::Full {
                max: self.limits.max,
            });
        }
        Ok(self.quota.check(owner)?)
    }

    /// Whether a session is open to `owner` (and not idle past the limit); marks it used.
    pub(crate) fn touch(&self, id: &str, owner: &str) -> bool {
        let now = Instant::now();
        let mut ids = self.lock();
        match ids.get_mut(id) {
            Some(entry) if *entry.owner != *owner => false,
            Some(entry) if now.saturating_duration_since(entry.seen) < self.limits.idle => {
                entry.seen = now;
                true
            }
            Some(_) => {
                ids.remove(id);
                self.logs_lock().remove(id);
                false
            }
            None => false,
        }
    }

    /// Whether `id` names a session open to `owner` (without marking it used).
    pub(crate) fn is_owned_by(&self, id: &str, owner: &str) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|entry| *entry.owner == *owner)
    }

    /// Whether the client of an open session has opened a `GET` stream on it.
    pub(crate) fn listened(&self, id: &str) -> bool {
        self.logs_lock().get(id).is_some_and(|log| log.0.listened())
    }

    /// Whether a session is open (without marking it used).
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.lock().len() >= self.limits.max
    }

    /// End a session of `owner`'s; `false` when it has none of that id.
    pub(crate) fn close(&self, id: &str, owner: &str) -> bool {
        let mut ids = self.lock();
        if ids.get(id).is_none_or(|entry| *entry.owner != *owner) {
            return false;
        }
        ids.remove(id);
        drop(ids);
        self.logs_lock().remove(id);
        true
    }

    fn logs_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Log>> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The event log of a session open to `owner` (marks it used).
    pub fn events(&self, id: &str, owner: &str) -> Option<Arc<EventLog>> {
        if !self.touch(id, owner) {
            return None;
        }
        self.logs_lock().get(id).map(|log| log.0.clone())
    }

    /// Queue a server-to-client message for every open session. It is serialized once; the
    /// sessions' logs share the text.
    pub fn broadcast(&self, msg: &Value) {
        let data = super::events::shared(msg);
        let logs: Vec<_> = self.logs_lock().values().map(|log| log.0.clone()).collect();
        for log in logs {
            log.push(data.clone());
        }
    }

    /// Queue a server-to-client message for one session; `false` when it is not open.
    pub fn notify(&self, id: &str, msg: &Value) -> bool {
        if !self.lock().contains_key(id) {
            return false;
        }
        match self.logs_lock().get(id) {
            Some(log) => {
                log.0.push(super::events::shared(msg));
                true
            }
            None => false,
        }
    }

    /// Whether a `GET` stream of session `id` is open here now.
    pub(crate) fn streaming(&self, id: &str) -> bool {
        self.logs_lock()
            .get(id)
            .is_some_and(|log| log.0.streaming())
    }

    /// Whether the client of the session the store names `hash` reads its stream here.
    pub(crate) fn streaming_hashed(&self, hash: &str) -> bool {
        self.id_of(hash).is_some_and(|id| self.streaming(&id))
    }

    /// Queue `data` for the session the store names `hash`, if its client reads its stream
    /// here (another instance had it to send); whether it was queued.
    pub(crate) fn push_if_streaming(&self, hash: &str, data: Arc<str>) -> bool {
        let Some(id) = self.id_of(hash) else {
            return false;
        };
        match self.logs_lock().get(&id) {
            Some(log) if log.0.streaming() => {
                log.0.push(data);
                true
            }
            _ => false,
        }
    }

    /// Forget sessions idle past the limit; returns how many went.
    pub fn sweep(&self) -> usize {
        let idle = self.limits.idle;
        let mut ids = self.lock();
        let before = ids.len();
        ids.retain(|_, entry| entry.seen.elapsed() < idle);
        self.logs_lock().retain(|id, _| ids.contains_key(id));
        before - ids.len()
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Open sessions per owning principal (the console's sessions page).
    pub fn by_owner(&self) -> std::collections::BTreeMap<String, usize> {
        tally(self.lock().values().map(|entry| &*entry.owner))
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How many of `owners` each principal is: a table's open sessions or streams by principal
/// (the console's sessions page).
pub fn tally<'a>(
    owners: impl IntoIterator<Item = &'a str>,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for owner in owners {
        *counts.entry(owner.to_owned()).or_default() += 1;
    }
    counts
}

/// The 503 answer when a session table is full.
pub fn too_many_sessions(limits: SessionLimits, transport: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("retry-after", "5")],
        Json(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32000, "message": format!(
                "too many open {transport} sessions (limit {}); close one or try again later", limits.max
            )}
        })),
    )
        .into_response()
}
