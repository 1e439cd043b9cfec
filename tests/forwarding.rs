//! Calls posted one at a time to `/mcp` are forwarded without a JSON tree; the same calls over
//! legacy SSE, or in a batch, take the tree path. Both must give the client the same answer,
//! for both client eras and both upstream eras (the official Python SDK, over mTLS): results,
//! tool errors, prompts, unknown tools and names that route nowhere.

mod common;

use common::clients::{self, SseSession, Streamable};
use common::py::{self, PyUpstream};
use common::{Dir, Gateway};
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";

/// The calls compared, by id: each names a tool or prompt of `up`.
fn calls(up: &str) -> Vec<Value> {
    let call = |id: &str, method: &str, name: String, args: Value| {
        json!({"jsonrpc": "2.0", "id": id, "method": method,
               "params": {"name": name, "arguments": args}})
    };
    vec![
        call(
            "echo",
            "tools/call",
            format!("{up}__echo"),
            json!({"text": "h\u{e9}llo \"quoted\" \\ 1e2"}),
        ),
        call(
            "add",
            "tools/call",
            format!("{up}__add"),
            json!({"a": 2, "b": 40}),
        ),
        // A tool error (bad arguments) and an unknown tool, as the upstream reports them.
        call(
            "bad-args",
            "tools/call",
            format!("{up}__add"),
            json!({"a": "x"}),
        ),
        call(
            "unknown-tool",
            "tools/call",
            format!("{up}__nope"),
            json!({}),
        ),
        // Refused by the gateway before any upstream is asked.
        call(
            "no-upstream",
            "tools/call",
            "nobody__echo".into(),
            json!({}),
        ),
        call(
            "prompt",
            "prompts/get",
            format!("{up}__greet"),
            json!({"name": "Ada"}),
        ),
    ]
}

/// `msg` as a 2026-07-28 request: the envelope in `_meta`.
fn modern(msg: &Value) -> Value {
    let mut msg = msg.clone();
    msg["params"]["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "progressToken": "kept",
    });
    msg
}

#[test]
fn a_call_forwarded_without_a_tree_answers_as_the_tree_path_does() {
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    // One upstream of each era: 2026-07-28 (stamped envelope) and session era (stripped).
    let (modern_up, legacy_up) = PyUpstream::both_eras(&py, &pki);
    let gw = Gateway::start(&dir, &["--no-auth", "--request-timeout", "10"]);
    for (name, port) in [("alpha", modern_up.port), ("beta", legacy_up.port)] {
        let (out, _) = dir.gateway_add_mtls(name, &format!("https://localhost:{port}/mcp"), &pki);
        assert!(out.contains(": online"), "{out}");
    }
    let base = format!("http://{}", gw.addr);
    let url = format!("{base}/mcp");
    let http = clients::http(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let streamable = Streamable::open(http.clone(), &url, None).await.unwrap();
        let mut sse = SseSession::open(http.clone(), &base, "/sse", None)
            .await
            .unwrap();
        let mut compared = 0;
        for up in ["alpha", "beta"] {
            for msg in calls(up) {
                // Session-era client.
                let raw = streamable.request(&msg).await.unwrap();
                let tree = sse.request(&msg).await.unwrap();
                assert_eq!(raw, tree, "session-era client, {msg}");
                let batch = streamable.request(&json!([msg])).await.unwrap();
                assert_eq!(json!([raw]), batch, "session-era client in a batch, {msg}");
                assert_eq!(raw["id"], msg["id"]);
                assert!(
                    raw["result"].get("resultType").is_none(),
                    "a session-era client got a 2026-07-28 field: {raw}"
                );
                // 2026-07-28 client: the routing headers on POST; SSE has none to check.
                let msg = modern(&msg);
                let raw = clients::post_modern(&http, &url, &msg).await;
                let tree = sse.request(&msg).await.unwrap();
                assert_eq!(raw, tree, "2026-07-28 client, {msg}");
                if let Some(result) = raw.get("result") {
                    assert_eq!(result["resultType"], "complete", "{raw}");
                }
                compared += 1;
            }
        }
        assert_eq!(compared, 12);
        // What the answers say, so that equal answers cannot both be wrong the same way.
        let echo = streamable.request(&calls("beta")[0]).await.unwrap();
        assert_eq!(
            clients::text(&echo),
            "h\u{e9}llo \"quoted\" \\ 1e2",
            "{echo}"
        );
        let add = clients::post_modern(&http, &url, &modern(&calls("alpha")[1])).await;
        assert_eq!(clients::text(&add), "42", "{add}");
        let nobody = streamable.request(&calls("alpha")[4]).await.unwrap();
        assert_eq!(nobody["error"]["code"], -32602, "{nobody}");
        let prompt = streamable.request(&calls("beta")[5]).await.unwrap();
        assert!(prompt.to_string().contains("Hello, Ada!"), "{prompt}");
    });
}

