//! Interop with clients nobody here wrote: the official Python MCP SDK client (`mcp` 2.x) in
//! its modern (2026-07-28) and legacy (2025-11-25) modes, through mcpgw over HTTPS with a
//! bearer token, calling tools of mTLS upstreams of both eras (official Python SDK servers); and
//! an official Python SDK server's resource updates relayed to a subscribed client.

mod common;

use std::process::Command;

use common::py::{self, PyUpstream};
use common::{Dir, Gateway};
use serde_json::{Value, json};

struct Bed {
    dir: Dir,
    gw: Gateway,
    token: String,
    _ups: Vec<PyUpstream>,
}

fn bed(py: &std::path::Path) -> Bed {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let (p1, p2) = (py::free_port(), py::free_port());
    let modern = PyUpstream::with_pki(py, p1, &pki, &["--transport", "streamable-http"]);
    let legacy = PyUpstream::with_pki(py, p2, &pki, &["--transport", "sse", "--mode", "legacy"]);
    let gw = Gateway::start(
        &dir,
        &[
            "--tls-cert",
            &pki.s("server.crt"),
            "--tls-key",
            &pki.s("server.key"),
        ],
    );
    for (name, url) in [
        ("modern", format!("https://localhost:{p1}/mcp")),
        ("legacy", format!("https://localhost:{p2}/sse")),
    ] {
        dir.gateway_add_mtls(name, &url, &pki);
    }
    let (token, _) = dir.run_expect(&["token", "create"], 0);
    Bed {
        dir,
        gw,
        token: token.trim().to_owned(),
        _ups: vec![modern, legacy],
    }
}

fn py_client(
    py: &std::path::Path,
    bed: &Bed,
    path: &str,
    transport: &str,
    mode: &str,
    tool: &str,
    args: &str,
) -> Value {
    py_client_with(
        py,
        bed,
        path,
        transport,
        mode,
        &["--call", tool, "--args", args],
    )
}

