//! Quotas: how much of the gateway one principal, one peer address or one message may take, so
//! that a client at its bounds leaves the others room. Each is written once, here, and checked
//! where what it bounds begins:
//!
//! | quota (setting) | counted by | checked where | refusal |
//! | --- | --- | --- | --- |
//! | `[limits] sessions_per_principal` | principal id, every transport together | a session opening: `initialize` (`http::sessions`), `GET /sse`, the WebSocket upgrade, a `subscriptions/listen` stream | 503 / JSON-RPC -32000 |
//! | `[limits] requests_per_second`, `burst` | principal id (a token bucket) | the gate (`http::front`), and each WebSocket message | 429 with `Retry-After` / JSON-RPC -32000 |
//! | `[limits] max_batch` | one JSON-RPC batch | where the pipeline splits a batch (`http::mcp`) | one JSON-RPC error, no entry forwarded |
//! | `[http] max_connections`, `max_connections_per_peer` | peer IP address | the accept loop (`server`) | closed at once |
//!
//! With `--no-auth` (loopback only) every client is the one anonymous principal: the
//! per-principal quotas do not apply to it (they would bound everyone together), nor to the
//! control socket's local administrator; the per-transport bound `[mcp] max_sessions` still
//! does. Every refusal is counted in
//! `mcpgw_quota_refusals_total{quota}` and logged at most once a second, so a flood of them
//! cannot flood the log.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::{Method, Principal};
use crate::config::{QuotaLimits, Rate};
use crate::hash::HashMap;
use crate::metrics::Metrics;

/// What a quota refused, with the values its message names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Exceeded {
    /// A principal holds as many sessions as it may.
    #[error(
        "{principal} already holds {limit} open sessions, its quota ([limits] sessions_per_principal = {limit}); close one or try again later"
    )]
    Sessions {
        /// Whose quota.
        principal: Arc<str>,
        /// The quota.
        limit: usize,
    },
    /// A principal sends faster than its rate.
    #[error(
        "{principal} is over its request rate ([limits] requests_per_second = {per_second}, burst = {burst}); retry in {retry_secs} s"
    )]
    Rate {
        /// Whose rate.
        principal: Arc<str>,
        /// The rate.
        per_second: u32,
        /// The burst.
        burst: u32,
        /// Seconds until a request would pass again (at least 1).
        retry_secs: u64,
    },
    /// A JSON-RPC batch has more entries than one may.
    #[error(
        "a batch of {len} messages is over the limit of {limit} ([limits] max_batch); none of it was run: send at most {limit} at once"
    )]
    Batch {
        /// Its entries.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The listener holds as many connections as it may.
    #[error("{limit} connections are open, the limit ([http] max_connections = {limit})")]
    Connections {
        /// The limit.
        limit: usize,
    },
    /// One peer address holds as many connections as it may.
    #[error(
        "{peer} already holds {limit} open connections, its limit ([http] max_connections_per_peer = {limit})"
    )]
    ConnectionsPerPeer {
        /// The peer's address.
        peer: IpAddr,
        /// The limit.
        limit: usize,
    },
}

impl Exceeded {
    /// The setting that refused: the metric's `quota` label.
    pub fn setting(&self) -> &'static str {
        match self {
            Self::Sessions { .. } => "sessions_per_principal",
            Self::Rate { .. } => "requests_per_second",
            Self::Batch { .. } => "max_batch",
            Self::Connections { .. } => "max_connections",
            Self::ConnectionsPerPeer { .. } => "max_connections_per_peer",
        }
    }

    /// The JSON-RPC error code: a batch is an invalid request; the rest are the
    /// implementation-defined server error every "try again later" of mcpgw's uses.
    pub fn code(&self) -> i64 {
        match self {
            Self::Batch { .. } => crate::jsonrpc::code::INVALID_REQUEST,
            _ => -32000,
        }
    }

    /// The refusal as a JSON-RPC error answering `id`.
    pub fn rpc_error(&self, id: serde_json::Value) -> serde_json::Value {
        crate::jsonrpc::error(id, self.code(), self.to_string())
    }

    /// How long to wait before trying again, where waiting helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Rate { retry_secs, .. } => Some(Duration::from_secs(*retry_secs)),
            Self::Sessions { .. } | Self::Connections { .. } | Self::ConnectionsPerPeer { .. } => {
                Some(Duration::from_secs(5))
            }
            Self::Batch { .. } => None,
        }
    }
}

/// Whether per-principal quotas count `principal`: not the anonymous principal of `--no-auth`
/// (everyone), nor the local administrator on the control socket (the operator, not a tenant).
fn counted(principal: &Principal) -> bool {
    !matches!(principal.method, Method::None | Method::ControlSocket)
}

/// Every quota of the listener, owned by its state and handed to whatever opens what one
/// bounds.
#[derive(Debug)]
pub struct Quotas {
    limits: QuotaLimits,
    sessions: Arc<SessionQuota>,
    rate: Option<RateLimiter>,
    connections: Arc<ConnectionCaps>,
    refusals: Arc<Refusals>,
}

