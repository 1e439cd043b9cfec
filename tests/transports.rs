//! The downstream transports besides Streamable HTTP, against the real binary: legacy HTTP+SSE
//! (`/sse` + `/message`) and JSON-RPC over WebSocket (`/ws`). No upstreams are registered: the
//! gateway itself answers `initialize`, `ping`, `tools/list` and unknown methods, which is enough
//! to prove that messages go in and answers come back on the right connection.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::{Dir, Gateway};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Every wait in this file is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

fn start(dir: &Dir, env: &[(&str, &str)]) -> Gateway {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-auth"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Gateway::spawn(cmd)
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

/// A legacy SSE client: raw frames (text between blank lines), comments included.
struct SseClient {
    frames: mpsc::UnboundedReceiver<String>,
    /// The `endpoint` event's data.
    endpoint: String,
}

impl SseClient {
    async fn connect(gw: &Gateway, path: &str) -> Self {
        let resp = http()
            .get(format!("http://{}{path}", gw.addr))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET {path}\n--- log\n{}", gw.log());
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let frame = buf[..end].to_owned();
                    buf.drain(..end + 2);
                    if tx.send(frame).is_err() {
                        return;
                    }
                }
            }
        });
        let mut client = Self {
            frames: rx,
            endpoint: String::new(),
        };
        let first = client.next_frame().await;
        let data = first
            .strip_prefix("event: endpoint\ndata: ")
            .unwrap_or_else(|| panic!("first event is not the endpoint: {first:?}"));
        client.endpoint = data.to_owned();
        client
    }

    async fn next_frame(&mut self) -> String {
        tokio::time::timeout(WAIT, self.frames.recv())
            .await
            .expect("no SSE frame in time")
            .expect("SSE stream ended")
    }

    /// The next `event: message`, parsed; keep-alive comments are skipped.
    async fn next_message(&mut self) -> Value {
        loop {
            let frame = self.next_frame().await;
            if frame.starts_with(':') {
                continue;
            }
            // `event: message`, its `id: <n>@<session>` (what a client reconnecting sends back
            // as `Last-Event-ID`) and its data.
            let mut lines = frame.lines();
            assert_eq!(lines.next(), Some("event: message"), "{frame:?}");
            let id = lines.next().and_then(|l| l.strip_prefix("id: "));
            assert!(
                id.is_some_and(|id| id
                    .split_once('@')
                    .is_some_and(|(n, _)| n.parse::<u64>().is_ok())),
                "an SSE message names its session in its id: {frame:?}"
            );
            let data = lines
                .next()
                .and_then(|l| l.strip_prefix("data: "))
                .unwrap_or_else(|| panic!("unexpected SSE frame {frame:?}"));
            return serde_json::from_str(data).unwrap();
        }
    }

    async fn post(&self, gw: &Gateway, msg: &Value) -> reqwest::StatusCode {
        http()
            .post(format!("http://{}{}", gw.addr, self.endpoint))
            .json(msg)
            .send()
            .await
            .unwrap()
            .status()
    }
}

fn request(id: impl Into<Value>, method: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": method})
}

