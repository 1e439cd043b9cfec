//! Helpers for driving the real `mcpgw` binary: a unique temp dir per test, commands with the
//! `MCPGW_*` environment cleared, a running gateway whose logs are captured, and a small TLS
//! HTTP client. On failure, assertions print the command and the gateway's log.

#![allow(dead_code)]

pub mod cdp;
pub mod clients;
pub mod conformance;
pub mod fleet;
pub mod haproxy;
pub mod load;
pub mod node;
pub mod plain;
pub mod postgres;
pub mod prereq;
pub mod py;
pub mod raw;
pub mod stdio;
pub mod tls;
pub mod upstream;
mod wait;

pub use wait::{free_port, wait_for};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcpgw"))
}

/// A unique directory for one test, removed at the end.
pub struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Self {
        // Short paths: Unix socket paths are limited to ~108 bytes.
        let tmp = tempfile::Builder::new()
            .prefix("mcpgw-t")
            .tempdir_in("/tmp")
            .unwrap();
        Self { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.join("data")
    }

    /// A `mcpgw` command in this directory with a clean environment and this dir's data dir.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.path());
        for (key, _) in std::env::vars() {
            if key.starts_with("MCPGW_") || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        cmd.env("MCPGW_DATA_DIR", self.data_dir());
        cmd
    }

    /// Run `mcpgw ARGS`, returning its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Run and require exit code `code`; returns (stdout, stderr).
    /// `mcpgw gateway add NAME URL` with `pki`'s CA and client certificate (must succeed).
    pub fn gateway_add_mtls(&self, name: &str, url: &str, pki: &Pki) -> (String, String) {
        self.gateway_add_mtls_with(name, url, pki, &[])
    }

    /// [`Dir::gateway_add_mtls`] with more options (`--era ...`).
    pub fn gateway_add_mtls_with(
        &self,
        name: &str,
        url: &str,
        pki: &Pki,
        more: &[&str],
    ) -> (String, String) {
        let (ca, crt, key) = (pki.s("ca.crt"), pki.s("client.crt"), pki.s("client.key"));
        let mut args = vec![
            "gateway",
            "add",
            name,
            url,
            "--ca-cert",
            &ca,
            "--client-cert",
            &crt,
            "--client-key",
            &key,
        ];
        args.extend_from_slice(more);
        self.run_expect(&args, 0)
    }

    /// `mcpgw cert rotate --issue` with `pki`'s CA (must succeed); its stdout.
    pub fn rotate_issue(&self, pki: &Pki) -> String {
        self.rotate_issue_expect(pki, 0).0
    }

    /// `mcpgw cert rotate --issue` with `pki`'s CA, which must exit with `code`; stdout, stderr.
    pub fn rotate_issue_expect(&self, pki: &Pki, code: i32) -> (String, String) {
        let (ca, key) = (pki.s("ca.crt"), pki.s("ca.key"));
        let args = [
            "cert",
            "rotate",
            "--issue",
            "--ca-cert",
            &ca,
            "--ca-key",
            &key,
        ];
        self.run_expect(&args, code)
    }

    pub fn run_expect(&self, args: &[&str], code: i32) -> (String, String) {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "mcpgw {args:?} exited {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        (stdout, stderr)
    }

    /// `mcpgw cert gen --out DIR/<name>` with extra args.
    pub fn cert_gen(&self, name: &str, extra: &[&str]) -> Pki {
        let out = self.join(name);
        let mut args = vec!["cert", "gen", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run_expect(&args, 0);
        Pki { dir: out }
    }
}

/// Files written by `cert gen`.
#[derive(Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn s(&self, name: &str) -> String {
        self.file(name).display().to_string()
    }

    /// This PKI's CA, to issue more certificates with.
    pub fn issuer(&self) -> rcgen::Issuer<'static, rcgen::KeyPair> {
        mcpgw::tls::pki::load_issuer(
            "ca.crt",
            &std::fs::read(self.file("ca.crt")).unwrap(),
            "ca.key",
            &std::fs::read(self.file("ca.key")).unwrap(),
        )
        .unwrap()
    }

    /// A server certificate for `localhost` only (no IP SANs), signed by this CA, written as
    /// `lh.crt` and `lh.key`: dialling 127.0.0.1 verifies only with a server-name override.
    pub fn localhost_only(&self) -> (PathBuf, PathBuf) {
        let issuer = self.issuer();
        let only = mcpgw::tls::pki::issue_server(
            &issuer,
            "localhost",
            &["localhost".into()],
            30,
            mcpgw::cli::KeyType::EcdsaP256,
        )
        .unwrap();
        std::fs::write(self.file("lh.crt"), only.cert_pem).unwrap();
        std::fs::write(self.file("lh.key"), only.key_pem).unwrap();
        (self.file("lh.crt"), self.file("lh.key"))
    }
}

/// One gateway of a fleet: its directory (data dir, configuration, files) and its process.
pub struct Instance {
    pub dir: Dir,
    pub gw: Gateway,
}

