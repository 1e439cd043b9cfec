//! stdio upstreams (issue 21): the same fixture behind one gateway over stdio (a shared child)
//! and over HTTP, and driven directly on each, at c=16: calls/s and CPU per call of each
//! process; then what idle stdio upstreams cost the gateway in memory, beside as many HTTP ones.

use super::*;
use crate::floor;
use crate::lean;
use crate::procs::children_of;
use crate::stdio::{Direct, Run};

/// Concurrency of every run here.
const C: usize = 16;

/// Idle stdio upstreams registered for the memory figure.
const IDLE: usize = 20;

/// How long the gateway may take to have started the children of its registrations.
const START: Duration = Duration::from_secs(30);

/// The heading of a table of [`Row`]s.
const HEADER: &str = "path          c   calls/s   p50µs   p90µs   p99µs    maxµs  errors  gw µs/call  up µs/call  gen µs/call  generator\n";

/// The generator of a [`Row`], named in its table line and JSON.
#[derive(Clone, Copy)]
enum Generator {
    /// `crate::stdio`: pipe lines to the fixture.
    Pipe,
    /// `crate::lean`: minimal HTTP/1.1, a task per connection.
    Lean,
}

impl Generator {
    fn name(self) -> &'static str {
        match self {
            Self::Pipe => "stdio-pipe",
            Self::Lean => "lean-http1",
        }
    }
}

/// One measured run (also the rows of `super::store`).
pub(super) struct Row {
    pub(super) path: &'static str,
    pub(super) report: load::Report,
    pub(super) gateway_us: Option<f64>,
    upstream_us: f64,
    generator_us: f64,
    generator: Generator,
}

impl Row {
    /// Gateway CPU µs per call; NaN for a run without a gateway.
    pub(super) fn gateway_or_nan(&self) -> f64 {
        self.gateway_us.unwrap_or(f64::NAN)
    }

    pub(super) fn line(&self) -> String {
        let r = &self.report;
        format!(
            "{:<12} {C:>2} {:>9.0} {:>7.0} {:>7.0} {:>7.0} {:>8.0} {:>7} {:>11} {:>11.1} {:>12.1}  {}\n",
            self.path,
            r.rate(),
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.max_us,
            r.errors,
            self.gateway_us.map_or("-".into(), |v| format!("{v:.1}")),
            self.upstream_us,
            self.generator_us,
            self.generator.name(),
        )
    }

    pub(super) fn json(&self) -> Value {
        json!({"path": self.path, "concurrency": C, "load": self.report.json(),
               "gateway_cpu_us_per_call": self.gateway_us,
               "upstream_cpu_us_per_call": self.upstream_us,
               "generator_cpu_us_per_call": self.generator_us,
               "generator": self.generator.name()})
    }
}

/// An outcome whose table lists `rows`, under [`HEADER`].
pub(super) fn tabled(rows: &[Row]) -> Outcome {
    let mut out = Outcome {
        table: String::from(HEADER),
        ..Outcome::default()
    };
    for row in rows {
        out.table.push_str(&row.line());
    }
    out
}

/// A line under the table when calls failed: how many, and the first error.
pub(super) fn note_errors(out: &mut Outcome, rows: &[Row]) {
    let errors: u64 = rows.iter().map(|r| r.report.errors).sum();
    if errors > 0 {
        let first = rows.iter().find_map(|r| r.report.first_error.clone());
        out.table.push_str(&format!(
            "!! {errors} failed calls in this scenario; first: {}\n",
            first.unwrap_or_default()
        ));
    }
}

/// CPU per call of each process over a run of `calls` calls.
struct Cpu {
    gateway: Option<Duration>,
    upstream: Duration,
    generator: Duration,
}

impl Cpu {
    fn read(gateway: Option<u32>, upstream: u32) -> Self {
        Self {
            gateway: gateway.map(|pid| cpu_of(pid).unwrap_or_default()),
            upstream: cpu_of(upstream).unwrap_or_default(),
            generator: self_cpu(),
        }
    }

