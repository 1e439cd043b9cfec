//! The scenarios of issue 5. Each starts its own upstream fixture(s) and gateway as real
//! processes in a fresh lab directory, measures them side by side in the same invocation, and
//! returns its figures as JSON plus the targets it can judge.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::load::{self, Plan, Target};
use crate::procs::{Gateway, Lab, Upstream, cpu_of};

#[path = "scenarios/operations.rs"]
mod operations;
#[path = "scenarios/sessions.rs"]
mod sessions;
#[path = "scenarios/stdio.rs"]
mod stdio;
#[path = "scenarios/store.rs"]
mod store;
use operations::{health, rotation, startup};
use sessions::client_sessions;
use stdio::stdio;
use store::store;

/// Every scenario, in the order `all` runs them.
pub const ALL: &[&str] = &[
    "plain",
    "tls",
    "idle",
    "client-sessions",
    "rotation",
    "health",
    "startup",
    "stdio",
    "store",
];

/// Run-length knobs.
#[derive(Clone, Copy)]
pub struct Mode {
    /// Shorter runs, fewer sessions, fewer upstreams.
    pub quick: bool,
}

impl Mode {
    fn run_for(self) -> Duration {
        if self.quick {
            Duration::from_millis(1500)
        } else {
            Duration::from_secs(5)
        }
    }

    /// A measured run of `concurrency` workers calling `tool` for [`Mode::run_for`], after 20
    /// warm-up calls each.
    fn timed(self, concurrency: usize, tool: &str) -> Plan {
        Plan {
            concurrency,
            calls: None,
            duration: self.run_for(),
            tool: tool.into(),
            warmup: 20,
            reconnect_every: None,
            stop: None,
        }
    }
}

/// One target of the issue, judged.
pub struct Verdict {
    /// The target as the issue words it.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met?
    pub met: bool,
}

/// What a scenario hands back.
#[derive(Default)]
pub struct Outcome {
    /// Figures.
    pub figures: Value,
    /// Printable table.
    pub table: String,
    /// Targets judged.
    pub verdicts: Vec<Verdict>,
}

fn verdict(out: &mut Outcome, target: &str, measured: String, met: bool) {
    out.verdicts.push(Verdict {
        target: target.into(),
        measured,
        met,
    });
}

/// Run one scenario by name.
pub async fn run(name: &str, mode: Mode) -> Result<Outcome> {
    match name {
        "plain" => compare(mode, false).await,
        "tls" => compare(mode, true).await,
        "idle" => idle(mode).await,
        "client-sessions" => client_sessions(mode).await,
        "rotation" => rotation(mode).await,
        "health" => health(mode).await,
        "startup" => startup(mode).await,
        "stdio" => stdio(mode).await,
        "store" => store(mode).await,
        other => bail!("unknown scenario {other:?}; expected one of {ALL:?} or all"),
    }
}

async fn stats(target: &Target) -> Result<Value> {
    let (status, body) = load::request(target, "GET", "/stats", None).await?;
    if status != 200 {
        bail!("/stats answered {status}");
    }
    Ok(serde_json::from_slice(&body)?)
}

fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Register `url` as `name` on `gw` through `POST /gateways`.
async fn register(gw: &Target, name: &str, url: &str, lab: &Lab, mtls: bool) -> Result<()> {
    let mut body = json!({"name": name, "url": url});
    if url.starts_with("https") {
        body["ca_cert"] = json!(lab.s("pki/ca.crt"));
    }
    if mtls {
        body["client_cert"] = json!(lab.s("pki/client.crt"));
        body["client_key"] = json!(lab.s("pki/client.key"));
    }
    let (status, answer) = load::request(gw, "POST", "/gateways", Some(body.to_string())).await?;
    if !(200..300).contains(&status) {
        bail!(
            "registering {name} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}

/// Targets for the gateway and a stats reader for the upstream.
fn targets(lab: &Lab, up: &Upstream, gw: &Gateway, mtls: bool) -> Result<(Target, Target)> {
    let ca = lab.p("pki/ca.crt");
    let (cc, ck) = (lab.p("pki/client.crt"), lab.p("pki/client.key"));
    let client = mtls.then_some((cc.as_path(), ck.as_path()));
    let direct = Target::new(&format!("{}/mcp", up.base), Some(&ca), client)?;
    let through = Target::new(&format!("{}/mcp", gw.base), Some(&ca), None)?;
    Ok((direct, through))
}

/// `Authorization: Bearer <JWT>` for the gateway `gw` (bearer auth on): a token from
/// `mcpgw token create` on its data dir, an administrator's (the scenarios register
/// upstreams with it, which a client-role token may not).
fn bearer_for(gw: &Gateway) -> Result<http::HeaderValue> {
    let out = std::process::Command::new(crate::procs::mcpgw_bin())
        .args(["--data-dir", &gw.data, "token", "create", "--role", "admin"])
        .output()
        .context("mcpgw token create")?;
    if !out.status.success() {
        bail!(
            "mcpgw token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    load::bearer(String::from_utf8_lossy(&out.stdout).trim())
}

/// Direct vs through mcpgw at concurrency 1 and 16; `tls`: HTTPS downstream, mTLS upstream.
async fn compare(mode: Mode, tls: bool) -> Result<Outcome> {
    // Over 100 lines on purpose: one measurement whose phases share the same processes and
    // counters (set-up, warm-up, c=1 and c=16 per path, then the verdicts), read top to bottom.
    let lab = Lab::new()?;
    let up = lab.upstream("u", tls, tls)?;
    let mut flags = vec!["--health-interval", "3600"];
    let (cert, key) = (lab.s("pki/server.crt"), lab.s("pki/server.key"));
    if tls {
        flags.extend(["--tls-cert", &cert, "--tls-key", &key]);
    }
    let gw = lab.gateway("g", &flags)?;
    let (direct, through) = targets(&lab, &up, &gw, tls)?;
    register(&through, "up", &format!("{}/mcp", up.base), &lab, tls).await?;
    // The same with bearer auth on (as `serve` starts by default), its clients presenting a
    // JWT from `mcpgw token create`; for comparison, as the next one.
    let gwa = lab.gateway_with_auth("ga", &flags)?;
    let (_, mut through_auth) = targets(&lab, &up, &gwa, tls)?;
    through_auth.bearer = Some(bearer_for(&gwa)?);
    register(&through_auth, "up", &format!("{}/mcp", up.base), &lab, tls).await?;
    // The same with one runtime thread, for comparison (the verdicts use the default's rows).
    flags.extend(["--workers", "1"]);
    let gw1 = lab.gateway("g1", &flags)?;
    let (_, through1) = targets(&lab, &up, &gw1, tls)?;
    register(&through1, "up", &format!("{}/mcp", up.base), &lab, tls).await?;

    let mut rows = Vec::new();
    let mut table = String::from(
        "path       c   calls/s   p50µs   p90µs   p99µs    maxµs  errors  gw µs/call  up µs/call  gen µs/call  up req/call\n",
    );
    for c in [1usize, 16] {
        let paths = [
            ("direct", &direct, "echo", None),
            ("mcpgw", &through, "up__echo", Some(&gw)),
            ("mcpgw-w1", &through1, "up__echo", Some(&gw1)),
            ("mcpgw-jwt", &through_auth, "up__echo", Some(&gwa)),
        ];
        for (path, target, tool, gateway) in paths {
            let plan = mode.timed(c, tool);
            let workers = load::prepare(target, &plan).await?;
            let s0 = stats(&direct).await?;
            let gw_cpu = || gateway.map_or(Duration::ZERO, |g| g.proc.cpu());
            let (g0, u0, me0) = (gw_cpu(), up.proc.cpu(), self_cpu());
            let (report, workers) = load::run(workers, &plan).await;
            let (g1, u1, me1) = (gw_cpu(), up.proc.cpu(), self_cpu());
            let s1 = stats(&direct).await?;
            drop(workers);
            let n = (report.calls + report.errors).max(1) as f64;
            let per = |a: Duration, b: Duration| (b - a).as_secs_f64() * 1e6 / n;
            let gw_us = gateway.is_some().then(|| per(g0, g1));
            let up_us = per(u0, u1);
            let gen_us = per(me0, me1);
            let up_req = (count(&s1, "posts") - count(&s0, "posts")) as f64 / n;
            // Less the connection of the second /stats read itself.
            let up_conns = (count(&s1, "accepts") - count(&s0, "accepts")).saturating_sub(1);
            table.push_str(&format!(
                "{path:<9} {c:>2} {:>9.0} {:>7.0} {:>7.0} {:>7.0} {:>8.0} {:>7} {:>11} {:>11.1} {:>12.1} {:>12.2}\n",
                report.rate(),
                report.p50_us,
                report.p90_us,
                report.p99_us,
                report.max_us,
                report.errors,
                gw_us.map_or("-".into(), |v| format!("{v:.1}")),
                up_us,
                gen_us,
                up_req,
            ));
            rows.push(json!({
                "path": path, "concurrency": c, "load": report.json(),
                "gateway_cpu_us_per_call": gw_us, "upstream_cpu_us_per_call": up_us,
                "generator_cpu_us_per_call": gen_us, "upstream_requests_per_call": up_req,
                "upstream_connections_opened": up_conns,
            }));
        }
    }
    let mut out = Outcome {
        figures: json!({"tls": tls, "runs": rows}),
        table,
        ..Outcome::default()
    };
    let find = |path: &str, c: u64| {
        rows.iter()
            .find(|r| r["path"] == path && r["concurrency"] == c)
            .cloned()
            .unwrap_or_default()
    };
    let (d1, g1, d16, g16) = (
        find("direct", 1),
        find("mcpgw", 1),
        find("direct", 16),
        find("mcpgw", 16),
    );
    let f = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let cpu = f(&g16, "/gateway_cpu_us_per_call");
    let limit = if tls { 60.0 } else { 25.0 };
    let which = if tls {
        "with TLS on both sides"
    } else {
        "plain HTTP"
    };
    verdict(
        &mut out,
        &format!("gateway CPU per tools/call ≤ {limit} µs at c=16, {which}"),
        format!("{cpu:.1} µs"),
        cpu <= limit,
    );
    let req = f(&g16, "/upstream_requests_per_call");
    let conns = g16["upstream_connections_opened"].as_u64().unwrap_or(0);
    let calls = f(&g16, "/load/calls") + f(&g16, "/load/errors");
    // The pool grows to the most requests ever in flight at once: a health check (every 30 s)
    // that lands while 16 calls are in flight opens a 17th connection once, which is kept.
    // "Per call" means a share of the calls, so a handful in a run of 100,000 calls passes.
    verdict(
        &mut out,
        &format!("exactly 1 upstream request per tools/call, no new connection per call ({which})"),
        format!(
            "{req:.3} requests/call, {conns} new upstream connections in {calls:.0} calls at c=16"
        ),
        (req - 1.0).abs() < 0.001 && (conns as f64) < calls / 10_000.0,
    );
    let added = f(&g1, "/load/p50_us") - f(&d1, "/load/p50_us");
    verdict(
        &mut out,
        &format!("added p50 latency ≤ 100 µs at c=1 ({which})"),
        format!("+{added:.0} µs"),
        added <= 100.0,
    );
    let ratio = f(&g16, "/load/calls_per_s") / f(&d16, "/load/calls_per_s");
    verdict(
        &mut out,
        &format!("through mcpgw ≥ 0.4 × direct calls/s at c=16 ({which})"),
        format!("{ratio:.2} ×"),
        ratio >= 0.4,
    );
    // The fixture's own cost on the direct path is this run's yardstick: the machine's speed
    // moves CPU figures between days, much less their ratio.
    let fixture = f(&d16, "/upstream_cpu_us_per_call");
    out.table.push_str(&format!(
        "gateway CPU per call at c=16 / the fixture's on the direct path: {:.2} ({cpu:.1} / {fixture:.1} µs)\n",
        cpu / fixture
    ));
    out.figures["gateway_to_fixture_cpu_c16"] = json!(cpu / fixture);
    let errors: u64 = rows
        .iter()
        .map(|r| {
            r.pointer("/load/errors")
                .and_then(Value::as_u64)
                .unwrap_or(0)
        })
        .sum();
    if errors > 0 {
        out.table
            .push_str(&format!("!! {errors} failed calls in this scenario\n"));
    }
    Ok(out)
}

fn self_cpu() -> Duration {
    cpu_of(std::process::id()).unwrap_or_default()
}

/// The standing streams the idle scenario holds, one kind per gateway process.
#[derive(Clone, Copy)]
enum Standing {
    /// `GET /sse`, read up to its `endpoint` event.
    Sse,
    /// `initialize` on `POST /mcp`, then `GET /mcp` with the session id (Streamable HTTP).
    StreamableGet,
    /// A 2026-07-28 `subscriptions/listen` on `POST /mcp`, read up to its acknowledgement.
    Listen,
}

impl Standing {
    fn label(self) -> &'static str {
        match self {
            Standing::Sse => "SSE",
            Standing::StreamableGet => "Streamable-HTTP GET",
            Standing::Listen => "2026-07-28 listen",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Standing::Sse => "sse",
            Standing::StreamableGet => "streamable_get",
            Standing::Listen => "listen",
        }
    }
}

/// What holding N sessions of one kind cost one fresh gateway.
struct Held {
    before: u64,
    after: u64,
    held: usize,
    failures: usize,
    first_failure: Option<String>,
    opened: Duration,
}

impl Held {
    fn per_session(&self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / self.held.max(1) as f64
    }
}

/// Start a gateway, warm its request path, then hold `n` sessions of `kind`: RSS before and
/// after. Each kind gets its own process, so memory freed by one cannot flatter the other.
async fn hold(lab: &Lab, upstream: &str, kind: Standing, n: usize) -> Result<Held> {
    let config = lab.s("mcpgw.toml");
    let gw = lab.gateway(
        kind.key(),
        &["--config", &config, "--health-interval", "3600"],
    )?;
    let target = Target::new(&format!("{}/mcp", gw.base), None, None)?;
    register(&target, "up", upstream, lab, false).await?;
    // A few calls so the request path has been exercised before "idle" is read.
    load::load(
        &target,
        &Plan {
            concurrency: 1,
            calls: Some(100),
            duration: Duration::from_secs(10),
            tool: "up__echo".into(),
            warmup: 0,
            reconnect_every: None,
            stop: None,
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = gw.proc.rss();
    let started = Instant::now();
    let streams: Vec<Result<_>> = futures_util::stream::iter(0..n)
        .map(|_| async {
            match kind {
                Standing::Sse => open_sse(&target).await,
                Standing::StreamableGet => load::Worker::open(&target).await?.listen().await,
                Standing::Listen => open_listen(&target).await,
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let opened = started.elapsed();
    let failures = streams.iter().filter(|s| s.is_err()).count();
    let first_failure = streams
        .iter()
        .find_map(|s| s.as_ref().err().map(|e| format!("{e:#}")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = gw.proc.rss();
    drop(streams);
    Ok(Held {
        before,
        after,
        held: n - failures,
        failures,
        first_failure,
        opened,
    })
}

/// Hold N SSE streams open on one mcpgw, then N Streamable-HTTP sessions with their `GET /mcp`
/// streams on another; RSS before and after each.
async fn idle(mode: Mode) -> Result<Outcome> {
    let n: usize = if mode.quick { 1_000 } else { 10_000 };
    let lab = Lab::new()?;
    let up = lab.upstream("u", false, false)?;
    // Room for the sessions beside the default 10,000 cap.
    std::fs::write(lab.p("mcpgw.toml"), "[mcp]\nmax_sessions = 20000\n")?;
    let upstream = format!("{}/mcp", up.base);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut out = Outcome::default();
    let mut figures = serde_json::Map::new();
    figures.insert("sessions".into(), json!(n));
    for kind in [Standing::Sse, Standing::StreamableGet, Standing::Listen] {
        let h = hold(&lab, &upstream, kind, n).await?;
        let per = h.per_session();
        out.table.push_str(&format!(
            "{} sessions held {} of {n} (opened in {:.2} s, {} failed)\nmcpgw RSS idle {:.1} MiB, with sessions {:.1} MiB, per session {:.1} KiB\n",
            kind.label(),
            h.held,
            h.opened.as_secs_f64(),
            h.failures,
            mib(h.before),
            mib(h.after),
            per / 1024.0
        ));
        figures.insert(
            kind.key().into(),
            json!({"held": h.held, "failures": h.failures, "first_failure": h.first_failure,
                   "rss_idle_bytes": h.before, "rss_with_sessions_bytes": h.after,
                   "rss_per_session_bytes": per, "open_s": h.opened.as_secs_f64()}),
        );
        if let Standing::Sse = kind {
            verdict(
                &mut out,
                "idle RSS ≤ 20 MiB",
                format!("{:.1} MiB", mib(h.before)),
                mib(h.before) <= 20.0,
            );
        }
        // The target is about sessions; a listen stream (no session) is reported beside them.
        if let Standing::Listen = kind {
            continue;
        }
        verdict(
            &mut out,
            &format!(
                "≤ 20 KiB RSS per idle {} session (at {n} sessions)",
                kind.label()
            ),
            format!("{:.1} KiB ({} held)", per / 1024.0, h.held),
            per <= 20.0 * 1024.0 && h.failures == 0,
        );
    }
    out.figures = Value::Object(figures);
    Ok(out)
}

/// Open `GET /sse` and read up to its `endpoint` event; the returned body keeps it open.
async fn open_sse(target: &Target) -> Result<hyper::body::Incoming> {
    let req = hyper::Request::get("/sse")
        .header(hyper::header::HOST, target.authority.clone())
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    open_stream(target, req, b"endpoint").await
}

/// Open a 2026-07-28 `subscriptions/listen` stream (tool list changes) and read up to its
/// acknowledgement; the returned body keeps it open.
async fn open_listen(target: &Target) -> Result<hyper::body::Incoming> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen", "params": {
        "notifications": {"toolsListChanged": true},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    }});
    let req = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, target.authority.clone())
        .header(hyper::header::ACCEPT, "application/json, text/event-stream")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))?;
    open_stream(target, req, b"acknowledged").await
}

/// Send `req` on a new connection and read its event stream until `until` was seen; the
/// returned body keeps the stream open.
async fn open_stream(
    target: &Target,
    req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
    until: &[u8],
) -> Result<hyper::body::Incoming> {
    let what = format!("{} {}", req.method(), req.uri());
    let mut conn = load::dial(target).await?;
    conn.ready().await?;
    let resp = conn.send_request(req).await?;
    if resp.status() != 200 {
        bail!("{what} answered {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut seen = Vec::new();
    while !seen.windows(until.len()).any(|w| w == until) {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .with_context(|| format!("{what}: nothing within 10 s"))?
            .context("stream ended")??;
        if let Some(data) = frame.data_ref() {
            seen.extend_from_slice(data);
        }
    }
    // The connection task lives as long as the body (and the sender it drives).
    std::mem::forget(conn);
    Ok(body)
}