fn initialize(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_starts_with_endpoint_and_carries_answers_with_their_ids() {
    let dir = Dir::new();
    let gw = start(&dir, &[]);
    let mut sse = SseClient::connect(&gw, "/sse").await;
    assert!(
        sse.endpoint.starts_with("/message?session_id="),
        "endpoint {:?}",
        sse.endpoint
    );
    let id = sse.endpoint.trim_start_matches("/message?session_id=");
    assert!(id.len() >= 32 && id.chars().all(|c| c.is_ascii_hexdigit()));

    assert_eq!(sse.post(&gw, &initialize(1)).await, 202);
    let init = sse.next_message().await;
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05");
    assert_eq!(init["result"]["serverInfo"]["name"], "mcpgw");

    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(sse.post(&gw, &note).await, 202);
    assert_eq!(sse.post(&gw, &request("two", "ping")).await, 202);
    let ping = sse.next_message().await;
    assert_eq!(ping, json!({"jsonrpc": "2.0", "id": "two", "result": {}}));

    assert_eq!(sse.post(&gw, &request(3, "tools/list")).await, 202);
    let tools = sse.next_message().await;
    assert_eq!(tools["id"], 3);
    assert_eq!(tools["result"]["tools"], json!([]));

    assert_eq!(sse.post(&gw, &request(4, "no/such")).await, 202);
    let unknown = sse.next_message().await;
    assert_eq!(unknown["id"], 4);
    assert_eq!(unknown["error"]["code"], -32601);

    let batch = json!([request(5, "ping"), request(6, "tools/list")]);
    assert_eq!(sse.post(&gw, &batch).await, 202);
    let answers = sse.next_message().await;
    let ids: Vec<&Value> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["id"])
        .collect();
    assert_eq!(ids, [&json!(5), &json!(6)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sse_sessions_with_colliding_ids_each_get_their_own_answers() {
    const N: i64 = 100;
    let dir = Dir::new();
    let gw = start(&dir, &[]);
    let mut a = SseClient::connect(&gw, "/sse").await;
    let mut b = SseClient::connect(&gw, "/sse").await;
    assert_ne!(a.endpoint, b.endpoint);
    // Same ids on both sessions; the unknown method's name (echoed in the error) says which
    // session and request an answer belongs to.
    let posts = (0..N).flat_map(|i| {
        [
            (&a, request(i, &format!("probe/a/{i}"))),
            (&b, request(i, &format!("probe/b/{i}"))),
        ]
    });
    let statuses = futures_util::future::join_all(posts.map(|(client, msg)| {
        let gw = &gw;
        async move { client.post(gw, &msg).await }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    for (client, tag) in [(&mut a, "a"), (&mut b, "b")] {
        let mut seen = HashMap::new();
        for _ in 0..N {
            let answer = client.next_message().await;
            let id = answer["id"].as_i64().unwrap();
            let message = answer["error"]["message"].as_str().unwrap().to_owned();
            assert!(
                message.ends_with(&format!("probe/{tag}/{id}")),
                "session {tag} got {answer}"
            );
            assert!(seen.insert(id, ()).is_none(), "duplicate answer {id}");
        }
        assert_eq!(seen.len() as i64, N);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_post_to_unknown_or_missing_session_is_rejected() {
    let dir = Dir::new();
    let gw = start(&dir, &[]);
    let client = http();
    let url = |q: &str| format!("http://{}/message{q}", gw.addr);
    let status = |q: &'static str| {
        let req = client.post(url(q)).json(&request(1, "ping"));
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(
        status("?session_id=00112233445566778899aabbccddeeff").await,
        404
    );
    assert_eq!(status("").await, 400);
    assert_eq!(status("?session_id=").await, 400);
    let unknown_upstream = client
        .get(format!("http://{}/servers/nope/sse", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_upstream.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_session_ends_when_the_client_disconnects() {
    let dir = Dir::new();
    let gw = start(&dir, &[]);
    let sse = SseClient::connect(&gw, "/sse").await;
    let endpoint = sse.endpoint.clone();
    assert_eq!(sse.post(&gw, &request(1, "ping")).await, 202);
    drop(sse);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = http()
            .post(format!("http://{}{endpoint}", gw.addr))
            .json(&request(2, "ping"))
            .send()
            .await
            .unwrap()
            .status();
        if status == 404 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "session still open after disconnect ({status})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_sends_keep_alive_comments_at_the_configured_interval() {
    let dir = Dir::new();
    let gw = start(&dir, &[("MCPGW_SSE_KEEPALIVE_MS", "100")]);
    let mut sse = SseClient::connect(&gw, "/sse").await;
    assert_eq!(sse.next_frame().await, ": keep-alive");
    assert_eq!(sse.next_frame().await, ": keep-alive");
    // Still a working session between keep-alives.
    assert_eq!(sse.post(&gw, &request(7, "ping")).await, 202);
    assert_eq!(sse.next_message().await["id"], 7);
}

async fn ws_connect(
    gw: &Gateway,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = format!("ws://{}/ws", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "mcp".parse().unwrap());
    let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake timed out")
        .unwrap_or_else(|e| panic!("handshake failed: {e}\n--- log\n{}", gw.log()));
    assert_eq!(resp.status(), 101);
    assert_eq!(resp.headers()["sec-websocket-protocol"], "mcp");
    ws
}

/// The next text frame, parsed; control frames are skipped.
async fn ws_next<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame in time")
            .expect("socket closed")
            .unwrap();
        if let Message::Text(text) = msg {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn ws_send<S>(ws: &mut S, msg: impl ToString)
where
    S: futures_util::Sink<Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echoes_mcp_subprotocol_and_answers_requests() {
    let dir = Dir::new();
    let gw = start(&dir, &[]);
    let mut ws = ws_connect(&gw).await;

    ws_send(&mut ws, initialize(1)).await;
    let init = ws_next(&mut ws).await;
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["serverInfo"]["name"], "mcpgw");
    ws_send(
        &mut ws,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;

    // Sent back to back: answers may come in any order, ids tell them apart.
    ws_send(&mut ws, request(2, "ping")).await;
    ws_send(&mut ws, request(3, "tools/list")).await;
    ws_send(&mut ws, request(4, "no/such")).await;
    let mut answers = HashMap::new();
    for _ in 0..3 {
        let a = ws_next(&mut ws).await;
        answers.insert(a["id"].as_i64().unwrap(), a);
    }
    assert_eq!(answers[&2]["result"], json!({}));
    assert_eq!(answers[&3]["result"]["tools"], json!([]));
    assert_eq!(answers[&4]["error"]["code"], -32601);

    ws_send(&mut ws, json!([request(5, "ping"), request(6, "ping")])).await;
    let batch = ws_next(&mut ws).await;
    assert_eq!(batch.as_array().map(Vec::len), Some(2));
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_malformed_json_gets_a_parse_error_and_the_socket_keeps_working() {
    let dir = Dir::new();
    let gw = start(&dir, &[]);
    let mut ws = ws_connect(&gw).await;
    ws_send(&mut ws, "{not json").await;
    let err = ws_next(&mut ws).await;
    assert_eq!(err["error"]["code"], -32700);
    assert_eq!(err["id"], Value::Null);
    ws_send(&mut ws, request(9, "ping")).await;
    assert_eq!(
        ws_next(&mut ws).await,
        json!({"jsonrpc": "2.0", "id": 9, "result": {}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_server_pings_the_client() {
    let dir = Dir::new();
    let gw = start(&dir, &[("MCPGW_WS_PING_MS", "100")]);
    let mut ws = ws_connect(&gw).await;
    // Keep reading (tungstenite answers each ping with a pong while it reads) for well past the
    // idle limit of three intervals: the pongs must keep the socket open.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(next) = tokio::time::timeout_at(until, ws.next()).await {
        match next.expect("socket closed").unwrap() {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected frame {other:?}"),
        }
    }
    assert!(
        pings >= 3,
        "only {pings} pings in 800 ms at a 100 ms interval"
    );
    ws_send(&mut ws, request(1, "ping")).await;
    assert_eq!(ws_next(&mut ws).await["id"], 1);
}

#[test]
fn websocket_that_never_answers_pings_is_closed() {
    let dir = Dir::new();
    let gw = start(&dir, &[("MCPGW_WS_PING_MS", "100")]);
    // A raw client that completes the handshake and then never writes a byte (no pongs).
    let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET /ws HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "socket not closed within {WAIT:?}: {e}\n--- log\n{}",
                gw.log()
            ),
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    // Ping frames are 0x89; the server sent some before giving up, then a close frame (0x88).
    assert!(received.contains(&0x89), "no ping frame seen");
    assert!(received.contains(&0x88), "no close frame seen");
    assert!(started.elapsed() < WAIT);
}

#[test]
fn transports_require_a_bearer_token_on_the_listener() {
    let dir = Dir::new();
    std::fs::write(
        dir.join("mcpgw.toml"),
        "[auth]\ntokens = [\"test-token-0123456789abcdef\"]\n",
    )
    .unwrap();
    let gw = Gateway::start(&dir, &["--config", "mcpgw.toml"]);
    for (method, path) in [
        ("GET", "/sse"),
        ("POST", "/message?session_id=00"),
        ("GET", "/ws"),
    ] {
        let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 401"),
            "{method} {path}: {response}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_do_not_hold_up_shutdown() {
    let dir = Dir::new();
    // The default grace period is 30 s: exiting well within WAIT means the streams were closed.
    let mut gw = start(&dir, &[]);
    let mut sse = SseClient::connect(&gw, "/sse").await;
    let mut ws = ws_connect(&gw).await;
    gw.signal(common::SIGTERM);
    let ended = tokio::time::timeout(WAIT, sse.frames.recv()).await;
    assert!(matches!(ended, Ok(None)), "SSE stream not ended: {ended:?}");
    let close = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("socket not closed");
    assert!(
        matches!(close, None | Some(Ok(Message::Close(_))) | Some(Err(_))),
        "{close:?}"
    );
    let code = tokio::task::spawn_blocking(move || gw.wait_exit(WAIT))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}