impl Quotas {
    /// Quotas with these limits, counting refusals in `metrics`.
    pub fn new(limits: QuotaLimits, metrics: Arc<Metrics>) -> Self {
        let refusals = Arc::new(Refusals {
            metrics,
            started: Instant::now(),
            logged: AtomicU64::new(0),
        });
        Self {
            limits,
            sessions: Arc::new(SessionQuota {
                limit: limits.sessions_per_principal,
                open: Mutex::default(),
                refusals: refusals.clone(),
            }),
            rate: limits.rate.map(RateLimiter::new),
            connections: Arc::new(ConnectionCaps {
                total: limits.max_connections,
                per_peer: limits.max_connections_per_peer,
                open: Mutex::default(),
                refusals: refusals.clone(),
            }),
            refusals,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> QuotaLimits {
        self.limits
    }

    /// The session quota, for the tables that hold sessions.
    pub fn sessions(&self) -> &Arc<SessionQuota> {
        &self.sessions
    }

    /// The connection caps, for the accept loop.
    pub fn connections(&self) -> &Arc<ConnectionCaps> {
        &self.connections
    }

    /// A session for `principal`, held as long as the slot lives.
    pub fn session(&self, principal: &Principal) -> Result<SessionSlot, Exceeded> {
        self.sessions.take(principal)
    }

    /// One request of `principal`'s, within its rate. The hot path: nothing when no rate is
    /// set; else a clock read, a hash of the id, a shared lock of one shard and one
    /// compare-and-swap, no allocation (but a principal's first request, which makes its bucket).
    pub fn request(&self, principal: &Principal) -> Result<(), Exceeded> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        if !counted(principal) {
            return Ok(());
        }
        rate.admit(&principal.id).map_err(|wait| {
            let exceeded = Exceeded::Rate {
                principal: principal.id.clone(),
                per_second: rate.rate.per_second,
                burst: rate.rate.burst,
                retry_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            };
            self.refusals.count(&exceeded);
            exceeded
        })
    }

    /// A batch of `len` entries, within `max_batch`.
    pub fn batch(&self, len: usize) -> Result<(), Exceeded> {
        if len <= self.limits.max_batch {
            return Ok(());
        }
        let exceeded = Exceeded::Batch {
            len,
            limit: self.limits.max_batch,
        };
        self.refusals.count(&exceeded);
        Err(exceeded)
    }
}

/// Counts refusals and logs them, at most one line a second.
#[derive(Debug)]
struct Refusals {
    metrics: Arc<Metrics>,
    started: Instant,
    /// The second (since `started`, plus one) of the last line logged.
    logged: AtomicU64,
}

impl Refusals {
    fn count(&self, exceeded: &Exceeded) {
        self.metrics.quota_refused(exceeded.setting());
        let now = self.started.elapsed().as_secs() + 1;
        let last = self.logged.load(Ordering::Relaxed);
        if last != now
            && self
                .logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(quota = exceeded.setting(), "refused: {exceeded}");
        }
    }
}

/// Open sessions per principal, on every transport together.
#[derive(Debug)]
pub struct SessionQuota {
    limit: usize,
    /// Principals with at least one session open (an entry goes at zero).
    open: Mutex<HashMap<Arc<str>, usize>>,
    refusals: Arc<Refusals>,
}

impl SessionQuota {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        // Single increments and decrements: a poisoned lock still holds whole counts.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `principal` may open one more session now.
    pub fn within(&self, principal: &Principal) -> bool {
        !counted(principal) || !self.full(self.held(&principal.id))
    }

    /// [`Self::within`], the refusal counted: for an answer before any work for a session is
    /// done; [`Self::take`] decides again when it opens one.
    pub fn check(&self, principal: &Principal) -> Result<(), Exceeded> {
        if self.within(principal) {
            return Ok(());
        }
        Err(self.refuse(principal))
    }

    /// One more session for `principal`, or the refusal when it holds its quota.
    pub fn take(self: &Arc<Self>, principal: &Principal) -> Result<SessionSlot, Exceeded> {
        if !counted(principal) {
            return Ok(SessionSlot(None));
        }
        let mut open = self.lock();
        let held = open.entry(principal.id.clone()).or_default();
        if self.full(*held) {
            drop(open);
            return Err(self.refuse(principal));
        }
        *held += 1;
        Ok(SessionSlot(Some((self.clone(), principal.id.clone()))))
    }

    fn full(&self, held: usize) -> bool {
        held >= self.limit
    }

    fn refuse(&self, principal: &Principal) -> Exceeded {
        let exceeded = Exceeded::Sessions {
            principal: principal.id.clone(),
            limit: self.limit,
        };
        self.refusals.count(&exceeded);
        exceeded
    }

    /// Every principal holding sessions, with how many (all transports together).
    pub fn holders(&self) -> std::collections::BTreeMap<String, usize> {
        self.lock()
            .iter()
            .map(|(principal, held)| (principal.to_string(), *held))
            .collect()
    }

