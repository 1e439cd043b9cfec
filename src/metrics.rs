//! Prometheus metrics: counters and histograms updated on the request path, and gauges read at
//! scrape time, rendered by hand in the text exposition format 0.0.4.
//!
//! Why hand-written: the format is a few lines of text, the series are fixed, and the two
//! well-kept crates (`prometheus`, `prometheus-client`) would add a registry abstraction on top
//! of what is a handful of atomics here.
//!
//! Cost on the hot path: one read lock and a map lookup by `&str` (the route template), a short
//! mutex for the (method, status) counter, and atomics for the histogram. Series are created once
//! and never removed; label strings are allocated only when a series is first seen.
//!
//! Gauges that mirror state owned elsewhere (sessions, upstream health, certificate expiry) are
//! not kept in sync here: the `/metrics` handler reads them and passes them in a [`Snapshot`].

pub mod recent;

use std::collections::BTreeMap;

use crate::hash::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the latency histograms: 100 µs to 10 s, roughly 1-2.5-5 per decade.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// [`DURATION_BUCKETS`] as `le` label values, written out once rather than formatted per scrape.
pub const DURATION_BUCKET_LABELS: [&str; 16] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10",
];

/// The `route` label of requests no route matched (one series, not one per probed path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A latency histogram over [`DURATION_BUCKETS`]. Buckets are stored per range (not
/// cumulative) and summed when rendered, so `+Inf` and `_count` always agree.
#[derive(Debug, Default)]
pub struct Histogram {
    /// One slot per bound, plus the overflow slot (`> 10 s`).
    counts: [AtomicU64; DURATION_BUCKETS.len() + 1],
    /// Sum of observations in nanoseconds (integer, so it needs no CAS loop).
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, elapsed: Duration) {
        let slot = bucket_index(elapsed.as_secs_f64());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Cumulative counts per bound, then the total (the `+Inf` bucket), and the sum in seconds.
    pub fn cumulative(&self) -> ([u64; DURATION_BUCKETS.len()], u64, f64) {
        let mut cumulative = [0; DURATION_BUCKETS.len()];
        let mut running = 0u64;
        for (slot, count) in self.counts.iter().enumerate() {
            running += count.load(Ordering::Relaxed);
            if let Some(c) = cumulative.get_mut(slot) {
                *c = running;
            }
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (cumulative, running, sum)
    }
}

/// The slot of an observation: the first bound it does not exceed (`le` is inclusive), or the
/// overflow slot.
pub fn bucket_index(seconds: f64) -> usize {
    DURATION_BUCKETS
        .iter()
        .position(|bound| seconds <= *bound)
        .unwrap_or(DURATION_BUCKETS.len())
}

/// How a call to an upstream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// The upstream answered with a result.
    Ok,
    /// The upstream answered with a JSON-RPC error.
    RpcError,
    /// Not sent: health checks mark the upstream offline.
    Offline,
    /// Connecting or the exchange failed.
    Failed,
    /// No answer within the request timeout.
    Timeout,
}

impl UpstreamOutcome {
    const ALL: [Self; 5] = [
        Self::Ok,
        Self::RpcError,
        Self::Offline,
        Self::Failed,
        Self::Timeout,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::RpcError => "rpc_error",
            Self::Offline => "offline",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
        }
    }
}

/// What asked for a reload ([`crate::reload`]): the `trigger` of its log line and metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// SIGHUP to the process.
    Sighup,
    /// `POST /admin/cert/reload` (re-read the files).
    Control,
    /// `POST /admin/cert/install` (a new pair submitted).
    Install,
    /// A watched certificate file changed on disk ([`crate::reload::watch`]).
    Watch,
    /// A pair published through the shared store by `cert rotate --all`
    /// ([`crate::reload::fleet`]).
    Fleet,
}

impl ReloadTrigger {
    const ALL: [Self; 5] = [
        Self::Sighup,
        Self::Control,
        Self::Install,
        Self::Watch,
        Self::Fleet,
    ];

    /// The `trigger` label, the same word the reload log lines carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sighup => "SIGHUP",
            Self::Control => "control",
            Self::Install => "install",
            Self::Watch => "watch",
            Self::Fleet => "fleet",
        }
    }
}

/// Series of one route template.
#[derive(Debug, Default)]
struct RouteSeries {
    /// Requests by (method, status). Few entries; the lock covers one increment.
    requests: Mutex<HashMap<(&'static str, u16), u64>>,
    duration: Histogram,
}

/// One counter of an upstream's series.
type Counter = fn(&UpstreamSeries) -> &AtomicU64;

/// Series of one upstream.
#[derive(Debug, Default)]
struct UpstreamSeries {
    /// Indexed like [`UpstreamOutcome::ALL`].
    requests: [AtomicU64; 5],
    duration: Histogram,
    /// Times the upstream said a session of its was gone (restarted, or expired it).
    sessions_lost: AtomicU64,
    /// Times a stdio upstream's child was started again after the first.
    restarts: AtomicU64,
    /// The last minutes of calls, for the console.
    recent: recent::Recent,
}

/// Gauges read from the live state at scrape time.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Serving certificate `notAfter` (Unix seconds), when the listener is HTTPS.
    pub serving_not_after: Option<i64>,
    /// Per upstream: name, online, and its client certificate's `notAfter` if it presents one.
    pub upstreams: Vec<UpstreamSnapshot>,
}

