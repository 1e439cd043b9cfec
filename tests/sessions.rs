//! Downstream sessions: they survive certificate rotation on every transport, many clients
//! share one upstream session without crossing answers, bad input is refused without
//! disturbing anyone else, sessions are bounded and expire, every MCP endpoint serves a
//! session's `GET` stream, and cancellations reach the upstream. Resource subscriptions and
//! listen streams are in `tests/subscriptions.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::clients::{self, SseSession, Streamable, WsSession};
use common::plain::{Plain, json_of, plain};
use common::upstream::Upstream;
use common::{Dir, Gateway, SIGHUP};
use serde_json::{Value, json};

#[test]
fn sse_websocket_and_streamable_sessions_survive_twenty_rotations() {
    // Over 100 lines on purpose: one end-to-end scenario whose steps depend on the ones
    // before (the same gateway, sessions and upstreams throughout), read top to bottom.
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let up = Upstream::start_mtls(&pki);
    // The gateway serves copies of the files, so rotating them leaves the upstream's alone.
    std::fs::copy(pki.file("server.crt"), dir.join("gw.crt")).unwrap();
    std::fs::copy(pki.file("server.key"), dir.join("gw.key")).unwrap();
    let mut gw = Gateway::start(
        &dir,
        &[
            "--tls-cert",
            dir.join("gw.crt").to_str().unwrap(),
            "--tls-key",
            dir.join("gw.key").to_str().unwrap(),
            "--tls-ca",
            &pki.s("ca.crt"),
            // The reloads are counted below: only the ones this test asks for.
            "--tls-watch-interval",
            "0",
        ],
    );
    dir.gateway_add_mtls("rs", &format!("https://localhost:{}/mcp", up.port()), &pki);
    let (token, _) = dir.run_expect(&["token", "create"], 0);
    let token = token.trim().to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("https://localhost:{}", gw.addr.port());
    let http = clients::http(Some(&pki.file("ca.crt")));
    // Resolve localhost to the gateway's loopback address explicitly.
    let (mut streamable, mut sse, mut ws) = rt.block_on(async {
        let s = Streamable::open(http.clone(), &format!("{base}/mcp"), Some(&token))
            .await
            .unwrap();
        let e = SseSession::open(http.clone(), &base, "/sse", Some(&token))
            .await
            .unwrap();
        let w = WsSession::open(gw.addr, &pki.file("ca.crt"), Some(&token))
            .await
            .unwrap();
        (s, e, w)
    });
    let session_id = streamable.session.clone();
    let mut fingerprints = std::collections::HashSet::new();
    for round in 0..20 {
        if round % 2 == 0 {
            common::mint_server(&pki, &dir.join("gw.crt"), &dir.join("gw.key"));
            gw.signal(SIGHUP);
            gw.wait_log_count("trigger=\"SIGHUP\"", round / 2 + 1, Duration::from_secs(10));
        } else {
            dir.rotate_issue(&pki);
        }
        let served = rt
            .block_on(common::tls::connect(
                gw.addr,
                common::tls::client_config(&pki.file("ca.crt")),
            ))
            .unwrap()
            .fingerprint;
        assert!(
            fingerprints.insert(served),
            "round {round}: the certificate did not change"
        );
        rt.block_on(async {
            let a = streamable
                .call(
                    json!(round),
                    "rs__echo",
                    json!({"text": format!("http-{round}")}),
                )
                .await
                .unwrap();
            assert_eq!(clients::text(&a), format!("http-{round}"));
            let b = sse
                .call(
                    json!(round),
                    "rs__echo",
                    json!({"text": format!("sse-{round}")}),
                )
                .await
                .unwrap();
            assert_eq!(clients::text(&b), format!("sse-{round}"));
            let c = ws
                .call(
                    json!(round),
                    "rs__echo",
                    json!({"text": format!("ws-{round}")}),
                )
                .await
                .unwrap();
            assert_eq!(clients::text(&c), format!("ws-{round}"));
        });
        assert!(gw.alive());
    }
    assert_eq!(streamable.session, session_id);
    let (status, _) = dir.run_expect(&["status", "--json"], 0);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["reloads"]["ok"], 20);
    let _ = &mut streamable;
}

/// The Rust upstream behind a plain gateway (no auth), and two Streamable-HTTP sessions to it.
struct TwoSessions {
    up: Upstream,
    _gw: Gateway,
    rt: tokio::runtime::Runtime,
    url: String,
    http: reqwest::Client,
    a: Arc<Streamable>,
    b: Arc<Streamable>,
}

