//! The Python MCP SDK upstream fixture (`tests/fixtures/py_upstream.py`), run as a real process.
//!
//! The SDK is installed into `target/py-venv` on first use ([`super::prereq::python`]); a test
//! that needs it fails with the reason when it cannot be installed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The venv's python, installed on first use (panics with the reason if it cannot be).
pub fn python() -> PathBuf {
    super::prereq::python()
}

/// A free TCP port on 127.0.0.1 (the fixture binds it right after).
pub use super::free_port;

/// A running fixture, killed on drop.
pub struct PyUpstream {
    child: Child,
    pub port: u16,
    pub url: String,
    log: Arc<Mutex<String>>,
    args: Vec<String>,
}

impl PyUpstream {
    /// Start `py_upstream.py` with TLS material from `certs` (ca.crt, and `server_cert`/`server_key`).
    pub fn start(py: &Path, port: u16, ca: &Path, cert: &Path, key: &Path, extra: &[&str]) -> Self {
        Self::start_script("py_upstream.py", py, port, ca, cert, key, extra)
    }

    /// [`PyUpstream::start`] for another fixture script in `tests/fixtures` that takes the same
    /// listening and TLS options (`py_upstream.add_tls_arguments`).
    pub fn start_script(
        script: &str,
        py: &Path,
        port: u16,
        ca: &Path,
        cert: &Path,
        key: &Path,
        extra: &[&str],
    ) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(script);
        let mut args: Vec<String> = vec![
            script.display().to_string(),
            "--port".into(),
            port.to_string(),
            "--ca".into(),
            ca.display().to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Self::spawn(py, port, args)
    }

    /// Two Streamable-HTTP upstreams serving `pki`: one speaks 2026-07-28, the other only
    /// the session era.
    pub fn both_eras(py: &Path, pki: &super::Pki) -> (Self, Self) {
        let modern = Self::with_pki(py, free_port(), pki, &["--transport", "streamable-http"]);
        let legacy = Self::with_pki(
            py,
            free_port(),
            pki,
            &["--transport", "streamable-http", "--mode", "legacy"],
        );
        (modern, legacy)
    }

    /// [`PyUpstream::start`] serving `pki`'s `server.crt` and trusting its `ca.crt`.
    pub fn with_pki(py: &Path, port: u16, pki: &super::Pki, extra: &[&str]) -> Self {
        Self::start(
            py,
            port,
            &pki.file("ca.crt"),
            &pki.file("server.crt"),
            &pki.file("server.key"),
            extra,
        )
    }

    fn spawn(py: &Path, port: u16, args: Vec<String>) -> Self {
        let mut child = Command::new(py)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python fixture");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("READY ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("python fixture did not start:\n{}", log.lock().unwrap());
            }
        };
        Self {
            child,
            port,
            url,
            log,
            args,
        }
    }

    /// The fixture's stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Kill it (the port becomes free).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port with the same arguments.
    pub fn restart(&mut self, py: &Path) {
        self.kill();
        // The old value is dropped here: its kill/wait on an already reaped child are no-ops.
        *self = Self::spawn(py, self.port, self.args.clone());
    }
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python SDK server (mTLS) of the era `mode` ("legacy" or "modern") serving resource
/// subscriptions (its tool `touch(uri)` sends `notifications/resources/updated` outside any
/// request: on a session's standalone `GET` stream, and on `subscriptions/listen` streams),
/// and its port.
pub fn subscriptions_upstream(py: &Path, pki: &super::Pki, mode: &str) -> (PyUpstream, u16) {
    let port = free_port();
    (subscriptions_upstream_at(py, pki, mode, port), port)
}

/// [`subscriptions_upstream`] on `port` (to start one again where it was).
pub fn subscriptions_upstream_at(py: &Path, pki: &super::Pki, mode: &str, port: u16) -> PyUpstream {
    let extra = [
        "--transport",
        "streamable-http",
        "--mode",
        mode,
        "--subscriptions",
    ];
    PyUpstream::with_pki(py, port, pki, &extra)
}
