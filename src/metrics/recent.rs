//! The last minutes of one upstream's calls, for the console's charts: a ring of fixed time
//! buckets fed by [`super::Metrics::upstream_request`], the one place upstream calls are
//! counted. Prometheus keeps totals since start; an operator at the console asks what the
//! last quarter of an hour looked like, which totals cannot say without a scraper.
//!
//! Each bucket holds its calls, its errors, and a latency histogram over the same bounds as
//! `/metrics` ([`super::DURATION_BUCKETS`]), so p50/p99 are read at the same resolution the
//! scrape gives. A bucket is reused once its window has passed; a short mutex covers one
//! increment.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::{DURATION_BUCKETS, UpstreamOutcome, bucket_index};

/// Width of one bucket, in seconds.
pub const BUCKET_SECS: u64 = 10;
/// Buckets kept: 90 × 10 s = the last 15 minutes.
pub const BUCKETS: usize = 90;

/// One time bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which window it holds (Unix seconds / [`BUCKET_SECS`]); 0 for never used.
    window: u64,
    calls: u64,
    errors: u64,
    /// Latencies per histogram slot (the last is the overflow, `> 10 s`).
    latency: [u32; DURATION_BUCKETS.len() + 1],
}

/// The ring of one upstream.
#[derive(Debug)]
pub struct Recent {
    buckets: Mutex<[Bucket; BUCKETS]>,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            buckets: Mutex::new([Bucket::default(); BUCKETS]),
        }
    }
}

/// One point of a series, as the console draws it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Point {
    /// Start of the window, Unix seconds.
    pub t: u64,
    /// Calls per second over the window.
    pub rate: f64,
    /// Errors / calls (0 when there were no calls).
    pub error_rate: f64,
    /// Median latency in seconds (the histogram bound it falls under), when there were calls
    /// that reached the upstream.
    pub p50: Option<f64>,
    /// 99th percentile latency in seconds, the same way.
    pub p99: Option<f64>,
}

impl Recent {
    /// Count one call that ended at `now_unix` (seconds).
    pub fn record(&self, outcome: UpstreamOutcome, elapsed: Duration, now_unix: u64) {
        let window = now_unix / BUCKET_SECS;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = &mut buckets[(window % BUCKETS as u64) as usize];
        if bucket.window != window {
            *bucket = Bucket {
                window,
                ..Bucket::default()
            };
        }
        bucket.calls += 1;
        if outcome != UpstreamOutcome::Ok {
            bucket.errors += 1;
        }
        // As in the Prometheus histogram: a refusal that never reached the upstream has no
        // latency worth counting.
        if outcome != UpstreamOutcome::Offline {
            let slot = &mut bucket.latency[bucket_index(elapsed.as_secs_f64())];
            *slot = slot.saturating_add(1);
        }
    }

    /// The last [`BUCKETS`] windows up to `now_unix`, oldest first; windows without calls are
    /// zero.
    pub fn series(&self, now_unix: u64) -> Vec<Point> {
        let buckets = *self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let last = now_unix / BUCKET_SECS;
        let first = last.saturating_sub(BUCKETS as u64 - 1);
        (first..=last)
            .map(|window| {
                let bucket = buckets[(window % BUCKETS as u64) as usize];
                let bucket = if bucket.window == window {
                    bucket
                } else {
                    Bucket::default()
                };
                Point {
                    t: window * BUCKET_SECS,
                    rate: bucket.calls as f64 / BUCKET_SECS as f64,
                    error_rate: if bucket.calls == 0 {
                        0.0
                    } else {
                        bucket.errors as f64 / bucket.calls as f64
                    },
                    p50: quantile(&bucket.latency, 0.50),
                    p99: quantile(&bucket.latency, 0.99),
                }
            })
            .collect()
    }
}

/// The bound of the histogram slot holding quantile `q`, the way Prometheus'
/// `histogram_quantile` would place it without interpolation; the overflow slot reads as
/// twice the last bound.
fn quantile(latency: &[u32; DURATION_BUCKETS.len() + 1], q: f64) -> Option<f64> {
    let total: u64 = latency.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut running = 0u64;
    for (slot, &count) in latency.iter().enumerate() {
        running += u64::from(count);
        if running >= rank {
            return Some(
                DURATION_BUCKETS
                    .get(slot)
                    .copied()
                    .unwrap_or(DURATION_BUCKETS[DURATION_BUCKETS.len() - 1] * 2.0),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_their_window_and_old_windows_read_as_empty() {
        let recent = Recent::default();
        let now = 1_000_000;
        for _ in 0..9 {
            recent.record(UpstreamOutcome::Ok, Duration::from_millis(2), now);
        }
        recent.record(UpstreamOutcome::Failed, Duration::from_millis(700), now);
        let series = recent.series(now);
        assert_eq!(series.len(), BUCKETS);
        let last = series.last().unwrap();
        assert_eq!(last.t, now / BUCKET_SECS * BUCKET_SECS);
        assert!((last.rate - 1.0).abs() < 1e-9, "{last:?}");
        assert!((last.error_rate - 0.1).abs() < 1e-9, "{last:?}");
        assert_eq!(last.p50, Some(0.0025));
        assert_eq!(last.p99, Some(1.0));
        // Fifteen minutes later the same slot belongs to another window: it reads as empty.
        let later = now + BUCKETS as u64 * BUCKET_SECS;
        assert!(
            recent
                .series(later)
                .iter()
                .all(|p| p.rate == 0.0 && p.p50.is_none())
        );
    }

    #[test]
    fn offline_refusals_count_as_errors_without_latency() {
        let recent = Recent::default();
        recent.record(UpstreamOutcome::Offline, Duration::from_secs(3), 50);
        let last = recent.series(50).pop().unwrap();
        assert!((last.error_rate - 1.0).abs() < 1e-9);
        assert_eq!(last.p99, None);
    }
}
