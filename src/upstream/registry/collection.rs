//! The `Registry` handle: the collection of upstreams by name, kept in step with the store
//! (load, register, remove), with the periodic health round and identity reloads that act on
//! every upstream at once. What one upstream does on its own lives in the parent module.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use futures_util::StreamExt;

use super::{RegistryInner, Settings, Upstream, now};
use crate::metrics::Metrics;
use crate::store::{Health, HealthStatus, Registration, Store, StoreError, Transport};
use crate::upstream::UpstreamError;
use crate::upstream::clients::ClientCache;
use crate::upstream::stdio::Children;

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// Store refused it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registration can never work here: its URL is refused by the URL policy, or its TLS
    /// files or settings are unusable.
    #[error("cannot register '{name}': {reason}")]
    Invalid {
        /// Name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The upstream could not be reached or is not MCP.
    #[error("cannot register '{name}': {diagnosis}")]
    Unreachable {
        /// Name.
        name: String,
        /// Diagnosis.
        diagnosis: String,
    },
}

/// What re-reading the upstream TLS identities found.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct IdentityReport {
    /// Upstreams with an open connection whose files were re-read.
    pub checked: usize,
    /// Upstreams whose identity changed: their connection was dropped.
    pub changed: Vec<String>,
    /// Upstreams whose files are unusable now: their connection was kept.
    pub unusable: Vec<UnusableIdentity>,
}

/// An upstream whose TLS files could not be loaded on reload, and why.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UnusableIdentity {
    /// The upstream's name.
    pub upstream: String,
    /// The loading error.
    pub reason: String,
}

/// The registry handle.
#[derive(Clone)]
pub struct Registry {
    pub(super) inner: Arc<RegistryInner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry over `store`; upstream calls are counted in `metrics`; stdio upstreams
    /// run as `children`.
    pub fn new(
        store: Arc<dyn Store>,
        clients: ClientCache,
        settings: Settings,
        metrics: Arc<Metrics>,
        children: Children,
    ) -> Self {
        Self {
            inner: Arc::new(RegistryInner {
                changes: tokio::sync::broadcast::channel(16).0,
                updates: tokio::sync::broadcast::channel(256).0,
                upstreams: RwLock::default(),
                clients: Arc::new(clients),
                store,
                settings,
                metrics,
                children,
            }),
        }
    }

