//! HAProxy in front of several gateways (issue 22), started by the test as a child process with
//! a configuration written into the test's temp dir, killed on drop. The binary comes from
//! Debian's `haproxy` package (`.ci/setup` installs it); without it the test fails.
//!
//! The configuration is docs/DEPLOYMENT.md's "HAProxy, plain HTTP to the instances" (a test
//! checks the documented copy is [`config`]'s text): round-robin without stickiness (sessions are
//! portable), a connection refused by a stopping instance retried on another (`retries`,
//! `option redispatch`), a `/ready` check with the probe token. Only the addresses, the admin
//! socket the test reads server states from and the check's pace ([`TEST_CHECK`]) differ.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Dir;

/// Where Debian's package puts the binary.
const BINARY: &str = "/usr/sbin/haproxy";

/// A running HAProxy, killed on drop.
pub struct Haproxy {
    child: Child,
    /// The frontend's address on 127.0.0.1.
    pub addr: SocketAddr,
    /// The admin socket (`show stat`).
    stats: PathBuf,
    log: Arc<Mutex<String>>,
}

/// The checks' pace in the tests: an instance leaves and comes back in well under a second.
pub const TEST_CHECK: &str = "inter 200ms fall 2 rise 1";

/// The configuration: one frontend on `bind`, one backend `mcpgw` of `servers` (named gw1,
/// gw2, ...), checked on `/ready` with `probe_token` at the pace `check` says. `globals` go in
/// a `global` section first (none in the documentation's copy).
pub fn config(
    globals: &[String],
    bind: &str,
    servers: &[String],
    probe_token: &str,
    check: &str,
) -> String {
    let global: String = if globals.is_empty() {
        String::new()
    } else {
        let lines: String = globals.iter().map(|g| format!("    {g}\n")).collect();
        format!("global\n{lines}\n")
    };
    let servers: String = servers
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("    server gw{} {addr}\n", i + 1))
        .collect();
    format!(
        "{global}defaults
    mode http
    timeout connect 5s
    # MCP streams (GET /mcp, /sse, subscriptions/listen) stay open for a long time.
    timeout client 1h
    timeout server 1h

frontend mcp
    bind {bind}
    default_backend mcpgw

backend mcpgw
    balance roundrobin
    # A connection refused by an instance that is stopping is tried on another.
    retries 3
    option redispatch
    option httpchk
    http-check send meth GET uri /ready ver HTTP/1.1 hdr Host localhost hdr Authorization \"Bearer {probe_token}\"
    http-check expect status 200
    default-server check {check}
{servers}"
    )
}

impl Haproxy {
    /// Write [`config`] into `dir`, check it (`haproxy -c`), start HAProxy on a free port and
    /// wait until every server is `UP`.
    pub fn start(dir: &Dir, servers: &[SocketAddr], probe_token: &str) -> Self {
        assert!(
            Path::new(BINARY).exists(),
            "HAProxy is not installed ({BINARY} is missing): apt-get install haproxy (.ci/setup does)"
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], super::free_port()));
        let stats = dir.join("haproxy.sock");
        let cfg = dir.join("haproxy.cfg");
        let servers: Vec<String> = servers.iter().map(SocketAddr::to_string).collect();
        let globals = [format!("stats socket {} level admin", stats.display())];
        let text = config(
            &globals,
            &addr.to_string(),
            &servers,
            probe_token,
            TEST_CHECK,
        );
        std::fs::write(&cfg, text).unwrap();
        let check = Command::new(BINARY)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "haproxy -c refused the configuration:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        // -db: stay in the foreground, logging to stderr.
        let mut child = Command::new(BINARY)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start haproxy");
        let log = super::collect_lines(child.stderr.take().unwrap());
        let proxy = Self {
            child,
            addr,
            stats,
            log,
        };
        proxy.wait_up(servers.len(), Duration::from_secs(20));
        proxy
    }

    /// `http://ADDR/mcp` of the frontend.
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base())
    }

    /// `http://ADDR` of the frontend.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What HAProxy logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Each server of the backend as HAProxy's admin socket shows it (`show stat`).
    pub fn servers(&self) -> Vec<Server> {
        let Ok(mut conn) = UnixStream::connect(&self.stats) else {
            return Vec::new();
        };
        conn.write_all(b"show stat\n").unwrap();
        let mut csv = String::new();
        conn.read_to_string(&mut csv).unwrap();
        // CSV under a header line `# pxname,svname,qcur,...`.
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (name, status) = (column("svname"), column("status"));
        let (eresp, srv_abrt) = (column("eresp"), column("srv_abrt"));
        lines
            .filter(|l| l.starts_with("mcpgw,") && !l.starts_with("mcpgw,BACKEND,"))
            .map(|l| {
                let fields: Vec<&str> = l.split(',').collect();
                let count = |i: usize| fields[i].parse::<usize>().unwrap_or_default();
                Server {
                    name: fields[name].to_owned(),
                    status: fields[status].to_owned(),
                    lost: count(eresp) + count(srv_abrt),
                }
            })
            .collect()
    }

    /// Wait until `count` servers are `UP`; past `timeout`, panic with the states and the log.
    pub fn wait_up(&self, count: usize, timeout: Duration) {
        super::wait_for(timeout, || {
            let servers = self.servers();
            if servers.iter().filter(|s| s.status == "UP").count() >= count {
                return Ok(());
            }
            Err(format!(
                "HAProxy did not see {count} servers UP within {timeout:?}: {servers:?}\n--- log\n{}",
                self.log()
            ))
        })
    }
}

/// One server of the backend.
#[derive(Debug)]
pub struct Server {
    /// gw1, gw2, ...
    pub name: String,
    /// `UP`, `DOWN`, `UP 1/2` (going down), ...
    pub status: String,
    /// Requests it took and never answered in full (`eresp` + `srv_abrt`).
    pub lost: usize,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
