//! Interop with the official TypeScript MCP SDK client (`@modelcontextprotocol/sdk` from npm)
//! over Streamable HTTP, through mcpgw over HTTPS with a bearer token, to mTLS upstreams of
//! both protocol eras. The client's SDK is installed on first use (`.ci/setup-node`, through
//! `common::prereq`), and so is the Python SDK for the upstreams; a test fails with the reason
//! when either cannot be installed.

mod common;

use std::path::Path;
use std::process::Command;

use common::node::NodeServer;
use common::py::{self, PyUpstream};
use common::upstream::Upstream;
use common::{Dir, Gateway};
use serde_json::Value;

/// Run the SDK client script with `args`, trusting `pki`'s CA.
fn node(client: &Path, pki: &common::Pki, args: &[&str]) -> std::process::Output {
    Command::new("node")
        .arg(client)
        .args(args)
        .env("NODE_EXTRA_CA_CERTS", pki.file("ca.crt"))
        .output()
        .unwrap()
}

/// The SDK client script, its SDK installed on first use.
fn ts_client() -> std::path::PathBuf {
    common::prereq::typescript_sdk().join("client.mjs")
}

/// The official TypeScript SDK server fixture (`server.mjs`, `--json` for its JSON answer mode)
/// on 127.0.0.1, and its base URL.
fn ts_server(json_mode: bool) -> (NodeServer, String) {
    let up = NodeServer::start("server.mjs", if json_mode { &["--json"] } else { &[] });
    let base = up.url.clone();
    (up, base)
}

