//! Resource subscriptions and notifications through the gateway: updates reach the sessions
//! that subscribed (Streamable HTTP, SSE, WebSocket) and no others, list changes outside a call
//! refresh the catalog, a subscribe racing the last unsubscribe is not undone by it, and
//! 2026-07-28 `subscriptions/listen` streams (on POST and on WebSocket) carry their updates.
//! The session lifecycle itself is tested in `tests/sessions.rs`.
//!
//! The session-era upstreams here are registered with `--shared-session`: one upstream session
//! holds every client's subscriptions and the gateway fans its updates out, which is what these
//! tests check. A client with an upstream session of its own (the default) subscribes on it, as
//! it would directly (`tests/client_sessions.rs`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::clients::{self, EventReader, SseSession, Streamable, WsSession};
use common::plain::{Plain, json_of};
use common::upstream::Upstream;
use common::{Dir, Gateway, SIGTERM};
use serde_json::{Value, json};

/// Register `up` as `up`, with one upstream session for every client (see the module's
/// documentation).
fn add_shared(dir: &Dir, up: &Upstream) {
    let url = format!("{}/mcp", up.base);
    dir.run_expect(&["gateway", "add", "up", &url, "--shared-session"], 0);
}

/// Ask the fixture to tell its sessions subscribed to `uri` that it changed.
async fn touch(http: &reqwest::Client, up_base: &str, uri: &str) -> Value {
    json_of(http.post(format!("{up_base}/touch?uri={uri}"))).await
}

/// [`touch`] until one update went out on the gateway's stream (the stream opens with the
/// first subscription). `subscribed` is checked at once unless `resubscribing`: after a restart
/// the upstream learns of the subscription again first.
async fn touch_until_sent(http: &reqwest::Client, up_base: &str, uri: &str, resubscribing: bool) {
    until_sent("no update went out", || async {
        let told = touch(http, up_base, uri).await;
        if !resubscribing {
            assert_eq!(
                told["subscribed"], 1,
                "the upstream must hold the subscription: {told}"
            );
        }
        told
    })
    .await;
}

