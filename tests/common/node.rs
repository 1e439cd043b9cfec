//! Server fixtures on the official TypeScript SDK (`tests/fixtures/ts/*.mjs`), run as real
//! processes on the `node` found on `PATH`, their SDK installed on first use
//! ([`super::prereq::typescript_sdk`]).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running fixture, killed when dropped, however the test ends.
pub struct NodeServer {
    child: Child,
    /// What the fixture printed after `READY ` (its URL).
    pub url: String,
}

impl NodeServer {
    /// Start `tests/fixtures/ts/<script> ARGS` and wait for its `READY <url>` line.
    pub fn start(script: &str, args: &[&str]) -> Self {
        let path = super::prereq::typescript_sdk().join(script);
        let mut child = Command::new("node")
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {}: {e}", path.display()));
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        let Some(url) = ready.trim().strip_prefix("READY ") else {
            let _ = child.kill();
            panic!("{script} did not start: its first line was {ready:?}");
        };
        Self {
            url: url.to_owned(),
            child,
        }
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