/// A running `mcpgw serve`, killed on drop.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub https: bool,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    /// Start `mcpgw serve --listen 127.0.0.1:0 ARGS` and wait for its ready line.
    pub fn start(dir: &Dir, args: &[&str]) -> Self {
        let mut cmd = dir.cmd();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
        Self::spawn(cmd)
    }

    /// [`Gateway::start`] serving `pki`'s server certificate, with `args` after.
    pub fn start_tls(dir: &Dir, pki: &Pki, args: &[&str]) -> Self {
        let (cert, key) = (pki.s("server.crt"), pki.s("server.key"));
        let mut all = vec!["--tls-cert", &cert, "--tls-key", &key];
        all.extend_from_slice(args);
        Self::start(dir, &all)
    }

    /// Spawn a prepared serve command and wait for its ready line.
    pub fn spawn(cmd: Command) -> Self {
        Self::spawn_with_stdin(cmd, Stdio::null())
    }

    /// [`Self::spawn`] with `stdin` as its standard input (a listening socket, for
    /// `serve --listen-stdin`).
    pub fn spawn_with_stdin(mut cmd: Command, stdin: Stdio) -> Self {
        cmd.stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn mcpgw serve");
        let log = collect_lines(child.stderr.take().unwrap());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "gateway did not report ready (status {status:?})\n--- log\n{}",
                    log.lock().unwrap()
                );
            }
        };
        let rest = line
            .strip_prefix("mcpgw: listening on ")
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"));
        let (scheme, addr) = rest.split_once("://").unwrap();
        Self {
            child,
            addr: addr.parse().unwrap(),
            https: scheme == "https",
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Its resident memory (`VmRSS` of `/proc/PID/status`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
    }

    pub fn signal(&self, sig: i32) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the log holds `needle` `count` times or more.
    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return log;
            }
            if Instant::now() > deadline {
                panic!("log never showed {needle:?} x{count}\n--- log\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for exit and return the code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let log = self.log.clone();
        wait_exit(&mut self.child, "gateway", timeout, || {
            log.lock().unwrap().clone()
        })
    }
}

/// Stop the load workers (`done`), wait for them, and assert that none of their requests
/// failed (`failures` holds what went wrong), showing `context` (logs) if one did.
pub fn stop_load_expecting_no_failure(
    rt: &tokio::runtime::Runtime,
    done: &std::sync::atomic::AtomicBool,
    workers: Vec<tokio::task::JoinHandle<()>>,
    failures: &Mutex<Vec<String>>,
    context: impl Fn() -> String,
) {
    done.store(true, std::sync::atomic::Ordering::Release);
    for w in workers {
        rt.block_on(w).unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests, e.g. {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        context()
    );
}

/// What `output` says, line by line as it comes, collected by a thread of its own.
pub fn collect_lines(output: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

/// Wait for `child` (`what`) to exit and return its code; past `timeout`, panic with `log()`.
pub fn wait_exit(
    child: &mut Child,
    what: &str,
    timeout: Duration,
    log: impl Fn() -> String,
) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            panic!("{what} did not exit within {timeout:?}\n--- log\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGTERM: i32 = 15;

/// Mint a fresh server certificate from a `cert gen` CA using the library, write it to
/// `cert`/`key`, and return its SHA-256 fingerprint.
pub fn mint_server(pki: &Pki, cert: &Path, key: &Path) -> String {
    let issuer = mcpgw::tls::pki::load_issuer(
        "ca.crt",
        &std::fs::read(pki.file("ca.crt")).unwrap(),
        "ca.key",
        &std::fs::read(pki.file("ca.key")).unwrap(),
    )
    .unwrap();
    let minted = mcpgw::tls::pki::issue_server(
        &issuer,
        "localhost",
        &["localhost".into(), "127.0.0.1".into()],
        30,
        mcpgw::cli::KeyType::EcdsaP256,
    )
    .unwrap();
    write_atomically(cert, minted.cert_pem.as_bytes());
    write_atomically(key, minted.key_pem.as_bytes());
    fingerprint_pem(minted.cert_pem.as_bytes())
}

/// Replace a file in one rename, as `cp` to a temp name + `mv` would.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// SHA-256 of the first certificate in a PEM buffer.
pub fn fingerprint_pem(pem: &[u8]) -> String {
    let certs = mcpgw::tls::pem::certs("pem", pem).unwrap();
    mcpgw::tls::x509::fingerprint(&certs[0])
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The NET-01/NET-02 report's openssl steps (1.1 and 2.2), verbatim but for the directory.
pub fn report_pki(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:4096",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "365",
            "-nodes",
            "-subj",
            "/CN=Test CA",
        ],
    );
    for (name, cn) in [
        ("server", "localhost"),
        ("client", "Client"),
        ("server-new", "localhost"),
    ] {
        openssl(dir, &["genrsa", "-out", &format!("{name}.key"), "2048"]);
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "365",
            ],
        );
    }
}

/// `curl` as the report uses it; returns (HTTP status, body).
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}
