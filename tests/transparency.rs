//! What the gateway says about itself and its upstreams (issue 19, item 5; docs/ARCHITECTURE.md,
//! "What the gateway says about itself"): `/servers/{name}/mcp` gives the upstream's identity,
//! instructions and capabilities (less what the gateway cannot carry), results reach a
//! session-era client without the 2026-07-28 `serverInfo` stamp, and `/mcp` merges the
//! upstreams' instructions and keeps apart the resource URIs they share.

mod common;

use std::time::Duration;

use common::plain::json_of;
use common::py::{self, PyUpstream};
use common::upstream::Upstream;
use common::{Dir, Gateway, clients};
use serde_json::{Value, json};

const STAMP: &str = "io.modelcontextprotocol/serverInfo";
const GATEWAY_META: &str = "dev.mcpgw/gateway";

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
}

/// POST `msg` to `url` without a session (an `initialize`), the JSON answer.
async fn post(http: &reqwest::Client, url: &str, msg: &Value) -> Value {
    let accept = "application/json, text/event-stream";
    json_of(http.post(url).header("accept", accept).json(msg)).await
}

/// A 2026-07-28 request for `method` with `params` (the envelope added), with its routing
/// headers; the JSON answer.
async fn post_modern(http: &reqwest::Client, url: &str, method: &str, mut params: Value) -> Value {
    params["_meta"] = clients::modern_meta();
    let mut request = http
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    let name = params.get("name").or_else(|| params.get("uri"));
    if let Some(name) = name.and_then(Value::as_str) {
        request = request.header("mcp-name", name);
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    request
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A plain-HTTP gateway (no auth, health checks hourly) in front of two official Python SDK
/// servers (mTLS) that both offer `fixture://info`, each with its own content: `a` speaks
/// 2026-07-28 (and stamps every result with its `serverInfo`), `b` only the session era.
struct Bed {
    _dir: Dir,
    _ups: Vec<PyUpstream>,
    gw: Gateway,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Bed {
    fn new() -> Self {
        let py = py::python();
        let dir = Dir::new();
        let pki = dir.cert_gen("pki", &[]);
        let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
        let mut ups = Vec::new();
        for (name, mode) in [("a", "modern"), ("b", "legacy")] {
            let args = [
                "--transport",
                "streamable-http",
                "--mode",
                mode,
                "--name",
                name,
            ];
            let up = PyUpstream::with_pki(&py, py::free_port(), &pki, &args);
            let url = format!("https://localhost:{}/mcp", up.port);
            dir.gateway_add_mtls(name, &url, &pki);
            ups.push(up);
        }
        Self {
            _dir: dir,
            _ups: ups,
            gw,
            rt: tokio::runtime::Runtime::new().unwrap(),
            http: clients::http(None),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.addr)
    }
}

#[test]
fn servers_name_answers_with_the_upstreams_server_info_instructions_and_capabilities() {
    let bed = Bed::new();
    bed.rt.block_on(async {
        for name in ["a", "b"] {
            let url = bed.url(&format!("/servers/{name}/mcp"));
            let info = json!({"name": name, "version": "1.0.0"});
            let instructions = format!("mcpgw test upstream {name}");

            let init = post(&bed.http, &url, &initialize()).await;
            let result = &init["result"];
            assert_eq!(result["serverInfo"], info, "{name}: {init}");
            assert_eq!(result["instructions"], instructions, "{name}: {init}");
            assert_eq!(result["_meta"][GATEWAY_META]["name"], "mcpgw", "{init}");
            assert!(result["capabilities"]["tools"].is_object(), "{init}");
            assert!(result["capabilities"].get("tasks").is_none(), "{init}");

            let discover = post_modern(&bed.http, &url, "server/discover", json!({})).await;
            let result = &discover["result"];
            assert_eq!(result["_meta"][STAMP], info, "{name}: {discover}");
            assert_eq!(result["_meta"][GATEWAY_META]["name"], "mcpgw", "{discover}");
            assert_eq!(result["instructions"], instructions, "{name}: {discover}");
        }

        // `/mcp` is the gateway, and says what each upstream asks of its client.
        let init = post(&bed.http, &bed.url("/mcp"), &initialize()).await;
        let result = &init["result"];
        assert_eq!(result["serverInfo"]["name"], "mcpgw", "{init}");
        assert!(result.get("_meta").is_none(), "{init}");
        let merged = result["instructions"].as_str().unwrap_or_default();
        let (a, b) = (
            "## a\n\nmcpgw test upstream a",
            "## b\n\nmcpgw test upstream b",
        );
        assert!(merged.contains(a) && merged.contains(b), "{merged}");
        assert!(
            merged.find(a) < merged.find(b),
            "in the order upstreams are listed: {merged}"
        );
        assert!(merged.contains("`<server>__<name>`"), "{merged}");
    });
}

#[test]
fn a_session_era_client_gets_results_without_the_2026_07_28_server_info_stamp() {
    let bed = Bed::new();
    bed.rt.block_on(async {
        // The upstream does stamp its results: a 2026-07-28 client sees it as it came.
        let url = bed.url("/servers/a/mcp");
        let echo = json!({"name": "echo", "arguments": {"text": "hi"}});
        let modern = post_modern(&bed.http, &url, "tools/call", echo).await;
        assert_eq!(modern["result"]["_meta"][STAMP]["name"], "a", "{modern}");

        for (path, tool) in [("/servers/a/mcp", "echo"), ("/mcp", "a__echo")] {
            let session = clients::Streamable::open(bed.http.clone(), &bed.url(path), None)
                .await
                .unwrap();
            let call = session.call(json!(1), tool, json!({"text": "hi"})).await.unwrap();
            assert_eq!(clients::text(&call), "hi", "{call}");
            assert!(call["result"].get("_meta").is_none(), "{path}: {call}");
            assert!(call["result"].get("resultType").is_none(), "{path}: {call}");
            let read = json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "mcpgw://a/fixture://info"}});
            let read = match path {
                "/mcp" => read,
                _ => json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "fixture://info"}}),
            };
            let answer = session.request(&read).await.unwrap();
            assert!(answer["result"]["contents"].is_array(), "{path}: {answer}");
            assert!(answer["result"].get("_meta").is_none(), "{path}: {answer}");
        }
    });
}

