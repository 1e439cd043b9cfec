//! The operational scenarios: certificate rotation under load, health checks of many mTLS
//! upstreams, and start-up with stored registrations.

use super::*;

/// 100 rotations (20 with --quick) at concurrency 16 over HTTPS.
pub(super) async fn rotation(mode: Mode) -> Result<Outcome> {
    let rotations = if mode.quick { 20 } else { 100 };
    let lab = Lab::new()?;
    let up = lab.upstream("u", false, false)?;
    // The gateway serves copies: rotation rewrites the served files.
    std::fs::copy(lab.p("pki/server.crt"), lab.p("gw.crt"))?;
    std::fs::copy(lab.p("pki/server.key"), lab.p("gw.key"))?;
    let (cert, key, ca) = (lab.s("gw.crt"), lab.s("gw.key"), lab.s("pki/ca.crt"));
    let gw = lab.gateway(
        "g",
        &[
            "--health-interval",
            "3600",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &ca,
        ],
    )?;
    let target = Target::new(
        &format!("{}/mcp", gw.base),
        Some(&lab.p("pki/ca.crt")),
        None,
    )?;
    register(&target, "up", &format!("{}/mcp", up.base), &lab, false).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let plan = Plan {
        concurrency: 16,
        calls: None,
        duration: Duration::from_secs(if mode.quick { 60 } else { 240 }),
        tool: "up__echo".into(),
        warmup: 5,
        // Re-dial often so new handshakes meet fresh certificates throughout.
        reconnect_every: Some(50),
        stop: Some(stop.clone()),
    };
    let workers = load::prepare(&target, &plan).await?;
    let runner = {
        let plan = plan.clone();
        tokio::spawn(async move { load::run(workers, &plan).await.0 })
    };
    let data = gw.data.clone();
    let ca_key = lab.s("pki/ca.key");
    let rotate = tokio::task::spawn_blocking(move || {
        let mut swaps = Vec::new();
        let mut failures = Vec::new();
        for _ in 0..rotations {
            let out = std::process::Command::new(crate::procs::mcpgw_bin())
                .args(["--data-dir", &data, "--json", "cert", "rotate", "--issue"])
                .args(["--ca-cert", &ca, "--ca-key", &ca_key])
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
                    swaps.push((count(&v, "swap_us"), count(&v, "prepare_us")));
                }
                Ok(o) => failures.push(String::from_utf8_lossy(&o.stderr).into_owned()),
                Err(e) => failures.push(e.to_string()),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (swaps, failures)
    });
    let (swaps, failures) = rotate.await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let report = runner.await?;
    drop(up);
    let mut swap: Vec<u64> = swaps.iter().map(|s| s.0).collect();
    let mut prep: Vec<u64> = swaps.iter().map(|s| s.1).collect();
    swap.sort_unstable();
    prep.sort_unstable();
    let med = |v: &[u64]| v.get(v.len() / 2).copied().unwrap_or(0);
    let max = |v: &[u64]| v.last().copied().unwrap_or(0);
    let table = format!(
        "rotations {} ok, {} refused; swap µs p50 {} max {}; prepare µs p50 {} max {}\nload during rotations: {} calls in {:.1} s ({:.0}/s), {} re-dials (TLS handshakes), {} failed, p50 {:.0} µs p99 {:.0} µs max {:.0} µs\n",
        swaps.len(),
        failures.len(),
        med(&swap),
        max(&swap),
        med(&prep),
        max(&prep),
        report.calls,
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.reconnects,
        report.errors,
        report.p50_us,
        report.p99_us,
        report.max_us,
    );
    let mut out = Outcome {
        figures: json!({"rotations": rotations, "ok": swaps.len(), "refused": failures,
                        "swap_us": swap, "prepare_us": prep, "load": report.json()}),
        table,
        ..Outcome::default()
    };
    verdict(
        &mut out,
        "certificate swap ≤ 5 ms",
        format!("max {} µs (p50 {} µs)", max(&swap), med(&swap)),
        max(&swap) <= 5_000 && !swap.is_empty(),
    );
    verdict(
        &mut out,
        &format!("0 failed requests across {rotations} rotations under load (c=16)"),
        format!(
            "{} failed of {}, {} rotations ok",
            report.errors,
            report.calls + report.errors,
            swaps.len()
        ),
        report.errors == 0 && swaps.len() == rotations,
    );
    Ok(out)
}

