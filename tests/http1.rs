//! The listener's own HTTP/1.1 path for `POST /mcp` (`src/h1/server.rs`), over raw sockets to a
//! real `mcpgw` on 127.0.0.1: what it takes itself, what it hands to hyper mid-connection, and
//! the behaviours it must keep from hyper (pipelining, `Connection: close`, timeouts, a client
//! that hangs up mid-call), and the 413 a body over the limit gets, over HTTP/1.1 and HTTP/2.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::upstream::Upstream;
use common::{Dir, Gateway};
use serde_json::{Value, json};

/// One HTTP/1.1 answer read off a connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Field names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Read one answer: its head, then its body by `Content-Length` or chunked framing. Interim
/// (1xx) answers are returned like any other.
fn read_answer(r: &mut BufReader<TcpStream>) -> Answer {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 "), "status line {line:?}");
    let status = line[9..12].parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    if status < 200 {
        return answer;
    }
    if let Some(len) = answer.header("content-length") {
        let mut body = vec![0; len.parse().unwrap()];
        r.read_exact(&mut body).unwrap();
        answer.body = body;
    } else if answer.header("transfer-encoding") == Some("chunked") {
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim_end(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            answer.body.extend_from_slice(&chunk[..size]);
        }
    }
    answer
}

fn post(body: &Value, extra: &str) -> String {
    let body = body.to_string();
    format!(
        "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn ping(id: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"})
}

fn connect(gw: &Gateway) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// A gateway (no auth) with the Rust fixture registered as `up`; the dir holds its state.
fn with_upstream() -> (Dir, Upstream, Gateway) {
    let dir = Dir::new();
    let up = Upstream::start(&[]);
    let gw = Gateway::start(&dir, &["--no-auth"]);
    dir.run_expect(&["gateway", "add", "up", &format!("{}/mcp", up.base)], 0);
    (dir, up, gw)
}

/// Whether the peer closed: the next read ends without a byte.
fn closed(r: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    matches!(r.read_to_end(&mut rest), Ok(0))
}

#[test]
fn pipelined_requests_are_answered_in_order_and_a_route_after_them_is_served_too() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let (mut s, mut r) = connect(&gw);
    // Two calls this path takes, a route it hands to hyper, then a call hyper now serves: all
    // in one write, so the gateway reads them ahead of its answers.
    let mut wire = post(&ping(1), "") + &post(&ping(2), "");
    wire.push_str("GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n");
    wire.push_str(&post(&ping(3), ""));
    s.write_all(wire.as_bytes()).unwrap();
    let answers: Vec<Answer> = (0..4).map(|_| read_answer(&mut r)).collect();
    assert_eq!(
        answers.iter().map(|a| a.status).collect::<Vec<_>>(),
        [200; 4]
    );
    assert_eq!(answers[0].json()["id"], 1);
    assert_eq!(answers[1].json()["id"], 2);
    assert_eq!(answers[2].json()["status"], "ok", "{:?}", answers[2]);
    assert_eq!(answers[3].json()["id"], 3);
    for a in &answers {
        assert!(
            a.header("date").is_some_and(|d| d.ends_with(" GMT")),
            "{a:?}"
        );
    }
    // Still open and kept alive after the hand-over.
    s.write_all(post(&ping(4), "").as_bytes()).unwrap();
    assert_eq!(read_answer(&mut r).json()["id"], 4);
}

#[test]
fn a_request_trickled_in_pieces_is_still_one_request() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let (mut s, mut r) = connect(&gw);
    s.set_nodelay(true).unwrap();
    let wire = post(&ping(7), "");
    for piece in wire.as_bytes().chunks(9) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    let answer = read_answer(&mut r);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["id"], 7);
    // The head alone, then the body a moment later.
    let wire = post(&ping(8), "");
    let split = wire.find("\r\n\r\n").unwrap() + 4;
    s.write_all(&wire.as_bytes()[..split]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.write_all(&wire.as_bytes()[split..]).unwrap();
    assert_eq!(read_answer(&mut r).json()["id"], 8);
}