fn two_sessions(dir: &Dir) -> TwoSessions {
    let up = Upstream::start(&[]);
    let gw = Gateway::start(dir, &["--no-auth"]);
    dir.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{}/mcp", gw.addr);
    let http = clients::http(None);
    let (a, b) = rt.block_on(async {
        (
            Arc::new(Streamable::open(http.clone(), &url, None).await.unwrap()),
            Arc::new(Streamable::open(http.clone(), &url, None).await.unwrap()),
        )
    });
    TwoSessions {
        up,
        _gw: gw,
        rt,
        url,
        http,
        a,
        b,
    }
}

#[test]
fn two_clients_with_colliding_ids_get_their_own_answers() {
    let dir = Dir::new();
    let TwoSessions {
        up,
        _gw,
        rt,
        url: _,
        http,
        a,
        b,
    } = two_sessions(&dir);
    let wrong = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(16));
        let mut tasks = Vec::new();
        for i in 0..500u32 {
            for (who, client) in [("a", a.clone()), ("b", b.clone())] {
                let sem = sem.clone();
                tasks.push(tokio::spawn(async move {
                    let _permit = sem.acquire().await.unwrap();
                    let text = format!("{who}-{i}");
                    let answer = client
                        .call(json!(i), "rs__echo", json!({"text": text}))
                        .await
                        .unwrap();
                    (answer["id"] == json!(i) && clients::text(&answer) == text) as u32
                }));
            }
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap();
        }
        1000 - ok
    });
    assert_eq!(wrong, 0, "{wrong} of 1000 answers were crossed or wrong");
    let stats = rt.block_on(json_of(http.get(format!("{}/stats", up.base))));
    // Each downstream session gets an upstream session of its own, opened once, on its first
    // call; the gateway's own connection needed none (the 2026-07-28 probe answered).
    assert_eq!(
        stats["initializes"], 2,
        "one upstream initialize per downstream session, no more: {stats}"
    );
    assert_eq!(stats["calls"], 1000, "{stats}");
}

