//! Each downstream session gets an upstream session of its own (issue 19): opened on its first
//! request with the client's own capabilities and `clientInfo`, never shared with another
//! client, ended when the downstream session ends, and initialized again at once when a
//! restarted upstream says the session is gone. `--shared-session` keeps one for all.

mod common;

use std::time::{Duration, Instant};

use common::clients::{self, SseSession, Streamable};
use common::plain::json_of;
use common::upstream::Upstream;
use common::{Dir, Gateway};
use serde_json::{Value, json};

/// A fixture, registered as `up` on a gateway (no auth; health checks out of the way).
struct Bed {
    _dir: Dir,
    up: Upstream,
    _gw: Gateway,
    /// `http://ADDR` of the gateway.
    base: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

/// A [`Bed`] whose fixture runs with `args`.
fn bed(args: &[&str]) -> Bed {
    let dir = Dir::new();
    let up = Upstream::start(args);
    let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
    dir.run_expect(&["gateway", "add", "up", &format!("{}/mcp", up.base)], 0);
    Bed {
        base: format!("http://{}", gw.addr),
        http: clients::http(None),
        rt: tokio::runtime::Runtime::new().unwrap(),
        _dir: dir,
        up,
        _gw: gw,
    }
}

fn hello(name: &str, capabilities: Value) -> Value {
    json!({"protocolVersion": "2025-11-25", "capabilities": capabilities,
           "clientInfo": {"name": name, "version": "7.1"}})
}

/// The fixture's `/stats`.
async fn stats(http: &reqwest::Client, up: &Upstream) -> Value {
    json_of(http.get(format!("{}/stats", up.base))).await
}

/// Poll `/stats` for at most 10 s until `field` reaches `want`.
async fn until_stat(http: &reqwest::Client, up: &Upstream, field: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = stats(http, up).await;
        if now[field] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{field} never reached {want}: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of a `tools/call` answer, parsed as JSON.
fn json_text(answer: &Value) -> Value {
    serde_json::from_str(&clients::text(answer)).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[test]
fn each_client_gets_an_upstream_session_of_its_own_that_says_what_the_client_said() {
    // Both eras: the gateway's own connection is stateless (no initialize).
    let Bed {
        _dir,
        _gw,
        up,
        base,
        http,
        rt,
    } = bed(&[]);
    rt.block_on(async {
        let one = format!("{base}/servers/up/mcp");
        let a_caps = json!({"roots": {"listChanged": true}, "sampling": {}, "tasks": {"list": {}}});
        let a = Streamable::open_as(http.clone(), &one, None, hello("client-a", a_caps))
            .await
            .unwrap();
        let b_caps = json!({"elicitation": {"form": {}}});
        let b = Streamable::open_as(http.clone(), &one, None, hello("client-b", b_caps))
            .await
            .unwrap();
        // No client's session is opened before it uses the upstream; to answer their
        // `initialize`, the gateway asked once (a session opened and closed) what the upstream
        // says in the session era, since its own connection speaks 2026-07-28.
        assert_eq!(stats(&http, &up).await["initializes"], 1);

        let seen_by_a = json_text(&a.call(json!(1), "client", json!({})).await.unwrap());
        assert_eq!(
            seen_by_a["clientInfo"],
            json!({"name": "client-a", "version": "7.1"})
        );
        assert_eq!(
            seen_by_a["capabilities"]["roots"],
            json!({"listChanged": true})
        );
        assert_eq!(seen_by_a["capabilities"]["sampling"], json!({}));
        assert_eq!(seen_by_a["capabilities"]["tasks"], json!({"list": {}}));
        assert_eq!(seen_by_a["protocolVersion"], "2025-11-25");
        let seen_by_b = json_text(&b.call(json!(1), "client", json!({})).await.unwrap());
        assert_eq!(seen_by_b["clientInfo"]["name"], "client-b");
        assert_eq!(
            seen_by_b["capabilities"],
            json!({"elicitation": {"form": {}}})
        );

        // Session state stays with its session.
        a.call(json!(2), "remember", json!({"text": "alpha"}))
            .await
            .unwrap();
        b.call(json!(2), "remember", json!({"text": "beta"}))
            .await
            .unwrap();
        for _ in 0..5 {
            let recalled = a.call(json!(3), "recall", json!({})).await.unwrap();
            assert_eq!(clients::text(&recalled), "alpha");
            let recalled = b.call(json!(3), "recall", json!({})).await.unwrap();
            assert_eq!(clients::text(&recalled), "beta");
        }
        // A session on /mcp is a third client: its own upstream session, with nothing kept.
        let c = Streamable::open(http.clone(), &format!("{base}/mcp"), None)
            .await
            .unwrap();
        let recalled = c.call(json!(1), "up__recall", json!({})).await.unwrap();
        assert_eq!(clients::text(&recalled), "<nothing>");
        // One initialize per downstream session that used the upstream, however many calls.
        assert_eq!(stats(&http, &up).await["initializes"], 1 + 3);
        // /servers/up/mcp lists what the client's own session lists.
        let listed = a
            .request(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}))
            .await
            .unwrap();
        let names: Vec<&str> = listed["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert!(names.contains(&"recall"), "{listed}");
    });
}

#[test]
fn a_shared_session_upstream_is_one_session_for_every_client() {
    let dir = Dir::new();
    let up = Upstream::start(&["--session-only"]);
    let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
    let url = format!("{}/mcp", up.base);
    dir.run_expect(&["gateway", "add", "up", &url, "--shared-session"], 0);
    let (out, _) = dir.run_expect(&["gateway", "show", "up", "--json"], 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["shared_session"], true, "{shown}");
    let one = format!("http://{}/servers/up/mcp", gw.addr);
    let http = clients::http(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let a = Streamable::open(http.clone(), &one, None).await.unwrap();
        let b = Streamable::open(http.clone(), &one, None).await.unwrap();
        a.call(json!(1), "remember", json!({"text": "alpha"}))
            .await
            .unwrap();
        let recalled = b.call(json!(1), "recall", json!({})).await.unwrap();
        assert_eq!(
            clients::text(&recalled),
            "alpha",
            "one session for everyone"
        );
        // The gateway's own session, initialized once, as mcpgw.
        let seen = json_text(&b.call(json!(2), "client", json!({})).await.unwrap());
        assert_eq!(seen["clientInfo"]["name"], "mcpgw", "{seen}");
        assert_eq!(stats(&http, &up).await["initializes"], 1);
    });
}

#[test]
fn ending_a_downstream_session_ends_its_upstream_session() {
    let Bed {
        _dir,
        _gw,
        up,
        base,
        http,
        rt,
    } = bed(&[]);
    rt.block_on(async {
        let a = Streamable::open(http.clone(), &format!("{base}/mcp"), None)
            .await
            .unwrap();
        a.call(json!(1), "up__echo", json!({"text": "a"})).await.unwrap();
        let mut b = SseSession::open(http.clone(), &base, "/servers/up/sse", None)
            .await
            .unwrap();
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello("b", json!({}))});
        b.request(&init).await.unwrap();
        b.call(json!(1), "echo", json!({"text": "b"})).await.unwrap();
        assert_eq!(stats(&http, &up).await["sessions"], 2);

        assert_eq!(a.close().await.unwrap(), 204);
        until_stat(&http, &up, "deleted", 1).await;
        drop(b);
        until_stat(&http, &up, "deleted", 2).await;
        until_stat(&http, &up, "sessions", 0).await;
    });
}

