//! An upstream's health: a check in its own terms (a connection opened, or an MCP ping on the
//! live one), the consecutive outcomes that make it online or offline, and the client
//! certificate's expiry the metrics show.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Upstream, now};
use crate::store::HealthStatus;
use crate::upstream::UpstreamError;

impl Upstream {
    /// One health check; returns whether the status changed.
    pub async fn check(self: &Arc<Self>) -> bool {
        let settings = self.settings();
        let outcome = async {
            let had = self.conn.load().as_ref().is_some_and(|c| c.is_usable());
            let conn = self.connection().await?;
            // A connection opened just now has answered discover/initialize: that is the check.
            if had {
                conn.probe(settings.request_timeout).await?;
            }
            Ok::<_, UpstreamError>(())
        }
        .await;
        let was = self.health().status;
        let changed = self.record(
            outcome.as_ref().err().map(ToString::to_string),
            settings.health_threshold,
        );
        if outcome.is_err() {
            // A failed check may mean a dead session; start clean next time.
            self.invalidate();
        }
        let online = self.health().status == HealthStatus::Online;
        let stale = !self.catalog_loaded.load(Ordering::Acquire);
        if online
            && ((changed && was != HealthStatus::Online) || stale)
            && let Err(err) = self.refresh_catalog().await
        {
            tracing::warn!(upstream = %self.name(), error = %err, "catalog refresh failed");
        }
        changed
    }

    /// Record a check outcome; returns whether the status changed.
    pub(super) fn record(&self, error: Option<String>, threshold: u32) -> bool {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let before = h.status;
        match error {
            None => {
                h.consecutive_failures = 0;
                h.last_success = Some(now());
                if h.status != HealthStatus::Online {
                    h.status = HealthStatus::Online;
                    h.since = now();
                }
            }
            Some(err) => {
                let mut recent = self.recent_errors.lock().unwrap_or_else(|p| p.into_inner());
                if recent.len() == super::RECENT_ERRORS {
                    recent.pop_front();
                }
                recent.push_back((now(), err.clone()));
                drop(recent);
                h.consecutive_failures = h.consecutive_failures.saturating_add(1);
                h.last_error = Some(err);
                if h.consecutive_failures >= threshold && h.status != HealthStatus::Offline {
                    h.status = HealthStatus::Offline;
                    h.since = now();
                }
            }
        }
        before != h.status
    }

    /// The last failed health checks, oldest first: when (RFC 3339) and why.
    pub fn recent_errors(&self) -> Vec<(String, String)> {
        self.recent_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(at, err)| (super::rfc3339(*at), err.clone()))
            .collect()
    }

    /// `notAfter` (Unix seconds) of the client certificate the live connection presents, if
    /// there is a connection and its identity has a client certificate.
    pub fn client_certificate_not_after(&self) -> Option<i64> {
        let conn = self.conn.load_full()?;
        let (chain, _) = conn.client()?.identity.client.as_ref()?;
        let leaf = crate::tls::x509::parse("client certificate", chain.first()?).ok()?;
        Some(leaf.validity().not_after.timestamp())
    }
}
