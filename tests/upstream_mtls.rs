//! NET-01: upstreams behind mutual TLS, with the official Python MCP SDK as the upstream
//! (uvicorn, `ssl.CERT_REQUIRED`). Every call must arrive with the upstream's own identity.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::py::{self, PyUpstream};
use common::{Dir, Gateway, Pki, curl};
use serde_json::{Value, json};

/// A gateway on plain loopback HTTP without auth, for tests that drive it with curl.
fn plain_gateway(dir: &Dir, extra: &[&str]) -> Gateway {
    let mut args = vec![
        "--no-auth",
        "--health-interval",
        "1",
        "--health-threshold",
        "2",
        "--request-timeout",
        "5",
    ];
    args.extend_from_slice(extra);
    Gateway::start(dir, &args)
}

fn mcp(gw: &Gateway, path: &str, body: Value) -> Value {
    let url = format!("http://{}{path}", gw.addr);
    let (status, text) = curl(&[
        "-X",
        "POST",
        &url,
        "-H",
        "content-type: application/json",
        "-d",
        &body.to_string(),
    ]);
    assert_eq!(status, 200, "{path} {body}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn call_tool(gw: &Gateway, name: &str, args: Value) -> Value {
    mcp(
        gw,
        "/mcp",
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}}),
    )
}

fn tool_text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {answer}"))
        .to_owned()
}

fn gateway_json(dir: &Dir, name: &str) -> Value {
    let (stdout, _) = dir.run_expect(&["gateway", "show", name, "--json"], 0);
    serde_json::from_str(&stdout).unwrap()
}

fn wait_status(dir: &Dir, name: &str, status: &str, timeout: Duration) -> Value {
    wait_view(dir, name, status, timeout, |view| {
        view["health"]["status"] == status
    })
}

/// `name`'s view once `holds` holds of it (`what` it waits for, for the failure message).
fn wait_view(
    dir: &Dir,
    name: &str,
    what: &str,
    timeout: Duration,
    holds: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let view = gateway_json(dir, name);
        if holds(&view) {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {what}: {view}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn report_steps_verbatim_register_stay_online_list_and_call() {
    // Over 100 lines on purpose: one end-to-end scenario whose steps depend on the ones
    // before (the same gateway, sessions and upstreams throughout), read top to bottom.
    let py = py::python();
    let dir = Dir::new();
    let certs = dir.join("certs");
    common::report_pki(&certs);
    let port = py::free_port();
    let _up = PyUpstream::start(
        &py,
        port,
        &certs.join("ca.crt"),
        &certs.join("server.crt"),
        &certs.join("server.key"),
        &["--transport", "sse"],
    );

    // The gateway serves HTTPS with the report's own (v1) server certificate, auth on.
    let gw = Gateway::start(
        &dir,
        &[
            "--tls-cert",
            s(&certs.join("server.crt")),
            "--tls-key",
            s(&certs.join("server.key")),
            "--health-interval",
            "1",
        ],
    );
    // The report's $TOKEN registers upstreams: an administrator's.
    let (token, _) = dir.run_expect(&["token", "create", "--role", "admin"], 0);
    let token = token.trim();
    let base = format!("https://localhost:{}", gw.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", gw.addr.port());
    let auth = format!("Authorization: Bearer {token}");

    // Step 1.3, with the report's JSON (paths under this test's directory).
    let body = json!({
        "name": "mtls-test-server",
        "url": format!("https://localhost:{port}/sse"),
        "tls_config": {
            "ca_cert": certs.join("ca.crt"),
            "client_cert": certs.join("client.crt"),
            "client_key": certs.join("client.key"),
        }
    });
    let (status, text) = curl(&[
        "--cacert",
        s(&certs.join("ca.crt")),
        "--resolve",
        &resolve,
        "-X",
        "POST",
        &format!("{base}/gateways"),
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        &body.to_string(),
    ]);
    assert_eq!(status, 201, "{text}");
    let view: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(view["health"]["status"], "online", "{view}");
    assert_eq!(view["tls"]["client_subject"], "CN=Client");
    assert!(
        view["warnings"][0]
            .as_str()
            .unwrap()
            .contains("legacy CN-only certificate accepted"),
        "{view}"
    );
    assert!(!text.contains("PRIVATE KEY"));

    // Online across several health intervals.
    std::thread::sleep(Duration::from_millis(3500));
    let view = gateway_json(&dir, "mtls-test-server");
    assert_eq!(view["health"]["status"], "online", "{view}");
    assert_eq!(view["health"]["consecutive_failures"], 0, "{view}");

    // Step 1.4: tools/list at /mcp/http, without initialize.
    let (status, text) = curl(&[
        "--cacert",
        s(&certs.join("ca.crt")),
        "--resolve",
        &resolve,
        "-X",
        "POST",
        &format!("{base}/mcp/http"),
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}"#,
    ]);
    assert_eq!(status, 200, "{text}");
    let list: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"mtls-test-server__echo") && names.contains(&"mtls-test-server__whoami"),
        "{names:?}"
    );

    // And a call returns the upstream's answer, made with the client certificate.
    let call = json!({"jsonrpc": "2.0", "id": "c1", "method": "tools/call", "params": {"name": "mtls-test-server__whoami", "arguments": {}}});
    let (status, text) = curl(&[
        "--cacert",
        s(&certs.join("ca.crt")),
        "--resolve",
        &resolve,
        "-X",
        "POST",
        &format!("{base}/mcp"),
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        &call.to_string(),
    ]);
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["id"], "c1");
    assert_eq!(tool_text(&answer), "Client");
    assert!(!gw.log().contains(token), "token leaked into the log");
}

