//! Quotas (issue 20, item 6), against a real gateway on loopback: one principal at its session
//! quota or over its rate leaves others served; a batch over the bound reaches no upstream;
//! tokenless 4 MiB bodies are refused on their heads without growing the gateway; a peer past
//! its connection cap is closed until one of its connections ends.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::clients::{self, SseSession, Streamable};
use common::plain::json_of;
use common::upstream::Upstream;
use common::{Dir, Gateway};
use serde_json::{Value, json};

const TOKEN_A: &str = "token-of-principal-a-0123456789";
const TOKEN_B: &str = "token-of-principal-b-0123456789";
const ADMIN: &str = "token-of-the-operator-0123456789";

/// A gateway whose static tokens name principals `a` and `b` (clients) and an operator, with
/// `more` appended to its configuration.
fn gateway_with_principals(dir: &Dir, more: &str) -> Gateway {
    let config = format!(
        "[auth]\ntokens = [\n  \"{ADMIN}\",\n  {{ token = \"{TOKEN_A}\", name = \"a\", role = \"client\" }},\n  {{ token = \"{TOKEN_B}\", name = \"b\", role = \"client\" }},\n]\n{more}"
    );
    std::fs::write(dir.join("mcpgw.toml"), config).unwrap();
    Gateway::start(dir, &["--config", "mcpgw.toml"])
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}})
}

/// The value of `mcpgw_quota_refusals_total{quota="…"}`, 0 when the series is not there yet.
async fn refusals(http: &reqwest::Client, base: &str, quota: &str) -> u64 {
    let text = http
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("mcpgw_quota_refusals_total{{quota=\"{quota}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A WebSocket upgrade of `/ws` over plain HTTP, as `token`: the response head's status.
fn ws_upgrade_status(addr: SocketAddr, token: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

#[test]
fn one_principal_at_its_session_quota_leaves_another_able_to_initialize() {
    let dir = Dir::new();
    let gw = gateway_with_principals(&dir, "[limits]\nsessions_per_principal = 2\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://{}", gw.addr);
    let url = format!("{base}/mcp");
    let http = clients::http(None);
    rt.block_on(async {
        let first = Streamable::open(http.clone(), &url, Some(TOKEN_A))
            .await
            .unwrap();
        let _second = Streamable::open(http.clone(), &url, Some(TOKEN_A))
            .await
            .unwrap();
        // The third is refused, naming the quota and its setting.
        let refused = http
            .post(&url)
            .bearer_auth(TOKEN_A)
            .header("accept", "application/json, text/event-stream")
            .json(&initialize())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 503);
        assert!(refused.headers().contains_key("retry-after"));
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32000, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("[limits] sessions_per_principal = 2") && message.contains("token:a"),
            "{message}"
        );
        // Another principal is not held back.
        let _other = Streamable::open(http.clone(), &url, Some(TOKEN_B))
            .await
            .expect("b initializes while a is at its quota");
        // The quota is across transports: no SSE stream or WebSocket for a either.
        let sse = http
            .get(format!("{base}/sse"))
            .bearer_auth(TOKEN_A)
            .send()
            .await
            .unwrap();
        assert_eq!(sse.status(), 503);
        let text = sse.text().await.unwrap();
        assert!(text.contains("sessions_per_principal"), "{text}");
        assert_eq!(ws_upgrade_status(gw.addr, TOKEN_A), 503);
        assert_eq!(ws_upgrade_status(gw.addr, TOKEN_B), 101);
        // Nor a 2026-07-28 listen stream, what such a client holds instead of a session.
        let both = "application/json, text/event-stream";
        let filter = json!({"toolsListChanged": true});
        let listen = clients::listen(&http, &url, Some(TOKEN_A), ("L", filter), both).await;
        assert_eq!(listen.status(), 503);
        let body: Value = listen.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("sessions_per_principal = 2"), "{body}");
        // A session closed makes room again, here for an SSE stream; at its quota again, a
        // can still initialize on that stream (the connection is the session: no other taken).
        assert_eq!(first.close().await.unwrap(), 204);
        let mut sse = SseSession::open(http.clone(), &base, "/sse", Some(TOKEN_A))
            .await
            .expect("room after a closed one");
        let answer = sse.request(&initialize()).await.unwrap();
        assert!(answer.get("result").is_some(), "{answer}");
        assert_eq!(ws_upgrade_status(gw.addr, TOKEN_A), 503);
        assert!(refusals(&http, &base, "sessions_per_principal").await >= 5);
    });
}

