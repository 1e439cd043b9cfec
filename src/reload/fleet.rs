//! `mcpgw cert rotate --all`: one certificate installed on every instance sharing the store.
//!
//! The instance the command talks to checks the pair exactly as a local install would
//! ([`ServingCert::check`]: parse, key matches, validity, chain to its CA, build) and only then
//! publishes it ([`Fleet::publish_rotation`]), so a bad pair never reaches the store. Every
//! instance, the publisher included, hears of it (the store's notice, or its own look every
//! [`HEARTBEAT`] should the notice be missed) and installs it through [`Reloader::reload`], the
//! same path as a local rotate or SIGHUP, which checks it again against that instance's own
//! CA: an instance that refuses keeps its old certificate and reports why. The publisher waits
//! (bounded) for the outcome of every instance alive at publication, then has the key forgotten.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Action, NewPair, ReloadError, Reloader};
use crate::metrics::ReloadTrigger;
use crate::store::fleet::{Fleet, HEARTBEAT, PendingRotation, RotationOutcome};
use crate::store::{Store, StoreChange, StoreError};
use crate::tls::serving::{CertError, ServingCert};
use crate::tls::x509::CertInfo;

/// How long the publisher waits for the instances when not told.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(10);
/// The longest it may be told to wait: the key stays in the store meanwhile.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often the publisher looks at the outcomes while it waits.
const POLL: Duration = Duration::from_millis(100);

/// Why a rotation was not published (nothing reached the other instances).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The store is this instance's alone (SQLite).
    #[error(
        "the store is not shared (SQLite holds one instance): `cert rotate --all` is the local rotate there"
    )]
    NotShared,
    /// The pair failed this instance's checks.
    #[error(transparent)]
    Refused(#[from] ReloadError),
    /// A PEM input is not text, so it cannot be stored as PEM.
    #[error("{source_name} is not PEM text (it is not UTF-8)")]
    NotText {
        /// What the input is called.
        source_name: String,
    },
    /// The store could not take the rotation.
    #[error("the rotation was not published: {0}")]
    Store(#[from] StoreError),
}

/// What `cert rotate --all` answers: the rotation, and each instance's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetReport {
    /// The rotation's id in the store.
    pub rotation: i64,
    /// The certificate published, as this instance checked it.
    pub certificate: CertInfo,
    /// The instances alive at publication, whose outcomes were waited for.
    pub asked: Vec<String>,
    /// The outcomes reported within the wait (an instance that started meanwhile may be here
    /// too).
    pub outcomes: Vec<RotationOutcome>,
    /// This instance's id.
    pub publisher: String,
    /// How long the wait was allowed, in milliseconds.
    pub wait_ms: u64,
}

impl Reloader {
    /// Check `pair` as [`Action::Install`] would, publish it for every instance on the store,
    /// and wait up to `wait` for the outcome of each instance alive at publication.
    pub async fn rotate_all(
        &self,
        pair: NewPair,
        wait: Duration,
    ) -> Result<FleetReport, FleetError> {
        let store = self.registry.store().clone();
        let Some(publisher) = store.fleet().map(|f| f.instance().to_owned()) else {
            return Err(FleetError::NotShared);
        };
        let certificate = self.check_pair(&pair).await?;
        let text = |bytes: Vec<u8>, source_name: String| {
            String::from_utf8(bytes).map_err(|_| FleetError::NotText { source_name })
        };
        let cert_pem = text(pair.cert_pem, pair.cert_source)?;
        let key_pem = text(pair.key_pem, pair.key_source)?;
        let fingerprint = certificate.sha256.clone();
        let published = on_fleet(&store, move |f| {
            f.publish_rotation(&cert_pem, &key_pem, &fingerprint)
        })
        .await?;
        let rotation = published.id;
        tracing::info!(
            rotation,
            new = %certificate.sha256,
            instances = published.live.len(),
            "certificate rotation published for every instance"
        );
        let wait = wait.min(MAX_WAIT);
        let deadline = Instant::now() + wait;
        let mut outcomes = Vec::new();
        loop {
            match on_fleet(&store, move |f| f.rotation_outcomes(rotation)).await {
                Ok(now) => outcomes = now,
                Err(error) => {
                    tracing::debug!(rotation, %error, "cannot read the rotation's outcomes yet");
                }
            }
            let all = published
                .live
                .iter()
                .all(|id| outcomes.iter().any(|o| &o.instance == id));
            if all || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        // Whoever has not read the pair by now will not get it: the key leaves the store.
        if let Err(error) = on_fleet(&store, move |f| f.close_rotation(rotation)).await {
            tracing::warn!(rotation, %error, "the rotation's key stays in the store until it expires");
        }
        Ok(FleetReport {
            rotation,
            certificate,
            asked: published.live,
            outcomes,
            publisher,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Every check of a local install, on the blocking pool, with nothing swapped.
    async fn check_pair(&self, pair: &NewPair) -> Result<CertInfo, ReloadError> {
        let serving: Arc<ServingCert> = self.serving.clone().ok_or(CertError::NoTls)?;
        let (cert_source, cert_pem) = (pair.cert_source.clone(), pair.cert_pem.clone());
        let (key_source, key_pem) = (pair.key_source.clone(), pair.key_pem.clone());
        let work = move || serving.check(&cert_source, &cert_pem, &key_source, &key_pem);
        match tokio::task::spawn_blocking(work).await {
            Ok(outcome) => Ok(outcome?),
            Err(join) => Err(ReloadError::Task {
                step: "serving certificate",
                detail: join.to_string(),
            }),
        }
    }

    /// Keep this instance marked alive on a shared store and install the rotations published
    /// there, until `stop` (then remove the mark); `None` on a store of one instance.
    /// `listen` is what the outcomes call this instance.
    pub fn spawn_fleet(
        self: &Arc<Self>,
        listen: String,
        stop: CancellationToken,
    ) -> Option<JoinHandle<()>> {
        let store = self.registry.store().clone();
        let instance = store.fleet()?.instance().to_owned();
        let mut changes = store.subscribe()?;
        let mut follower = Follower {
            reloader: self.clone(),
            store,
            instance,
            listen,
            unreported: BTreeMap::new(),
        };
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut marked = true;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        let now = on_fleet(&follower.store, |f| f.heartbeat()).await;
                        if let Err(error) = &now && marked {
                            tracing::warn!(%error, "cannot mark this instance alive in the store; `cert rotate --all` will not wait for it meanwhile");
                        }
                        marked = now.is_ok();
                    }
                    change = changes.recv() => match change {
                        Ok(StoreChange::Rotation(_) | StoreChange::Resync) | Err(RecvError::Lagged(_)) => {}
                        Ok(
                            StoreChange::Upstream(_)
                            | StoreChange::SessionEnded(_)
                            | StoreChange::SessionEvent { .. }
                            | StoreChange::SessionEventStored { .. },
                        ) => continue,
                        Err(RecvError::Closed) => break,
                    },
                }
                follower.install_pending().await;
            }
            if let Err(error) = on_fleet(&follower.store, |f| f.leave()).await {
                tracing::debug!(%error, "this instance's mark stays in the store until it expires");
            }
        }))
    }
}