#[test]
fn a_restarted_upstream_is_noticed_by_the_first_call_after_it() {
    // The spec's 404 for a session it does not know, and the official TypeScript SDK's 400
    // "No valid session ID provided".
    for refusal in [&[][..], &["--unknown-session-400"][..]] {
        let dir = Dir::new();
        let args = [&["--session-only"][..], refusal].concat();
        let up = Upstream::start(&args);
        let port = up.port();
        let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
        dir.run_expect(&["gateway", "add", "up", &format!("{}/mcp", up.base)], 0);
        let base = format!("http://{}", gw.addr);
        let http = clients::http(None);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let a = Streamable::open(http.clone(), &format!("{base}/servers/up/mcp"), None)
                .await
                .unwrap();
            let before = a
                .call(json!(1), "echo", json!({"text": "before"}))
                .await
                .unwrap();
            assert_eq!(clients::text(&before), "before");
            // Restarted on the same port, within the second: it knows no session.
            drop(up);
            let listen = format!("127.0.0.1:{port}");
            let up = Upstream::start(&[&args[..], &["--listen", &listen]].concat());
            let after = a
                .call(json!(2), "echo", json!({"text": "after"}))
                .await
                .unwrap();
            assert_eq!(clients::text(&after), "after", "{refusal:?}: {after}");
            // Once: the new session serves what follows.
            let again = a
                .call(json!(3), "echo", json!({"text": "again"}))
                .await
                .unwrap();
            assert_eq!(clients::text(&again), "again");
            assert_eq!(stats(&http, &up).await["calls"], 2, "{refusal:?}");
            let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
            let metrics = metrics.text().await.unwrap();
            assert!(
                metrics.contains("mcpgw_upstream_sessions_lost_total{upstream=\"up\",transport=\"streamable-http\"} 1"),
                "{refusal:?}: {metrics}"
            );
        });
    }
}

