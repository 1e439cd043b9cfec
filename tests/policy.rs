//! Policy (issue 20): rules from `[policy]` of mcpgw.toml filter lists and refuse calls the
//! same way on every transport, are read again on SIGHUP (a bad policy is refused and the old
//! one kept), and `mcpgw policy check` explains a decision.

mod common;

use std::time::Duration;

use common::clients::{self, SseSession, Streamable, http};
use common::upstream::Upstream;
use common::{Dir, Gateway};
use serde_json::{Value, json};

const ALICE: &str = "alice-token-0123456789abcdef";
const OPERATOR: &str = "operator-token-0123456789abc";

fn config(rules: &str) -> String {
    format!(
        "[auth]\ntokens = [\"{OPERATOR}\", {{ token = \"{ALICE}\", name = \"alice\", role = \"client\" }}]\n\n[policy]\n{rules}"
    )
}

const RULES: &str = r#"
[[policy.rule]]
name = "clients-never-sleep"
effect = "deny"
roles = ["client"]
tools = ["sleep"]
[[policy.rule]]
name = "no-binary-for-alice"
effect = "deny"
principals = ["token:alice"]
resources = ["test://static-binary"]
"#;

/// What one transport lets a principal do: send a request, get its answer.
enum Transport {
    Streamable(Streamable),
    Sse(SseSession),
    Ws(Box<clients::PlainWs>),
}

impl Transport {
    async fn request(&mut self, msg: &Value) -> Value {
        match self {
            Self::Streamable(s) => s.request(msg).await.unwrap(),
            Self::Sse(s) => s.request(msg).await.unwrap(),
            Self::Ws(ws) => clients::ws_request(ws, msg).await,
        }
    }
}

async fn open(base: &str, addr: std::net::SocketAddr, which: &str, token: &str) -> Transport {
    let client = http(None);
    match which {
        "/mcp" | "/servers/rs/mcp" => Transport::Streamable(
            Streamable::open(client, &format!("{base}{which}"), Some(token))
                .await
                .unwrap(),
        ),
        "/sse" => {
            let mut sse = SseSession::open(client, base, "/sse", Some(token))
                .await
                .unwrap();
            let hello = json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
            sse.request(&hello).await.unwrap();
            Transport::Sse(sse)
        }
        _ => {
            let mut ws = Transport::Ws(Box::new(clients::ws_plain(addr, token).await));
            let hello = json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
            ws.request(&hello).await;
            ws
        }
    }
}

fn names(answer: &Value, member: &str, field: &str) -> Vec<String> {
    answer["result"][member]
        .as_array()
        .unwrap_or_else(|| panic!("no {member}: {answer}"))
        .iter()
        .map(|t| t[field].as_str().unwrap().to_owned())
        .collect()
}

/// A gateway under [`RULES`] with the fixture upstream registered as `rs`.
fn with_rules() -> (Dir, Upstream, Gateway) {
    let dir = Dir::new();
    std::fs::write(dir.join("mcpgw.toml"), config(RULES)).unwrap();
    let up = Upstream::start(&[]);
    let gw = Gateway::start(&dir, &["--config", "mcpgw.toml"]);
    dir.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    (dir, up, gw)
}

#[test]
fn lists_are_filtered_and_calls_refused_alike_on_every_transport() {
    let (_dir, _up, gw) = with_rules();
    let base = format!("http://{}", gw.addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for which in ["/mcp", "/servers/rs/mcp", "/sse", "/ws"] {
            // Under /mcp and its connection-bound doors names carry the upstream's prefix.
            let prefix = if which == "/servers/rs/mcp" { "" } else { "rs__" };
            // A URI only one upstream has is listed as it is, on every endpoint.
            let binary = "test://static-binary".to_owned();
            let mut alice = open(&base, gw.addr, which, ALICE).await;
            let tools = alice.request(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).await;
            let tools = names(&tools, "tools", "name");
            assert!(tools.contains(&format!("{prefix}echo")), "{which}: {tools:?}");
            assert!(!tools.contains(&format!("{prefix}sleep")), "{which}: sleep is listed: {tools:?}");
            let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": format!("{prefix}sleep"), "arguments": {"ms": 1}}});
            let refused = alice.request(&call).await;
            assert_eq!(refused["error"]["code"], -32003, "{which}: {refused}");
            let message = refused["error"]["message"].as_str().unwrap();
            assert!(message.contains("clients-never-sleep"), "{which}: {message}");
            let echo = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                "params": {"name": format!("{prefix}echo"), "arguments": {"text": "hi"}}});
            let answer = alice.request(&echo).await;
            assert!(answer.get("result").is_some(), "{which}: {answer}");
            let resources = alice.request(&json!({"jsonrpc": "2.0", "id": 4, "method": "resources/list"})).await;
            let resources = names(&resources, "resources", "uri");
            assert!(resources.iter().any(|u| u.ends_with("static-text")), "{which}: {resources:?}");
            assert!(!resources.contains(&binary), "{which}: {resources:?}");
            let read = json!({"jsonrpc": "2.0", "id": 5, "method": "resources/read", "params": {"uri": binary}});
            let refused = alice.request(&read).await;
            assert_eq!(refused["error"]["code"], -32003, "{which}: {refused}");
            assert!(refused["error"]["message"].as_str().unwrap().contains("no-binary-for-alice"));

            // The operator (an administrator, another principal) is under no rule.
            let mut operator = open(&base, gw.addr, which, OPERATOR).await;
            let tools = operator.request(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).await;
            assert!(names(&tools, "tools", "name").contains(&format!("{prefix}sleep")), "{which}");
            let answer = operator.request(&call).await;
            assert!(answer.get("result").is_some(), "{which}: {answer}");
        }
        // A 2026-07-28 client, stateless, is refused the same way.
        let stateless = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
            "params": {"name": "rs__sleep", "arguments": {"ms": 1},
                       "_meta": common::clients::modern_meta()}});
        let answer = http(None)
            .post(format!("{base}/mcp"))
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "rs__sleep")
            .bearer_auth(ALICE)
            .json(&stateless)
            .send()
            .await
            .unwrap();
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["error"]["code"], -32003, "{answer}");
    });
}

