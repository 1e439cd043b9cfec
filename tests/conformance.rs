//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, server scenarios,
//! every spec version it offers), run against upstream fixtures directly and through mcpgw's
//! `/servers/{name}/mcp`, compared scenario by scenario: every scenario that passes directly must
//! pass through the gateway. The fixtures: the Rust one (`examples/upstream`), and one on each
//! official SDK in its default configuration (`tests/fixtures/conformance_py.py`,
//! `tests/fixtures/ts/conformance.mjs`) behind mTLS. Node 22 and the suite are installed on first
//! use (`.ci/setup-conformance`, through `common::prereq`), and so are the SDKs; the test fails
//! with the reason when they cannot be installed.

mod common;

use common::conformance::{Run, Scenario, regressions};
use common::node::NodeServer;
use common::py::{self, PyUpstream};
use common::upstream::Upstream;
use common::{Dir, Gateway, Pki};

/// Scenario runs the suite offers (0.1.16: 26 for 2025-06-18, 32 for 2025-11-25).
const SCENARIOS: usize = 58;

#[test]
fn every_scenario_the_upstream_passes_directly_passes_through_mcpgw() {
    // run.sh finds them itself; installing here first puts an install failure's reason in the
    // test's panic instead of behind run.sh's exit status.
    common::prereq::conformance_node();
    let dir = Dir::new();
    let up = Upstream::start(&[]);
    // The suite cannot send a bearer token: --no-auth, which mcpgw allows on loopback only.
    let gw = Gateway::start(&dir, &["--no-auth"]);
    dir.run_expect(&["gateway", "add", "conf", &format!("{}/mcp", up.base)], 0);

    let direct = Run::against(&format!("{}/mcp", up.base), None);
    let via = Run::against(&via_url(&gw, "conf"), None);
    let lost = regressions(&direct, &via, 50);
    assert!(
        lost.is_empty(),
        "pass directly but fail through mcpgw: {lost:?}"
    );
    // The fixture does not check Host/Origin; mcpgw does, so this one passes only through it.
    let rebinding = (
        "2025-11-25".to_owned(),
        "dns-rebinding-protection".to_owned(),
    );
    assert_eq!(via.passed.get(&rebinding), Some(&true));
}

/// The official Python SDK (mcp 2.x) in its default configuration answers `server/discover`
/// too, so the gateway's own connection to it is 2026-07-28, while the suite is a session-era
/// client. Each of the suite's sessions gets an upstream session of its own, initialized with
/// its capabilities (sampling, elicitation), so the server asks it directly, and its log level
/// is that session's: every scenario passes as it does directly.
#[test]
fn python_sdk_upstream_passes_through_mcpgw_every_scenario_it_passes_directly() {
    let py = py::python();
    let lost = sdk_direct_and_through_mcpgw("py", |pki, mutual| {
        let port = py::free_port();
        let open = ["--no-client-cert-required"];
        let extra: &[&str] = if mutual { &[] } else { &open };
        let (ca, cert, key) = (
            pki.file("ca.crt"),
            pki.file("server.crt"),
            pki.file("server.key"),
        );
        let up = PyUpstream::start_script("conformance_py.py", &py, port, &ca, &cert, &key, extra);
        let url = up.url.clone();
        (Box::new(up), url)
    });
    assert!(
        lost.is_empty(),
        "pass directly but fail through mcpgw: {lost:?}"
    );
}

/// The official TypeScript SDK (1.x: session era only) in its default configuration.
#[test]
fn typescript_sdk_upstream_passes_through_mcpgw_every_scenario_it_passes_directly() {
    let lost = sdk_direct_and_through_mcpgw("ts", |pki, mutual| {
        let (ca, cert, key) = (pki.s("ca.crt"), pki.s("server.crt"), pki.s("server.key"));
        let mut args = vec!["--ca", &ca, "--cert", &cert, "--key", &key];
        if !mutual {
            args.push("--no-client-cert-required");
        }
        let up = NodeServer::start("conformance.mjs", &args);
        let url = up.url.clone();
        (Box::new(up), url)
    });
    assert!(
        lost.is_empty(),
        "pass directly but fail through mcpgw: {lost:?}"
    );
}

/// The suite against an SDK fixture twice: directly, and through mcpgw (`--no-auth`: the suite
/// cannot send a bearer token). `start(pki, mutual)` starts the fixture over HTTPS with `pki`'s
/// server certificate, demanding a client certificate when `mutual`, and gives its URL. The
/// suite cannot present a client certificate, so the direct run goes to an instance that does
/// not demand one (its Node trusting the CA through NODE_EXTRA_CA_CERTS); mcpgw reaches another
/// that does, with `pki`'s client certificate. Every scenario must pass directly (else the
/// fixture, not mcpgw, is wrong); returns those that fail through mcpgw.
fn sdk_direct_and_through_mcpgw(
    name: &str,
    start: impl Fn(&Pki, bool) -> (Box<dyn std::any::Any>, String),
) -> Vec<Scenario> {
    common::prereq::conformance_node();
    let dir = Dir::new();
    // dns-rebinding-protection sends `Host: evil.example.com`, and the suite's Node checks the
    // server certificate against that name: with it in the certificate the handshake succeeds
    // and the SDK's own Host check is what answers.
    let pki = dir.cert_gen("pki", &["--san", "evil.example.com"]);
    let (_open, open_url) = start(&pki, false);
    let (_mutual, mutual_url) = start(&pki, true);
    let (status, _) = common::curl(&["--cacert", &pki.s("ca.crt"), &mutual_url]);
    assert_eq!(
        status, 0,
        "{mutual_url} must refuse a client without a certificate"
    );
    let gw = Gateway::start(&dir, &["--no-auth"]);
    dir.gateway_add_mtls(name, &mutual_url, &pki);

    let direct = Run::against(&open_url, Some(&pki.file("ca.crt")));
    let via = Run::against(&via_url(&gw, name), None);
    let lost = regressions(&direct, &via, SCENARIOS);
    let failing: Vec<&Scenario> = direct
        .passed
        .iter()
        .filter(|(_, p)| !**p)
        .map(|(k, _)| k)
        .collect();
    assert!(
        failing.is_empty(),
        "the {name} fixture must pass every scenario directly:\n{}",
        direct.table
    );
    lost
}

fn via_url(gw: &Gateway, name: &str) -> String {
    format!("http://127.0.0.1:{}/servers/{name}/mcp", gw.addr.port())
}