/// N mTLS upstream fixtures registered on one gateway (200; 50 with --quick).
struct Fleet {
    lab: Lab,
    ups: Vec<Upstream>,
    readers: Vec<Target>,
}

async fn fleet(mode: Mode) -> Result<Fleet> {
    let n = if mode.quick { 50 } else { 200 };
    let lab = Lab::new()?;
    let mut ups = Vec::new();
    for i in 0..n {
        ups.push(lab.upstream(&i.to_string(), true, true)?);
    }
    let ca = lab.p("pki/ca.crt");
    let (cc, ck) = (lab.p("pki/client.crt"), lab.p("pki/client.key"));
    let readers = ups
        .iter()
        .map(|u| Target::new(&u.base, Some(&ca), Some((&cc, &ck))))
        .collect::<Result<_>>()?;
    Ok(Fleet { lab, ups, readers })
}

impl Fleet {
    async fn register_all(&self, gw: &Gateway) -> Result<()> {
        let target = Target::new(&gw.base, None, None)?;
        let results: Vec<Result<()>> = futures_util::stream::iter(self.ups.iter().enumerate())
            .map(|(i, u)| {
                let target = target.clone();
                async move {
                    register(
                        &target,
                        &format!("u{i}"),
                        &format!("{}/mcp", u.base),
                        &self.lab,
                        true,
                    )
                    .await
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Sum of a counter over the fleet, less the reader's own connection per upstream.
    async fn sum(&self) -> Result<(u64, u64, u64)> {
        let all: Vec<Result<Value>> = futures_util::stream::iter(&self.readers)
            .map(stats)
            .buffer_unordered(16)
            .collect()
            .await;
        let (mut posts, mut accepts, mut inits) = (0, 0, 0);
        for s in all {
            let s = s?;
            posts += count(&s, "posts");
            accepts += count(&s, "accepts");
            inits += count(&s, "initializes");
        }
        Ok((posts, accepts, inits))
    }
}

/// Health checks of the fleet every second; CPU of mcpgw and new connections per check.
pub(super) async fn health(mode: Mode) -> Result<Outcome> {
    let fleet = fleet(mode).await?;
    let n = fleet.ups.len() as u64;
    let gw = fleet.lab.gateway("g", &["--health-interval", "1"])?;
    fleet.register_all(&gw).await?;
    // Let the first rounds open every connection.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = Duration::from_secs(if mode.quick { 5 } else { 15 });
    let (p0, a0, _) = fleet.sum().await?;
    let c0 = gw.proc.cpu();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let c1 = gw.proc.cpu();
    let elapsed = t0.elapsed();
    let (p1, a1, _) = fleet.sum().await?;
    let checks = (p1 - p0).max(1);
    let new_conns = (a1 - a0).saturating_sub(n);
    let cpu = c1 - c0;
    let rounds = checks as f64 / n as f64;
    let per_round = cpu.as_secs_f64() / rounds.max(1e-9);
    let at5 = per_round / 5.0 * 100.0;
    let handshakes = new_conns as f64 / checks as f64;
    let table = format!(
        "{n} mTLS upstreams, --health-interval 1, window {:.1} s: {checks} checks ({rounds:.1} rounds), mcpgw CPU {:.0} ms = {:.2} % of a core at 1 s;\nper round {:.2} ms CPU -> {at5:.3} % of a core at a 5 s interval; {new_conns} new upstream connections = {handshakes:.4} TLS handshakes per check\n",
        elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e3,
        cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0,
        per_round * 1e3,
    );
    let mut out = Outcome {
        figures: json!({"upstreams": n, "interval_s": 1, "window_s": elapsed.as_secs_f64(),
                        "checks": checks, "gateway_cpu_ms": cpu.as_secs_f64() * 1e3,
                        "cpu_ms_per_round": per_round * 1e3, "core_percent_at_5s": at5,
                        "new_connections": new_conns, "handshakes_per_check": handshakes}),
        table,
        ..Outcome::default()
    };
    verdict(
        &mut out,
        &format!("{n} upstreams health-checked every 5 s with < 5 % of one core"),
        format!("{at5:.3} % (measured at 1 s: {per_round:.4} s CPU per round)"),
        at5 < 5.0,
    );
    verdict(
        &mut out,
        "no new TLS handshake per health check",
        format!("{new_conns} new connections over {checks} checks"),
        new_conns == 0,
    );
    Ok(out)
}

/// Start-up to ready with the fleet stored, three times; baseline with nothing stored.
pub(super) async fn startup(mode: Mode) -> Result<Outcome> {
    let fleet = fleet(mode).await?;
    let n = fleet.ups.len();
    let empty = fleet.lab.gateway("empty", &["--health-interval", "3600"])?;
    let baseline = empty.ready_after;
    drop(empty);
    let gw = fleet.lab.gateway("g", &["--health-interval", "3600"])?;
    fleet.register_all(&gw).await?;
    drop(gw);
    let mut runs = Vec::new();
    for _ in 0..3 {
        // Ready does not wait for the upstreams (each starts with its stored health and is
        // checked right after): how long until every one has answered is timed apart.
        let (p0, _, _) = fleet.sum().await?;
        let started = Instant::now();
        let gw: Gateway = fleet.lab.gateway("g", &["--health-interval", "3600"])?;
        let ready = gw.ready_after;
        let (p1, _, _) = fleet.sum().await?;
        let answered = loop {
            let (p, _, _) = fleet.sum().await?;
            if p - p0 >= n as u64 {
                break started.elapsed();
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "{} upstream requests 30 s after start, {n} upstreams",
                    p - p0
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        drop(gw);
        runs.push((ready, p1 - p0, answered));
    }
    let worst = runs.iter().map(|r| r.0).max().unwrap_or_default();
    let worst_answered = runs.iter().map(|r| r.2).max().unwrap_or_default();
    let mut table = format!(
        "ready with nothing stored: {:.0} ms\n",
        baseline.as_secs_f64() * 1e3
    );
    for (ready, inits, answered) in &runs {
        table.push_str(&format!(
            "ready with {n} stored mTLS registrations: {:.0} ms ({inits} upstream requests by the first \
             count after ready); every upstream answered after {:.0} ms\n",
            ready.as_secs_f64() * 1e3,
            answered.as_secs_f64() * 1e3
        ));
    }
    let mut out = Outcome {
        figures: json!({"upstreams": n, "baseline_ms": baseline.as_secs_f64() * 1e3,
                        "runs": runs.iter().map(|(r, i, a)| json!({"ready_ms": r.as_secs_f64() * 1e3, "upstream_requests_first_count": i, "all_answered_ms": a.as_secs_f64() * 1e3})).collect::<Vec<_>>()}),
        table,
        ..Outcome::default()
    };
    verdict(
        &mut out,
        &format!(
            "ready in < 1 s with {n} stored registrations whose upstreams answer, each answered within 1 s"
        ),
        format!(
            "worst of 3: ready {:.0} ms, every upstream answered {:.0} ms",
            worst.as_secs_f64() * 1e3,
            worst_answered.as_secs_f64() * 1e3
        ),
        worst < Duration::from_secs(1) && worst_answered < Duration::from_secs(1),
    );
    Ok(out)
}