#[test]
fn sighup_reads_the_policy_again_and_a_bad_one_is_refused_with_the_old_kept() {
    let (dir, _up, gw) = with_rules();
    let base = format!("http://{}", gw.addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "rs__sleep", "arguments": {"ms": 1}}});
    let code = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let alice = Streamable::open(http(None), &format!("{base}/mcp"), Some(ALICE))
                .await
                .unwrap();
            alice.request(&call).await.unwrap()["error"]["code"].clone()
        })
    };
    assert_eq!(code(&rt), -32003);
    // A policy that cannot be used: refused, the one in force stays.
    let bad = RULES.replace("effect = \"deny\"\nroles", "effect = \"refuse\"\nroles");
    std::fs::write(dir.join("mcpgw.toml"), config(&bad)).unwrap();
    gw.signal(common::SIGHUP);
    let log = gw.wait_log_count("policy refused", 1, Duration::from_secs(10));
    assert!(
        log.contains("clients-never-sleep: effect: expected"),
        "{log}"
    );
    assert_eq!(code(&rt), -32003, "the old policy is still in force");
    // The rule removed: the next SIGHUP lets the call through.
    std::fs::write(dir.join("mcpgw.toml"), config("")).unwrap();
    gw.signal(common::SIGHUP);
    gw.wait_log_count("policy reloaded", 1, Duration::from_secs(10));
    assert_eq!(code(&rt), Value::Null, "no error now");
}

#[test]
fn policy_check_explains_a_decision_and_exits_1_on_deny() {
    let dir = Dir::new();
    std::fs::write(dir.join("mcpgw.toml"), config(RULES)).unwrap();
    let (out, _) = dir.run_expect(
        &[
            "policy",
            "check",
            "--config",
            "mcpgw.toml",
            "--principal",
            "token:alice",
            "--tool",
            "rs__sleep",
        ],
        1,
    );
    assert_eq!(
        out.trim(),
        "tool 'sleep' of upstream 'rs' denied by policy rule clients-never-sleep (#1)"
    );
    let (out, _) = dir.run_expect(
        &[
            "policy",
            "check",
            "--config",
            "mcpgw.toml",
            "--principal",
            "token:ops",
            "--role",
            "admin",
            "--tool",
            "sleep",
            "--upstream",
            "rs",
        ],
        0,
    );
    assert_eq!(
        out.trim(),
        "tool 'sleep' of upstream 'rs' allowed by the policy default (no rule matched)"
    );
    let (out, _) = dir.run_expect(
        &[
            "--json",
            "policy",
            "check",
            "--config",
            "mcpgw.toml",
            "--principal",
            "token:alice",
            "--resource",
            "test://static-binary",
            "--upstream",
            "rs",
        ],
        1,
    );
    let decision: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(decision["allowed"], false);
    assert_eq!(decision["by"]["name"], "no-binary-for-alice");
    // Scopes narrow a principal before any rule.
    let (out, _) = dir.run_expect(
        &[
            "policy",
            "check",
            "--config",
            "mcpgw.toml",
            "--principal",
            "jwt:bot",
            "--scope",
            "upstream:docs",
            "--tool",
            "rs__echo",
        ],
        1,
    );
    assert!(
        out.contains("the token's scopes do not include it"),
        "{out}"
    );
    // A bad policy is a clear error naming file, rule and field.
    std::fs::write(
        dir.join("bad.toml"),
        "[policy]\n[[policy.rule]]\neffect = \"maybe\"\n",
    )
    .unwrap();
    let (_, err) = dir.run_expect(
        &[
            "policy",
            "check",
            "--config",
            "bad.toml",
            "--principal",
            "p",
            "--tool",
            "a__b",
        ],
        1,
    );
    assert!(
        err.contains("bad.toml: [[policy.rule]] #1: effect: expected"),
        "{err}"
    );
}