#[test]
fn tasks_are_followed_on_the_upstream_session_that_runs_them() {
    let Bed {
        _dir,
        _gw,
        up: _up,
        base,
        http,
        rt,
    } = bed(&["--session-only", "--tasks"]);
    let rpc = |id: u64, method: &str, params: Value| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    rt.block_on(async {
        for (url, tool) in [
            (format!("{base}/servers/up/mcp"), "echo"),
            (format!("{base}/mcp"), "up__echo"),
        ] {
            let a = Streamable::open(http.clone(), &url, None).await.unwrap();
            let b = Streamable::open(http.clone(), &url, None).await.unwrap();
            let call = rpc(
                1,
                "tools/call",
                json!({"name": tool, "arguments": {"text": "later"}, "task": {"ttl": 60000}}),
            );
            let started = a.request(&call).await.unwrap();
            let task_id = started["result"]["task"]["taskId"]
                .as_str()
                .unwrap_or_else(|| panic!("{url}: no task: {started}"))
                .to_owned();
            let got = a
                .request(&rpc(2, "tasks/get", json!({"taskId": task_id})))
                .await
                .unwrap();
            assert_eq!(got["result"]["status"], "completed", "{url}: {got}");
            let result = a
                .request(&rpc(3, "tasks/result", json!({"taskId": task_id})))
                .await
                .unwrap();
            assert_eq!(clients::text(&result), "later", "{url}: {result}");
            let listed = a.request(&rpc(4, "tasks/list", json!({}))).await.unwrap();
            assert_eq!(
                listed["result"]["tasks"][0]["taskId"],
                task_id.as_str(),
                "{url}: {listed}"
            );
            // Another client's session does not have it.
            let theirs = b
                .request(&rpc(2, "tasks/result", json!({"taskId": task_id})))
                .await
                .unwrap();
            assert!(theirs.get("error").is_some(), "{url}: {theirs}");
            let listed = b.request(&rpc(4, "tasks/list", json!({}))).await.unwrap();
            assert_eq!(listed["result"]["tasks"], json!([]), "{url}: {listed}");
        }
    });
}

#[test]
fn what_an_upstream_session_sends_outside_a_request_reaches_its_client_alone() {
    use common::clients::EventReader;
    let Bed {
        _dir,
        _gw,
        up,
        base,
        http,
        rt,
    } = bed(&["--session-only"]);
    let stream = |session: &str| {
        http.get(format!("{base}/mcp"))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", session)
            .timeout(Duration::from_secs(60))
            .send()
    };
    rt.block_on(async {
        let one = format!("{base}/servers/up/mcp");
        let a = Streamable::open(http.clone(), &one, None).await.unwrap();
        let b = Streamable::open(http.clone(), &one, None).await.unwrap();
        // a listens before its upstream session exists, b after.
        let mut a_events = EventReader::new(stream(&a.session).await.unwrap());
        a.call(json!(1), "remember", json!({"text": "alpha"}))
            .await
            .unwrap();
        b.call(json!(1), "remember", json!({"text": "beta"}))
            .await
            .unwrap();
        let mut b_events = EventReader::new(stream(&b.session).await.unwrap());
        let log = |to: &'static str, text: &'static str| {
            let url = format!("{}/log?to={to}&text={text}", up.base);
            let http = http.clone();
            async move { json_of(http.post(url)).await }
        };
        for (to, text, events) in [
            ("alpha", "for-a", &mut a_events),
            ("beta", "for-b", &mut b_events),
        ] {
            let deadline = Instant::now() + Duration::from_secs(15);
            let note = loop {
                let told = log(to, text).await;
                if let Some(note) = events
                    .next_of("notifications/message", Duration::from_millis(500))
                    .await
                {
                    break note;
                }
                assert!(
                    Instant::now() < deadline,
                    "{to}: no log came through: {told}"
                );
            };
            assert_eq!(note["params"]["data"], text, "{note}");
        }
        // Nothing of b's reached a.
        let stray = a_events
            .next_where(
                |m| m["params"]["data"] == "for-b",
                Duration::from_millis(800),
            )
            .await;
        assert!(stray.is_none(), "a got b's log: {stray:?}");
    });
}