/// Until the upstream holds no subscription at all (at most 10 s), read from its `/stats`
/// without touching anything: a release that waits for an update to find its session gone
/// does not pass.
async fn until_released(http: &reqwest::Client, up_base: &str, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = json_of(http.get(format!("{up_base}/stats"))).await;
        if stats["subscribed"] == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still subscribed: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ask with `ask` every 50 ms, for at most 30 s, until an answer says `"sent": 1`.
async fn until_sent<F: std::future::Future<Output = Value>>(
    what: &str,
    mut ask: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let told = ask().await;
        if told["sent"] == 1 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {told}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway (health checks out of the way: after a restart it must reconnect on its own) in
/// front of two fixtures: `up`, session-era (it sends updates on its own GET stream, outside
/// any request), and `modern`, 2026-07-28, which cannot.
fn both_eras() -> Plain {
    let dir = Dir::new();
    let up = Upstream::start(&["--session-only"]);
    let modern = Upstream::start(&[]);
    let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
    add_shared(&dir, &up);
    let url = format!("{}/mcp", modern.base);
    dir.run_expect(&["gateway", "add", "modern", &url], 0);
    Plain {
        others: vec![modern],
        rt: tokio::runtime::Runtime::new().unwrap(),
        base: format!("http://{}", gw.addr),
        http: clients::http(None),
        dir,
        up,
        gw,
    }
}

#[test]
fn resource_updates_reach_the_sessions_that_subscribed_and_no_others() {
    let Plain {
        rt,
        base,
        http,
        dir: _dir,
        up,
        gw: _gw,
        others: _others,
    } = both_eras();
    let uri = "test://watched-resource";
    let updated = "notifications/resources/updated";
    rt.block_on(async {
        let url = format!("{base}/servers/up/mcp");
        let (a, b) = (
            Streamable::open(http.clone(), &url, None).await.unwrap(),
            Streamable::open(http.clone(), &url, None).await.unwrap(),
        );
        // One session table: the GET stream of a session opened on /servers/up/mcp is /mcp's.
        let stream = |s: &str| {
            http.get(format!("{base}/mcp"))
                .header("accept", "text/event-stream")
                .header("mcp-session-id", s)
                .timeout(Duration::from_secs(60))
                .send()
        };
        let mut a_events = EventReader::new(stream(&a.session).await.unwrap());
        let mut b_events = EventReader::new(stream(&b.session).await.unwrap());
        let subscribe = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": uri}});
        let answer = a.request(&subscribe).await.unwrap();
        assert!(answer.get("result").is_some(), "{answer}");

        // The upstream tells its sessions; the gateway's GET stream opens with the first
        // subscription, so the fixture is asked until the stream is there.
        touch_until_sent(&http, &up.base, uri, false).await;
        let note = a_events.next_of(updated, Duration::from_secs(10)).await;
        let note = note.expect("the subscribed session must get the update");
        assert_eq!(note["params"]["uri"], uri, "{note}");
        assert!(
            b_events.next_of(updated, Duration::from_millis(1500)).await.is_none(),
            "a session that did not subscribe must not get it"
        );

        // b subscribes too, then a leaves: the one upstream session keeps the subscription
        // for b, and only b gets what comes next.
        let unsubscribe = json!({"jsonrpc": "2.0", "id": 2, "method": "resources/unsubscribe", "params": {"uri": uri}});
        let ok = |answer: Value| assert!(answer.get("result").is_some(), "{answer}");
        ok(b.request(&subscribe).await.unwrap());
        ok(a.request(&unsubscribe).await.unwrap());
        let told = touch(&http, &up.base, uri).await;
        assert_eq!((&told["subscribed"], &told["sent"]), (&json!(1), &json!(1)), "{told}");
        let note = b_events.next_of(updated, Duration::from_secs(10)).await;
        assert!(note.is_some(), "b is still subscribed");
        assert!(a_events.next_of(updated, Duration::from_millis(1000)).await.is_none());
        // The last subscriber leaves: now the upstream forgets it.
        ok(b.request(&unsubscribe).await.unwrap());
        assert_eq!(touch(&http, &up.base, uri).await["subscribed"], 0);

        // The upstream restarts and forgets its sessions: the gateway's GET stream finds its
        // session gone (404), and the gateway reconnects and subscribes again on its own.
        let answer = b.request(&subscribe).await.unwrap();
        assert!(answer.get("result").is_some(), "{answer}");
        let port = up.port();
        drop(up);
        let up = Upstream::start(&["--session-only", "--listen", &format!("127.0.0.1:{port}")]);
        touch_until_sent(&http, &up.base, uri, true).await;
        let note = b_events.next_of(updated, Duration::from_secs(10)).await;
        assert_eq!(note.expect("b subscribed before the restart")["params"]["uri"], uri);

        // b's session ends without unsubscribing: the gateway unsubscribes for it.
        let deleted = http.delete(&url).header("mcp-session-id", &b.session).send().await.unwrap();
        assert_eq!(deleted.status().as_u16(), 204);
        until_released(&http, &up.base, "b's session was closed").await;

        // A session-era client is announced what the upstream announces in the session era,
        // where its own upstream session subscribes: both fixtures say `subscribe` there
        // (`modern` does not in 2026-07-28, having no subscriptions/listen).
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        for (scope, subscribe) in [("up", true), ("modern", true)] {
            let answer: Value = http
                .post(format!("{base}/servers/{scope}/mcp"))
                .header("accept", "application/json, text/event-stream")
                .json(&init)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let caps = &answer["result"]["capabilities"];
            assert_eq!(caps["resources"]["subscribe"] == true, subscribe, "{scope}: {caps}");
        }
    });
}

#[test]
fn resource_updates_reach_sse_and_websocket_sessions_too() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let up = Upstream::start(&["--session-only"]);
    let gw = Gateway::start_tls(&dir, &pki, &["--no-auth"]);
    add_shared(&dir, &up);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("https://localhost:{}", gw.addr.port());
    let http = clients::http(Some(&pki.file("ca.crt")));
    let (uri, updated) = ("test://watched-resource", "notifications/resources/updated");
    rt.block_on(async {
        let mut sse = SseSession::open(http.clone(), &base, "/sse", None).await.unwrap();
        let mut ws = WsSession::open(gw.addr, &pki.file("ca.crt"), None).await.unwrap();
        let mut bystander = SseSession::open(http.clone(), &base, "/sse", None).await.unwrap();
        for (id, init) in [(0, true), (1, false)] {
            let msg = if init {
                json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
            } else {
                json!({"jsonrpc": "2.0", "id": id, "method": "resources/subscribe", "params": {"uri": uri}})
            };
            let (a, b) = (sse.request(&msg).await.unwrap(), ws.request(&msg).await.unwrap());
            assert!(a.get("result").is_some() && b.get("result").is_some(), "{a} {b}");
            if init {
                assert_eq!(a["result"]["capabilities"]["resources"]["subscribe"], true, "{a}");
            }
        }
        touch_until_sent(&http, &up.base, uri, false).await;
        let wait = Duration::from_secs(10);
        let on_sse = sse.next_of(updated, wait).await.expect("the SSE session subscribed");
        let on_ws = ws.next_of(updated, wait).await.expect("the WebSocket session subscribed");
        assert_eq!(on_sse["params"]["uri"], uri, "{on_sse}");
        assert_eq!(on_ws["params"]["uri"], uri, "{on_ws}");
        assert!(bystander.next_of(updated, Duration::from_millis(1500)).await.is_none());

        // The WebSocket goes away; the SSE session still gets updates.
        drop(ws);
        tokio::time::sleep(Duration::from_millis(300)).await;
        touch_until_sent(&http, &up.base, uri, false).await;
        assert!(sse.next_of(updated, wait).await.is_some());
        // The last subscriber hangs up: the gateway unsubscribes upstream.
        drop(sse);
        until_released(&http, &up.base, "the SSE session hung up").await;
    });
}

#[test]
fn an_upstreams_list_change_outside_a_call_refreshes_the_catalog() {
    let dir = Dir::new();
    let up = Upstream::start(&["--session-only", "--list-changed"]);
    let gw = Gateway::start(&dir, &["--no-auth"]);
    add_shared(&dir, &up);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{}/mcp", gw.addr);
    let http = clients::http(None);
    rt.block_on(async {
        let session = Streamable::open(http.clone(), &url, None).await.unwrap();
        let stream = http
            .get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session.session)
            .timeout(Duration::from_secs(60))
            .send();
        let mut events = EventReader::new(stream.await.unwrap());
        // The upstream announces list changes, so the gateway keeps its GET stream open.
        let changed = format!("{}/tools-changed", up.base);
        until_sent("the gateway never listened", || {
            json_of(http.post(&changed))
        })
        .await;
        let note = events
            .next_of("notifications/tools/list_changed", Duration::from_secs(10))
            .await;
        assert!(note.is_some(), "the client must hear of the change");
        // (A change notice may also come from the registration's first listing: asked until
        // the new tool is there.)
        let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let tools = session.request(&list).await.unwrap();
            let tools = tools["result"]["tools"].as_array().unwrap().clone();
            if tools.iter().any(|t| t["name"] == "up__extra") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the new tool must be listed: {tools:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn an_upstream_that_serves_no_get_stream_is_not_asked_again_nor_reconnected() {
    let dir = Dir::new();
    let up = Upstream::start(&["--session-only", "--list-changed", "--get-404"]);
    let gw = Gateway::start(&dir, &["--no-auth", "--health-interval", "3600"]);
    add_shared(&dir, &up);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{}/mcp", gw.addr);
    let http = clients::http(None);
    rt.block_on(async {
        // Its 404 to the first GET means "not served here", not "your session is gone".
        tokio::time::sleep(Duration::from_secs(4)).await;
        let stats = json_of(http.get(format!("{}/stats", up.base))).await;
        assert_eq!(stats["gets"], 1, "asked once: {stats}");
        assert_eq!(stats["initializes"], 1, "no reconnection: {stats}");
        let session = Streamable::open(http.clone(), &url, None).await.unwrap();
        let answer = session
            .call(json!(1), "up__echo", json!({"text": "still here"}))
            .await
            .unwrap();
        assert_eq!(clients::text(&answer), "still here");
    });
}

#[test]
fn an_update_sent_while_the_gateways_stream_was_down_arrives_after_it_resumes() {
    let dir = Dir::new();
    let up = Upstream::start(&["--session-only"]);
    let gw = Gateway::start(&dir, &["--no-auth"]);
    add_shared(&dir, &up);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://{}", gw.addr);
    let http = clients::http(None);
    let (uri, updated) = ("test://watched-resource", "notifications/resources/updated");
    rt.block_on(async {
        let a = Streamable::open(http.clone(), &format!("{base}/servers/up/mcp"), None).await.unwrap();
        let stream = http
            .get(format!("{base}/mcp"))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &a.session)
            .timeout(Duration::from_secs(60))
            .send();
        let mut events = EventReader::new(stream.await.unwrap());
        let subscribe = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": uri}});
        assert!(a.request(&subscribe).await.unwrap().get("result").is_some());
        touch_until_sent(&http, &up.base, uri, false).await;
        assert!(events.next_of(updated, Duration::from_secs(10)).await.is_some());

        // The upstream ends the gateway's stream and sends an update before it is back: the
        // gateway resumes with Last-Event-ID and gets it then.
        let dropped = json_of(http.post(format!("{}/drop-streams", up.base))).await;
        assert_eq!(dropped["dropped"], 1, "{dropped}");
        let told = touch(&http, &up.base, uri).await;
        assert_eq!(told["sent"], 0, "sent while no stream was open: {told}");
        let note = events.next_of(updated, Duration::from_secs(15)).await;
        assert!(note.is_some(), "the update sent meanwhile must arrive after the resume");
    });
}

/// One upstream session carries every client's subscriptions, so a subscribe and the last
/// subscriber's unsubscribe of the same URI must not cross on their way upstream: here the
/// upstream takes 600 ms over the unsubscribe, and a second session subscribes meanwhile.
/// The subscribe waits for the unsubscribe, and the upstream ends subscribed.
#[test]
fn a_subscribe_racing_the_last_unsubscribe_is_not_undone_by_it() {
    subscribe_racing_the_last_subscriber(false);
}

/// The same race with the last subscriber's session ending (the gateway's clean-up
/// unsubscribes for it).
#[test]
fn a_subscribe_racing_the_clean_up_of_an_ended_session_is_not_undone_by_it() {
    subscribe_racing_the_last_subscriber(true);
}

/// Session a, the only subscriber of a URI, leaves (unsubscribes, or its session ends); the
/// upstream takes 600 ms over the unsubscribe; session b subscribes 150 ms in. The upstream must
/// end subscribed.
fn subscribe_racing_the_last_subscriber(session_ends: bool) {
    let dir = Dir::new();
    let up = Upstream::start(&["--session-only", "--slow-unsubscribe-ms", "600"]);
    let gw = Gateway::start(&dir, &["--no-auth"]);
    add_shared(&dir, &up);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (base, http) = (format!("http://{}", gw.addr), clients::http(None));
    let uri = "test://raced-resource";
    rt.block_on(async {
        let url = format!("{base}/servers/up/mcp");
        let a = Arc::new(Streamable::open(http.clone(), &url, None).await.unwrap());
        let b = Streamable::open(http.clone(), &url, None).await.unwrap();
        let subscribe = json!({"jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": uri}});
        let unsubscribe = json!({"jsonrpc": "2.0", "id": 2, "method": "resources/unsubscribe", "params": {"uri": uri}});
        let ok = |answer: Value| assert!(answer.get("result").is_some(), "{answer}");
        ok(a.request(&subscribe).await.unwrap());
        assert_eq!(touch(&http, &up.base, uri).await["subscribed"], 1);
        let leaving = tokio::spawn({
            let (a, http, url) = (a.clone(), http.clone(), url.clone());
            async move {
                if !session_ends {
                    return a.request(&unsubscribe).await.unwrap();
                }
                let ended = http.delete(&url).header("mcp-session-id", &a.session).send();
                assert_eq!(ended.await.unwrap().status().as_u16(), 204);
                json!({"result": {}})
            }
        });
        tokio::time::sleep(Duration::from_millis(150)).await;
        ok(b.request(&subscribe).await.unwrap());
        ok(leaving.await.unwrap());
        // The clean-up runs in the background: past its slow unsubscribe, whatever the order.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let told = touch(&http, &up.base, uri).await;
        assert_eq!(told["subscribed"], 1, "a's unsubscribe undid b's subscribe: {told}");
    });
}

/// POST a 2026-07-28 `subscriptions/listen` to `url` with `filter`, request id `id`.
async fn listen(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    filter: Value,
    accept: &str,
) -> reqwest::Response {
    clients::listen(http, url, None, (id, filter), accept).await
}

/// The acknowledgement that opens a listen stream.
async fn acknowledged(events: &mut EventReader) -> Value {
    let ack = events
        .next(Duration::from_secs(10))
        .await
        .expect("no acknowledgement");
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    ack
}

const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

#[test]
fn a_2026_07_28_client_hears_list_changes_and_resource_updates_on_its_listen_stream() {
    let Plain {
        rt,
        base,
        http,
        dir,
        up,
        gw,
        others: _others,
    } = both_eras();
    let (uri, updated) = ("test://watched-resource", "notifications/resources/updated");
    let both = "application/json, text/event-stream";
    let wait = Duration::from_secs(10);
    rt.block_on(async {
        // Refused with a reason: no stream accepted, a malformed filter.
        let resp = listen(&http, &format!("{base}/mcp"), "x", json!({}), "application/json").await;
        assert_eq!(resp.status(), 406);
        let resp = listen(&http, &format!("{base}/mcp"), "x", json!({"toolsListChanged": "yes"}), both).await;
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32602, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("toolsListChanged"), "{body}");

        // a: tool changes and a resource of the session-era upstream, which relays updates.
        let filter = json!({"toolsListChanged": true, "resourceSubscriptions": [uri]});
        let mut a = EventReader::new(listen(&http, &format!("{base}/servers/up/mcp"), "L1", filter, both).await);
        let ack = acknowledged(&mut a).await;
        assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID], "L1", "{ack}");
        assert_eq!(
            ack["params"]["notifications"],
            json!({"toolsListChanged": true, "resourceSubscriptions": [uri]}),
            "{ack}"
        );
        // b: the same URI on the 2026-07-28 upstream, which cannot send updates yet: not granted.
        let filter = json!({"resourceSubscriptions": [uri]});
        let mut b = EventReader::new(listen(&http, &format!("{base}/servers/modern/mcp"), "L2", filter, both).await);
        assert_eq!(acknowledged(&mut b).await["params"]["notifications"], json!({}));
        // c: prompt changes, and a URI no upstream offers, on the federated endpoint: only
        // what can be delivered is acknowledged.
        let filter = json!({"promptsListChanged": true, "resourceSubscriptions": ["test://nobody-has-this"]});
        let mut c = EventReader::new(listen(&http, &format!("{base}/mcp"), "L3", filter, both).await);
        let ack = acknowledged(&mut c).await;
        assert_eq!(ack["params"]["notifications"], json!({"promptsListChanged": true}), "{ack}");

        let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        let gauge = "mcpgw_sessions_open{transport=\"subscriptions-listen\"} 3";
        assert!(metrics.contains(gauge), "{metrics}");

        touch_until_sent(&http, &up.base, uri, false).await;
        let note = a.next_of(updated, wait).await.expect("a subscribed to the resource");
        assert_eq!(note["params"]["uri"], uri, "{note}");
        assert_eq!(note["params"]["_meta"][SUBSCRIPTION_ID], "L1", "{note}");

        // A catalog change: a hears of tools, c of prompts and nothing before it.
        let third = Upstream::start(&[]);
        dir.run_expect(&["gateway", "add", "third", &format!("{}/mcp", third.base)], 0);
        let note = a.next_of("notifications/tools/list_changed", wait).await.expect("a wants tool changes");
        assert_eq!(note["params"]["_meta"][SUBSCRIPTION_ID], "L1", "{note}");
        let note = c.next(wait).await.expect("c wants prompt changes");
        assert_eq!(note["method"], "notifications/prompts/list_changed", "{note}");
        assert_eq!(note["params"]["_meta"][SUBSCRIPTION_ID], "L3", "{note}");

        // a hangs up: the upstream subscription it held is released, without waiting for
        // an update to find it gone.
        drop(a);
        until_released(&http, &up.base, "the listen stream hung up").await;

        // Shutdown ends the open streams gracefully, with the listen request's result.
        gw.signal(SIGTERM);
        let end = c.next_where(|m| m.get("id").is_some(), wait).await.expect("a graceful end");
        assert_eq!(end["id"], "L3", "{end}");
        assert_eq!(end["result"]["_meta"][SUBSCRIPTION_ID], "L3", "{end}");
    });
}

