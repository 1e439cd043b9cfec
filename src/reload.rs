//! The one reload path: SIGHUP, `POST /admin/cert/reload` (what `cert rotate` sends) and
//! `POST /admin/cert/install` all come through [`Reloader::reload`], so every trigger re-reads
//! the same things, in the same order, and is logged and counted in one place.
//!
//! A reload is two steps, each of which keeps what it had on failure (rule 7):
//! 1. the serving certificate (when the listener is HTTPS): read (or take the submitted pair),
//!    parse, check the key matches, check validity and chain, build, then publish
//!    ([`ServingCert`]);
//! 2. every upstream TLS identity: re-read its files and rebuild its client; an upstream whose
//!    identity changed drops its connection so the next request opens one with the new identity
//!    ([`Registry::reload_identities`]);
//! 3. the `[policy]` of the config file `serve` started with: parsed and checked whole, then put
//!    in force, or refused with the old one kept ([`Live::reload`]).
//!
//! The steps read files and verify signatures, so they run on the blocking pool, never on an
//! async worker. Reloads take turns: one runs at a time, whoever asked.
//!
//! Besides SIGHUP and the control socket, [`watch`] asks for a reload when one of the files
//! this path reads changes on disk (a mounted secret swapped by Kubernetes included), and
//! [`fleet`] installs through it the pairs `cert rotate --all` publishes on a shared store.

pub mod fleet;
pub mod watch;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::access::policy::Live;
use crate::metrics::{Metrics, ReloadTrigger};
use crate::tls::serving::{CertError, ServingCert, SwapReport};
use crate::upstream::registry::{IdentityReport, Registry};

/// What a reload does with the serving certificate.
pub enum Action {
    /// Re-read the configured files.
    Reread,
    /// Validate a submitted pair, write it over the configured files, then serve it.
    Install(NewPair),
}

/// A certificate chain and key submitted to `POST /admin/cert/install`.
pub struct NewPair {
    /// What to call the certificate in errors (e.g. the caller's file name).
    pub cert_source: String,
    /// Certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// What to call the key in errors.
    pub key_source: String,
    /// Private key, PEM.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for NewPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret; the certificate is just noise in a log.
        f.debug_struct("NewPair")
            .field("cert_source", &self.cert_source)
            .field("key_source", &self.key_source)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reread => f.write_str("Reread"),
            Self::Install(pair) => f.debug_tuple("Install").field(pair).finish(),
        }
    }
}

/// What one reload did: the answer to whoever asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The swap of the serving certificate; `None` when the listener serves plain HTTP.
    pub certificate: Option<SwapReport>,
    /// The upstream TLS identities re-read.
    pub upstreams: IdentityReport,
}

/// Why the serving certificate was not replaced (the old one keeps serving).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The certificate or key was refused, or could not be written.
    #[error(transparent)]
    Certificate(#[from] CertError),
    /// The blocking task doing the work panicked or was cancelled.
    #[error("the {step} step of the reload did not finish: {detail}")]
    Task {
        /// `serving certificate` or `upstream identities`.
        step: &'static str,
        /// The join error.
        detail: String,
    },
}

/// A reload whose certificate step failed: why, and what the upstream step still did.
#[derive(Debug)]
pub struct Refused {
    /// Why the old certificate keeps serving.
    pub error: ReloadError,
    /// The upstream TLS identities, re-read all the same.
    pub upstreams: IdentityReport,
}

/// Runs reloads, one at a time, for every trigger.
#[derive(Debug)]
pub struct Reloader {
    serving: Option<Arc<ServingCert>>,
    registry: Registry,
    metrics: Arc<Metrics>,
    policy: Arc<Live>,
    /// Held for a whole reload (every step), so triggers never interleave.
    turn: tokio::sync::Mutex<()>,
    /// The last [`HISTORY`] outcomes, newest last, for the console.
    history: std::sync::Mutex<std::collections::VecDeque<Rotation>>,
    /// What the files were when the last reload read them (for [`watch`]).
    stamps: watch::Stamps,
}

/// Reload outcomes [`Reloader::history`] keeps.
pub const HISTORY: usize = 50;

