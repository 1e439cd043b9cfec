//! The audit log (issue 20): one JSON line per MCP request and per administrator's request,
//! with who, how, what, the decision, the status and the time taken, and never a secret.

mod common;

use std::time::Duration;

use common::clients::{Streamable, http};
use common::upstream::Upstream;
use common::{Dir, Gateway};
use serde_json::{Value, json};

const ALICE: &str = "alice-token-0123456789abcdef";
const OPERATOR: &str = "operator-token-0123456789abc";

#[test]
fn every_mcp_request_and_admin_action_is_one_json_line_without_secrets() {
    let dir = Dir::new();
    std::fs::write(
        dir.join("mcpgw.toml"),
        format!(
            "[auth]\ntokens = [\"{OPERATOR}\", {{ token = \"{ALICE}\", name = \"alice\", role = \"client\" }}]\n\n[audit]\nfile = \"audit.jsonl\"\n\n[policy]\n[[policy.rule]]\nname = \"no-sleep\"\neffect = \"deny\"\nroles = [\"client\"]\ntools = [\"sleep\"]\n"
        ),
    )
    .unwrap();
    let up = Upstream::start(&[]);
    let gw = Gateway::start(&dir, &["--config", "mcpgw.toml"]);
    dir.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    let base = format!("http://{}", gw.addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let session = rt.block_on(async {
        let client = http(None);
        let alice = Streamable::open(client.clone(), &format!("{base}/mcp"), Some(ALICE))
            .await
            .unwrap();
        alice
            .call(json!(1), "rs__echo", json!({"text": "secret-argument"}))
            .await
            .unwrap();
        let denied = alice
            .call(json!(2), "rs__sleep", json!({"ms": 1}))
            .await
            .unwrap();
        assert_eq!(denied["error"]["code"], -32003);
        alice
            .request(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}))
            .await
            .unwrap();
        // Admin actions: the operator's, and a client's refused one.
        let add = json!({"name": "second", "url": format!("{}/mcp", up.base)});
        let created = client
            .post(format!("{base}/gateways"))
            .bearer_auth(OPERATOR)
            .json(&add)
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{}", created.status());
        let refused = client
            .delete(format!("{base}/gateways/second"))
            .bearer_auth(ALICE)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403);
        alice.session.clone()
    });
    dir.run_expect(&["gateway", "remove", "second"], 0);
    // The writer is a thread of its own: wait for the last line.
    let path = dir.join("audit.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines
            .iter()
            .any(|l| l["principal"] == "control" && l["method"] == "DELETE /gateways/{name}")
            || std::time::Instant::now() > deadline
        {
            for secret in [ALICE, OPERATOR, session.as_str(), "secret-argument"] {
                assert!(
                    !text.contains(secret),
                    "the audit log carries a secret: {text}"
                );
            }
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let find = |pred: &dyn Fn(&Value) -> bool, what: &str| -> Value {
        lines
            .iter()
            .find(|l| pred(l))
            .unwrap_or_else(|| panic!("no line for {what}: {lines:#?}"))
            .clone()
    };
    let echo = find(&|l| l["target"] == "rs__echo", "the echo call");
    assert_eq!(echo["kind"], "mcp");
    assert_eq!(echo["principal"], "token:alice");
    assert_eq!(echo["auth"], "static-token");
    assert_eq!(echo["method"], "tools/call");
    assert_eq!(echo["upstream"], "rs");
    assert_eq!(
        (echo["decision"].clone(), echo["status"].clone()),
        (json!("allow"), json!("ok"))
    );
    assert!(echo["session"].as_str().unwrap().starts_with("mcp:"));
    assert!(echo["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(echo["time"].as_str().unwrap().ends_with('Z'));
    let sleep = find(&|l| l["target"] == "rs__sleep", "the denied call");
    assert_eq!(
        (sleep["decision"].clone(), sleep["status"].clone()),
        (json!("deny"), json!(-32003))
    );
    find(&|l| l["method"] == "tools/list", "the list");
    find(&|l| l["method"] == "initialize", "initialize");
    let created = find(
        &|l| l["method"] == "POST /gateways" && l["auth"] == "static-token",
        "the operator's registration",
    );
    assert_eq!(created["kind"], "admin");
    assert_eq!(created["status"], 201);
    assert!(created["principal"].as_str().unwrap().starts_with("token:"));
    let refused = find(
        &|l| l["method"] == "DELETE /gateways/{name}" && l["principal"] == "token:alice",
        "the refused removal",
    );
    assert_eq!(
        (refused["decision"].clone(), refused["status"].clone()),
        (json!("deny"), json!(403))
    );
    let control = find(
        &|l| l["principal"] == "control" && l["method"] == "DELETE /gateways/{name}",
        "the control socket's removal",
    );
    assert_eq!(control["method"], "DELETE /gateways/{name}");
    assert_eq!(control["auth"], "control-socket");
    drop(gw);
}