/// `deploy` of `up` with a region a header cannot carry as it is, as a 2026-07-28 client sends it.
fn deploy(up: &str, id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": format!("{up}__deploy"),
        "arguments": {"region": "z\u{fc}rich-1", "replicas": 3},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    }})
}

/// POST `msg` as a 2026-07-28 client with `params` as its `Mcp-Param-*` headers: (status, answer).
async fn post_with_params(
    http: &reqwest::Client,
    url: &str,
    msg: &Value,
    params: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", "tools/call")
        .header("mcp-name", msg["params"]["name"].as_str().unwrap());
    for (name, value) in params {
        req = req.header(*name, *value);
    }
    let resp = req.json(msg).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let answer = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .unwrap_or_else(|| serde_json::from_str(&text).unwrap());
    (status, answer)
}

#[test]
fn a_tool_whose_arguments_travel_as_mcp_param_headers_is_callable_through_the_gateway() {
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    // The official SDK's 2026-07-28 server refuses a call of `deploy` whose `Mcp-Param-Region`
    // and `Mcp-Param-Replicas` headers are missing or disagree with the arguments.
    let up = PyUpstream::with_pki(
        &py,
        py::free_port(),
        &pki,
        &["--transport", "streamable-http", "--header-tool"],
    );
    let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
    let url = format!("https://localhost:{}/mcp", up.port);
    dir.gateway_add_mtls_with("pinned", &url, &pki, &["--era", MODERN]);
    dir.gateway_add_mtls("auto", &url, &pki);

    // A session-era client (the control socket): the gateway speaks 2026-07-28 upstream and
    // writes the headers itself.
    let params =
        json!({"name": "pinned__deploy", "arguments": {"region": "z\u{fc}rich-1", "replicas": 3}});
    let (out, _) = dir.run_expect(&["call", "tools/call", &params.to_string()], 0);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        clients::text(&json!({"result": result})),
        "deployed 3 to z\u{fc}rich-1",
        "{out}"
    );

    // A 2026-07-28 client sends them as the tool declares them (here on the forwarded-bytes
    // path); the gateway checks them as a server must, and a call whose headers are missing or
    // disagree is refused with 400 and -32020 before it goes anywhere.
    let region = ("mcp-param-region", "=?base64?esO8cmljaC0x?=");
    let http = clients::http(None);
    let gw_url = format!("http://{}/mcp", gw.addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (id, up) in [(1, "pinned"), (2, "auto")] {
            let (status, answer) = post_with_params(
                &http,
                &gw_url,
                &deploy(up, id),
                &[region, ("mcp-param-replicas", "3")],
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(
                clients::text(&answer),
                "deployed 3 to z\u{fc}rich-1",
                "{up}: {answer}"
            );
        }
        for (params, why) in [
            (&[region][..], "Mcp-Param-Replicas header is missing"),
            (
                &[region, ("mcp-param-replicas", "4")][..],
                "Mcp-Param-Replicas header does not match",
            ),
            (
                &[
                    ("mcp-param-region", "zurich-1"),
                    ("mcp-param-replicas", "3"),
                ][..],
                "Mcp-Param-Region header does not match",
            ),
        ] {
            let (status, answer) =
                post_with_params(&http, &gw_url, &deploy("auto", 3), params).await;
            assert_eq!(status, 400, "{params:?}: {answer}");
            assert_eq!(answer["error"]["code"], -32020, "{answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(why), "{params:?}: {answer}");
        }
    });

    // The official SDK client, which mirrors the headers from the gateway's own tools/list.
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/py_client.py");
    let out = std::process::Command::new(&py)
        .arg(script)
        .args([
            "--url",
            &gw_url,
            "--transport",
            "streamable-http",
            "--mode",
            MODERN,
        ])
        .args(["--ca", &pki.s("ca.crt")])
        .args([
            "--call",
            "auto__deploy",
            "--args",
            r#"{"region": "z\u00fcrich-1", "replicas": 3}"#,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {}\n{stdout}\n--- gateway log\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    let printed: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        printed["result"], "deployed 3 to z\u{fc}rich-1",
        "{printed}"
    );
}