/// One instance's side of the rotations: what it installed but could not report yet.
struct Follower {
    reloader: Arc<Reloader>,
    store: Arc<dyn Store>,
    instance: String,
    listen: String,
    /// Outcomes the store did not take, by rotation: reported again, never installed again.
    unreported: BTreeMap<i64, RotationOutcome>,
}

impl Follower {
    /// Install every rotation this instance has not reported on, oldest first, and report.
    async fn install_pending(&mut self) {
        let pending = match on_fleet(&self.store, |f| f.pending_rotations()).await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::debug!(%error, "cannot look for certificate rotations now");
                return;
            }
        };
        // A rotation no longer pending (its key forgotten) has nobody waiting for its report.
        self.unreported
            .retain(|id, _| pending.iter().any(|p| p.id == *id));
        for rotation in pending {
            let id = rotation.id;
            let outcome = match self.unreported.remove(&id) {
                Some(outcome) => outcome,
                None => self.install(rotation).await,
            };
            let report = outcome.clone();
            match on_fleet(&self.store, move |f| f.report_rotation(&report)).await {
                Ok(()) => tracing::info!(
                    rotation = id,
                    ok = outcome.ok,
                    "certificate rotation outcome reported"
                ),
                Err(error) => {
                    tracing::warn!(rotation = id, %error, "cannot report this instance's outcome of the rotation; trying again at the next look");
                    self.unreported.insert(id, outcome);
                }
            }
        }
    }

    /// The one reload path with the published pair; what came of it.
    async fn install(&self, rotation: PendingRotation) -> RotationOutcome {
        let id = rotation.id;
        let pair = NewPair {
            cert_source: format!("the certificate of rotation {id}"),
            cert_pem: rotation.cert_pem.into_bytes(),
            key_source: format!("the key of rotation {id}"),
            key_pem: rotation.key_pem.into_bytes(),
        };
        let outcome = self
            .reloader
            .reload(ReloadTrigger::Fleet, Action::Install(pair))
            .await;
        RotationOutcome {
            rotation: id,
            instance: self.instance.clone(),
            listen: self.listen.clone(),
            ok: outcome.is_ok(),
            error: outcome.err().map(|refused| refused.error.to_string()),
            served: self
                .reloader
                .serving
                .as_ref()
                .map(|s| s.current().info.sha256.clone()),
        }
    }
}

/// Run `op` on the store's fleet, off the async workers.
async fn on_fleet<T: Send + 'static>(
    store: &Arc<dyn Store>,
    op: impl FnOnce(&dyn Fleet) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    let work = move || match store.fleet() {
        Some(fleet) => op(fleet),
        None => Err(StoreError::Query {
            detail: "the store is not shared by several instances".to_owned(),
        }),
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Query {
            detail: e.to_string(),
        })?
}