#[test]
fn bad_input_gets_its_error_and_a_healthy_session_is_unaffected() {
    let Plain {
        dir: _dir,
        up: _up,
        gw,
        others: _others,
        rt,
        base,
        http,
    } = plain();
    let url = format!("{base}/mcp");
    let healthy = rt
        .block_on(Streamable::open(http.clone(), &url, None))
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let healthy = Arc::new(healthy);
    let loop_task = {
        let (healthy, stop) = (healthy.clone(), stop.clone());
        rt.spawn(async move {
            let (mut ok, mut bad) = (0u32, 0u32);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                match healthy
                    .call(json!(i), "rs__echo", json!({"text": i.to_string()}))
                    .await
                {
                    Ok(a) if clients::text(&a) == i.to_string() => ok += 1,
                    _ => bad += 1,
                }
            }
            (ok, bad)
        })
    };
    let post = |body: Vec<u8>| {
        let http = http.clone();
        let url = url.clone();
        rt.block_on(async move {
            let resp = http
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        })
    };
    // An oversized body: written from another thread (the gateway may answer and close before
    // taking all of it, so write errors are expected), the answer read here.
    let oversized = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
        write!(s, "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", 5 * 1024 * 1024).unwrap();
        let mut writer = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b' '; 64 * 1024];
            for _ in 0..80 {
                if writer.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head).into_owned()
    };
    assert_eq!(oversized, "HTTP/1.1 413", "oversized body");
    let (status, body) = post(b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ".to_vec());
    assert_eq!(status, 400);
    assert!(body.contains("-32700"), "{body}");
    let (_, body) =
        post(br#"{"jsonrpc": "2.0", "id": {"not": "an id"}, "method": "tools/list"}"#.to_vec());
    assert!(body.contains("-32600"), "{body}");
    let (_, body) = post(br#"{"jsonrpc": "1.0", "id": 2, "method": "tools/list"}"#.to_vec());
    assert!(body.contains("-32600"), "{body}");
    let (_, body) = post(br#"{"jsonrpc": "2.0", "id": 3, "method": "no/such/method"}"#.to_vec());
    assert!(body.contains("-32601"), "{body}");
    let (status, _) = post(b"[]".to_vec());
    assert_eq!(status, 400, "empty batch");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, bad) = rt.block_on(loop_task).unwrap();
    assert_eq!(bad, 0, "the healthy session saw {bad} failures");
    assert!(ok > 0);
}

#[test]
fn sessions_are_bounded_and_expire_when_idle() {
    let dir = Dir::new();
    std::fs::write(
        dir.join("mcpgw.toml"),
        "[mcp]\nmax_sessions = 2\nsession_idle_secs = 1\n",
    )
    .unwrap();
    let gw = Gateway::start(&dir, &["--no-auth", "--config", "mcpgw.toml"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{}/mcp", gw.addr);
    let http = clients::http(None);
    rt.block_on(async {
        let a = Streamable::open(http.clone(), &url, None).await.unwrap();
        let _b = Streamable::open(http.clone(), &url, None).await.unwrap();
        let err = Streamable::open(http.clone(), &url, None).await.err().expect("a third session must be refused");
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let resp = http.post(&url).json(&init).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 503, "{err}");
        assert!(resp.text().await.unwrap().contains("too many open Streamable HTTP sessions (limit 2)"));
        // Used sessions stay; after a second unused they are gone and room is made.
        assert!(a.request(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await.is_ok());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let expired = a.request(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"})).await;
        assert!(expired.unwrap_err().to_string().contains("404"), "an idle session must expire");
        Streamable::open(http.clone(), &url, None).await.expect("room after expiry");
        // SSE has the same bound.
        let base = format!("http://{}", gw.addr);
        let _s1 = common::clients::SseSession::open(http.clone(), &base, "/sse", None).await.unwrap();
        let _s2 = common::clients::SseSession::open(http.clone(), &base, "/sse", None).await.unwrap();
        let third = http.get(format!("{base}/sse")).send().await.unwrap();
        assert_eq!(third.status().as_u16(), 503);
        // And 2026-07-28 listen streams.
        let both = "application/json, text/event-stream";
        let filter = || json!({"toolsListChanged": true});
        let _l1 = clients::listen(&http, &url, None, ("L1", filter()), both).await;
        let _l2 = clients::listen(&http, &url, None, ("L2", filter()), both).await;
        let third = clients::listen(&http, &url, None, ("L3", filter()), both).await;
        assert_eq!(third.status().as_u16(), 503);
        let body: Value = third.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("at most 2; [mcp] max_sessions"), "{body}");
    });
}

/// Read SSE frames from a GET stream until `n` events (with ids) arrived.
async fn read_events(resp: reqwest::Response, n: usize) -> Vec<(u64, Value)> {
    use futures_util::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("no event in time")
            .unwrap()
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let id = frame
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(|v| v.trim().parse::<u64>().unwrap());
            let data = frame
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(|v| serde_json::from_str::<Value>(v.trim()).unwrap());
            if let (Some(id), Some(data)) = (id, data) {
                out.push((id, data));
            }
        }
    }
    out
}

#[test]
fn get_stream_delivers_list_changed_and_resumes_from_last_event_id() {
    let dir = Dir::new();
    let (a, b) = (Upstream::start(&[]), Upstream::start(&[]));
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{}/mcp", gw.addr);
    let http = clients::http(None);
    let session = rt
        .block_on(Streamable::open(http.clone(), &url, None))
        .unwrap();
    let get = |last: Option<u64>| {
        let mut req = http
            .get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session.session)
            .timeout(Duration::from_secs(60));
        if let Some(l) = last {
            req = req.header("last-event-id", l.to_string());
        }
        req
    };
    let resp = rt.block_on(async { get(None).send().await }).unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    dir.run_expect(&["gateway", "add", "a", &format!("{}/mcp", a.base)], 0);
    let first = rt.block_on(read_events(resp, 3));
    let methods: Vec<&str> = first
        .iter()
        .map(|(_, v)| v["method"].as_str().unwrap())
        .collect();
    assert!(
        methods.contains(&"notifications/tools/list_changed"),
        "{methods:?}"
    );
    let last_seen = first.last().unwrap().0;

    // Disconnected while another upstream arrives; a resume gets what was missed, in order.
    dir.run_expect(&["gateway", "add", "b", &format!("{}/mcp", b.base)], 0);
    let resp = rt
        .block_on(async { get(Some(last_seen)).send().await })
        .unwrap();
    let missed = rt.block_on(read_events(resp, 3));
    let ids: Vec<u64> = missed.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        vec![last_seen + 1, last_seen + 2, last_seen + 3],
        "replay after Last-Event-ID"
    );

    let no_session = rt.block_on(async { http.get(&url).send().await }).unwrap();
    assert_eq!(no_session.status().as_u16(), 400);
    let unknown = rt
        .block_on(async { http.get(&url).header("mcp-session-id", "nope").send().await })
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}