#[test]
fn two_upstreams_with_the_same_resource_uri_are_listed_apart_on_mcp_and_each_reads_its_own() {
    let bed = Bed::new();
    bed.rt.block_on(async {
        let session = clients::Streamable::open(bed.http.clone(), &bed.url("/mcp"), None)
            .await
            .unwrap();
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/list"});
        let listed = session.request(&list).await.unwrap();
        let uris: Vec<&str> = listed["result"]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["uri"].as_str())
            .collect();
        assert_eq!(
            uris,
            ["mcpgw://a/fixture://info", "mcpgw://b/fixture://info"],
            "{listed}"
        );

        let read = |id: u64, uri: &str| json!({"jsonrpc": "2.0", "id": id, "method": "resources/read", "params": {"uri": uri}});
        for (id, name) in [(2, "a"), (3, "b")] {
            let uri = format!("mcpgw://{name}/fixture://info");
            let answer = session.request(&read(id, &uri)).await.unwrap();
            let content = &answer["result"]["contents"][0];
            assert_eq!(content["text"], format!("mcpgw python upstream fixture: {name}"), "{answer}");
            assert_eq!(content["uri"], uri, "named as the client asked: {answer}");
        }
        // The bare URI names no one upstream: refused, with the choices.
        let bare = session.request(&read(4, "fixture://info")).await.unwrap();
        let message = bare["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("mcpgw://a/fixture://info") && message.contains("mcpgw://b/fixture://info"),
            "{bare}"
        );

        // A 2026-07-28 client reads by the same URI.
        let uri = "mcpgw://b/fixture://info";
        let modern = post_modern(&bed.http, &bed.url("/mcp"), "resources/read", json!({"uri": uri})).await;
        assert_eq!(modern["result"]["contents"][0]["text"], "mcpgw python upstream fixture: b", "{modern}");

        // One upstream's endpoint lists and reads its URIs as the upstream gives them.
        let one = clients::Streamable::open(bed.http.clone(), &bed.url("/servers/b/mcp"), None)
            .await
            .unwrap();
        let listed = one.request(&list).await.unwrap();
        assert_eq!(listed["result"]["resources"][0]["uri"], "fixture://info", "{listed}");
        let answer = one.request(&read(5, "fixture://info")).await.unwrap();
        assert_eq!(answer["result"]["contents"][0]["text"], "mcpgw python upstream fixture: b", "{answer}");
    });
}