#[test]
fn chunked_and_expect_continue_requests_reach_the_same_handler() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let (mut s, mut r) = connect(&gw);
    let body = ping(11).to_string();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\naccept: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
    .unwrap();
    let answer = read_answer(&mut r);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["id"], 11);

    let (mut s, mut r) = connect(&gw);
    let body = ping(12).to_string();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\naccept: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    assert_eq!(read_answer(&mut r).status, 100);
    s.write_all(body.as_bytes()).unwrap();
    let answer = read_answer(&mut r);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["id"], 12);
}

#[test]
fn refusals_on_the_hot_route_come_as_before() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &[]);
    let (mut s, mut r) = connect(&gw);
    // No token: 401, and the connection stays usable.
    s.write_all(post(&ping(1), "").as_bytes()).unwrap();
    let answer = read_answer(&mut r);
    assert_eq!(answer.status, 401, "{answer:?}");
    // A foreign Host (DNS rebinding) is refused before the token is asked for.
    s.write_all(
        post(&ping(2), "")
            .replace("host: localhost", "host: evil.example")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(read_answer(&mut r).status, 403);
    // A malformed length goes to hyper, which refuses it and closes.
    s.write_all(b"POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1x\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut r).status, 400);
    assert!(closed(&mut r));
}

#[test]
fn a_request_over_its_rate_gets_429_and_its_connection_serves_the_next() {
    let dir = Dir::new();
    let token = "a-static-token-of-16-characters-or-more";
    std::fs::write(
        dir.join("mcpgw.toml"),
        format!("[auth]\ntokens = [\"{token}\"]\n[limits]\nrequests_per_second = 1\nburst = 1\n"),
    )
    .unwrap();
    let gw = Gateway::start(&dir, &["--config", "mcpgw.toml"]);
    let (mut s, mut r) = connect(&gw);
    let auth = format!("authorization: Bearer {token}\r\n");
    s.write_all(post(&ping(1), &auth).as_bytes()).unwrap();
    assert_ne!(
        read_answer(&mut r).status,
        429,
        "the first is within the burst"
    );
    // The second, faster than one a second, its body coming after its head: refused, and its
    // body awaited (a refusal of a stranger's head would close the connection instead).
    let second = post(&ping(2), &auth);
    let (head, body) = second.split_at(second.find("\r\n\r\n").unwrap() + 4);
    s.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(body.as_bytes()).unwrap();
    let refused = read_answer(&mut r);
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    assert_eq!(refused.header("connection"), None, "{refused:?}");
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[limits] requests_per_second = 1, burst = 1")
    );
    // The connection serves on (the third is answered, within the rate again or not).
    s.write_all(post(&ping(3), &auth).as_bytes()).unwrap();
    let third = read_answer(&mut r);
    assert!(matches!(third.status, 200 | 429), "{third:?}");
}

#[test]
fn connection_close_is_honoured_after_the_answer() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let (mut s, mut r) = connect(&gw);
    s.write_all(post(&ping(5), "connection: close\r\n").as_bytes())
        .unwrap();
    let answer = read_answer(&mut r);
    assert_eq!(answer.json()["id"], 5);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed(&mut r), "the gateway kept the connection open");
}

#[test]
fn an_idle_kept_alive_connection_is_closed_at_the_header_timeout() {
    let dir = Dir::new();
    std::fs::write(dir.join("mcpgw.toml"), "[http]\nheader_timeout_secs = 1\n").unwrap();
    let gw = Gateway::start(&dir, &["--no-auth", "--config", "mcpgw.toml"]);
    let (mut s, mut r) = connect(&gw);
    // Several answers within the timeout of each other keep it open.
    for id in 0..4 {
        s.write_all(post(&ping(id), "").as_bytes()).unwrap();
        assert_eq!(read_answer(&mut r).json()["id"], id);
        std::thread::sleep(Duration::from_millis(400));
    }
    let idle = Instant::now();
    assert!(closed(&mut r), "the idle connection was not closed");
    let waited = idle.elapsed();
    assert!(
        waited > Duration::from_millis(300) && waited < Duration::from_secs(5),
        "closed after {waited:?} idle (header timeout 1 s)"
    );
}