#[test]
fn a_principal_over_its_rate_gets_429_with_retry_after_and_others_are_served() {
    let dir = Dir::new();
    let gw = gateway_with_principals(&dir, "[limits]\nrequests_per_second = 1\nburst = 3\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://{}", gw.addr);
    let http = clients::http(None);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let post = |token: &'static str| {
        http.post(format!("{base}/mcp"))
            .bearer_auth(token)
            .header("accept", "application/json")
            .json(&ping)
            .send()
    };
    rt.block_on(async {
        // The burst passes whatever the clock does.
        for n in 0..3 {
            let status = post(TOKEN_A).await.unwrap().status();
            assert_ne!(status, 429, "request {n} of the burst");
        }
        // The next ones come faster than one a second: one of them is refused.
        let mut refused = None;
        for _ in 0..20 {
            let response = post(TOKEN_A).await.unwrap();
            if response.status() == 429 {
                refused = Some(response);
                break;
            }
        }
        let refused = refused.expect("a request over the rate must be refused");
        let retry: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1, "Retry-After: {retry}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32000, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("[limits] requests_per_second = 1, burst = 3"),
            "{message}"
        );
        // b has a bucket of its own.
        assert_ne!(post(TOKEN_B).await.unwrap().status(), 429);
        assert!(refusals(&http, &base, "requests_per_second").await >= 1);
    });
    // Inside a WebSocket the refusal is a JSON-RPC error, and the socket stays open.
    rt.block_on(async {
        let mut ws = clients::ws_plain(gw.addr, TOKEN_B).await;
        let mut refusal = None;
        for id in 0..20 {
            let ping = json!({"jsonrpc": "2.0", "id": id, "method": "ping"});
            let answer = clients::ws_request(&mut ws, &ping).await;
            if answer.get("error").is_some() {
                refusal = Some(answer);
                break;
            }
        }
        let refusal = refusal.expect("a message over the rate must be refused");
        assert_eq!(refusal["error"]["code"], -32000, "{refusal}");
        let message = refusal["error"]["message"].as_str().unwrap();
        assert!(message.contains("requests_per_second"), "{message}");
        // Still open: once the bucket has room again (a second at this rate), served.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let ping = json!({"jsonrpc": "2.0", "id": "after", "method": "ping"});
        let answer = clients::ws_request(&mut ws, &ping).await;
        assert!(answer.get("result").is_some(), "{answer}");
    });
}

#[test]
fn a_batch_over_the_bound_is_refused_whole_and_reaches_no_upstream() {
    let dir = Dir::new();
    let up = Upstream::start(&[]);
    let gw = Gateway::start(&dir, &["--no-auth"]);
    dir.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://{}", gw.addr);
    let http = clients::http(None);
    let batch = |n: usize| {
        Value::Array(
            (0..n)
                .map(|i| {
                    json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                    "params": {"name": "rs__echo", "arguments": {"text": "x"}}})
                })
                .collect(),
        )
    };
    rt.block_on(async {
        let stats = format!("{}/stats", up.base);
        let calls_before = json_of(http.get(&stats)).await["calls"].as_u64().unwrap();
        let session = Streamable::open(http.clone(), &format!("{base}/mcp"), None)
            .await
            .unwrap();
        let refused = session
            .request(&batch(10_529))
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("HTTP 400"), "{refused}");
        assert!(
            refused.contains("a batch of 10529 messages") && refused.contains("[limits] max_batch"),
            "{refused}"
        );
        // Over legacy SSE too, as the one answer on the stream.
        let mut sse = SseSession::open(http.clone(), &base, "/sse", None)
            .await
            .unwrap();
        let answer = sse.request(&batch(101)).await.unwrap();
        assert_eq!(answer["error"]["code"], -32600, "{answer}");
        let calls = json_of(http.get(&stats)).await["calls"].as_u64().unwrap();
        assert_eq!(
            calls, calls_before,
            "no entry of a refused batch reaches the upstream"
        );
        // A batch within the bound is served entry by entry.
        let answers = session.request(&batch(100)).await.unwrap();
        assert_eq!(answers.as_array().map(Vec::len), Some(100), "{answers}");
        let calls = json_of(http.get(&stats)).await["calls"].as_u64().unwrap();
        assert_eq!(calls, calls_before + 100);
    });
}

