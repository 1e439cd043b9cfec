//! The legacy HTTP+SSE upstream transport on mcpgw's own HTTP/1.1 client (issue 18): the event
//! stream and the POSTs to its endpoint go through the upstream's pool with the upstream's full
//! TLS identity (NET-01), a server-name override included. The upstream is the official Python
//! MCP SDK behind uvicorn with `ssl.CERT_REQUIRED`, which reads the client certificate of the
//! connection each POST comes on.

mod common;

use common::py::{self, PyUpstream};
use common::{Dir, Gateway, curl};
use serde_json::{Value, json};

#[test]
fn a_legacy_sse_upstream_dialled_by_ip_with_a_server_name_gets_the_client_certificate() {
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    // A server certificate for localhost only (no IP SANs): dialling 127.0.0.1 works only if the
    // name verified is the override.
    let (lh_crt, lh_key) = pki.localhost_only();
    let port = py::free_port();
    let _up = PyUpstream::start(
        &py,
        port,
        &pki.file("ca.crt"),
        &lh_crt,
        &lh_key,
        &["--transport", "sse"],
    );
    let gw = Gateway::start(&dir, &["--no-auth", "--request-timeout", "10"]);

    let ip_url = format!("https://127.0.0.1:{port}/sse");
    let identity = [
        "--ca-cert",
        &pki.s("ca.crt"),
        "--client-cert",
        &pki.s("client.crt"),
        "--client-key",
        &pki.s("client.key"),
    ];
    // Without the override the name check fails, and says how to fix it.
    let mut args = vec!["gateway", "add", "byip", &ip_url];
    args.extend_from_slice(&identity);
    let (_, stderr) = dir.run_expect(&args, 1);
    assert!(stderr.contains("--server-name localhost"), "{stderr}");

    let mut args = vec![
        "gateway",
        "add",
        "legacy",
        &ip_url,
        "--server-name",
        "localhost",
    ];
    args.extend_from_slice(&identity);
    let (out, _) = dir.run_expect(&args, 0);
    assert!(out.contains("online"), "{out}");

    // Two calls: each POST (on a pooled connection) carries the client certificate, and each
    // answer comes back on the event stream.
    for id in ["a", "b"] {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "legacy__whoami", "arguments": {}}});
        let (status, text) = curl(&[
            "-X",
            "POST",
            &format!("http://{}/mcp", gw.addr),
            "-H",
            "content-type: application/json",
            "-d",
            &call.to_string(),
        ]);
        assert_eq!(status, 200, "{text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["id"], id, "{answer}");
        assert_eq!(
            answer["result"]["content"][0]["text"], "mcpgw-client",
            "{answer}"
        );
    }
}
