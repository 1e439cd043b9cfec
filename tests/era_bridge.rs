//! Era bridging (issue 19): a 2026-07-28 client calling a session-era upstream that asks its
//! client something mid-call gets an `input_required` result instead of a server-to-client
//! request it could not answer; its retry with `inputResponses` and the `requestState` resumes
//! the call the gateway held upstream, which then finishes.

mod common;

use common::clients;
use common::upstream::Upstream;
use common::{Dir, Gateway};
use serde_json::{Value, json};

/// POST a 2026-07-28 `tools/call` with its routing headers; the answer (JSON or the last event
/// of an event stream).
async fn call_modern(http: &reqwest::Client, url: &str, id: u64, name: &str, args: Value) -> Value {
    let mut params = json!({"name": name, "arguments": args});
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"sampling": {}, "elicitation": {"form": {}}},
        "io.modelcontextprotocol/clientInfo": {"name": "modern-client", "version": "1"},
    });
    clients::post_modern(
        http,
        url,
        &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}),
    )
    .await
}

#[test]
fn a_2026_07_28_client_answers_a_session_era_upstreams_questions_through_input_required() {
    let dir = Dir::new();
    let up = Upstream::start(&["--session-only"]);
    let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
    dir.run_expect(&["gateway", "add", "up", &format!("{}/mcp", up.base)], 0);
    let url = format!("http://{}/servers/up/mcp", gw.addr);
    let http = clients::http(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let args = json!({"message": "Please provide your information"});
        let first = call_modern(&http, &url, 1, "test_elicitation", args.clone()).await;
        assert_eq!(first["id"], 1, "{first}");
        let result = &first["result"];
        assert_eq!(result["resultType"], "input_required", "{first}");
        let requests = result["inputRequests"].as_object().expect("inputRequests");
        assert_eq!(requests.len(), 1, "{first}");
        let (key, asked) = requests.iter().next().unwrap();
        assert_eq!(asked["method"], "elicitation/create", "{first}");
        assert_eq!(asked["params"]["message"], "Please provide your information");
        let state = result["requestState"].as_str().expect("requestState").to_owned();

        // The retry: same method and arguments, the answers, the state echoed.
        let mut retry = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "test_elicitation", "arguments": args,
            "inputResponses": {key.as_str(): {"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}}},
            "requestState": state,
        }});
        retry["params"]["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
        });
        let done = clients::post_modern(&http, &url, &retry).await;
        assert_eq!(done["id"], 2, "{done}");
        let text = clients::text(&done);
        assert!(text.contains("accept") && text.contains("ada"), "{done}");
        assert_eq!(done["result"]["resultType"], "complete", "{done}");

        // The same state again: the call is over.
        let stale = clients::post_modern(&http, &url, &retry).await;
        assert!(
            stale["error"]["message"].as_str().unwrap_or_default().contains("requestState"),
            "{stale}"
        );
        // A call that asks nothing is answered as before, in one round.
        let plain = call_modern(&http, &url, 3, "echo", json!({"text": "hi"})).await;
        assert_eq!(clients::text(&plain), "hi", "{plain}");
    });
}

/// The other way: a session-era client (legacy SSE here) of an upstream spoken to in
/// 2026-07-28 (the official Python SDK, registered with `--era 2026-07-28`) whose tool answers
/// `input_required` is asked the question as a request on its own stream, and the call is sent
/// again with its answer; the client sees the finished result only.
#[test]
fn a_session_era_client_is_asked_a_2026_07_28_upstreams_questions_as_requests() {
    use common::py::{self, PyUpstream};
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let args = ["--transport", "streamable-http", "--input-tool"];
    let up = PyUpstream::with_pki(&py, py::free_port(), &pki, &args);
    let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
    let url = format!("https://localhost:{}/mcp", up.port);
    dir.gateway_add_mtls_with("py", &url, &pki, &["--era", "2026-07-28"]);
    let base = format!("http://{}", gw.addr);
    let http = clients::http(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let done =
            clients::confirm_over_sse(&http, &base, "/servers/py/sse", "ship it?", true).await;
        assert_eq!(clients::text(&done), "confirmed=True", "{done}");
        assert!(done["result"].get("resultType").is_none(), "{done}");
    });
}

/// A legacy SSE upstream (the official Python SDK) asks its question on its one stream: it
/// reaches the client whose call caused it, a session-era client on its own upstream session
/// and a 2026-07-28 client (as `input_required`) on the gateway's, instead of hanging until the
/// timeout.
#[test]
fn a_legacy_sse_upstreams_question_reaches_the_client_whose_call_asked_it() {
    use common::py::{self, PyUpstream};
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let args = ["--transport", "sse", "--input-tool"];
    let up = PyUpstream::with_pki(&py, py::free_port(), &pki, &args);
    let gw = Gateway::start(
        &dir,
        &[
            "--no-auth",
            "--health-interval",
            "3600",
            "--request-timeout",
            "20",
        ],
    );
    dir.gateway_add_mtls("py", &format!("https://localhost:{}/sse", up.port), &pki);
    let base = format!("http://{}", gw.addr);
    let http = clients::http(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Session era, on its own upstream session.
        let done =
            clients::confirm_over_sse(&http, &base, "/servers/py/sse", "ship it?", false).await;
        assert_eq!(clients::text(&done), "confirmed=False", "{done}");

        // 2026-07-28, on the gateway's own session: input_required, then the retry.
        let url = format!("{base}/servers/py/mcp");
        let first = call_modern(&http, &url, 1, "confirm", json!({"question": "really?"})).await;
        assert_eq!(first["result"]["resultType"], "input_required", "{first}");
        let (key, asked) = first["result"]["inputRequests"]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        assert_eq!(asked["params"]["message"], "really?", "{first}");
        let mut retry = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "confirm", "arguments": {"question": "really?"},
            "inputResponses": {key.as_str(): {"action": "accept", "content": {"ok": true}}},
            "requestState": first["result"]["requestState"],
        }});
        retry["params"]["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
        });
        let done = clients::post_modern(&http, &url, &retry).await;
        assert_eq!(clients::text(&done), "confirmed=True", "{done}");
    });
}