#[test]
fn a_clients_cancellation_reaches_the_upstream_with_the_upstreams_id() {
    let dir = Dir::new();
    let TwoSessions {
        up,
        _gw,
        rt,
        url,
        http,
        a,
        b,
    } = two_sessions(&dir);
    rt.block_on(async {
        // Both sessions have a request with id 42 in flight; only a's is cancelled.
        let slow = |s: Arc<Streamable>, ms: u64| tokio::spawn(async move { s.call(json!(42), "rs__sleep", json!({"ms": ms})).await });
        let (ta, tb) = (slow(a.clone(), 1500), slow(b.clone(), 1501));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 42, "reason": "user"}});
        let resp = http
            .post(&url)
            .header("mcp-session-id", &a.session)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&cancel)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let _ = ta.await;
        let _ = tb.await;
        let stats: Value = http.get(format!("{}/stats", up.base)).send().await.unwrap().json().await.unwrap();
        let cancelled = stats["cancelled_in"].as_array().unwrap();
        assert_eq!(cancelled.len(), 1, "exactly one cancellation must reach the upstream: {stats}");
        // It names the upstream request of session a (its sleep of 1500 ms), in the upstream's
        // ids, on the upstream session that carries it (each client has its own).
        let sleeps = stats["sleeps_in"].as_array().unwrap();
        let named = sleeps
            .iter()
            .find(|s| s[0] == cancelled[0][0] && s[1] == cancelled[0][1])
            .expect("the cancelled id is no request of that upstream session");
        assert_eq!(named[2], 1500, "the cancellation reached the other session's request: {stats}");
    });
}

#[test]
fn a_cancellation_on_an_sse_connection_reaches_the_upstream_too() {
    let Plain {
        dir: _dir,
        up,
        gw: _gw,
        others: _others,
        rt,
        base,
        http,
    } = plain();
    rt.block_on(async {
        // Two connections, each with a request 42 in flight; only the first cancels its own.
        let a = SseSession::open(http.clone(), &base, "/sse", None).await.unwrap();
        let b = SseSession::open(http.clone(), &base, "/sse", None).await.unwrap();
        let sleep = |ms: u64| json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call", "params": {"name": "rs__sleep", "arguments": {"ms": ms}}});
        a.send(&sleep(1500)).await.unwrap();
        b.send(&sleep(1501)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 42}}))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let stats = json_of(http.get(format!("{}/stats", up.base))).await;
        let cancelled = stats["cancelled"].as_array().unwrap();
        assert_eq!(cancelled.len(), 1, "exactly one cancellation must reach the upstream: {stats}");
        let sleeps = stats["sleeps"].as_array().unwrap();
        let named = sleeps.iter().find(|s| s[0] == cancelled[0]).expect("not a request of the upstream");
        assert_eq!(named[1], 1500, "the cancellation reached the other connection's request: {stats}");
    });
}

/// Every MCP endpoint serves its session's `GET` stream, not only `/mcp`: a client that
/// opened its session on `/servers/{name}/mcp` (official SDK clients open the stream on the
/// URL they were given) gets it there; an unknown upstream's endpoint is 404.
#[test]
fn every_mcp_endpoint_serves_the_sessions_get_stream() {
    let p = plain();
    let (base, http) = (&p.base, &p.http);
    p.rt.block_on(async {
        let session = Streamable::open(http.clone(), &format!("{base}/servers/rs/mcp"), None)
            .await
            .unwrap();
        for path in ["/servers/rs/mcp", "/mcp/http", "/mcp", "/servers/nope/mcp"] {
            let resp = http
                .get(format!("{base}{path}"))
                .header("accept", "text/event-stream")
                .header("mcp-session-id", &session.session)
                .send()
                .await
                .unwrap();
            let expected = if path.contains("nope") { 404 } else { 200 };
            assert_eq!(resp.status().as_u16(), expected, "GET {path}");
            if expected == 200 {
                let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
                assert!(kind.starts_with("text/event-stream"), "GET {path}: {kind}");
            }
        }
    });
}