#[test]
fn a_client_that_hangs_up_mid_call_cancels_it_upstream() {
    let (_dir, up, gw) = with_upstream();
    let sleep = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "up__sleep", "arguments": {"ms": 1500}}})
    };
    let stats = || -> Value {
        let (status, body) = common::curl(&[&format!("{}/stats", up.base)]);
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    };
    // A call whose client stays: it sleeps its whole time.
    let (mut s, mut r) = connect(&gw);
    s.write_all(post(&sleep(1), "").as_bytes()).unwrap();
    let answer = read_answer(&mut r);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(stats()["slept"], 1);
    // A call whose client leaves once the upstream has it: the gateway drops its request, and
    // the upstream's handler with it.
    let (mut s, r) = connect(&gw);
    s.write_all(post(&sleep(2), "").as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats()["sleeps"].as_array().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the second call never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(r);
    s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(s);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        stats()["slept"],
        1,
        "the abandoned call slept on: {}",
        stats()
    );
    // On 2026-07-28 the closed exchange is the cancellation: no notification is posted.
    assert_eq!(stats()["cancelled"], json!([]), "{}", stats());
}

#[test]
fn a_client_that_hangs_up_mid_call_of_a_session_era_upstream_cancels_it_by_notification() {
    let dir = Dir::new();
    let up = Upstream::start(&[]);
    let gw = Gateway::start(&dir, &["--no-auth"]);
    dir.run_expect(
        &[
            "gateway",
            "add",
            "up",
            &format!("{}/mcp", up.base),
            "--era",
            "2025-11-25",
        ],
        0,
    );
    let stats = || -> Value {
        let (status, body) = common::curl(&[&format!("{}/stats", up.base)]);
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    };
    let sleep = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                       "params": {"name": "up__sleep", "arguments": {"ms": 3000}}});
    let (mut s, r) = connect(&gw);
    s.write_all(post(&sleep, "").as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats()["sleeps"].as_array().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the call never reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stats()["cancelled"], json!([]), "nothing cancelled yet");
    drop(r);
    s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(s);
    // A session-era upstream hears of it only by notification, in its own id for the call.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats()["cancelled"].as_array().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no notifications/cancelled reached the upstream: {}",
            stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let cancelled = stats()["cancelled"].clone();
    assert_eq!(cancelled.as_array().unwrap().len(), 1, "{cancelled}");
    assert_ne!(
        cancelled[0],
        json!(7),
        "the client's id, not the upstream's: {cancelled}"
    );
}

