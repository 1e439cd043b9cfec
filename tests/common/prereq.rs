//! What the interop and conformance tests need besides cargo, installed on first use.
//!
//! Each prerequisite is installed by the same `.ci/setup-*` script that CI runs (the scripts are
//! idempotent and cheap once done): the official Python MCP SDK into `target/py-venv`, the
//! official TypeScript SDK into `tests/fixtures/ts/node_modules`, Node 22 into `target/node22`
//! and the conformance suite into `tests/fixtures/conformance/node_modules`. A script runs at
//! most once per test process (a `OnceLock` per script) and never twice at the same time across
//! the test processes and threads (an exclusive lock on `target/prereq-<script>.lock`), since
//! two `pip install`s or `npm ci`s into one directory would corrupt it.
//!
//! When an install is impossible (no registry, no `python3`/`node` to bootstrap from), every
//! test that needs it fails with the script's own error and the command to run by hand: a test
//! that cannot run never passes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// How many lines of a failed script's stderr the panic message quotes.
const STDERR_TAIL: usize = 30;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python with the pinned `mcp` SDK (`.ci/setup-python`).
pub fn python() -> PathBuf {
    static DONE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ready(&DONE, "setup-python")
}

/// The TypeScript SDK fixture directory, `tests/fixtures/ts`, with its `node_modules` (the SDK
/// and the official everything server; `.ci/setup-node`; runs on the `node` found on `PATH`).
pub fn typescript_sdk() -> PathBuf {
    static DONE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ready(&DONE, "setup-node")
}

/// The Node 22 binary under `target/node22`, with the conformance suite installed next to
/// `tests/fixtures/conformance/run.sh` (`.ci/setup-conformance`).
pub fn conformance_node() -> PathBuf {
    static DONE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ready(&DONE, "setup-conformance")
}

/// The memoized outcome of `.ci/<script>`, or a panic with the reason it could not be had.
fn ready(done: &OnceLock<Result<PathBuf, String>>, script: &str) -> PathBuf {
    match done.get_or_init(|| install(script)) {
        Ok(path) => path.clone(),
        Err(reason) => panic!("{reason}"),
    }
}

/// Run `.ci/<script>` under its file lock; its last line of stdout is the path it installed.
fn install(script: &str) -> Result<PathBuf, String> {
    let by_hand = format!(
        "run it by hand to see why: cd {} && bash .ci/{script}",
        root().display()
    );
    let target = root().join("target");
    std::fs::create_dir_all(&target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let lock_path = target.join(format!("prereq-{script}.lock"));
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create the lock file {}: {e}", lock_path.display()))?;
    // Blocks while another test process runs the same script; released when `lock` drops.
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(root().join(".ci").join(script))
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot start `bash .ci/{script}`: {e}; {by_hand}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    record(script, seconds, out.status.success());
    if !out.status.success() {
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(STDERR_TAIL)..].join("\n");
        return Err(format!(
            "this test needs what `.ci/{script}` installs, and it failed ({}, after {seconds:.1} s); \
             {by_hand}\n--- last lines of its stderr\n{tail}",
            out.status
        ));
    }
    let last = stdout.lines().last().unwrap_or_default().trim();
    let path = PathBuf::from(last);
    if last.is_empty() || !path.exists() {
        return Err(format!(
            "`.ci/{script}` succeeded but its last line of stdout, {last:?}, is not an existing \
             path; {by_hand}\n--- stderr\n{stderr}"
        ));
    }
    Ok(path)
}

/// One line per script run in `target/prereq.log` (when, how long, outcome), so the time a
/// fresh clone's first test run spends installing can be told from the time it spends testing.
fn record(script: &str, seconds: f64, ok: bool) {
    let path = root().join("target/prereq.log");
    let Ok(mut log) = OpenOptions::new().create(true).append(true).open(path) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let outcome = if ok { "ok" } else { "failed" };
    let _ = writeln!(
        log,
        "{now} {script} {outcome} {seconds:.1}s pid={}",
        std::process::id()
    );
}