/// Send a tokenless `POST path` announcing 4 MiB and then all of it but the last byte, and
/// read the answer's status line; the socket is returned open (as the gateway left it).
fn tokenless_four_mib(addr: SocketAddr, path: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 4194304\r\n\r\n"
    )
    .unwrap();
    // The gateway may close its end once it has answered the head: the rest may not go.
    let body = vec![b' '; 4_194_303];
    let _ = s.write_all(&body);
    let mut head = [0u8; 12];
    let status = match s.read_exact(&mut head) {
        Ok(()) => String::from_utf8_lossy(&head).into_owned(),
        Err(e) => format!("no answer: {e}"),
    };
    (status, s)
}

#[test]
fn forty_tokenless_four_mib_bodies_are_refused_on_their_heads_and_add_under_20_mib() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &[]);
    // `POST /mcp` is the listener's own HTTP/1.1 loop; `/gateways` goes through hyper.
    for path in ["/mcp", "/gateways"] {
        // Warm both paths up first, so that the figure is what the 40 add.
        let (status, _) = tokenless_four_mib(gw.addr, path);
        assert_eq!(status, "HTTP/1.1 401", "{path}");
        let before = gw.rss_kib();
        let answered: Vec<(String, TcpStream)> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..40)
                .map(|_| scope.spawn(|| tokenless_four_mib(gw.addr, path)))
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        // Measured while every one of the 40 connections is still open on the client's side.
        let grown = gw.rss_kib().saturating_sub(before);
        for (status, _) in &answered {
            assert_eq!(status, "HTTP/1.1 401", "{path}");
        }
        assert!(
            grown < 20 * 1024,
            "{path}: RSS grew by {grown} KiB for 40 tokenless bodies"
        );
        drop(answered);
    }
}

/// `GET /health` on `s`, kept alive: the status, or `None` when the connection was closed or
/// reset instead.
fn health(s: &mut TcpStream) -> Option<u16> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .ok()?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return head[9..12].parse().ok();
            }
        }
    }
}

#[test]
fn a_connection_past_the_per_peer_cap_is_closed_until_another_ends() {
    let dir = Dir::new();
    std::fs::write(
        dir.join("mcpgw.toml"),
        "[http]\nmax_connections_per_peer = 3\n",
    )
    .unwrap();
    let gw = Gateway::start(&dir, &["--no-auth", "--config", "mcpgw.toml"]);
    let mut open: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(gw.addr).unwrap();
            assert_eq!(health(&mut s), Some(200), "within the cap");
            s
        })
        .collect();
    // The fourth is closed as soon as it is accepted.
    let mut fourth = TcpStream::connect(gw.addr).unwrap();
    assert_eq!(health(&mut fourth), None, "past the cap");
    // Those open are served as before.
    assert_eq!(health(&mut open[0]), Some(200));
    // One ends: its place is free again once the gateway has seen it go.
    drop(open.pop());
    let mut served = None;
    for _ in 0..100 {
        let mut s = TcpStream::connect(gw.addr).unwrap();
        if health(&mut s) == Some(200) {
            served = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut served = served.expect("a connection is accepted again after one ended");
    // Counted, and said in the log.
    served
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut metrics = String::new();
    served.read_to_string(&mut metrics).unwrap();
    assert!(
        metrics.contains("mcpgw_quota_refusals_total{quota=\"max_connections_per_peer\"}"),
        "{metrics}"
    );
    let log = gw.wait_log_count("max_connections_per_peer = 3", 1, Duration::from_secs(10));
    assert!(log.contains("127.0.0.1"), "{log}");
}