/// `tests/fixtures/py_client.py` against the bed's gateway, with `extra` arguments.
fn py_client_with(
    py: &std::path::Path,
    bed: &Bed,
    path: &str,
    transport: &str,
    mode: &str,
    extra: &[&str],
) -> Value {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/py_client.py");
    let url = format!("https://localhost:{}{path}", bed.gw.addr.port());
    let out = Command::new(py)
        .arg(script)
        .args([
            "--url",
            &url,
            "--transport",
            transport,
            "--mode",
            mode,
            "--ca",
            bed.dir.join("pki/ca.crt").to_str().unwrap(),
        ])
        .args(["--bearer", &bed.token])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client ({mode}, {transport}) with {extra:?} failed: {}\n{stdout}\n--- gateway log\n{}",
        String::from_utf8_lossy(&out.stderr),
        bed.gw.log()
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn python_sdk_client_both_eras_over_streamable_http_reaches_both_eras_of_upstream() {
    let py = py::python();
    let bed = bed(&py);
    for (mode, version) in [("modern", "2026-07-28"), ("legacy", "2025-11-25")] {
        for upstream in ["modern", "legacy"] {
            let out = py_client(
                &py,
                &bed,
                "/mcp",
                "streamable-http",
                mode,
                &format!("{upstream}__add"),
                r#"{"a": 20, "b": 22}"#,
            );
            assert_eq!(
                out["result"], "42",
                "{mode} client -> {upstream} upstream: {out}"
            );
            assert_eq!(out["protocol_version"], version, "{out}");
            let tools: Vec<&str> = out["tools"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                tools.contains(&"modern__whoami") && tools.contains(&"legacy__whoami"),
                "{tools:?}"
            );
            let who = py_client(
                &py,
                &bed,
                "/mcp",
                "streamable-http",
                mode,
                &format!("{upstream}__whoami"),
                "{}",
            );
            assert_eq!(
                who["result"], "mcpgw-client",
                "the upstream must see the gateway's client certificate"
            );
        }
        // The per-upstream endpoint, unprefixed.
        let out = py_client(
            &py,
            &bed,
            "/servers/legacy/mcp",
            "streamable-http",
            mode,
            "echo",
            r#"{"text": "direct"}"#,
        );
        assert_eq!(out["result"], "direct", "{out}");
    }
}

#[test]
fn python_sdk_client_over_legacy_sse_reaches_both_eras_of_upstream() {
    let py = py::python();
    let bed = bed(&py);
    for upstream in ["modern", "legacy"] {
        let out = py_client(
            &py,
            &bed,
            "/sse",
            "sse",
            "legacy",
            &format!("{upstream}__add"),
            r#"{"a": 1, "b": 2}"#,
        );
        assert_eq!(out["result"], "3", "{upstream}: {out}");
        let who = py_client(
            &py,
            &bed,
            "/sse",
            "sse",
            "modern",
            &format!("{upstream}__whoami"),
            "{}",
        );
        assert_eq!(who["result"], "mcpgw-client", "{upstream}: {who}");
    }
    let out = py_client(
        &py,
        &bed,
        "/servers/modern/sse",
        "sse",
        "legacy",
        "echo",
        r#"{"text": "one upstream"}"#,
    );
    assert_eq!(out["result"], "one upstream", "{out}");
}

/// The official Python SDK as a session-era upstream with resource subscriptions: its update,
/// sent outside any request on the SDK's standalone `GET` stream, reaches the subscribed client
/// through mcpgw, and only after it subscribed.
#[test]
fn python_sdk_server_resource_updates_reach_the_subscribed_client_through_mcpgw() {
    use common::clients;
    use std::time::Duration;
    let py = py::python();
    let bed = plain_subscriptions(&py, "legacy");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let uri = "fixture://info";
    rt.block_on(async {
        let (session, mut notes) = session_and_stream(&bed.gw).await;
        let call = |id: u64| serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "touch", "arguments": {"uri": uri}}});
        let before = session.request(&call(1)).await.unwrap();
        assert_eq!(clients::text(&before), "not subscribed", "{before}");
        let subscribe = serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": uri}});
        let answer = session.request(&subscribe).await.unwrap();
        assert!(answer.get("result").is_some(), "{answer}");
        // The gateway opens its GET stream with the subscription: touched until an update
        // comes through.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut id = 3;
        let note = loop {
            let answer = session.request(&call(id)).await.unwrap();
            assert_eq!(clients::text(&answer), "sent", "{answer}");
            id += 1;
            let updated = "notifications/resources/updated";
            if let Some(note) = notes.next_of(updated, Duration::from_millis(500)).await {
                break note;
            }
            assert!(std::time::Instant::now() < deadline, "no update came through");
        };
        assert_eq!(note["params"]["uri"], uri, "{note}");
    });
}

/// A plain-HTTP gateway (no auth, health checks hourly) in front of a Python SDK server of the
/// era `mode` with resource subscriptions (mTLS), registered as `py`.
struct Plain {
    _dir: Dir,
    pki: common::Pki,
    up: PyUpstream,
    port: u16,
    gw: Gateway,
}

fn plain_subscriptions(py: &std::path::Path, mode: &str) -> Plain {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let (up, port) = py::subscriptions_upstream(py, &pki, mode);
    let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
    dir.gateway_add_mtls("py", &format!("https://localhost:{port}/mcp"), &pki);
    Plain {
        _dir: dir,
        pki,
        up,
        port,
        gw,
    }
}