    fn row(
        &self,
        after: &Cpu,
        path: &'static str,
        generator: Generator,
        report: load::Report,
    ) -> Row {
        let n = (report.calls + report.errors).max(1) as f64;
        let per = |a: Duration, b: Duration| (b.saturating_sub(a)).as_secs_f64() * 1e6 / n;
        Row {
            path,
            gateway_us: self.gateway.zip(after.gateway).map(|(a, b)| per(a, b)),
            upstream_us: per(self.upstream, after.upstream),
            generator_us: per(self.generator, after.generator),
            generator,
            report,
        }
    }
}

/// Wait until `gateway` has `n` children (the programs of its stdio registrations); their pids.
async fn children(gateway: u32, n: usize) -> Result<Vec<u32>> {
    let started = Instant::now();
    loop {
        let pids = children_of(gateway);
        if pids.len() >= n {
            return Ok(pids);
        }
        if started.elapsed() > START {
            bail!(
                "the gateway runs {} children {START:?} after {n} stdio registrations",
                pids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plain-HTTP load through `target` on `tool` by the lean generator, CPU read around the
/// measured part.
pub(super) async fn http_row(
    path: &'static str,
    target: &Target,
    tool: &str,
    mode: Mode,
    gateway: Option<u32>,
    upstream: u32,
) -> Result<Row> {
    let plan = mode.timed(C, tool);
    let workers = lean::prepare(target, &plan).await?;
    let before = Cpu::read(gateway, upstream);
    let (report, workers) = lean::run(workers, &plan).await;
    let after = Cpu::read(gateway, upstream);
    drop(workers);
    Ok(before.row(&after, path, Generator::Lean, report))
}

/// The fixture on its own stdio, driven by the direct generator (on a blocking thread).
async fn direct_row(lab: &Lab, fixture: &std::path::Path, mode: Mode) -> Result<Row> {
    let log = lab.p("direct-stdio.log");
    let mut direct = Direct::spawn(fixture, &["--stdio"], &log)?;
    let duration = mode.run_for();
    tokio::task::spawn_blocking(move || {
        let warmup = Run {
            concurrency: C,
            calls: Some(20 * C as u64),
            duration: Duration::from_secs(10),
        };
        direct.run("echo", warmup).context("warm-up")?;
        let before = Cpu::read(None, direct.pid());
        let report = direct.run(
            "echo",
            Run {
                concurrency: C,
                calls: None,
                duration,
            },
        )?;
        let after = Cpu::read(None, direct.pid());
        Ok::<_, anyhow::Error>(before.row(&after, "direct-stdio", Generator::Pipe, report))
    })
    .await?
    .with_context(|| format!("the stdio fixture (stderr in {})", log.display()))
}

/// The fixture on stdio behind the floor relay (`crate::floor`, a process of its own, its CPU in
/// the gateway's column), driven by the lean generator as mcpgw is.
async fn floor_row(lab: &Lab, fixture: &std::path::Path, mode: Mode) -> Result<Row> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("floor-relay").arg(fixture).arg("--stdio");
    let relay = crate::procs::Proc::spawn(cmd, floor::READY, &lab.p("floor-relay.log"))?;
    let target = Target::new(
        &format!("{}/mcp", relay.ready[floor::READY.len()..].trim()),
        None,
        None,
    )?;
    let child = children(relay.pid(), 1).await?[0];
    http_row(
        "floor-stdio",
        &target,
        "echo",
        mode,
        Some(relay.pid()),
        child,
    )
    .await
}

/// Through/direct and stdio/HTTP side by side at c=16, with the floor relay beside mcpgw on
/// stdio, then idle memory per stdio upstream.
pub async fn stdio(mode: Mode) -> Result<Outcome> {
    let lab = Lab::new()?;
    let fixture = crate::procs::upstream_bin()?;
    // The fixture alone first, before the other processes start.
    let direct_stdio = direct_row(&lab, &fixture, mode).await?;
    let up = lab.upstream("u", false, false)?;
    let gw = lab.gateway("g", &["--health-interval", "3600"])?;
    let through = Target::new(&format!("{}/mcp", gw.base), None, None)?;
    let direct_http = Target::new(&format!("{}/mcp", up.base), None, None)?;
    register(&through, "http", &format!("{}/mcp", up.base), &lab, false).await?;
    lab.add_command(&gw, "stdio", &fixture, &["--stdio"])?;
    let child = children(gw.proc.pid(), 1).await?[0];

    let gw_pid = Some(gw.proc.pid());
    let rows = [
        direct_stdio,
        http_row("mcpgw-stdio", &through, "stdio__echo", mode, gw_pid, child).await?,
        floor_row(&lab, &fixture, mode).await?,
        http_row(
            "direct-http",
            &direct_http,
            "echo",
            mode,
            None,
            up.proc.pid(),
        )
        .await?,
        http_row(
            "mcpgw-http",
            &through,
            "http__echo",
            mode,
            gw_pid,
            up.proc.pid(),
        )
        .await?,
    ];
    let mut out = tabled(&rows);
    let [direct_stdio, via_stdio, floor, direct_http, via_http] = &rows;
    let gw_of = Row::gateway_or_nan;
    let cpu_ratio = gw_of(via_stdio) / gw_of(via_http);
    let rate_ratio = via_stdio.report.rate() / direct_stdio.report.rate();
    let floor_ratio = floor.report.rate() / direct_stdio.report.rate();
    let to_floor = via_stdio.report.rate() / floor.report.rate();
    let http_rate_ratio = via_http.report.rate() / direct_http.report.rate();
    let budget = gateway_budget(floor, floor_ratio);
    out.table.push_str(&format!(
        "gateway CPU per call, stdio / HTTP upstream: {cpu_ratio:.2} ({:.1} / {:.1} µs; goal ≤ 1.5)\n\
         calls/s through mcpgw / directly, stdio: {rate_ratio:.2} ({:.0} / {:.0}; goal ≥ 0.5); HTTP: {http_rate_ratio:.2}\n\
         calls/s through the floor relay / directly, stdio: {floor_ratio:.2} ({:.0} / {:.0}): the most a gateway reaches here\n\
         mcpgw / floor relay, stdio: calls/s {to_floor:.2}, CPU per call {:.2} ({:.1} / {:.1} µs)\n\
         CPU per call at which a gateway makes 0.5 of direct here: {budget:.1} µs (the floor relay's calls/s \
         and CPU per call, scaled), against {:.1} µs for the floor relay and {:.1} µs for mcpgw\n",
        gw_of(via_stdio),
        gw_of(via_http),
        via_stdio.report.rate(),
        direct_stdio.report.rate(),
        floor.report.rate(),
        direct_stdio.report.rate(),
        gw_of(via_stdio) / gw_of(floor),
        gw_of(via_stdio),
        gw_of(floor),
        gw_of(floor),
        gw_of(via_stdio),
    ));
    verdict(
        &mut out,
        "gateway CPU per call through a shared stdio upstream ≤ 1.5 × through an HTTP upstream (c=16)",
        format!("{cpu_ratio:.2} ×"),
        cpu_ratio <= 1.5,
    );
    verdict(
        &mut out,
        "through mcpgw ≥ 0.5 × direct calls/s on a stdio upstream at c=16",
        format!("{rate_ratio:.2} ×"),
        rate_ratio >= 0.5,
    );
    note_errors(&mut out, &rows);
    drop(gw);

    let http_url = format!("{}/mcp", up.base);
    let idle = idle_upstreams(&lab, Idle::Stdio(&fixture)).await?;
    let idle_http = idle_upstreams(&lab, Idle::Http(&http_url)).await?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    out.table.push_str(&format!(
        "idle upstreams  mcpgw RSS MiB: with none   one  {IDLE:>4}   KiB per upstream: 0→{IDLE}  1→{IDLE}\n"
    ));
    for (kind, held) in [("stdio", &idle), ("HTTP", &idle_http)] {
        out.table.push_str(&format!(
            "{kind:<15} {:>24.1} {:>5.1} {:>5.1} {:>25.1} {:>5.1}\n",
            mib(held.before),
            mib(held.first),
            mib(held.after),
            held.per_upstream() / 1024.0,
            held.beyond_first() / 1024.0,
        ));
    }
    // Per upstream is what one more costs: from the first to the last. What the first one
    // brings with it (paid once, whatever the transport, and more for HTTP) is printed apart.
    let per_kib = idle.beyond_first() / 1024.0;
    let first_kib = (idle.first.saturating_sub(idle.before)) as f64 / 1024.0;
    out.table.push_str(&format!(
        "gateway RSS per idle stdio upstream: {per_kib:.1} KiB each from the first to the {IDLE}th \
         ({} children running; goal ≤ 64 KiB); the first brought {first_kib:.0} KiB once\n",
        idle.running
    ));
    verdict(
        &mut out,
        &format!("≤ 64 KiB of gateway RSS per idle stdio upstream (1 → {IDLE})"),
        format!("{per_kib:.1} KiB"),
        per_kib <= 64.0,
    );
    out.figures = json!({
        "runs": rows.iter().map(Row::json).collect::<Vec<_>>(),
        "gateway_cpu_stdio_to_http": cpu_ratio,
        "through_to_direct_stdio": rate_ratio,
        "floor_to_direct_stdio": floor_ratio,
        "through_to_floor_stdio": to_floor,
        "gateway_cpu_us_per_call_for_half_of_direct": budget,
        "through_to_direct_http": http_rate_ratio,
        "idle_stdio": idle.json(),
        "idle_http": idle_http.json(),
    });
    Ok(out)
}

/// The gateway CPU per call (µs) at which calls/s through a gateway would be half the direct
/// rate on this machine, from the floor relay's row (`floor`, at `floor_ratio` of direct).
///
/// On two cores shared by the generator, the gateway and the child, calls/s goes as the CPU all
/// three spend per call: the floor's row gives that product, and the sum it allows at half the
/// direct rate, less what the generator and the child spent beside the floor, is the gateway's
/// share. At exactly 0.5 it is the floor relay's own cost; below, less than the floor spends.
fn gateway_budget(floor: &Row, floor_ratio: f64) -> f64 {
    let others = floor.generator_us + floor.upstream_us;
    2.0 * floor_ratio * (floor.gateway_or_nan() + others) - others
}

/// The upstreams registered [`IDLE`] times for the memory figure.
#[derive(Clone, Copy)]
enum Idle<'a> {
    /// The fixture's program, run with `--stdio` (a child each).
    Stdio(&'a std::path::Path),
    /// The HTTP fixture's URL (a registration, and its upstream session, each).
    Http(&'a str),
}

/// What [`IDLE`] idle upstreams cost a fresh gateway: its RSS with none, with one, with all.
struct Held {
    before: u64,
    first: u64,
    after: u64,
    running: usize,
}

impl Held {
    /// From none to [`IDLE`], per upstream.
    fn per_upstream(&self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / IDLE as f64
    }

    /// From one to [`IDLE`], per upstream: what the first one's fixed costs do not flatter.
    fn beyond_first(&self) -> f64 {
        self.after.saturating_sub(self.first) as f64 / (IDLE - 1) as f64
    }

    fn json(&self) -> Value {
        json!({"upstreams": IDLE, "children_running": self.running,
               "rss_before_bytes": self.before, "rss_with_one_bytes": self.first,
               "rss_after_bytes": self.after, "rss_per_upstream_bytes": self.per_upstream(),
               "rss_per_upstream_beyond_first_bytes": self.beyond_first()})
    }
}

/// A fresh gateway's RSS at rest, then with one upstream of `kind`, then with [`IDLE`] (their
/// children started, no call made).
async fn idle_upstreams(lab: &Lab, kind: Idle<'_>) -> Result<Held> {
    let tag = match kind {
        Idle::Stdio(_) => "ms",
        Idle::Http(_) => "mh",
    };
    let gw = lab.gateway(tag, &["--health-interval", "3600"])?;
    let target = Target::new(&format!("{}/mcp", gw.base), None, None)?;
    let settle = Duration::from_millis(300);
    tokio::time::sleep(settle).await;
    let before = gw.proc.rss();
    let mut first = 0;
    for i in 0..IDLE {
        let name = format!("idle{i:02}");
        match kind {
            Idle::Stdio(fixture) => lab.add_command(&gw, &name, fixture, &["--stdio"])?,
            Idle::Http(url) => register(&target, &name, url, lab, false).await?,
        }
        if i == 0 {
            if let Idle::Stdio(_) = kind {
                children(gw.proc.pid(), 1).await?;
            }
            tokio::time::sleep(settle).await;
            first = gw.proc.rss();
        }
    }
    let running = match kind {
        Idle::Stdio(_) => children(gw.proc.pid(), IDLE).await?.len(),
        Idle::Http(_) => children_of(gw.proc.pid()).len(),
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Held {
        before,
        first,
        after: gw.proc.rss(),
        running,
    })
}
