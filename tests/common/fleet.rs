//! Three gateways on one PostgreSQL store behind HAProxy (round-robin, no stickiness), the
//! echo fixture registered as `rs` through the first: what `tests/ha.rs` and
//! `tests/ha_sessions.rs` run against.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::clients::echo_modern;
use super::haproxy::Haproxy;
use super::load::CALL_TIMEOUT;
use super::postgres::Postgres;
use super::upstream::Upstream;
use super::{Dir, Gateway, Instance};

/// The `/ready` check's token, a static client token on every instance.
pub const PROBE: &str = "ha-probe-token-5d0c1e7a9b";
/// The clients' token.
pub const CLIENT: &str = "ha-client-token-83f2a6c4d1";
/// Gateways behind the balancer.
pub const INSTANCES: usize = 3;

/// PostgreSQL, the echo fixture registered as `rs`, three gateways and HAProxy in front.
pub struct Fleet {
    pub pg: Postgres,
    pub up: Upstream,
    pub instances: Vec<Instance>,
    pub proxy: Haproxy,
    pub rt: tokio::runtime::Runtime,
}

/// `mcpgw serve` in `dir` on `listen`, with the tokens and the shared store (`--upgrade` too if
/// `upgrade`), once it says it serves.
pub fn serve(dir: &Dir, store: &str, listen: &str, upgrade: bool) -> Gateway {
    let mut cmd = dir.cmd();
    cmd.arg("serve");
    if upgrade {
        cmd.arg("--upgrade");
    }
    cmd.args([
        "--listen",
        listen,
        "--config",
        "mcpgw.toml",
        "--store",
        store,
    ]);
    Gateway::spawn(cmd)
}

impl Fleet {
    /// Everything started, `rs` registered through the first instance and callable through
    /// the balancer.
    pub fn start() -> Self {
        let pg = Postgres::start();
        let up = Upstream::start(&["--tasks"]);
        let instances: Vec<Instance> = (0..INSTANCES)
            .map(|_| {
                let dir = Dir::new();
                std::fs::write(
                    dir.join("mcpgw.toml"),
                    format!(
                        "drain_delay_ms = 2000\n[auth]\ntokens = [\n  {{ token = \"{PROBE}\", name = \"probe\", role = \"client\" }},\n  {{ token = \"{CLIENT}\", name = \"client\", role = \"client\" }},\n]\n"
                    ),
                )
                .unwrap();
                let gw = serve(&dir, &pg.url(), "127.0.0.1:0", false);
                Instance { dir, gw }
            })
            .collect();
        let addrs: Vec<SocketAddr> = instances.iter().map(|i| i.gw.addr).collect();
        let proxy = Haproxy::start(&instances[0].dir, &addrs, PROBE);
        let fleet = Self {
            pg,
            up,
            instances,
            proxy,
            rt: tokio::runtime::Runtime::new().unwrap(),
        };
        fleet.register_through(0);
        fleet.until_everywhere(true, "rs registered");
        fleet
    }

    /// `mcpgw gateway add rs` through instance `i`.
    pub fn register_through(&self, i: usize) {
        let url = format!("{}/mcp", self.up.base);
        self.instances[i]
            .dir
            .run_expect(&["gateway", "add", "rs", &url], 0);
    }

    /// Call `rs__echo` on each instance directly, then through the balancer as many times as
    /// there are instances, until each answers as `callable` says; the time it took. Fails
    /// past a generous bound: the 1 s the design promises is printed, not asserted.
    pub fn until_everywhere(&self, callable: bool, what: &str) -> Duration {
        let http = client();
        let start = Instant::now();
        let mut urls: Vec<String> = self
            .instances
            .iter()
            .map(|i| format!("http://{}/mcp", i.gw.addr))
            .collect();
        urls.extend((0..INSTANCES).map(|_| self.proxy.mcp_url()));
        for url in &urls {
            loop {
                let answer = self
                    .rt
                    .block_on(echo_modern(&http, url, Some(CLIENT), "hi"));
                if answer.is_ok() == callable {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "{what}: {url} not {} within 20 s; last answer {answer:?}",
                    if callable { "callable" } else { "refusing" }
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let took = start.elapsed();
        println!("{what}: every instance and the balancer agree after {took:?}");
        took
    }

    /// Every log: the gateways', HAProxy's and PostgreSQL's.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (n, i) in self.instances.iter().enumerate() {
            all.push_str(&format!("--- gateway {n} log\n{}\n", i.gw.log()));
        }
        all.push_str(&format!("--- haproxy log\n{}\n", self.proxy.log()));
        all.push_str(&format!("--- postgres log\n{}\n", self.pg.log()));
        all
    }
}

/// A client with a bounded call time that keeps its connection to the balancer alive.
pub fn client() -> reqwest::Client {
    super::tls::install_provider();
    reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .unwrap()
}
