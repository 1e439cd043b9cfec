//! An MCP upstream written by hand on raw sockets, for the faults the Rust fixture cannot make
//! on cue. It speaks Streamable HTTP at `/mcp` and legacy HTTP+SSE at `/sse` (each event stream
//! announcing its own endpoint, `/message?stream=N`), answers what a gateway asks to register it
//! (`initialize`, `tools/list`, `ping`; the 2026-07-28 probe is refused, so the session era is
//! used) and does to each `tools/call` what [`Behaviour`] says, counting the calls it read and
//! the connections it accepted and saw end.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// What the upstream does.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// A `tools/call` whose arguments carry `"crash": true` is read whole, counted, and its
    /// connection closed without an answer (an upstream that died half-way through); on the
    /// legacy transport, its POST is accepted (202) and then the event stream closed. With
    /// `"crash": "events"` (Streamable HTTP), an event stream is begun as the answer, one
    /// progress notification sent on it, and the connection closed mid-stream. Every other call
    /// is answered.
    CrashOnAsk,
    /// Every request is answered; a connection then idle for this long is closed without a
    /// word (a server's keep-alive timeout).
    CloseIdleAfter(Duration),
}

/// A running raw upstream (its threads end with the test process).
pub struct RawUpstream {
    /// `http://127.0.0.1:PORT/mcp`
    pub url: String,
    /// `http://127.0.0.1:PORT/sse`, the legacy transport's event stream.
    pub sse_url: String,
    /// `tools/call` requests read whole.
    pub calls: Arc<AtomicUsize>,
    /// Those read on a connection that had carried a request before (a pooled one).
    pub calls_on_reused: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Connections closed, by either side ([`Behaviour::CloseIdleAfter`] closes them when
    /// idle).
    pub ended: Arc<AtomicUsize>,
}

impl RawUpstream {
    pub fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let calls_on_reused = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let shared = Shared {
            calls: calls.clone(),
            calls_on_reused: calls_on_reused.clone(),
            streams: Arc::default(),
        };
        let (n, e) = (connections.clone(), ended.clone());
        std::thread::spawn(move || {
            for sock in listener.incoming().map_while(Result::ok) {
                n.fetch_add(1, Ordering::SeqCst);
                let (shared, e) = (shared.clone(), e.clone());
                std::thread::spawn(move || {
                    serve(sock, behaviour, &shared);
                    e.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            url: format!("http://{addr}/mcp"),
            sse_url: format!("http://{addr}/sse"),
            calls,
            calls_on_reused,
            connections,
            ended,
        }
    }

    /// Wait (at most 30 s) until every connection accepted so far has closed.
    pub fn wait_all_closed(&self) {
        for _ in 0..3000 {
            let accepted = self.connections.load(Ordering::SeqCst);
            if self.ended.load(Ordering::SeqCst) >= accepted {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the upstream's connections did not all close in 30 s");
    }
}

/// What the connections share: the counts, and the legacy event streams answers go on (by
/// number).
#[derive(Clone)]
struct Shared {
    calls: Arc<AtomicUsize>,
    calls_on_reused: Arc<AtomicUsize>,
    streams: Arc<Mutex<Vec<Option<TcpStream>>>>,
}

/// Serve one connection's requests until it closes or the behaviour closes it.
fn serve(mut sock: TcpStream, behaviour: Behaviour, shared: &Shared) {
    let mut buf = Vec::new();
    for served in 0.. {
        if let Behaviour::CloseIdleAfter(idle) = behaviour {
            sock.set_read_timeout(Some(idle)).unwrap();
        }
        let Some((head, body)) = read_request(&mut sock, &mut buf) else {
            return;
        };
        let target = head.split_whitespace().nth(1).unwrap_or_default();
        if head.starts_with("GET") && target == "/sse" {
            let mut streams = shared.streams.lock().unwrap();
            let open = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nevent: endpoint\ndata: /message?stream={}\n\n",
                streams.len()
            );
            if sock.write_all(open.as_bytes()).is_err() {
                return;
            }
            streams.push(sock.try_clone().ok());
            continue;
        }
        if !head.starts_with("POST") {
            let status = if head.starts_with("DELETE") {
                "200 OK"
            } else {
                "405 Method Not Allowed"
            };
            let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            if sock.write_all(reply.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        // The legacy stream this POST's answer goes on.
        let legacy = target
            .strip_prefix("/message?stream=")
            .map(|n| n.parse::<usize>().unwrap());
        let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let method = msg["method"].as_str().unwrap_or_default();
        let mut crash = Value::Null;
        if method == "tools/call" {
            shared.calls.fetch_add(1, Ordering::SeqCst);
            if served > 0 {
                shared.calls_on_reused.fetch_add(1, Ordering::SeqCst);
            }
            if matches!(behaviour, Behaviour::CrashOnAsk) {
                crash = msg["params"]["arguments"]["crash"].clone();
            }
        }
        if crash == "events" {
            let event = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": 1, "progress": 1}});
            let event = format!("event: message\ndata: {event}\n\n");
            let _ = write!(
                sock,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
                event.len()
            );
            return;
        }
        let crash = crash == true;
        if crash && legacy.is_none() {
            return;
        }
        let answer = msg.get("id").map(|id| answer(&msg, method, id));
        let reply = match &answer {
            Some(answer) if legacy.is_none() => {
                let body = answer.to_string();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            _ => "HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n".to_owned(),
        };
        if sock.write_all(reply.as_bytes()).is_err() {
            return;
        }
        if let Some(n) = legacy {
            let mut streams = shared.streams.lock().unwrap();
            let stream = &mut streams[n];
            match (crash, stream.as_mut(), answer) {
                (true, Some(events), _) => {
                    let _ = events.shutdown(std::net::Shutdown::Both);
                    *stream = None;
                }
                (false, Some(events), Some(answer)) => {
                    let _ = write!(events, "event: message\ndata: {answer}\n\n");
                }
                _ => {}
            }
        }
    }
}

/// The answer to request `msg` (its `method` and `id` given).
fn answer(msg: &Value, method: &str, id: &Value) -> Value {
    match method {
        "initialize" => json!({"jsonrpc": "2.0", "id": id, "result": {
            "protocolVersion": msg["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "raw", "version": "1"},
        }}),
        "tools/list" => json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
            {"name": "run", "inputSchema": {"type": "object"}},
        ]}}),
        "tools/call" => json!({"jsonrpc": "2.0", "id": id, "result": {
            "content": [{"type": "text", "text": "ran"}],
        }}),
        "ping" => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
        _ => json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": -32601, "message": "method not found",
        }}),
    }
}

/// The next request's head (as text) and body, with what was read ahead in `buf`; `None` when
/// the connection closed, failed or timed out first.
fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = buf[end + 4..end + 4 + length].to_vec();
                buf.drain(..end + 4 + length);
                return Some((head, body));
            }
        }
        match sock.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
