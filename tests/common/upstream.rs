//! The Rust upstream fixture (`examples/upstream.rs`), run as a real process.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The fixture's executable, built on first use (a stdio upstream runs it with `--stdio`).
pub fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = PathBuf::from(env!("CARGO_BIN_EXE_mcpgw"));
            let path = bin.parent().unwrap().join("examples/upstream");
            // `cargo test` builds examples; a filtered run (`--test x`) may not have.
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "--quiet", "--example", "upstream"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("cargo build --example upstream");
            assert!(status.success(), "cannot build the upstream fixture");
            assert!(path.exists(), "{} missing after build", path.display());
            path
        })
        .clone()
}

/// A running fixture, killed on drop.
pub struct Upstream {
    child: Child,
    /// `http(s)://127.0.0.1:PORT`
    pub base: String,
}

impl Upstream {
    /// Start over HTTPS with `pki`'s server certificate, requiring a client certificate from
    /// its CA (`CERT_REQUIRED`).
    pub fn start_mtls(pki: &super::Pki) -> Self {
        Self::start_mtls_with(pki, &[])
    }

    /// [`Upstream::start_mtls`] with more arguments (`--session-only`, ...).
    pub fn start_mtls_with(pki: &super::Pki, more: &[&str]) -> Self {
        let tls = [
            "--tls-cert",
            &pki.s("server.crt"),
            "--tls-key",
            &pki.s("server.key"),
            "--client-ca",
            &pki.s("ca.crt"),
        ];
        Self::start(&[&tls[..], more].concat())
    }

    /// Start with extra arguments (e.g. `--tls-cert F --tls-key F --client-ca F`).
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start upstream fixture");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(base) = line.strip_prefix("READY ") {
                    let _ = tx.send(base.to_owned());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("upstream fixture did not start");
        Self { child, base }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