    /// Sessions `principal` holds.
    pub fn held(&self, principal: &str) -> usize {
        self.lock().get(principal).copied().unwrap_or(0)
    }

    fn release(&self, principal: &str) {
        let mut open = self.lock();
        if let Some(held) = open.get_mut(principal) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(principal);
            }
        }
    }
}

/// One session counted against its principal's quota until dropped.
#[derive(Debug)]
pub struct SessionSlot(Option<(Arc<SessionQuota>, Arc<str>)>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if let Some((quota, principal)) = self.0.take() {
            quota.release(&principal);
        }
    }
}

/// Shards of the rate buckets: requests of different principals rarely share a lock.
const SHARDS: usize = 16;
/// Buckets a shard holds before those of idle principals are dropped.
const SHARD_BUCKETS: usize = 1024;

/// A token bucket per principal, kept as GCRA does: one number per principal, the time its
/// bucket will be full again ("theoretical arrival time", nanoseconds since `epoch`). A
/// request moves it one interval on, unless it is more than `burst - 1` intervals ahead. A
/// bucket past that time is full, the same as a new one, so idle buckets can be dropped.
#[derive(Debug)]
struct RateLimiter {
    rate: Rate,
    /// Nanoseconds per request.
    interval: u64,
    /// How far ahead of now a bucket may run: `interval * (burst - 1)`.
    tolerance: u64,
    epoch: Instant,
    hasher: foldhash::fast::RandomState,
    shards: [RwLock<HashMap<Arc<str>, AtomicU64>>; SHARDS],
}

impl RateLimiter {
    fn new(rate: Rate) -> Self {
        let interval = 1_000_000_000 / u64::from(rate.per_second.max(1));
        Self {
            rate,
            interval,
            tolerance: interval * u64::from(rate.burst.max(1) - 1),
            epoch: Instant::now(),
            hasher: foldhash::fast::RandomState::default(),
            shards: Default::default(),
        }
    }

    /// One request of `id`'s now: `Err` with how long until one would pass.
    fn admit(&self, id: &Arc<str>) -> Result<(), Duration> {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.admit_at(id, now)
    }

    /// One request of `id`'s at `now` (nanoseconds since `epoch`).
    fn admit_at(&self, id: &Arc<str>, now: u64) -> Result<(), Duration> {
        use std::hash::BuildHasher;
        let shard = &self.shards[self.hasher.hash_one(&**id) as usize % SHARDS];
        if let Some(bucket) = shard.read().unwrap_or_else(|p| p.into_inner()).get(&**id) {
            return self.take(bucket, now);
        }
        let mut buckets = shard.write().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= SHARD_BUCKETS {
            buckets.retain(|_, bucket| bucket.load(Ordering::Relaxed) > now);
        }
        let bucket = buckets
            .entry(id.clone())
            .or_insert_with(|| AtomicU64::new(0));
        self.take(bucket, now)
    }

    fn take(&self, bucket: &AtomicU64, now: u64) -> Result<(), Duration> {
        let mut seen = bucket.load(Ordering::Relaxed);
        loop {
            let from = seen.max(now);
            let ahead = from - now;
            if ahead > self.tolerance {
                return Err(Duration::from_nanos(ahead - self.tolerance));
            }
            match bucket.compare_exchange_weak(
                seen,
                from + self.interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => seen = actual,
            }
        }
    }

    #[cfg(test)]
    fn buckets(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// Connections open on the listener, in all and per peer address.
#[derive(Debug)]
pub struct ConnectionCaps {
    total: usize,
    per_peer: usize,
    open: Mutex<OpenConnections>,
    refusals: Arc<Refusals>,
}

#[derive(Debug, Default)]
struct OpenConnections {
    total: usize,
    /// Peers with at least one connection open (an entry goes at zero).
    by_peer: HashMap<IpAddr, usize>,
}

impl ConnectionCaps {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenConnections> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more connection from `peer`, or the refusal when a cap is reached. An IPv4 peer
    /// on a dual-stack socket counts as its IPv4 address.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionSlot, Exceeded> {
        let peer = peer.to_canonical();
        let mut open = self.lock();
        let refused = if open.total >= self.total {
            Some(Exceeded::Connections { limit: self.total })
        } else if open.by_peer.get(&peer).copied().unwrap_or(0) >= self.per_peer {
            Some(Exceeded::ConnectionsPerPeer {
                peer,
                limit: self.per_peer,
            })
        } else {
            None
        };
        if let Some(exceeded) = refused {
            drop(open);
            self.refusals.count(&exceeded);
            return Err(exceeded);
        }
        open.total += 1;
        *open.by_peer.entry(peer).or_default() += 1;
        Ok(ConnectionSlot {
            caps: self.clone(),
            peer,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }
}

/// One connection counted against the caps until dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    caps: Arc<ConnectionCaps>,
    peer: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.caps.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(held) = open.by_peer.get_mut(&self.peer) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests;
