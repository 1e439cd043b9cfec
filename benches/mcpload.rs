//! `mcpload`: mcpgw's benchmark suite (issue 5). Two entry points:
//!
//! ```text
//! cargo bench --bench mcpload -- all|SCENARIO... [--quick] [--json FILE]
//! cargo bench --bench mcpload -- load --url URL [--ca F] [--cert F --key F] [-c N] [-n CALLS | -d SECS] [--tool T] [--json FILE] [--token-file F] [--lean]
//! ```
//!
//! The scenario driver starts the upstream fixture (`examples/upstream.rs`) and `mcpgw serve` as
//! real processes on 127.0.0.1 and measures them side by side in one invocation; `load` is the
//! bare load generator against any loopback MCP endpoint. Every run is bounded in time. A third,
//! `floor-relay PROGRAM ARG...`, is the `stdio` scenario's floor relay (`floor.rs`), which that
//! scenario starts itself.
//!
//! Two HTTP generators: `load.rs` (hyper on tokio) does everything (TLS, redials, `GET` streams,
//! session ends); `lean.rs` (minimal HTTP/1.1, a task owning each connection) does only plain-HTTP
//! `tools/call` rows, at a fraction of the CPU, for the rows whose calls/s on two shared cores
//! would otherwise measure the generator as much as mcpgw (the `stdio` and `store` scenarios).

#[path = "mcpload/floor.rs"]
mod floor;
#[path = "mcpload/lean.rs"]
mod lean;
#[path = "mcpload/load.rs"]
mod load;
#[path = "mcpload/procs.rs"]
mod procs;
#[path = "mcpload/scenarios.rs"]
mod scenarios;
#[path = "mcpload/stdio.rs"]
mod stdio;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{Value, json};

/// Scenario driver.
#[derive(Parser)]
#[command(name = "mcpload", about = "mcpgw benchmark scenarios")]
struct DriverArgs {
    /// `all`, or any of: plain tls idle client-sessions rotation health startup stdio.
    #[arg(required = true)]
    scenarios: Vec<String>,
    /// Shorter runs, fewer sessions and upstreams (about 2 minutes for `all`).
    #[arg(long)]
    quick: bool,
    /// Also write every figure as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Load generator.
#[derive(Parser)]
#[command(
    name = "mcpload load",
    about = "MCP tools/call load against a loopback endpoint"
)]
struct LoadArgs {
    /// MCP endpoint, e.g. http://127.0.0.1:4444/mcp (loopback only).
    #[arg(long)]
    url: String,
    /// CA to trust for https.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate (with --key).
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Client key.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Concurrent workers, one connection and session each.
    #[arg(short, long, default_value_t = 16)]
    concurrency: usize,
    /// Stop after this many calls...
    #[arg(short = 'n', long)]
    calls: Option<u64>,
    /// ... or after this many seconds (also the cap when -n is given).
    #[arg(short, long, default_value_t = 10.0)]
    duration: f64,
    /// Tool to call with {"text": …}.
    #[arg(long, default_value = "echo")]
    tool: String,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Send `Authorization: Bearer <the file's first line>` (a file, so that the token is not
    /// on the command line).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Drive plain HTTP with the lean generator (`lean.rs`, as the `stdio` rows do) instead of
    /// hyper's.
    #[arg(long)]
    lean: bool,
}

fn main() {
    // `cargo bench` passes `--bench`; it means nothing here.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = if args.get(1).map(String::as_str) == Some("floor-relay") {
        // The floor relay of the `stdio` scenario, run by it as a process of its own.
        match args.get(2) {
            Some(program) => runtime.block_on(floor::relay(program, &args[3..])),
            None => Err(anyhow::anyhow!(
                "usage: mcpload floor-relay PROGRAM [ARG]..."
            )),
        }
    } else if args.get(1).map(String::as_str) == Some("load") {
        let load = LoadArgs::parse_from(args.iter().skip(1));
        runtime.block_on(run_load(load))
    } else {
        let driver = DriverArgs::parse_from(&args);
        runtime.block_on(run_driver(driver))
    };
    if let Err(err) = result {
        eprintln!("mcpload: {err:#}");
        std::process::exit(1);
    }
}

async fn run_load(args: LoadArgs) -> Result<()> {
    let client = args.cert.as_deref().zip(args.key.as_deref());
    let mut target = load::Target::new(&args.url, args.ca.as_deref(), client)?;
    if let Some(file) = &args.token_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the token file {}", file.display()))?;
        let token = text.lines().next().unwrap_or("").trim();
        let bearer = load::bearer(token).with_context(|| format!("in {}", file.display()))?;
        target.bearer = Some(bearer);
    }
    let plan = load::Plan {
        concurrency: args.concurrency,
        calls: args.calls,
        duration: Duration::from_secs_f64(args.duration),
        tool: args.tool,
        warmup: 0,
        reconnect_every: None,
        stop: None,
    };
    let report = if args.lean {
        let workers = lean::prepare(&target, &plan).await?;
        lean::run(workers, &plan).await.0
    } else {
        load::load(&target, &plan).await?
    };
    println!("calls/s   p50µs   p90µs   p99µs    maxµs  calls  errors");
    println!(
        "{:>7.0} {:>7.0} {:>7.0} {:>7.0} {:>8.0} {:>6} {:>7}",
        report.rate(),
        report.p50_us,
        report.p90_us,
        report.p99_us,
        report.max_us,
        report.calls,
        report.errors
    );
    if let Some(e) = &report.first_error {
        println!("first error: {e}");
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report.json())?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `nproc`, CPU model and memory, for the record.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown");
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model, "memory": mem.split_whitespace().skip(1).collect::<Vec<_>>().join(" "),
    })
}

async fn run_driver(args: DriverArgs) -> Result<()> {
    let names: Vec<String> = if args.scenarios.iter().any(|s| s == "all") {
        scenarios::ALL.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    let mode = scenarios::Mode { quick: args.quick };
    let machine = machine();
    println!(
        "mcpload: {} cores ({}), {}{}",
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or_default(),
        machine["memory"].as_str().unwrap_or_default(),
        if args.quick { ", --quick" } else { "" }
    );
    let started = std::time::Instant::now();
    let mut figures = serde_json::Map::new();
    let mut verdicts = Vec::new();
    for name in &names {
        println!("\n== {name}");
        let t0 = std::time::Instant::now();
        let out = scenarios::run(name, mode)
            .await
            .with_context(|| format!("scenario {name}"))?;
        print!("{}", out.table);
        println!("({name}: {:.1} s)", t0.elapsed().as_secs_f64());
        figures.insert(name.clone(), out.figures);
        verdicts.extend(out.verdicts);
    }
    println!("\n== targets");
    for v in &verdicts {
        println!(
            "{}  {} — {}",
            if v.met { "met   " } else { "MISSED" },
            v.target,
            v.measured
        );
    }
    println!("(total {:.1} s)", started.elapsed().as_secs_f64());
    if let Some(path) = args.json {
        let doc = json!({
            "machine": machine, "quick": args.quick, "scenarios": figures,
            "targets": verdicts.iter().map(|v| json!({"target": v.target, "measured": v.measured, "met": v.met})).collect::<Vec<_>>(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