/// A forwarded call's answer is written by the loop itself, without a response being built;
/// it must come out as hyper writes the same answer (`/mcp/http` is served by hyper): the same
/// status, body, content type (JSON, or one SSE event for a client that accepts only that),
/// `cache-control` for the event, a correct `content-length` and a `date`.
#[test]
fn a_forwarded_answer_is_written_as_hyper_writes_it() {
    let (_dir, _up, gw) = with_upstream();
    let echo = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "up__echo", "arguments": {"text": "héllo \"both\""}}})
    };
    for accept in ["application/json, text/event-stream", "text/event-stream"] {
        let mut answers = Vec::new();
        for path in ["/mcp", "/mcp/http"] {
            let (mut s, mut r) = connect(&gw);
            let body = echo(21).to_string();
            let request = format!(
                "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\naccept: {accept}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(request.as_bytes()).unwrap();
            let answer = read_answer(&mut r);
            assert_eq!(answer.status, 200, "{path} {accept}: {answer:?}");
            assert_eq!(
                answer.header("content-length"),
                Some(answer.body.len().to_string().as_str()),
                "{path} {accept}"
            );
            assert!(
                answer.header("date").is_some_and(|d| d.ends_with(" GMT")),
                "{path} {accept}: {answer:?}"
            );
            answers.push(answer);
        }
        let [fast, hyper] = &answers[..] else {
            unreachable!()
        };
        for name in ["content-type", "cache-control"] {
            assert_eq!(fast.header(name), hyper.header(name), "{name} for {accept}");
        }
        assert_eq!(
            String::from_utf8_lossy(&fast.body),
            String::from_utf8_lossy(&hyper.body),
            "{accept}"
        );
        let text = String::from_utf8(fast.body.clone()).unwrap();
        let json = if accept == "text/event-stream" {
            assert_eq!(fast.header("content-type"), Some("text/event-stream"));
            assert_eq!(fast.header("cache-control"), Some("no-cache"));
            text.strip_prefix("event: message\ndata: ")
                .and_then(|t| t.strip_suffix("\n\n"))
                .unwrap_or_else(|| panic!("not one SSE event: {text:?}"))
                .to_owned()
        } else {
            assert_eq!(fast.header("content-type"), Some("application/json"));
            text
        };
        let answer: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(answer["id"], 21);
        assert_eq!(
            answer["result"]["content"][0]["text"], "héllo \"both\"",
            "{answer}"
        );
    }
    // And with `Connection: close`: said in the head, then the connection ends.
    let (mut s, mut r) = connect(&gw);
    s.write_all(post(&echo(22), "connection: close\r\n").as_bytes())
        .unwrap();
    let answer = read_answer(&mut r);
    assert_eq!(answer.json()["id"], 22);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed(&mut r), "the gateway kept the connection open");
}

/// Calls on one connection borrow one upstream-timeout timer in turn (`upstream::deadline`),
/// set for the earliest deadline it has waited for: a call that starts after another must still
/// get its whole timeout when the timer fires for the earlier call's deadline in its midst, and
/// a call that outlasts its own timeout is cut at it.
#[test]
fn calls_in_turn_on_a_connection_each_get_their_whole_upstream_timeout() {
    let dir = Dir::new();
    let up = Upstream::start(&[]);
    let gw = Gateway::start(&dir, &["--no-auth", "--request-timeout", "3"]);
    dir.run_expect(&["gateway", "add", "up", &format!("{}/mcp", up.base)], 0);
    let sleep = |id: u64, ms: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "up__sleep", "arguments": {"ms": ms}}})
    };
    let (mut s, mut r) = connect(&gw);
    // t = 0: the connection's timer is set for its first call's deadline, t = 3 s.
    s.write_all(post(&sleep(1, 0), "").as_bytes()).unwrap();
    let first = read_answer(&mut r).json();
    assert!(first.get("result").is_some(), "{first}");
    std::thread::sleep(Duration::from_secs(2));
    // t = 2 s: a call of 1.8 s, due by t = 5 s; the timer fires at t = 3 s while it runs.
    let started = Instant::now();
    s.write_all(post(&sleep(2, 1800), "").as_bytes()).unwrap();
    let second = read_answer(&mut r).json();
    assert!(
        second.get("result").is_some(),
        "cut off at the earlier call's deadline: {second}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1800));
    // A call longer than its own timeout is cut at it, on the same connection.
    let started = Instant::now();
    s.write_all(post(&sleep(3, 6_000), "").as_bytes()).unwrap();
    let third = read_answer(&mut r).json();
    let took = started.elapsed();
    assert_eq!(third["error"]["code"], -32002, "{third}");
    assert!(
        third["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not answer within 3 s")),
        "{third}"
    );
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(8),
        "cut after {took:?}"
    );
}