    /// Notified whenever a catalog or the set of upstreams changes.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<()> {
        self.inner.changes.subscribe()
    }

    /// Every `notifications/resources/updated` an upstream sends.
    pub fn subscribe_updates(&self) -> tokio::sync::broadcast::Receiver<super::ResourceUpdate> {
        self.inner.updates.subscribe()
    }

    /// Settings in force.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The upstream wait its pools use: a downstream request counts itself in with
    /// `wait().serving()`, so that the wait can tell a lone request from a crowd.
    pub fn wait(&self) -> &Arc<crate::h1::client::Wait> {
        self.inner.clients.wait()
    }

    /// The client cache (for diagnostics and metrics).
    pub fn clients(&self) -> &ClientCache {
        &self.inner.clients
    }

    /// The store registrations are kept in.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// What other instances change in a shared store, as it announces it; `None` for a store
    /// only this instance uses.
    pub fn store_changes(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<crate::store::StoreChange>> {
        self.inner.store.subscribe()
    }

    pub(super) fn make(&self, reg: Registration) -> Arc<Upstream> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let up = Arc::new(Upstream {
            health: Mutex::new(reg.health.clone()),
            reg: ArcSwap::from_pointee(reg),
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
            catalog: ArcSwap::default(),
            legacy_warned: AtomicBool::new(false),
            catalog_loaded: AtomicBool::new(false),
            failed_opens: std::sync::atomic::AtomicU32::new(0),
            backoff: Mutex::new(None),
            registry: Arc::downgrade(&self.inner),
            refresh: tx,
            subscriptions: Mutex::default(),
            subscription_gate: tokio::sync::Mutex::default(),
            own: Default::default(),
            questions: Mutex::default(),
            shared_calls: Arc::default(),
            started: AtomicBool::new(false),
            recent_errors: Mutex::default(),
        });
        // The refresher holds only a weak reference: it ends when the upstream is dropped. It
        // waits for the upstream's whole life and rarely refreshes: the refresh's large future
        // is boxed, so that the waiting task is small.
        let weak = Arc::downgrade(&up);
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                let Some(up) = weak.upgrade() else { break };
                if let Err(err) = Box::pin(up.refresh_catalog()).await {
                    tracing::warn!(upstream = %up.name(), error = %err, "catalog refresh after list_changed failed");
                }
            }
        });
        up
    }

    /// All upstreams, by name.
    pub fn list(&self) -> Vec<Arc<Upstream>> {
        self.inner
            .upstreams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// One upstream.
    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.inner
            .upstreams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Run a store operation off the async threads (the store is synchronous).
    pub(crate) async fn on_store<T: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || op(&*store))
            .await
            .map_err(|e| StoreError::Query {
                detail: e.to_string(),
            })?
    }

    /// Load stored registrations, each upstream with the health the store last recorded (on a
    /// shared store another instance's recent check is as good as ours): one stored online is
    /// routable at once, one unknown or offline not until a check passes. Nothing is connected
    /// here: the health loop's first round ([`Registry::spawn_health_loop`]) checks them all
    /// right after start, so readiness does not wait on a thousand upstreams.
    pub async fn load(&self) -> Result<usize, StoreError> {
        let regs = self.on_store(|store| store.list()).await?;
        let ups: Vec<_> = regs.into_iter().map(|r| self.make(r)).collect();
        let mut map = self
            .inner
            .upstreams
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for up in &ups {
            map.insert(up.name(), up.clone());
        }
        Ok(ups.len())
    }

    /// Connect, list, and store a new upstream. Unless `defer`, an upstream that cannot be
    /// reached is refused with the diagnosis and nothing is stored. A disabled one is stored
    /// without being started.
    pub async fn register(
        &self,
        mut reg: Registration,
        defer: bool,
    ) -> Result<Arc<Upstream>, RegisterError> {
        if self.get(&reg.name).is_some() {
            return Err(StoreError::Exists { name: reg.name }.into());
        }
        self.check_settings(&reg).await?;
        let ts = now();
        reg.created_at = ts;
        reg.updated_at = ts;
        reg.health = Health::unknown(ts);
        let up = self.make(reg.clone());
        // A disabled upstream is stored as it is, not started (a stdio upstream's child
        // included) and not checked: its health stays unknown until it is enabled.
        if reg.enabled {
            let outcome = async {
                up.connection().await?;
                up.refresh_catalog().await
            }
            .await;
            match outcome {
                Ok(()) => {
                    up.record(None, 1);
                }
                Err(err) if defer => {
                    up.record(Some(err.to_string()), 1);
                }
                Err(err) => {
                    return Err(RegisterError::Unreachable {
                        name: reg.name,
                        diagnosis: err.to_string(),
                    });
                }
            }
        }
        reg.health = up.health();
        up.reg.store(Arc::new(reg.clone()));
        self.on_store(move |store| store.insert(&reg)).await?;
        // The store's own notice of this insert may have been reconciled first (an upstream
        // made from the same registration): this one, already connected, takes its place.
        if let Some(adopted) = self.put(up.clone()) {
            adopted.shut();
        }
        tracing::info!(upstream = %up.name(), status = up.health().status.as_str(), "upstream registered");
        Ok(up)
    }

    /// Refuse what can never work, even deferred: a URL the URL policy refuses, TLS files that
    /// are not usable (read as every connection reads them), a command that cannot be run.
    pub async fn check_settings(&self, reg: &Registration) -> Result<(), RegisterError> {
        let invalid = |reason: String| RegisterError::Invalid {
            name: reg.name.clone(),
            reason,
        };
        match (&reg.transport, &reg.command) {
            (Transport::Stdio, Some(command)) => {
                return command.check().map_err(|e| invalid(e.to_string()));
            }
            (Transport::Stdio, None) | (_, Some(_)) => {
                return Err(invalid(
                    "a stdio upstream has a command and no URL; an HTTP one a URL and no command"
                        .into(),
                ));
            }
            _ => {}
        }
        match self.inner.client_for(Arc::new(reg.clone())).await {
            Ok(_) => Ok(()),
            Err(err) => Err(RegisterError::Invalid {
                name: reg.name.clone(),
                reason: err.to_string(),
            }),
        }
    }

    /// Connect to a registration without storing it; the diagnosis on failure.
    pub async fn check_reachable(&self, reg: &Registration) -> Result<(), UpstreamError> {
        let mut reg = reg.clone();
        reg.health = Health::unknown(now());
        let up = self.make(reg);
        let reached = up.connection().await.map(|_| ());
        up.shut();
        reached
    }

    /// Write the upstreams `mcpgw.toml` declares (`[[upstream]]`) to the registry: a new name
    /// is registered, a changed program replaces the registration (keeping whether it is
    /// enabled), the same one is left as it is. One that cannot start now is registered
    /// anyway and shows offline with its diagnosis, as `gateway add --defer` would.
    pub async fn declare(&self, declared: &[crate::config::Declared]) -> Result<(), RegisterError> {
        for d in declared {
            let mut reg = Registration {
                name: d.name.clone(),
                url: String::new(),
                transport: Transport::Stdio,
                tls: Default::default(),
                auth: Default::default(),
                enabled: true,
                era: Default::default(),
                shared_session: false,
                command: Some(d.command.clone()),
                created_at: 0,
                updated_at: 0,
                health: Health::unknown(0),
            };
            if let Some(existing) = self.get(&d.name) {
                let existing = existing.registration();
                if existing.transport == Transport::Stdio && existing.command == reg.command {
                    continue;
                }
                reg.enabled = existing.enabled;
                self.remove(&d.name).await?;
                tracing::info!(upstream = %d.name, "declared upstream changed in the configuration; registered again");
            }
            self.register(reg, true).await?;
        }
        Ok(())
    }

    /// Remove an upstream from the store and the live set.
    pub async fn remove(&self, name: &str) -> Result<(), StoreError> {
        let owned = name.to_owned();
        self.on_store(move |store| store.remove(&owned)).await?;
        if let Some(up) = self.take(name) {
            up.shut();
        }
        tracing::info!(upstream = %name, "upstream removed");
        let _ = self.inner.changes.send(());
        Ok(())
    }

    /// Enable or disable an upstream, in the store and the live set. Disabling closes its
    /// connections (calls to it are refused as offline, as for any disabled upstream);
    /// enabling checks it at once rather than at the next health round.
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<Arc<Upstream>, StoreError> {
        let up = self.get(name).ok_or_else(|| StoreError::NotFound {
            name: name.to_owned(),
        })?;
        let mut reg = (*up.registration()).clone();
        if reg.enabled != enabled {
            reg.enabled = enabled;
            reg.updated_at = now();
            let stored = reg.clone();
            self.on_store(move |store| store.update(&stored)).await?;
            up.reg.store(Arc::new(reg));
            tracing::info!(upstream = %name, enabled, "upstream enabled state changed");
            if enabled {
                self.check_and_persist(&up).await;
            } else {
                up.shut();
            }
            let _ = self.inner.changes.send(());
        }
        Ok(up)
    }

    /// Check one upstream and persist its health when the status changed.
    async fn check_and_persist(&self, up: &Arc<Upstream>) {
        if up.check().await {
            let health = up.health();
            tracing::info!(upstream = %up.name(), status = health.status.as_str(), last_error = ?health.last_error, "upstream health changed");
            let name = up.name();
            if let Err(err) = self
                .on_store(move |store| store.set_health(&name, &health))
                .await
            {
                tracing::warn!(error = %err, "could not record health in the store");
            }
        }
    }

    /// Whether this instance checks `up` this round: on a store several instances share, the
    /// one holding the upstream's health lease does (for 9/10 of an interval, so the next round
    /// of any instance can take it), and the others take the result from the store.
    async fn my_turn(&self, up: &Arc<Upstream>) -> bool {
        // A stdio upstream's child is this instance's own.
        if up.registration().transport == Transport::Stdio {
            return true;
        }
        // An upstream without a catalog here yet needs this instance's own connection, once
        // it may answer. One that is offline (as this instance or the lease holder saw it,
        // through the store) waits for the holder to see it back: otherwise every instance
        // would check a dead upstream every round, the one case where checks add up.
        if !up.catalog_loaded.load(std::sync::atomic::Ordering::Acquire)
            && up.health().status != HealthStatus::Offline
        {
            return true;
        }
        let name = up.name();
        let lease = self.inner.settings.health_interval * 9 / 10;
        match self
            .on_store(move |store| store.claim_health_check(&name, lease))
            .await
        {
            Ok(mine) => mine,
            // Better checked twice than not at all while the store is away.
            Err(err) => {
                tracing::debug!(upstream = %up.name(), error = %err, "health lease not taken; checking here");
                true
            }
        }
    }

    /// One round of health checks over every enabled upstream, bounded in concurrency.
    pub async fn health_round(&self) {
        futures_util::stream::iter(self.list())
            .for_each_concurrent(32, |up| async move {
                if up.registration().enabled && self.my_turn(&up).await {
                    self.check_and_persist(&up).await;
                }
            })
            .await;
        // Pools have no reaper task of their own: close what sat idle too long, and drop the
        // pools of removed upstreams, once per round.
        self.clients().sweep();
    }

    /// Stop every stdio upstream's children and wait for them (shutdown).
    pub async fn stop_children(&self) {
        self.inner.children.stop_all().await;
    }

    /// Run health rounds until `stop`: the first at once (the upstreams [`Registry::load`]
    /// found are checked in the background, the gateway already serving), then one every
    /// interval. A round in progress is abandoned on `stop`: shutdown does not wait for
    /// upstreams that do not answer.
    pub fn spawn_health_loop(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.inner.settings.health_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = this.health_round() => {}
                }
            }
        })
    }

    /// Re-read every connected upstream's TLS files and rebuild its client; an upstream whose
    /// identity changed drops its connection, so its next request opens one with the new
    /// identity. Files that no longer make a usable identity leave the connection as it is.
    /// Blocking (file reads, key parsing): the reload path runs it on the blocking pool.
    /// Logs nothing: the caller ([`crate::reload`]) logs the report it returns.
    pub fn reload_identities(&self) -> IdentityReport {
        let mut report = IdentityReport::default();
        for up in self.list() {
            let reg = up.registration();
            // A stdio upstream has no TLS identity.
            let Some(conn) = up.conn.load_full().filter(|c| c.client().is_some()) else {
                continue;
            };
            report.checked += 1;
            match self.inner.clients.client_for(&reg.url, &reg.tls) {
                Ok(fresh)
                    if conn
                        .client()
                        .is_some_and(|c| fresh.identity.cache_key() != c.identity.cache_key()) =>
                {
                    up.invalidate();
                    report.changed.push(reg.name.clone());
                }
                Ok(_) => {}
                Err(err) => report.unusable.push(UnusableIdentity {
                    upstream: reg.name.clone(),
                    reason: err.to_string(),
                }),
            }
        }
        report
    }
}

impl RegistryInner {
    /// The client of `reg` (its URL judged by the URL policy, its TLS files read), got off the
    /// async workers: a slow disk, or a hostile path, must not hold one, and a TLS context may
    /// be built.
    pub(super) async fn client_for(
        &self,
        reg: Arc<Registration>,
    ) -> Result<crate::upstream::clients::UpstreamClient, UpstreamError> {
        let clients = self.clients.clone();
        tokio::task::spawn_blocking(move || clients.client_for(&reg.url, &reg.tls))
            .await
            .map_err(|e| e.to_string())
            .and_then(|got| got.map_err(|e| e.to_string()))
            .map_err(|diagnosis| UpstreamError::Connect { diagnosis })
    }
}