#[test]
fn typescript_sdk_client_lists_and_calls_tools_of_mtls_upstreams_through_mcpgw() {
    let client = ts_client();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    // A session-era upstream (the Rust fixture over mTLS) and a 2026-07-28 official Python SDK
    // upstream.
    let rust = Upstream::start_mtls(&pki);
    let gw = Gateway::start(
        &dir,
        &[
            "--tls-cert",
            &pki.s("server.crt"),
            "--tls-key",
            &pki.s("server.key"),
        ],
    );
    let add = |name: &str, url: &str| {
        dir.gateway_add_mtls(name, url, &pki);
    };
    add("rs", &format!("https://localhost:{}/mcp", rust.port()));
    let py = py::python();
    let port = py::free_port();
    let _py_up = PyUpstream::with_pki(&py, port, &pki, &["--transport", "streamable-http"]);
    add("py", &format!("https://localhost:{port}/mcp"));
    let (token, _) = dir.run_expect(&["token", "create"], 0);
    let calls = [
        ("rs__whoami", "{}", "mcpgw-client"),
        ("rs__echo", r#"{"text":"from node"}"#, "from node"),
        ("py__add", r#"{"a":40,"b":2}"#, "42"),
        ("py__whoami", "{}", "mcpgw-client"),
    ];
    for (tool, args, expected) in calls {
        let url = format!("https://localhost:{}/mcp", gw.addr.port());
        let out = node(
            &client,
            &pki,
            &[
                "--url",
                &url,
                "--bearer",
                token.trim(),
                "--call",
                tool,
                "--args",
                args,
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "node client calling {tool}: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(v["result"], expected, "{tool}: {v}");
        let tools: Vec<&str> = v["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(tools.contains(&"rs__echo"), "{tools:?}");
    }
    // Without the token the SDK gets a 401 and the client fails.
    let url = format!("https://localhost:{}/mcp", gw.addr.port());
    let out = node(&client, &pki, &["--url", &url]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

/// The official TypeScript SDK client subscribes through mcpgw (HTTPS, bearer token) to a
/// resource of an official Python SDK server behind it (mTLS): the update reaches the client's
/// notification handler on the TypeScript SDK's own standalone `GET` stream, which it opens on
/// the endpoint it was given (`/servers/py/mcp`).
#[test]
fn typescript_sdk_client_gets_the_resource_updates_it_subscribed_to_through_mcpgw() {
    let client = ts_client();
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let (_up, port) = py::subscriptions_upstream(&py, &pki, "legacy");
    let gw = Gateway::start_tls(&dir, &pki, &[]);
    dir.gateway_add_mtls("py", &format!("https://localhost:{port}/mcp"), &pki);
    let (token, _) = dir.run_expect(&["token", "create"], 0);
    let uri = "fixture://info";
    let url = format!("https://localhost:{}/servers/py/mcp", gw.addr.port());
    let args = ["--url", &url, "--bearer", token.trim()];
    let out = node(
        &client,
        &pki,
        &[&args[..], &["--subscribe", uri, "--touch", "touch"]].concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node client subscribing: {}\n{stdout}\n--- gateway log\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["touch_before"], "not subscribed", "{v}");
    assert_eq!(v["updated"], uri, "{v}");
    assert!(v["touches"].as_u64().is_some_and(|n| n >= 1), "{v}");
}

/// The official TypeScript SDK as an upstream, on node's own HTTP/1.1 server (the third HTTP
/// implementation the pool talks to, after hyper and uvicorn): plain calls, progress streamed
/// back through mcpgw, and a call after node closed the idle pooled connection (its keep-alive
/// timeout is 5 s). Both of the SDK's answer modes: an event stream, and plain JSON.
#[test]
fn typescript_sdk_server_upstream_answers_through_mcpgw() {
    for json_mode in [false, true] {
        let dir = Dir::new();
        let (_up, base) = ts_server(json_mode);
        let gw = Gateway::start(&dir, &["--no-auth"]);
        dir.run_expect(&["gateway", "add", "ts", &format!("{base}/mcp")], 0);
        let post = |body: Value| {
            let (status, text) = common::curl(&[
                "-X",
                "POST",
                &format!("http://{}/mcp", gw.addr),
                "-H",
                "content-type: application/json",
                "-H",
                "accept: application/json, text/event-stream",
                "-d",
                &body.to_string(),
            ]);
            assert_eq!(status, 200, "{text}");
            text
        };
        let echo = |id: u32, text: &str| {
            let answer = post(
                serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "ts__echo", "arguments": {"text": text}}}),
            );
            let v: Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(v["result"]["content"][0]["text"], text, "{v}");
        };
        for i in 0..3 {
            echo(i, &format!("hi {i}"));
        }
        let counted = post(
            serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": "ts__count", "arguments": {"n": 3}, "_meta": {"progressToken": "p"}}}),
        );
        assert!(counted.contains("counted to 3"), "{counted}");
        // In its JSON mode the SDK cannot stream, so only the event-stream mode has progress.
        let progress = counted.matches("notifications/progress").count();
        assert_eq!(progress, if json_mode { 0 } else { 3 }, "{counted}");
        if !json_mode {
            std::thread::sleep(std::time::Duration::from_secs(6));
            echo(10, "after node closed the idle connection");
        }
    }
}

/// What an upstream streams while it answers reaches the client on the connection transports
/// too: progress from the official TypeScript SDK server, through the gateway's legacy SSE
/// (`/sse` + `POST /message`) and WebSocket (`/ws`) front doors, arrives before the answer.
#[test]
fn progress_reaches_sse_and_websocket_clients_before_the_answer() {
    use futures_util::{SinkExt, StreamExt};
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::Message;
    let dir = Dir::new();
    let (_up, base) = ts_server(false);
    let gw = Gateway::start(&dir, &["--no-auth"]);
    dir.run_expect(&["gateway", "add", "ts", &format!("{base}/mcp")], 0);
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "ts__count", "arguments": {"n": 3}, "_meta": {"progressToken": "p"}}});
    // Every message up to the answer (id 9), in the order it came.
    let until_answer = |seen: &[Value]| seen.last().is_some_and(|m| m["id"] == 9);
    let check = |door: &str, seen: &[Value]| {
        let methods: Vec<&str> = seen.iter().filter_map(|m| m["method"].as_str()).collect();
        let progress = methods
            .iter()
            .filter(|m| **m == "notifications/progress")
            .count();
        assert_eq!(progress, 3, "{door}: {seen:?}");
        let answer = seen.last().unwrap();
        assert!(
            answer.to_string().contains("counted to 3"),
            "{door}: {answer}"
        );
        for m in &seen[..seen.len() - 1] {
            assert_eq!(m["params"]["progressToken"], "p", "{door}: {m}");
        }
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("http://{}", gw.addr);
        let mut sse =
            common::clients::SseSession::open(common::clients::http(None), &url, "/sse", None)
                .await
                .unwrap();
        sse.send(&call).await.unwrap();
        let mut seen = Vec::new();
        while !until_answer(&seen) {
            let next = sse.next(Duration::from_secs(30)).await;
            seen.push(next.unwrap_or_else(|| panic!("SSE: no answer; so far {seen:?}")));
        }
        check("SSE", &seen);

        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/ws", gw.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", "mcp".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        ws.send(Message::Text(call.to_string().into()))
            .await
            .unwrap();
        let mut seen = Vec::new();
        while !until_answer(&seen) {
            let frame = tokio::time::timeout(Duration::from_secs(30), ws.next())
                .await
                .unwrap_or_else(|_| panic!("WebSocket: no answer; so far {seen:?}"))
                .unwrap()
                .unwrap();
            if let Message::Text(text) = frame {
                seen.push(serde_json::from_str(&text).unwrap());
            }
        }
        check("WebSocket", &seen);
    });
}