/// Both entrances of `POST /mcp` (the listener's own loop, and hyper for a chunked body it
/// hands over) run the one pipeline: each rule answers alike through either, call or not.
#[test]
fn the_loop_and_hyper_give_every_rule_the_same_answer() {
    let (_dir, _up, gw) = with_upstream();
    let call = |id: u64, name: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": {"text": "x"}}})
    };
    let list = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"});
    let cases: Vec<(Value, &str, u16)> = vec![
        // Unsupported version, on a call (read without a tree) and on another method.
        (
            call(1, "up__echo"),
            "mcp-protocol-version: 1999-01-01\r\n",
            400,
        ),
        (list.clone(), "mcp-protocol-version: 1999-01-01\r\n", 400),
        // A session-era client past initialize without its session.
        (
            call(2, "up__echo"),
            "mcp-protocol-version: 2025-06-18\r\n",
            400,
        ),
        (list.clone(), "mcp-protocol-version: 2025-06-18\r\n", 400),
        // 2026-07-28 by its header, without the envelope the ladder requires.
        (
            call(3, "up__echo"),
            "mcp-protocol-version: 2026-07-28\r\n",
            400,
        ),
        // A session that does not exist.
        (call(4, "up__echo"), "mcp-session-id: nobody\r\n", 404),
        // Routing: an unknown upstream, then a call that goes through.
        (call(6, "nope__echo"), "", 200),
        (call(7, "up__echo"), "", 200),
    ];
    for (body, extra, status) in cases {
        let (mut s, mut r) = connect(&gw);
        s.write_all(post(&body, extra).as_bytes()).unwrap();
        let looped = read_answer(&mut r);
        let text = body.to_string();
        let (mut s, mut r) = connect(&gw);
        write!(
            s,
            "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n{extra}transfer-encoding: chunked\r\n\r\n{:x}\r\n{text}\r\n0\r\n\r\n",
            text.len()
        )
        .unwrap();
        let hyper = read_answer(&mut r);
        assert_eq!(looped.status, status, "{text} {extra}");
        assert_eq!(hyper.status, status, "{text} {extra}");
        assert_eq!(looped.json(), hyper.json(), "{text} {extra}");
    }
}

/// A body over the 4 MiB limit, sent whole before the answer is read (as most clients do): more
/// than the kernel's socket buffers hold on loopback, so that a gateway that stops reading at
/// the limit is seen to.
const OVER_LIMIT: usize = 32 * 1024 * 1024;

/// Issue 19: the 413 must reach a client that sends its whole body before it reads, instead of
/// a reset: the gateway reads (and drops) the rest of an oversized body before it answers.
#[test]
fn a_body_over_the_limit_is_read_then_refused_with_413_on_a_raw_socket() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let (mut s, mut r) = connect(&gw);
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {OVER_LIMIT}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    // All of it goes in, on this one thread: the gateway reads it.
    s.write_all(&vec![b' '; OVER_LIMIT])
        .expect("the gateway cut the body short");
    let answer = read_answer(&mut r);
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.json()["error"]["code"], "too_large", "{answer:?}");
}

/// The same through a general HTTP client, over HTTP/1.1 and over HTTP/2 (where hyper used to
/// reset the stream of an unread body: curl's exit 92).
#[test]
fn a_body_over_the_limit_gets_413_over_http1_and_http2() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    common::tls::install_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{}/mcp", gw.addr);
    for (version, client) in [
        ("HTTP/1.1", reqwest::Client::builder().http1_only().build()),
        (
            "HTTP/2",
            reqwest::Client::builder().http2_prior_knowledge().build(),
        ),
    ] {
        let client = client.unwrap();
        let answer = rt.block_on(async {
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(vec![b' '; OVER_LIMIT])
                .send()
                .await
                .unwrap_or_else(|e| panic!("{version}: {e:?}"));
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        });
        assert_eq!(answer.0, 413, "{version}: {answer:?}");
        assert!(answer.1.contains("too_large"), "{version}: {answer:?}");
    }
}