/// One reload, as the console's certificate page lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rotation {
    /// When it ended, RFC 3339.
    pub at: String,
    /// What asked for it (`SIGHUP`, `control`, `install`, `watch`).
    pub trigger: String,
    /// `swapped`, `refused`, or `no-tls` (plain HTTP: only the upstream identities were read).
    pub outcome: String,
    /// Fingerprint served before, when swapped.
    pub old_sha256: Option<String>,
    /// Fingerprint served after, when swapped.
    pub new_sha256: Option<String>,
    /// Why it was refused.
    pub reason: Option<String>,
    /// Upstream identities that changed on disk.
    pub upstreams_changed: Vec<String>,
}

impl Reloader {
    /// A reloader for this serving certificate (if any) and these upstreams.
    pub fn new(
        serving: Option<Arc<ServingCert>>,
        registry: Registry,
        metrics: Arc<Metrics>,
        policy: Arc<Live>,
    ) -> Self {
        Self {
            serving,
            registry,
            metrics,
            policy,
            turn: tokio::sync::Mutex::new(()),
            history: std::sync::Mutex::default(),
            stamps: watch::Stamps::default(),
        }
    }

    /// The last reload outcomes, oldest first.
    pub fn history(&self) -> Vec<Rotation> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Replace the serving certificate as `action` says, then re-read every upstream identity;
    /// log one line and count one outcome. On error the old certificate keeps serving (the
    /// upstream identities were still re-read: they do not depend on it).
    pub async fn reload(
        &self,
        trigger: ReloadTrigger,
        action: Action,
    ) -> Result<ReloadReport, Refused> {
        let _turn = self.turn.lock().await;
        let _reloading = crate::notify::reloading();
        // Files re-read are looked at before they are read (one changing meanwhile is a change
        // still to reload); files installed, after they are written (the install is no change).
        let reread = matches!(action, Action::Reread);
        if reread {
            self.stamps.record(self.files()).await;
        }
        let certificate = self.certificate_step(action).await;
        if !reread {
            self.stamps.record(self.files()).await;
        }
        let upstreams = self.identity_step().await;
        self.policy_step(trigger).await;
        self.record(trigger, &certificate, &upstreams);
        match certificate {
            Ok(certificate) => Ok(ReloadReport {
                certificate,
                upstreams,
            }),
            Err(error) => Err(Refused { error, upstreams }),
        }
    }

    /// Start the task that reloads on SIGHUP and return the handle that wakes it. `Notify`
    /// keeps at most one pending wake-up, so a burst of signals collapses into one reload that
    /// sees the latest files. Nobody waits for the answer: the log line is it.
    pub fn spawn_signal_worker(self: &Arc<Self>) -> Arc<Notify> {
        let wake = Arc::new(Notify::new());
        let (this, notified) = (self.clone(), wake.clone());
        tokio::spawn(async move {
            loop {
                notified.notified().await;
                let _ = this.reload(ReloadTrigger::Sighup, Action::Reread).await;
            }
        });
        wake
    }

    /// The files a reload reads, each with what it is: the serving certificate, key and CA
    /// bundles, and every upstream's TLS files given as paths (inline PEM has no file).
    pub fn files(&self) -> Vec<(String, std::path::PathBuf)> {
        let mut files = self
            .serving
            .as_ref()
            .map(|serving| serving_files(serving.files()))
            .unwrap_or_default();
        for up in self.registry.list() {
            let reg = up.registration();
            let tls = &reg.tls;
            let parts = [
                ("CA", &tls.ca),
                ("client certificate", &tls.client_cert),
                ("client key", &tls.client_key),
            ];
            for (role, source) in parts {
                if let Some(crate::store::PemSource::Path(path)) = source {
                    files.push((format!("upstream {} {role}", reg.name), path.clone()));
                }
            }
        }
        files
    }

    /// Take `baseline` (what the serving files led to before start-up read them) as what was
    /// last read, unless a reload has read them since; see [`watch::Baseline`].
    pub fn seed_stamps(&self, baseline: watch::Baseline) {
        self.stamps.seed(baseline);
    }

    /// Step 1: the serving certificate, validated and published (or refused) off the workers.
    async fn certificate_step(&self, action: Action) -> Result<Option<SwapReport>, ReloadError> {
        let serving = match (&self.serving, &action) {
            (Some(serving), _) => serving.clone(),
            (None, Action::Reread) => return Ok(None),
            (None, Action::Install(_)) => return Err(CertError::NoTls.into()),
        };
        let work = move || match action {
            Action::Reread => serving.reload(),
            Action::Install(pair) => serving.install(
                &pair.cert_source,
                &pair.cert_pem,
                &pair.key_source,
                &pair.key_pem,
            ),
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(outcome) => Ok(Some(outcome?)),
            Err(join) => Err(ReloadError::Task {
                step: "serving certificate",
                detail: join.to_string(),
            }),
        }
    }