/// The capabilities the Rust fixture announces when initialized directly, less `experimental`
/// and `extensions` (which the gateway does not carry).
async fn direct_capabilities(http: &reqwest::Client, up: &Upstream) -> Value {
    let init = post(http, &format!("{}/mcp", up.base), &initialize()).await;
    let mut caps = init["result"]["capabilities"].clone();
    let keys = caps.as_object_mut().unwrap();
    keys.remove("experimental");
    keys.remove("extensions");
    caps
}

#[test]
fn servers_name_announces_the_upstreams_capabilities_less_what_the_gateway_cannot_carry() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
    let kinds: [(&str, &[&str]); 4] = [
        ("plain", &["--session-only"]),
        ("changes", &["--session-only", "--list-changed"]),
        ("tasks", &["--session-only", "--tasks"]),
        ("uncarried", &["--session-only", "--uncarried"]),
    ];
    let ups: Vec<Upstream> = kinds
        .iter()
        .map(|(_, args)| Upstream::start(args))
        .collect();
    for ((name, _), up) in kinds.iter().zip(&ups) {
        dir.run_expect(&["gateway", "add", name, &format!("{}/mcp", up.base)], 0);
    }
    let http = clients::http(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for ((name, _), up) in kinds.iter().zip(&ups) {
            let direct = direct_capabilities(&http, up).await;
            let url = format!("http://{}/servers/{name}/mcp", gw.addr);
            let init = post(&http, &url, &initialize()).await;
            assert_eq!(init["result"]["capabilities"], direct, "{name}: {init}");
        }
        let changes = &ups[1];
        let direct = direct_capabilities(&http, changes).await;
        assert_eq!(direct["tools"]["listChanged"], true, "{direct}");

        let init = post(
            &http,
            &format!("http://{}/servers/uncarried/mcp", gw.addr),
            &initialize(),
        )
        .await;
        let caps = &init["result"]["capabilities"];
        assert!(
            caps.get("experimental").is_none() && caps.get("extensions").is_none(),
            "{init}"
        );
        let tasks = direct_capabilities(&http, &ups[2]).await["tasks"].clone();
        assert!(tasks["list"].is_object(), "{tasks}");

        let init = post(&http, &format!("http://{}/mcp", gw.addr), &initialize()).await;
        let caps = &init["result"]["capabilities"];
        assert!(
            caps.get("experimental").is_none() && caps.get("extensions").is_none(),
            "{init}"
        );
        assert_eq!(caps["tasks"], tasks, "the tasks an upstream runs: {init}");
    });

    // Between a restart of the upstream and the gateway's next connection to it, what the
    // gateway announces for it is still the upstream's own (the connection is opened for it).
    let port = ups[1].port();
    let mut ups = ups;
    drop(ups.remove(1));
    rt.block_on(async {
        // A request without a session goes on the gateway's own connection to the upstream,
        // which fails and is dropped.
        let url = format!("http://{}/servers/changes/mcp", gw.addr);
        let echo = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}});
        let call = post(&http, &url, &echo).await;
        assert!(call.get("error").is_some(), "the upstream is down: {call}");
    });
    let up = Upstream::start(&[
        "--session-only",
        "--list-changed",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    rt.block_on(async {
        let direct = direct_capabilities(&http, &up).await;
        let url = format!("http://{}/servers/changes/mcp", gw.addr);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let init = loop {
            let init = post(&http, &url, &initialize()).await;
            if init.get("result").is_some() {
                break init;
            }
            // Refused while the gateway waits out its reconnection backoff, and said so.
            assert_eq!(init["error"]["code"], -32001, "{init}");
            assert!(
                std::time::Instant::now() < deadline,
                "never reconnected: {init}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(init["result"]["capabilities"], direct, "{init}");
        // Ours and the gateway's: its connection was opened again for that answer.
        let stats = json_of(http.get(format!("{}/stats", up.base))).await;
        assert_eq!(stats["initializes"], 2, "{stats}");
    });
}

/// Two official Python SDK servers (session era, resource subscriptions) that both offer
/// `fixture://info`: through `/mcp`, a session-era client subscribed to `b`'s by its `mcpgw://`
/// URI (on its own upstream session), and a 2026-07-28 client listening for it (on the
/// gateway's), hear of `b`'s update under that URI.
#[test]
fn an_update_reaches_a_client_under_the_gateway_uri_it_subscribed_by() {
    use clients::{EventReader, Streamable};
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
    let mut ups = Vec::new();
    for name in ["a", "b"] {
        let (up, port) = py::subscriptions_upstream(&py, &pki, "legacy");
        dir.gateway_add_mtls(name, &format!("https://localhost:{port}/mcp"), &pki);
        ups.push(up);
    }
    let (http, url) = (clients::http(None), format!("http://{}/mcp", gw.addr));
    let uri = "mcpgw://b/fixture://info";
    let updated = "notifications/resources/updated";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let session = Streamable::open(http.clone(), &url, None).await.unwrap();
        // Touches `b`'s resource until `events` hears of it (the gateway's stream to the
        // upstream opens with the first subscription). The server tells the session that
        // touches it: the client's own upstream session (`by_session`), or the gateway's.
        let touch_until_heard = async |events: &mut EventReader, by_session: bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let args = json!({"uri": "fixture://info"});
                let answer = match by_session {
                    true => session.call(json!(9), "b__touch", args).await.unwrap(),
                    false => {
                        let touch = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "b__touch", "arguments": args}});
                        post(&http, &url, &touch).await
                    }
                };
                assert_eq!(clients::text(&answer), "sent", "{answer}");
                let wait = Duration::from_millis(500);
                if let Some(note) = events.next_of(updated, wait).await {
                    return note;
                }
                assert!(std::time::Instant::now() < deadline, "no update came through");
            }
        };

        let stream = http
            .get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session.session)
            .timeout(Duration::from_secs(90))
            .send();
        let mut notes = EventReader::new(stream.await.unwrap());
        let subscribe = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": uri}});
        let answer = session.request(&subscribe).await.unwrap();
        assert!(answer.get("result").is_some(), "{answer}");
        let note = touch_until_heard(&mut notes, true).await;
        assert_eq!(note["params"]["uri"], uri, "{note}");

        let filter = json!({"resourceSubscriptions": [uri]});
        let accept = "application/json, text/event-stream";
        let listen = clients::listen(&http, &url, None, ("L", filter.clone()), accept).await;
        let mut events = EventReader::new(listen);
        let ack = events.next(Duration::from_secs(10)).await.expect("an acknowledgement");
        assert_eq!(ack["params"]["notifications"], filter, "granted: {ack}");
        let note = touch_until_heard(&mut events, false).await;
        assert_eq!(note["params"]["uri"], uri, "{note}");
    });
}