fn second_client(pki: &Pki, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let issuer = mcpgw::tls::pki::load_issuer(
        "ca",
        &std::fs::read(pki.file("ca.crt")).unwrap(),
        "ca.key",
        &std::fs::read(pki.file("ca.key")).unwrap(),
    )
    .unwrap();
    let c = mcpgw::tls::pki::issue_client(&issuer, cn, 30, mcpgw::cli::KeyType::EcdsaP256).unwrap();
    let (crt, key) = (
        pki.dir.join(format!("{cn}.crt")),
        pki.dir.join(format!("{cn}.key")),
    );
    std::fs::write(&crt, c.cert_pem).unwrap();
    std::fs::write(&key, c.key_pem).unwrap();
    (crt, key)
}

#[test]
fn gateway_add_streamable_http_both_eras_and_client_blind_regression() {
    // Over 100 lines on purpose: one end-to-end scenario whose steps depend on the ones
    // before (the same gateway, sessions and upstreams throughout), read top to bottom.
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let (bob_crt, bob_key) = second_client(&pki, "bob");
    // Two upstreams trusting the same CA; one speaks 2026-07-28, the other only the session era.
    let (modern, legacy) = PyUpstream::both_eras(&py, &pki);
    let (p1, p2) = (modern.port, legacy.port);
    let gw = plain_gateway(&dir, &[]);

    let (out, _) = dir.gateway_add_mtls("alpha", &format!("https://localhost:{p1}/mcp"), &pki);
    assert!(out.contains("registered alpha: online"), "{out}");
    let (out, _) = dir.run_expect(
        &[
            "gateway",
            "add",
            "beta",
            &format!("https://localhost:{p2}/mcp"),
            "--ca-cert",
            &pki.s("ca.crt"),
            "--client-cert",
            s(&bob_crt),
            "--client-key",
            s(&bob_key),
        ],
        0,
    );
    assert!(out.contains("registered beta: online"), "{out}");

    let alpha = gateway_json(&dir, "alpha");
    let beta = gateway_json(&dir, "beta");
    assert_eq!(alpha["era"], "stateless", "{alpha}");
    assert_eq!(alpha["protocol_version"], "2026-07-28");
    assert_eq!(beta["era"], "session", "{beta}");
    assert_eq!(beta["protocol_version"], "2025-11-25");

    // Same CA, different client identities: each call arrives with its own.
    for _ in 0..3 {
        assert_eq!(
            tool_text(&call_tool(&gw, "alpha__whoami", json!({}))),
            "mcpgw-client"
        );
        assert_eq!(tool_text(&call_tool(&gw, "beta__whoami", json!({}))), "bob");
    }
    assert_eq!(
        tool_text(&call_tool(&gw, "alpha__echo", json!({"text": "héllo"}))),
        "héllo"
    );
    assert_eq!(
        tool_text(&call_tool(&gw, "beta__add", json!({"a": 2, "b": 40}))),
        "42"
    );

    // `mcpgw call` through the control socket, and as a direct MCP client of the upstream.
    let (out, _) = dir.run_expect(
        &[
            "call",
            "tools/call",
            r#"{"name":"beta__echo","arguments":{"text":"via call"}}"#,
        ],
        0,
    );
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["content"][0]["text"], "via call", "{out}");
    let (out, _) = dir.run_expect(
        &[
            "call",
            "tools/list",
            "--url",
            &format!("https://localhost:{p1}/mcp"),
            "--ca-cert",
            &pki.s("ca.crt"),
            "--client-cert",
            &pki.s("client.crt"),
            "--client-key",
            &pki.s("client.key"),
        ],
        0,
    );
    assert!(out.contains("\"whoami\""), "{out}");
    let (_, err) = dir.run_expect(&["call", "tools/call", r#"{"name":"nope__x"}"#], 1);
    assert!(err.contains("no upstream named 'nope'"), "{err}");

    // Per-upstream endpoint: unprefixed names.
    let list = mcp(
        &gw,
        "/servers/beta/mcp",
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    );
    assert!(
        list["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "whoami"),
        "{list}"
    );

    // Resources and prompts come through too.
    let res = mcp(
        &gw,
        "/mcp",
        json!({"jsonrpc": "2.0", "id": 3, "method": "resources/list"}),
    );
    let uri = res["result"]["resources"][0]["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    // Read where it was listed: both upstreams offer it, so `/mcp` names it `mcpgw://<upstream>/…`.
    let read = mcp(
        &gw,
        "/mcp",
        json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": uri}}),
    );
    assert!(read["result"]["contents"][0]["text"].is_string(), "{read}");
    let prompts = mcp(
        &gw,
        "/mcp",
        json!({"jsonrpc": "2.0", "id": 5, "method": "prompts/list"}),
    );
    let pname = prompts["result"]["prompts"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(pname.contains("__"), "{pname}");
    let got = mcp(
        &gw,
        "/mcp",
        json!({"jsonrpc": "2.0", "id": 6, "method": "prompts/get", "params": {"name": pname, "arguments": {"name": "Ada"}}}),
    );
    assert!(got["result"]["messages"].is_array(), "{got}");
}

#[test]
fn client_certificate_is_sent_when_trust_comes_from_the_system_store() {
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let port = py::free_port();
    let _up = PyUpstream::with_pki(&py, port, &pki, &["--transport", "sse"]);
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
        .env("SSL_CERT_FILE", pki.file("ca.crt"));
    let gw = Gateway::spawn(cmd);
    dir.run_expect(
        &[
            "gateway",
            "add",
            "sys",
            &format!("https://localhost:{port}/sse"),
            "--client-cert",
            &pki.s("client.crt"),
            "--client-key",
            &pki.s("client.key"),
        ],
        0,
    );
    assert_eq!(
        tool_text(&call_tool(&gw, "sys__whoami", json!({}))),
        "mcpgw-client"
    );
}

#[test]
fn missing_client_certificate_and_ip_name_mismatch_are_diagnosed() {
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    // A server certificate for localhost only (no IP SANs).
    let (lh_crt, lh_key) = pki.localhost_only();
    let port = py::free_port();
    let _up = PyUpstream::start(
        &py,
        port,
        &pki.file("ca.crt"),
        &lh_crt,
        &lh_key,
        &["--transport", "streamable-http"],
    );
    let _gw = plain_gateway(&dir, &[]);

    let (_, stderr) = dir.run_expect(
        &[
            "gateway",
            "add",
            "nocert",
            &format!("https://localhost:{port}/mcp"),
            "--ca-cert",
            &pki.s("ca.crt"),
        ],
        1,
    );
    assert!(
        stderr.contains("the upstream requires a client certificate"),
        "{stderr}"
    );

    let ip_url = format!("https://127.0.0.1:{port}/mcp");
    let (_, stderr) = dir.run_expect(
        &[
            "gateway",
            "add",
            "byip",
            &ip_url,
            "--ca-cert",
            &pki.s("ca.crt"),
            "--client-cert",
            &pki.s("client.crt"),
            "--client-key",
            &pki.s("client.key"),
        ],
        1,
    );
    assert!(
        stderr.contains("`localhost`")
            && stderr.contains("`127.0.0.1`")
            && stderr.contains("--server-name localhost"),
        "{stderr}"
    );

    let (out, _) = dir.run_expect(
        &[
            "gateway",
            "add",
            "byip",
            &ip_url,
            "--server-name",
            "localhost",
            "--ca-cert",
            &pki.s("ca.crt"),
            "--client-cert",
            &pki.s("client.crt"),
            "--client-key",
            &pki.s("client.key"),
        ],
        0,
    );
    assert!(out.contains("online"), "{out}");
    let (list, _) = dir.run_expect(&["gateway", "list"], 0);
    assert!(
        !list.contains("nocert"),
        "a refused registration was stored: {list}"
    );
}

#[test]
fn rotated_client_certificate_is_used_after_sighup() {
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let port = py::free_port();
    let _up = PyUpstream::with_pki(
        &py,
        port,
        &pki,
        &["--transport", "streamable-http", "--mode", "legacy"],
    );
    let gw = plain_gateway(&dir, &[]);
    let (crt, key) = (dir.join("live.crt"), dir.join("live.key"));
    std::fs::copy(pki.file("client.crt"), &crt).unwrap();
    std::fs::copy(pki.file("client.key"), &key).unwrap();
    dir.run_expect(
        &[
            "gateway",
            "add",
            "rot",
            &format!("https://localhost:{port}/mcp"),
            "--ca-cert",
            &pki.s("ca.crt"),
            "--client-cert",
            s(&crt),
            "--client-key",
            s(&key),
        ],
        0,
    );
    assert_eq!(
        tool_text(&call_tool(&gw, "rot__whoami", json!({}))),
        "mcpgw-client"
    );

    let (new_crt, new_key) = second_client(&pki, "rotated-client");
    common::write_atomically(&key, &std::fs::read(new_key).unwrap());
    common::write_atomically(&crt, &std::fs::read(new_crt).unwrap());
    gw.signal(common::SIGHUP);
    gw.wait_log_count(
        "upstream TLS identity changed on disk",
        1,
        Duration::from_secs(10),
    );
    assert_eq!(
        tool_text(&call_tool(&gw, "rot__whoami", json!({}))),
        "rotated-client"
    );
}

#[test]
fn killed_upstream_goes_offline_and_comes_back_and_registrations_survive_restart() {
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let port = py::free_port();
    let mut up = PyUpstream::with_pki(&py, port, &pki, &["--transport", "sse"]);
    let gw = plain_gateway(&dir, &[]);
    dir.gateway_add_mtls("flaky", &format!("https://localhost:{port}/sse"), &pki);

    up.kill();
    let killed = Instant::now();
    let view = wait_status(&dir, "flaky", "offline", Duration::from_secs(20));
    // threshold 2 x interval 1 s, plus a request timeout of slack.
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "offline only after {:?}",
        killed.elapsed()
    );
    assert!(
        view["health"]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{view}"
    );
    let answer = call_tool(&gw, "flaky__echo", json!({"text": "x"}));
    let msg = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("upstream 'flaky' is offline since"),
        "{answer}"
    );

    up.restart(&py);
    wait_status(&dir, "flaky", "online", Duration::from_secs(20));
    assert_eq!(
        tool_text(&call_tool(&gw, "flaky__echo", json!({"text": "back"}))),
        "back"
    );

    // Restart the gateway on the same data dir: the registration is still there and online
    // (its stored health, at once); its catalog comes with the check right after start.
    drop(gw);
    let gw = plain_gateway(&dir, &[]);
    let view = gateway_json(&dir, "flaky");
    assert_eq!(view["health"]["status"], "online", "{view}");
    wait_view(
        &dir,
        "flaky",
        "checked (its 3 tools listed)",
        Duration::from_secs(20),
        |view| view["tools"].as_array().map(Vec::len) == Some(3),
    );
    assert_eq!(
        tool_text(&call_tool(&gw, "flaky__echo", json!({"text": "persisted"}))),
        "persisted"
    );
}

/// uvicorn closes a keep-alive connection after 5 s idle. With health checks out of the way
/// (1 h interval), the pooled mTLS connection is dead by the second call: that call must be
/// answered on a new connection, with the client certificate, and never see the closed one.
#[test]
fn a_pooled_connection_the_upstream_closed_while_idle_is_replaced() {
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let port = py::free_port();
    let _up = PyUpstream::with_pki(&py, port, &pki, &["--transport", "streamable-http"]);
    let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
    dir.gateway_add_mtls("idle", &format!("https://localhost:{port}/mcp"), &pki);
    for round in 0..3 {
        if round > 0 {
            std::thread::sleep(Duration::from_secs(6));
        }
        let answer = call_tool(&gw, "idle__whoami", json!({}));
        assert_eq!(
            tool_text(&answer),
            "mcpgw-client",
            "round {round}: {answer}"
        );
    }
}

#[test]
fn the_tls_flags_mean_the_same_in_every_command_that_dials_a_server() {
    let dir = Dir::new();
    // A client certificate without its key is a usage error wherever the flags appear.
    for command in [
        &["gateway", "add", "x", "https://127.0.0.1:1/mcp"][..],
        &["probe", "https://127.0.0.1:1/mcp"][..],
        &["connect", "https://127.0.0.1:1/mcp"][..],
        &["call", "tools/list", "--url", "https://127.0.0.1:1/mcp"][..],
    ] {
        let mut args = command.to_vec();
        args.extend(["--client-cert", "c.pem"]);
        let (_, err) = dir.run_expect(&args, 2);
        assert!(err.contains("--client-key"), "{command:?}: {err}");
    }
    // Through the control socket there is no server to dial: TLS flags without --url are refused.
    let (_, err) = dir.run_expect(&["call", "tools/list", "--ca-cert", "ca.pem"], 2);
    assert!(err.contains("--url"), "{err}");
}
