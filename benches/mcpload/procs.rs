//! The processes a scenario runs against (the upstream fixture and `mcpgw serve`, both as
//! real binaries on 127.0.0.1), and what `/proc` says about them: CPU time and RSS.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// `target/release`, where cargo put the mcpgw binary this bench was built with.
pub fn release_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcpgw"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// The mcpgw binary: the one this bench was built with, or `MCPLOAD_MCPGW` (another build, to
/// run a scenario against it side by side; the fixture stays this tree's).
pub fn mcpgw_bin() -> PathBuf {
    std::env::var_os("MCPLOAD_MCPGW")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mcpgw")))
}

/// The upstream fixture, built with `cargo build --release --example upstream` if missing.
pub fn upstream_bin() -> Result<PathBuf> {
    let bin = release_dir().join("examples/upstream");
    if !bin.exists() {
        eprintln!(
            "mcpload: building the upstream fixture (cargo build --release --example upstream)"
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--example", "upstream"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .context("cannot run cargo")?;
        if !status.success() || !bin.exists() {
            bail!(
                "building the upstream fixture failed; run: cargo build --release --example upstream"
            );
        }
    }
    Ok(bin)
}

/// A child process killed (by its pid) when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Its ready line.
    pub ready: String,
}

impl Proc {
    /// Spawn `cmd` and wait for a first stdout line starting with `prefix`.
    pub fn spawn(mut cmd: Command, prefix: &str, stderr: &Path) -> Result<Self> {
        let log = std::fs::File::create(stderr)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        for (key, _) in std::env::vars() {
            if key.starts_with("MCPGW_") || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let mut proc = Self {
            child,
            ready: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with(prefix) => {
                proc.ready = line;
                Ok(proc)
            }
            other => {
                let log = std::fs::read_to_string(stderr).unwrap_or_default();
                Err(anyhow!(
                    "{cmd:?} did not print {prefix:?} (got {other:?})\n--- stderr\n{log}"
                ))
            }
        }
    }

    /// Pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time used so far.
    pub fn cpu(&self) -> Duration {
        cpu_of(self.pid()).unwrap_or_default()
    }

    /// Resident set size in bytes.
    pub fn rss(&self) -> u64 {
        rss_of(self.pid()).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// utime + stime of `pid` from `/proc/PID/stat`.
pub fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_micros(ticks * 1_000_000 / clk_tck()))
}

/// The pids whose parent is `pid` (from `/proc/*/stat`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                return false;
            };
            // After the command name (which may hold spaces): state, then the parent's pid.
            stat.rfind(')').and_then(|at| {
                stat[at + 2..]
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u32>()
                    .ok()
            }) == Some(pid)
        })
        .collect()
}

/// VmRSS of `pid` in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Per-run working directory with a PKI from `mcpgw cert gen`.
pub struct Lab {
    /// Temp dir (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Lab {
    /// A fresh directory holding `pki/` (ca, server for localhost/127.0.0.1, client).
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("mcpload").tempdir()?;
        let lab = Self { dir };
        lab.mcpgw(&["cert", "gen", "--out", &lab.s("pki")])?;
        Ok(lab)
    }

    /// Path under the lab.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Path under the lab as a string.
    pub fn s(&self, rel: &str) -> String {
        self.p(rel).display().to_string()
    }

    /// Run `mcpgw ARGS` to completion; returns stdout.
    pub fn mcpgw(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(mcpgw_bin());
        for (key, _) in std::env::vars() {
            if key.starts_with("MCPGW_") || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        let out = cmd.args(args).output()?;
        if !out.status.success() {
            bail!(
                "mcpgw {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start the upstream fixture; `tls` adds the lab's server certificate, `mtls` requires
    /// client certificates from the lab's CA.
    pub fn upstream(&self, tag: &str, tls: bool, mtls: bool) -> Result<Upstream> {
        let mut cmd = Command::new(upstream_bin()?);
        cmd.args(["--listen", "127.0.0.1:0"]);
        if tls {
            cmd.args(["--tls-cert", &self.s("pki/server.crt")])
                .args(["--tls-key", &self.s("pki/server.key")]);
        }
        if mtls {
            cmd.args(["--client-ca", &self.s("pki/ca.crt")]);
        }
        let proc = Proc::spawn(cmd, "READY ", &self.p(&format!("upstream-{tag}.log")))?;
        let base = proc.ready["READY ".len()..].trim().to_owned();
        Ok(Upstream { proc, base })
    }

    /// Register the program `program ARGS` on `gw` as the stdio upstream `name`, with
    /// `mcpgw gateway add NAME --command PROG --arg A...` (through its control socket).
    pub fn add_command(
        &self,
        gw: &Gateway,
        name: &str,
        program: &Path,
        args: &[&str],
    ) -> Result<()> {
        let program = program.display().to_string();
        let mut cmd = vec![
            "--data-dir",
            &gw.data,
            "gateway",
            "add",
            name,
            "--command",
            &program,
        ];
        let args: Vec<String> = args.iter().map(|a| format!("--arg={a}")).collect();
        cmd.extend(args.iter().map(String::as_str));
        self.mcpgw(&cmd).map(drop)
    }

    /// Start `mcpgw serve` on its own data dir `data-TAG` with `extra` serve flags, bearer
    /// auth off.
    pub fn gateway(&self, tag: &str, extra: &[&str]) -> Result<Gateway> {
        self.gateway_with(tag, &["--no-auth"], extra)
    }

    /// [`Lab::gateway`] with bearer auth on, as `serve` starts by default.
    pub fn gateway_with_auth(&self, tag: &str, extra: &[&str]) -> Result<Gateway> {
        self.gateway_with(tag, &[], extra)
    }

    fn gateway_with(&self, tag: &str, auth: &[&str], extra: &[&str]) -> Result<Gateway> {
        let data = self.s(&format!("data-{tag}"));
        let mut cmd = Command::new(mcpgw_bin());
        cmd.args(["--data-dir", &data, "serve", "--listen", "127.0.0.1:0"])
            .args(auth)
            .args(extra);
        let started = Instant::now();
        let proc = Proc::spawn(
            cmd,
            "mcpgw: listening on ",
            &self.p(&format!("gateway-{tag}.log")),
        )?;
        let ready_after = started.elapsed();
        let base = proc.ready["mcpgw: listening on ".len()..].trim().to_owned();
        Ok(Gateway {
            proc,
            base,
            data,
            ready_after,
        })
    }
}

/// A running upstream fixture.
pub struct Upstream {
    /// Process.
    pub proc: Proc,
    /// `http(s)://127.0.0.1:PORT`.
    pub base: String,
}

/// A running gateway.
pub struct Gateway {
    /// Process.
    pub proc: Proc,
    /// `http(s)://127.0.0.1:PORT`.
    pub base: String,
    /// Its data dir.
    pub data: String,
    /// Spawn to ready line.
    pub ready_after: Duration,
}
