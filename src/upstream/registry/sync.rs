//! Keeping the registry in step with a store other instances write too (PostgreSQL).
//!
//! One function, [`Registry::reconcile`], compares what the store holds with what is in memory,
//! for one name or for all, and adopts, replaces or drops upstreams to match. It runs on every
//! announced change (a name), when notices may have been missed (the store's LISTEN connection
//! came back), and every [`RESYNC_EVERY`] in case a notice was lost some other way. Health is
//! compared apart from the configuration: a different stored status (written by the instance
//! that holds the upstream's health lease) is taken over as it is, without reconnecting; a stdio
//! upstream's health stays this instance's own (its child is).
//!
//! When the store cannot be read, nothing changes here: the upstreams in memory keep serving,
//! and the next resync catches up.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::Upstream;
use super::collection::Registry;
use crate::store::{Registration, StoreChange, StoreError, Transport};

/// How often everything is compared even without a notice.
pub const RESYNC_EVERY: Duration = Duration::from_secs(30);

impl Registry {
    /// Follow the store's changes until `stop`; `None` when the store has none to announce
    /// (SQLite: this instance is its only writer).
    pub fn spawn_store_sync(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let mut changes = self.store().subscribe()?;
        let this = self.clone();
        Some(tokio::spawn(async move {
            // The first tick is at once: it catches what changed between the registry's load
            // and the subscription above.
            let mut tick = tokio::time::interval(RESYNC_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let only = tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => None,
                    change = changes.recv() => match change {
                        Ok(StoreChange::Upstream(name)) => Some(name),
                        // Not the registry's (the sessions table hears it).
                        Ok(
                            StoreChange::SessionEnded(_)
                            | StoreChange::SessionEvent { .. }
                            | StoreChange::SessionEventStored { .. },
                        ) => continue,
                        // Not the registry's: the reloader's fleet task follows those.
                        Ok(StoreChange::Rotation(_)) => continue,
                        // Resync, or notices dropped because this task fell behind.
                        Ok(StoreChange::Resync) | Err(RecvError::Lagged(_)) => None,
                        Err(RecvError::Closed) => break,
                    },
                };
                if let Err(err) = this.reconcile(only.as_deref()).await {
                    tracing::warn!(upstream = ?only, error = %err, "registry not brought in step with the store; the upstreams in memory keep serving, retrying at the next change or resync");
                }
            }
        }))
    }

    /// Make the upstreams in memory match the store: the one named `only`, or all of them.
    pub async fn reconcile(&self, only: Option<&str>) -> Result<(), StoreError> {
        let stored: Vec<Registration> = match only {
            Some(name) => {
                let name = name.to_owned();
                match self.on_store(move |store| store.get(&name)).await {
                    Ok(reg) => vec![reg],
                    Err(StoreError::NotFound { .. }) => Vec::new(),
                    Err(err) => return Err(err),
                }
            }
            None => self.on_store(|store| store.list()).await?,
        };
        let mut names: BTreeSet<String> = stored.iter().map(|r| r.name.clone()).collect();
        match only {
            Some(name) => {
                names.insert(name.to_owned());
            }
            None => names.extend(self.list().iter().map(|up| up.name())),
        }
        let mut changed = false;
        for name in names {
            let want = stored.iter().find(|r| r.name == name);
            changed |= self.reconcile_one(&name, want).await;
        }
        if changed {
            let _ = self.inner.changes.send(());
        }
        Ok(())
    }

    /// Bring one name in step; whether anything changed.
    async fn reconcile_one(&self, name: &str, want: Option<&Registration>) -> bool {
        let have = self.get(name);
        match (have, want) {
            (None, None) => false,
            (Some(up), Some(want)) if same_configuration(&up.registration(), want) => {
                if want.transport != Transport::Stdio && up.health().status != want.health.status {
                    tracing::info!(upstream = %name, status = want.health.status.as_str(), "upstream health as another instance saw it");
                    *up.health.lock().unwrap_or_else(|p| p.into_inner()) = want.health.clone();
                }
                false
            }
            (Some(_), None) => {
                if let Some(up) = self.take(name) {
                    up.shut();
                    tracing::info!(upstream = %name, "upstream removed by another instance");
                }
                true
            }
            (have, Some(want)) => {
                let up = self.make(want.clone());
                if let Some(old) = self.put(up.clone()) {
                    old.shut();
                }
                tracing::info!(upstream = %name, replaced = have.is_some(), "upstream registered by another instance");
                if want.enabled {
                    // Connect and list now, so the first call finds its catalog.
                    up.check().await;
                }
                true
            }
        }
    }

    /// Insert `up` under its name; the upstream it replaced, if any.
    pub(super) fn put(&self, up: Arc<Upstream>) -> Option<Arc<Upstream>> {
        self.inner
            .upstreams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(up.name(), up)
    }

    /// Take the upstream of `name` out of the live set.
    pub(super) fn take(&self, name: &str) -> Option<Arc<Upstream>> {
        self.inner
            .upstreams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
    }
}

/// Whether two registrations configure the same upstream (health aside: each instance observes
/// its own).
fn same_configuration(have: &Registration, want: &Registration) -> bool {
    let mut have = have.clone();
    have.health = want.health.clone();
    have == *want
}