/// `subscriptions/listen` on a WebSocket connection (2026-07-28 envelope, no headers): the
/// acknowledgement and the frames come on the socket; a `notifications/cancelled` of the listen
/// request ends that stream (its upstream subscription released, the socket kept), and so does
/// the socket's end.
#[test]
fn a_listen_stream_on_a_websocket_ends_with_its_cancellation_or_its_socket() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let up = Upstream::start(&["--session-only"]);
    let gw = Gateway::start_tls(&dir, &pki, &["--no-auth", "--health-interval", "3600"]);
    add_shared(&dir, &up);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = clients::http(Some(&pki.file("ca.crt")));
    let (uri, wait) = ("test://watched-resource", Duration::from_secs(10));
    let listen = |id: &str| {
        let filter = json!({"toolsListChanged": true, "resourceSubscriptions": [uri]});
        clients::listen_request(id, filter)
    };
    let acked = "notifications/subscriptions/acknowledged";
    rt.block_on(async {
        let mut ws = WsSession::open(gw.addr, &pki.file("ca.crt"), None).await.unwrap();
        ws.send(&listen("W1")).await.unwrap();
        let ack = ws.next_of(acked, wait).await.expect("an acknowledgement");
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
        assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID], "W1", "{ack}");
        let granted = json!({"toolsListChanged": true, "resourceSubscriptions": [uri]});
        assert_eq!(ack["params"]["notifications"], granted, "{ack}");

        touch_until_sent(&http, &up.base, uri, false).await;
        let note = ws.next_of("notifications/resources/updated", wait).await.expect("an update");
        assert_eq!(note["params"]["_meta"][SUBSCRIPTION_ID], "W1", "{note}");
        let other = Upstream::start(&[]);
        dir.run_expect(&["gateway", "add", "other", &format!("{}/mcp", other.base)], 0);
        let note = ws.next_of("notifications/tools/list_changed", wait).await.expect("a list change");
        assert_eq!(note["params"]["_meta"][SUBSCRIPTION_ID], "W1", "{note}");
        // (Both upstreams offer the URI: the next subscription must find it on `up` alone.)
        dir.run_expect(&["gateway", "remove", "other"], 0);

        // Cancelled: released upstream, and the socket still answers.
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "W1"}});
        ws.send(&cancel).await.unwrap();
        until_released(&http, &up.base, "the listen stream was cancelled").await;
        let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {"_meta": clients::modern_meta()}});
        ws.send(&ping).await.unwrap();
        let answer = ws.next_where(|m| m["id"] == 9, wait).await.expect("an answer");
        assert!(answer.get("result").is_some(), "{answer}");

        // Listening again, then the socket goes: released too.
        ws.send(&listen("W2")).await.unwrap();
        let ack = ws.next_of(acked, wait).await.expect("an acknowledgement");
        assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID], "W2", "{ack}");
        let stats = json_of(http.get(format!("{}/stats", up.base))).await;
        assert_eq!(stats["subscribed"], 1, "{ack} {stats}");
        drop(ws);
        until_released(&http, &up.base, "the socket closed").await;
    });
}