/// One upstream at scrape time.
#[derive(Debug)]
pub struct UpstreamSnapshot {
    /// Registered name.
    pub name: String,
    /// How the gateway speaks to it (`Transport::as_str`): every upstream series carries it.
    pub transport: &'static str,
    /// Whether calls are routed to it.
    pub online: bool,
    /// `notAfter` (Unix seconds) of the client certificate it presents, if any.
    pub client_not_after: Option<i64>,
    /// Upstream sessions open there for downstream sessions now.
    pub client_sessions: usize,
    /// Upstream sessions opened there for downstream sessions, ever.
    pub client_sessions_opened: u64,
}

/// The labels of an upstream's series: its name, and its transport when it is still registered.
fn upstream_labels<'n>(
    transports: &HashMap<&str, &'static str>,
    name: &'n str,
) -> Vec<(&'static str, &'n str)> {
    match transports.get(name) {
        Some(transport) => vec![("upstream", name), ("transport", transport)],
        None => vec![("upstream", name)],
    }
}

/// Every series mcpgw exports. One per process, shared by the router and the upstream registry.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    routes: RwLock<HashMap<String, Arc<RouteSeries>>>,
    upstreams: RwLock<HashMap<String, Arc<UpstreamSeries>>>,
    /// Open downstream sessions by transport, as last reported through [`Metrics::sessions_gauge`].
    sessions: Mutex<BTreeMap<&'static str, u64>>,
    /// Indexed by [`ReloadTrigger::ALL`] position, then `[ok, failed]`.
    reloads: [[AtomicU64; 2]; 5],
    /// Refusals by the quota that made them (`crate::access::quota`); rare, so a short mutex.
    quota_refusals: Mutex<BTreeMap<&'static str, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty series; uptime counts from now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            routes: RwLock::default(),
            upstreams: RwLock::default(),
            sessions: Mutex::default(),
            reloads: Default::default(),
            quota_refusals: Mutex::default(),
        }
    }

    /// Count one HTTP request. `route` is the matched route template or [`UNMATCHED_ROUTE`].
    pub fn http_request(&self, route: &str, method: &http::Method, status: u16, elapsed: Duration) {
        let series = series_for(&self.routes, route);
        series.duration.observe(elapsed);
        *series
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((method_label(method), status))
            .or_default() += 1;
    }

    /// Count one call to an upstream.
    pub fn upstream_request(&self, upstream: &str, outcome: UpstreamOutcome, elapsed: Duration) {
        let series = series_for(&self.upstreams, upstream);
        let slot = UpstreamOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or_default();
        series.requests[slot].fetch_add(1, Ordering::Relaxed);
        // An offline refusal never reached the upstream: its latency says nothing about it.
        if outcome != UpstreamOutcome::Offline {
            series.duration.observe(elapsed);
        }
        series.recent.record(outcome, elapsed, unix_now());
    }

    /// The last 15 minutes of calls to `upstream` ([`recent`]), oldest first.
    pub fn upstream_recent(&self, upstream: &str) -> Vec<recent::Point> {
        let now = unix_now();
        match self
            .upstreams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(upstream)
        {
            Some(series) => series.recent.series(now),
            None => recent::Recent::default().series(now),
        }
    }

    /// Count an upstream saying one of its sessions is gone.
    pub fn upstream_session_lost(&self, upstream: &str) {
        series_for(&self.upstreams, upstream)
            .sessions_lost
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Count a stdio upstream's child started again (after an exit, or a failed health check).
    pub fn upstream_restart(&self, upstream: &str) {
        series_for(&self.upstreams, upstream)
            .restarts
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Count one serving certificate reload or install.
    pub fn certificate_reload(&self, trigger: ReloadTrigger, ok: bool) {
        let t = ReloadTrigger::ALL
            .iter()
            .position(|x| *x == trigger)
            .unwrap_or_default();
        self.reloads[t][usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Count one refusal by `quota` (`connections`, `sessions_per_principal`, ...).
    pub fn quota_refused(&self, quota: &'static str) {
        *self
            .quota_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(quota)
            .or_default() += 1;
    }

    /// Set the number of open downstream sessions of one transport (`streamable-http`, `sse`,
    /// `websocket`). Call it when the count changes or from the scrape handler; the last value
    /// set is exported.
    pub fn sessions_gauge(&self, transport: &'static str, open: usize) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(transport, open as u64);
    }

    /// The exposition, with gauges from `snapshot` and `now_unix` as the current time.
    pub fn render(&self, snapshot: &Snapshot, now_unix: i64) -> String {
        let mut out = Encoder::default();
        self.render_http(&mut out);
        self.render_sessions(&mut out);
        self.render_quotas(&mut out);
        self.render_upstreams(&mut out, snapshot, now_unix);
        self.render_certificates(&mut out, snapshot, now_unix);

        out.family(
            "mcpgw_build_info",
            "mcpgw build; the value is always 1.",
            "gauge",
        );
        out.sample(
            "mcpgw_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        out.family(
            "mcpgw_uptime_seconds",
            "Seconds since the gateway started.",
            "gauge",
        );
        out.sample(
            "mcpgw_uptime_seconds",
            &[],
            self.started.elapsed().as_secs_f64(),
        );
        out.finish()
    }

    fn render_http(&self, out: &mut Encoder) {
        let routes = sorted(&self.routes);
        out.family(
            "mcpgw_http_requests_total",
            "HTTP requests answered on the listener, by route template, method and status.",
            "counter",
        );
        for (route, series) in &routes {
            let mut requests: Vec<_> = series
                .requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect();
            requests.sort_unstable();
            for ((method, status), count) in requests {
                let status = status.to_string();
                out.sample(
                    "mcpgw_http_requests_total",
                    &[("route", route), ("method", method), ("status", &status)],
                    count as f64,
                );
            }
        }
        out.family(
            "mcpgw_http_request_duration_seconds",
            "Time to produce the response head, by route template.",
            "histogram",
        );
        for (route, series) in &routes {
            out.histogram(
                "mcpgw_http_request_duration_seconds",
                &[("route", route)],
                &series.duration,
            );
        }
    }

    fn render_sessions(&self, out: &mut Encoder) {
        out.family(
            "mcpgw_sessions_open",
            "Open downstream MCP sessions, by transport (subscriptions-listen: open 2026-07-28 subscriptions/listen streams).",
            "gauge",
        );
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        for (transport, open) in sessions.iter() {
            out.sample(
                "mcpgw_sessions_open",
                &[("transport", transport)],
                *open as f64,
            );
        }
    }

    fn render_quotas(&self, out: &mut Encoder) {
        out.family(
            "mcpgw_quota_refusals_total",
            "Connections, sessions, requests and batches refused by a quota or cap, by the quota.",
            "counter",
        );
        let refusals = self
            .quota_refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (quota, count) in refusals.iter() {
            out.sample(
                "mcpgw_quota_refusals_total",
                &[("quota", quota)],
                *count as f64,
            );
        }
    }

    fn render_upstreams(&self, out: &mut Encoder, snapshot: &Snapshot, now_unix: i64) {
        // Every upstream series says the upstream's transport; a series of an upstream removed
        // since has none to say.
        let transports: HashMap<&str, &'static str> = snapshot
            .upstreams
            .iter()
            .map(|up| (up.name.as_str(), up.transport))
            .collect();
        let of = |name| upstream_labels(&transports, name);
        out.family(
            "mcpgw_upstream_up",
            "1 when the upstream is enabled and its health checks pass, else 0.",
            "gauge",
        );
        for up in &snapshot.upstreams {
            out.sample(
                "mcpgw_upstream_up",
                &of(&up.name),
                if up.online { 1.0 } else { 0.0 },
            );
        }
        let series = sorted(&self.upstreams);
        out.family(
            "mcpgw_upstream_requests_total",
            "Requests forwarded to an upstream, by outcome.",
            "counter",
        );
        for (name, s) in &series {
            for (outcome, count) in UpstreamOutcome::ALL.iter().zip(&s.requests) {
                out.sample(
                    "mcpgw_upstream_requests_total",
                    &[of(name).as_slice(), &[("outcome", outcome.as_str())]].concat(),
                    count.load(Ordering::Relaxed) as f64,
                );
            }
        }
        out.family(
            "mcpgw_upstream_request_duration_seconds",
            "Time until an upstream answered (or failed), by upstream.",
            "histogram",
        );
        for (name, s) in &series {
            out.histogram(
                "mcpgw_upstream_request_duration_seconds",
                &of(name),
                &s.duration,
            );
        }
        let counters: [(&str, &str, Counter); 2] = [
            (
                "mcpgw_upstream_sessions_lost_total",
                "Times an upstream answered that a session was gone (restarted or expired); each time the gateway initialized a new one and sent the request again.",
                |s| &s.sessions_lost,
            ),
            (
                "mcpgw_upstream_restarts_total",
                "Times a stdio upstream's program was started again (after it exited, or failed a health check).",
                |s| &s.restarts,
            ),
        ];
        for (family, help, counter) in counters {
            out.family(family, help, "counter");
            for (name, s) in &series {
                out.sample(family, &of(name), counter(s).load(Ordering::Relaxed) as f64);
            }
        }
        out.family(
            "mcpgw_upstream_client_sessions",
            "Upstream sessions open for downstream sessions (one per downstream session and upstream).",
            "gauge",
        );
        for up in &snapshot.upstreams {
            out.sample(
                "mcpgw_upstream_client_sessions",
                &of(&up.name),
                up.client_sessions as f64,
            );
        }
        out.family(
            "mcpgw_upstream_client_sessions_opened_total",
            "Upstream sessions opened for downstream sessions.",
            "counter",
        );
        for up in &snapshot.upstreams {
            out.sample(
                "mcpgw_upstream_client_sessions_opened_total",
                &of(&up.name),
                up.client_sessions_opened as f64,
            );
        }
        out.family(
            "mcpgw_upstream_client_certificate_expiry_seconds",
            "Seconds until the client certificate an upstream connection presents expires.",
            "gauge",
        );
        for up in &snapshot.upstreams {
            if let Some(not_after) = up.client_not_after {
                out.sample(
                    "mcpgw_upstream_client_certificate_expiry_seconds",
                    &of(&up.name),
                    (not_after - now_unix) as f64,
                );
            }
        }
    }

    fn render_certificates(&self, out: &mut Encoder, snapshot: &Snapshot, now_unix: i64) {
        out.family(
            "mcpgw_certificate_reloads_total",
            "Serving certificate reloads and installs, by result and trigger.",
            "counter",
        );
        // Only an HTTPS listener can reload; plain HTTP exports no zero series that never move.
        if snapshot.serving_not_after.is_some() {
            for (trigger, counts) in ReloadTrigger::ALL.iter().zip(&self.reloads) {
                for (result, count) in ["ok", "failed"].iter().zip(counts) {
                    out.sample(
                        "mcpgw_certificate_reloads_total",
                        &[("result", result), ("trigger", trigger.as_str())],
                        count.load(Ordering::Relaxed) as f64,
                    );
                }
            }
        }
        out.family(
            "mcpgw_certificate_expiry_seconds",
            "Seconds until the served certificate expires (negative once expired).",
            "gauge",
        );
        if let Some(not_after) = snapshot.serving_not_after {
            out.sample(
                "mcpgw_certificate_expiry_seconds",
                &[("certificate", "serving")],
                (not_after - now_unix) as f64,
            );
        }
    }
}

/// The series for `key`, created on first use. The common case takes only the read lock and
/// allocates nothing.
/// Seconds since the epoch, for the time buckets of [`recent`].
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn series_for<T: Default>(map: &RwLock<HashMap<String, Arc<T>>>, key: &str) -> Arc<T> {
    if let Some(s) = map.read().unwrap_or_else(|p| p.into_inner()).get(key) {
        return s.clone();
    }
    map.write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key.to_owned())
        .or_default()
        .clone()
}

/// A sorted copy of the series handles, so output is stable and no lock is held while rendering.
fn sorted<T>(map: &RwLock<HashMap<String, Arc<T>>>) -> Vec<(String, Arc<T>)> {
    let mut v: Vec<_> = map
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, s)| (k.clone(), s.clone()))
        .collect();
    v.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Standard methods map to static labels; anything else is one `other` series, so a client
/// cannot mint series by sending made-up methods.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Writes the text format: `# HELP`/`# TYPE` once per family, then its samples.
#[derive(Debug, Default)]
pub struct Encoder {
    out: String,
}

impl Encoder {
    /// Start a metric family.
    pub fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// The `_bucket`, `_sum` and `_count` lines of one histogram.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let (cumulative, total, sum) = h.cumulative();
        let bucket = format!("{name}_bucket");
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        with_le.push(("le", ""));
        let last = with_le.len() - 1;
        for (le, count) in DURATION_BUCKET_LABELS.iter().zip(cumulative) {
            with_le[last].1 = le;
            self.sample(&bucket, &with_le, count as f64);
        }
        with_le[last].1 = "+Inf";
        self.sample(&bucket, &with_le, total as f64);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, total as f64);
    }

    /// The finished exposition.
    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escape backslash, double quote and newline.
pub fn escape_label(value: &str) -> String {
    escape(value, true)
}

/// Help text escapes backslash and newline.
pub fn escape_help(value: &str) -> String {
    escape(value, false)
}

fn escape(value: &str, quote: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// Go-style float text: `+Inf`, `-Inf`, `NaN`, integers without a fraction.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        // Rust's shortest round-trip form: `1`, `0.0001`, `2.5`.
        format!("{v}")
    }
}

#[cfg(test)]
mod tests;