/// A session on `/servers/py/mcp` of the plain-HTTP gateway `gw` (no auth), and its `GET` stream.
async fn session_and_stream(
    gw: &Gateway,
) -> (common::clients::Streamable, common::clients::EventReader) {
    use common::clients::{self, EventReader, Streamable};
    let (base, http) = (format!("http://{}", gw.addr), clients::http(None));
    let session = Streamable::open(http.clone(), &format!("{base}/servers/py/mcp"), None)
        .await
        .unwrap();
    let stream = http
        .get(format!("{base}/mcp"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session.session)
        .timeout(std::time::Duration::from_secs(90))
        .send();
    (session, EventReader::new(stream.await.unwrap()))
}

/// mcpgw (HTTPS, bearer token) in front of a Python SDK server of the era `mode` with resource
/// subscriptions (mTLS), registered as `py`.
fn subscriptions_bed(py: &std::path::Path, mode: &str) -> Bed {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let (up, port) = py::subscriptions_upstream(py, &pki, mode);
    let gw = Gateway::start_tls(&dir, &pki, &[]);
    dir.gateway_add_mtls("py", &format!("https://localhost:{port}/mcp"), &pki);
    let (token, _) = dir.run_expect(&["token", "create"], 0);
    Bed {
        dir,
        gw,
        token: token.trim().to_owned(),
        _ups: vec![up],
    }
}

/// Both ends official: the Python SDK client subscribes through mcpgw (HTTPS, bearer token) to
/// a resource of a Python SDK server behind it (mTLS), and the server's update reaches the
/// client's message handler on the SDK client's own standalone `GET` stream.
#[test]
fn python_sdk_client_gets_the_resource_updates_it_subscribed_to_through_mcpgw() {
    let py = py::python();
    let bed = subscriptions_bed(&py, "legacy");
    let uri = "fixture://info";
    let args = ["--subscribe", uri, "--touch", "touch"];
    let out = py_client_with(
        &py,
        &bed,
        "/servers/py/mcp",
        "streamable-http",
        "legacy",
        &args,
    );
    assert_eq!(out["protocol_version"], "2025-11-25", "{out}");
    assert_eq!(out["touch_before"], "not subscribed", "{out}");
    assert_eq!(out["updated"], uri, "{out}");
    assert!(out["touches"].as_u64().is_some_and(|n| n >= 1), "{out}");
}

/// The same with a 2026-07-28 client: the official Python SDK's `Client.listen` opens a
/// `subscriptions/listen` stream through mcpgw, is told the URI is granted, and the session-era
/// server's update arrives on that stream as a typed event.
#[test]
fn python_sdk_client_hears_resource_updates_on_a_listen_stream_through_mcpgw() {
    let py = py::python();
    let bed = subscriptions_bed(&py, "legacy");
    listen_hears_update(&py, &bed, "fixture://info");
}

/// The Python SDK client (2026-07-28) listens through `/servers/py/mcp` for `uri`, is granted
/// it, and hears of its update.
fn listen_hears_update(py: &std::path::Path, bed: &Bed, uri: &str) {
    listen_hears_update_on(py, bed, uri, "/servers/py/mcp", "streamable-http");
}

/// [`listen_hears_update`] on `path` over `transport`.
fn listen_hears_update_on(py: &std::path::Path, bed: &Bed, uri: &str, path: &str, transport: &str) {
    let args = ["--listen", uri, "--touch", "touch"];
    let out = py_client_with(py, bed, path, transport, "modern", &args);
    assert_eq!(out["protocol_version"], "2026-07-28", "{out}");
    let granted = json!({"resourceSubscriptions": [uri]});
    assert_eq!(out["honored"], granted, "{out}");
    assert_eq!(out["event"], "ResourceUpdated", "{out}");
    assert_eq!(out["updated"], uri, "{out}");
}

/// A 2026-07-28 server has no `resources/subscribe` and no stream outside a request: mcpgw
/// holds a `subscriptions/listen` stream to it naming the URIs its clients subscribed to. The
/// official Python SDK server behind it, the official Python SDK client in front, in both eras:
/// a session-era client's `resources/subscribe` (its update on the client's own `GET` stream),
/// and a 2026-07-28 client's `Client.listen`.
#[test]
fn python_sdk_clients_of_both_eras_hear_a_2026_07_28_servers_resource_updates_through_mcpgw() {
    let py = py::python();
    let bed = subscriptions_bed(&py, "modern");
    let uri = "fixture://info";
    let path = "/servers/py/mcp";
    let args = ["--subscribe", uri, "--touch", "touch"];
    let out = py_client_with(&py, &bed, path, "streamable-http", "legacy", &args);
    assert_eq!(out["protocol_version"], "2025-11-25", "{out}");
    assert_eq!(out["updated"], uri, "{out}");
    listen_hears_update(&py, &bed, uri);
}

/// A 2026-07-28 server's own list change (a tool added outside any listing, told on the
/// gateway's `subscriptions/listen` stream to it) reaches the gateway's catalog, and a
/// 2026-07-28 client listening to the gateway for tool changes hears of it.
#[test]
fn a_2026_07_28_servers_tool_list_change_reaches_the_catalog_and_the_gateways_listeners() {
    use common::clients::{self, EventReader, Streamable};
    use std::time::Duration;
    let py = py::python();
    let bed = subscriptions_bed(&py, "modern");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("https://localhost:{}", bed.gw.addr.port());
    let http = clients::http(Some(&bed.dir.join("pki/ca.crt")));
    let wait = Duration::from_secs(10);
    rt.block_on(async {
        let resp = clients::listen(
            &http,
            &format!("{base}/mcp"),
            Some(&bed.token),
            ("L", json!({"toolsListChanged": true})),
            "application/json, text/event-stream",
        )
        .await;
        let mut events = EventReader::new(resp);
        let ack = events.next(wait).await.expect("an acknowledgement");
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");

        let session = Streamable::open(http.clone(), &format!("{base}/mcp"), Some(&bed.token))
            .await
            .unwrap();
        let grow = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "py__grow", "arguments": {}}});
        let answer = session.request(&grow).await.unwrap();
        assert_eq!(clients::text(&answer), "grown", "{answer}");
        let note = events.next_of("notifications/tools/list_changed", wait).await;
        assert!(note.is_some(), "the listener must hear of the change");
        let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
        let deadline = std::time::Instant::now() + wait;
        loop {
            let tools = session.request(&list).await.unwrap();
            let names: Vec<Value> = tools["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].clone()).collect();
            if names.contains(&json!("py__extra")) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the new tool must be listed: {names:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// `subscriptions/listen` over legacy SSE: the official Python SDK client in 2026-07-28 mode on
/// `/servers/py/sse` (the envelope in each message, no headers) listens for a resource of a
/// session-era server behind mcpgw; the acknowledgement and the update come on its SSE stream.
#[test]
fn python_sdk_client_listens_over_legacy_sse_through_mcpgw() {
    let py = py::python();
    let bed = subscriptions_bed(&py, "legacy");
    listen_hears_update_on(&py, &bed, "fixture://info", "/servers/py/sse", "sse");
}

/// The gateway's `subscriptions/listen` stream to a 2026-07-28 server outlives the server: when
/// it restarts (and forgets every stream), the stream is opened again with the same URIs, and a
/// session-era client subscribed through mcpgw hears the next update without doing anything.
#[test]
fn the_listen_stream_to_a_2026_07_28_server_is_opened_again_after_it_restarts() {
    use std::time::Duration;
    let py = py::python();
    let bed = plain_subscriptions(&py, "modern");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let uri = "fixture://info";
    rt.block_on(async {
        let (session, mut notes) = session_and_stream(&bed.gw).await;
        let subscribe = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": uri}});
        let answer = session.request(&subscribe).await.unwrap();
        assert!(answer.get("result").is_some(), "{answer}");
        // Touched through mcpgw until an update comes back (the stream opens with the first
        // subscription).
        let mut id = 2;
        let mut touch_until_heard = async |what: &str| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let touch = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "touch", "arguments": {"uri": uri}}});
                id += 1;
                let answer = session.request(&touch).await.unwrap();
                assert!(answer.get("result").is_some(), "{answer}");
                let updated = "notifications/resources/updated";
                if let Some(note) = notes.next_of(updated, Duration::from_millis(500)).await {
                    assert_eq!(note["params"]["uri"], uri, "{note}");
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "{what}: no update came through");
            }
        };
        touch_until_heard("before the restart").await;
        drop(bed.up);
        let _up = py::subscriptions_upstream_at(&py, &bed.pki, "modern", bed.port);
        touch_until_heard("after the restart").await;
    });
}