/// `note` is a resource update of `uri`, stamped with the listen stream `stream`'s id.
fn assert_update_of(note: &Value, uri: &str, stream: &str) {
    assert_eq!(note["method"], "notifications/resources/updated", "{note}");
    assert_eq!(
        (
            &note["params"]["uri"],
            &note["params"]["_meta"][SUBSCRIPTION_ID]
        ),
        (&json!(uri), &json!(stream)),
        "{note}"
    );
}

/// An update that comes while a listen stream is being set up (the upstream took its first URI,
/// the second is still on its way, the acknowledgement not yet out) follows the acknowledgement
/// instead of being lost or coming before it: on a POST's stream and on a WebSocket.
#[test]
fn an_update_during_a_listen_streams_set_up_follows_its_acknowledgement() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    // Each subscribe holds at once upstream and is answered a second later.
    let up = Upstream::start(&["--session-only", "--slow-subscribe-ms", "1000"]);
    let gw = Gateway::start_tls(&dir, &pki, &["--no-auth", "--health-interval", "3600"]);
    add_shared(&dir, &up);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("https://localhost:{}/servers/up/mcp", gw.addr.port());
    let http = clients::http(Some(&pki.file("ca.crt")));
    let filter = |first: &str, second: &str| json!({"resourceSubscriptions": [first, second]});
    // Touched until an update goes out: once the gateway has the first URI (and its stream to
    // the upstream), while the second is still being subscribed.
    let touch_first = async |first: &str| {
        let started = std::time::Instant::now();
        loop {
            let told = touch(&http, &up.base, first).await;
            if told["sent"] == 1 {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never sent: {told}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let wait = Duration::from_secs(10);
    rt.block_on(async {
        let (first, second) = ("test://first", "test://second");
        let opening = tokio::spawn({
            let (http, url, filter) = (http.clone(), url.clone(), filter(first, second));
            async move {
                listen(
                    &http,
                    &url,
                    "S",
                    filter,
                    "application/json, text/event-stream",
                )
                .await
            }
        });
        touch_first(first).await;
        assert!(
            !opening.is_finished(),
            "the update must come while the stream is set up"
        );
        let mut events = EventReader::new(opening.await.unwrap());
        let ack = acknowledged(&mut events).await;
        assert_eq!(
            ack["params"]["notifications"]["resourceSubscriptions"],
            json!([first, second]),
            "{ack}"
        );
        let note = events.next(wait).await.expect("the held update");
        assert_update_of(&note, first, "S");

        // The same on a WebSocket, where the frames share the connection with the ack.
        let (first, second) = ("test://third", "test://fourth");
        let mut ws = WsSession::open(gw.addr, &pki.file("ca.crt"), None)
            .await
            .unwrap();
        let msg = clients::listen_request("W", filter(first, second));
        ws.send(&msg).await.unwrap();
        // The gateway's stream to the upstream is open already: an update sent before the
        // first URI is answered would come before the gateway knows of it (not owed). Sent
        // once it is answered (1 s), while the second is not (2 s).
        let sent = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        touch_first(first).await;
        let took = sent.elapsed();
        assert!(
            took < Duration::from_millis(1900),
            "the update must come while the stream is set up ({took:?})"
        );
        let frame = ws.next_where(|_| true, wait).await.expect("a frame");
        assert_eq!(
            frame["method"], "notifications/subscriptions/acknowledged",
            "the ack comes first: {frame}"
        );
        let note = ws
            .next_where(|_| true, wait)
            .await
            .expect("the held update");
        assert_update_of(&note, first, "W");
    });
}