    /// Step 2: every upstream identity, re-read off the workers.
    async fn identity_step(&self) -> IdentityReport {
        let registry = self.registry.clone();
        match tokio::task::spawn_blocking(move || registry.reload_identities()).await {
            Ok(report) => report,
            Err(join) => {
                tracing::error!(error = %join, "upstream identity reload did not finish; keeping every current connection");
                IdentityReport::default()
            }
        }
    }

    /// Step 3: the policy, read again off the workers; logged here (it has no report).
    async fn policy_step(&self, trigger: ReloadTrigger) {
        let live = self.policy.clone();
        let trigger = trigger.as_str();
        match tokio::task::spawn_blocking(move || live.reload()).await {
            Ok(Ok(Some(rules))) => tracing::info!(trigger, rules, "policy reloaded"),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => {
                tracing::error!(trigger, %error, "policy refused; the one in force stays");
            }
            Err(join) => {
                tracing::error!(trigger, error = %join, "policy reload did not finish; the one in force stays");
            }
        }
    }

    /// The one place a reload is logged, counted and kept in the history.
    fn record(
        &self,
        trigger: ReloadTrigger,
        certificate: &Result<Option<SwapReport>, ReloadError>,
        upstreams: &IdentityReport,
    ) {
        let trigger_name = trigger.as_str();
        let (outcome, report, reason) = match certificate {
            Ok(Some(report)) => ("swapped", Some(report), None),
            Ok(None) => ("no-tls", None, None),
            Err(err) => ("refused", None, Some(err.to_string())),
        };
        {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(Rotation {
                at: crate::tls::x509::rfc3339(time::OffsetDateTime::now_utc()),
                trigger: trigger_name.to_owned(),
                outcome: outcome.to_owned(),
                old_sha256: report.map(|r| r.old.sha256.clone()),
                new_sha256: report.map(|r| r.new.sha256.clone()),
                reason,
                upstreams_changed: upstreams.changed.clone(),
            });
        }
        for name in &upstreams.changed {
            tracing::info!(trigger = trigger_name, upstream = %name, "upstream TLS identity changed on disk; reconnecting");
        }
        for unusable in &upstreams.unusable {
            tracing::error!(trigger = trigger_name, upstream = %unusable.upstream, error = %unusable.reason, "upstream TLS files unusable; keeping the current connection");
        }
        let (checked, changed) = (upstreams.checked, upstreams.changed.len());
        match certificate {
            Ok(Some(report)) => {
                self.metrics.certificate_reload(trigger, true);
                tracing::info!(
                    trigger = trigger_name,
                    old = %report.old.sha256,
                    new = %report.new.sha256,
                    not_after = %report.new.not_after,
                    prepare_us = report.prepare_us,
                    swap_us = report.swap_us,
                    upstreams_checked = checked,
                    upstreams_changed = changed,
                    "serving certificate swapped"
                );
            }
            Ok(None) => tracing::info!(
                trigger = trigger_name,
                upstreams_checked = checked,
                upstreams_changed = changed,
                "plain HTTP listener, no serving certificate to reload; upstream identities re-read"
            ),
            Err(err) => {
                self.metrics.certificate_reload(trigger, false);
                tracing::error!(
                    trigger = trigger_name,
                    reason = %err,
                    upstreams_checked = checked,
                    upstreams_changed = changed,
                    "certificate reload refused; still serving the previous certificate"
                );
            }
        }
    }
}

/// The serving certificate's files, each with what it is: certificate, key and CA bundles.
pub fn serving_files(served: &crate::tls::serving::TlsFiles) -> Vec<(String, std::path::PathBuf)> {
    let mut files = vec![
        ("certificate".to_owned(), served.cert.clone()),
        ("key".to_owned(), served.key.clone()),
    ];
    let cas = [("CA", &served.ca), ("client CA", &served.client_ca)];
    for (role, path) in cas {
        files.extend(path.iter().map(|p| (role.to_owned(), p.clone())));
    }
    files
}
