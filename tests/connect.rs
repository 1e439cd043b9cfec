//! `mcpgw connect URL`, the stdio bridge desktop clients run (issue 21 item 5): the official
//! Python SDK client starts it as its server command and calls tools through a TLS gateway
//! that wants a client certificate and a bearer token, in both eras, across a certificate
//! rotation and a gateway restart, with the server's own requests (sampling, elicitation) and
//! progress reaching the client; and the relay driven line by line, for what a client cannot
//! be made to show: why a call failed (unknown CA, no token), a token file read again after a
//! 401, a `subscriptions/listen` stream that holds up nothing else, the standing `GET` stream.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::clients::{listen_request, modern_meta};
use common::stdio::{PATIENCE, StdioPeer};
use common::upstream::Upstream;
use common::{Dir, Gateway, Pki, bin, py};
use serde_json::{Value, json};

/// `mcpgw serve` with `pki`'s certificate on 127.0.0.1:`port` (0: any), requiring a client
/// certificate from its CA when `mtls`.
fn serve(dir: &Dir, pki: &Pki, port: u16, mtls: bool) -> Gateway {
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--tls-cert",
            &pki.s("server.crt"),
            "--tls-key",
            &pki.s("server.key"),
        ]);
    if mtls {
        cmd.args(["--client-ca", &pki.s("ca.crt")]);
    }
    Gateway::spawn(cmd)
}

/// A client token minted by the gateway of `dir`, written to `name` in `dir`; its path.
fn token_file(dir: &Dir, name: &str) -> std::path::PathBuf {
    let (token, _) = dir.run_expect(&["token", "create"], 0);
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", token.trim())).unwrap();
    path
}

/// `pki`'s CA and client certificate, as `mcpgw connect` takes them.
fn identity(pki: &Pki) -> Vec<String> {
    let (ca, cert, key) = (pki.s("ca.crt"), pki.s("client.crt"), pki.s("client.key"));
    [
        "--ca-cert",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `mcpgw connect`'s arguments for the gateway on `port`: `pki`'s identity, and a token file
/// minted for the gateway of `dir`.
fn with_identity(dir: &Dir, pki: &Pki, port: u16) -> Vec<String> {
    let token = token_file(dir, "token");
    let mut args = vec![format!("https://localhost:{port}/mcp")];
    args.extend(identity(pki));
    args.extend(["--bearer-file".to_owned(), token.display().to_string()]);
    args
}

/// The Rust fixture's request counters (`GET /stats`), over mTLS with `pki`'s client
/// certificate when it serves HTTPS.
fn stats(up: &Upstream, pki: Option<&Pki>) -> Value {
    let url = format!("{}/stats", up.base);
    let mut args: Vec<String> = Vec::new();
    if let Some(pki) = pki {
        args = ["--cacert", "--cert", "--key"]
            .into_iter()
            .zip(["ca.crt", "client.crt", "client.key"])
            .flat_map(|(flag, file)| [flag.to_owned(), pki.s(file)])
            .collect();
    }
    args.push(url);
    let (status, body) = common::curl(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Ask the fixture's counters until `done` says yes (`what` if they never do).
fn until_stats(up: &Upstream, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let now = stats(up, None);
        if done(&now) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {now}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The calls each phase of the Python driver makes: a tool of the 2026-07-28 upstream and one
/// of the session-era upstream, and the session-era upstream's tools that ask the client
/// (sampling, elicitation) and report progress while they run.
fn calls() -> Value {
    json!([
        ["modern__echo", {"text": "to the modern upstream"}],
        ["legacy__echo", {"text": "to the session-era upstream"}],
        ["legacy__test_sampling", {"prompt": "say hi"}],
        ["legacy__test_elicitation", {"message": "who are you?"}],
        ["legacy__test_tool_with_progress", {}],
    ])
}

/// A running `tests/fixtures/connect_client.py`: its JSON lines, and the files it waits for.
struct Driver {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    control: std::path::PathBuf,
    mode: &'static str,
}

impl Driver {
    /// The driver in `mode` for `phases` phases of `calls`, starting `mcpgw connect` with
    /// `connect`.
    fn start(
        py: &Path,
        dir: &Dir,
        (mode, phases): (&'static str, u32),
        calls: &Value,
        connect: &[String],
    ) -> Self {
        let control = dir.join(&format!("control-{mode}"));
        std::fs::create_dir_all(&control).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/connect_client.py");
        let mut cmd = Command::new(py);
        cmd.arg(script)
            .args(["--mcpgw", bin().to_str().unwrap(), "--mode", mode])
            .args(["--control", control.to_str().unwrap()])
            .args([
                "--phases",
                &phases.to_string(),
                "--calls",
                &calls.to_string(),
            ])
            .arg("--")
            .args(connect)
            .env_remove("MCPGW_BEARER")
            .env_remove("MCPGW_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start the Python driver");
        let (lines, stderr) = common::stdio::read_output(&mut child);
        Self {
            child,
            lines,
            stderr,
            control,
            mode,
        }
    }

    /// The lines of phase `n`, up to its `done` line.
    /// The lines of phase `n` and its `done` line; `gw`'s log is shown if they do not come.
    fn phase(&mut self, n: u32, gw: Option<&Gateway>) -> (Vec<Value>, Value) {
        if n > 1 {
            std::fs::write(self.control.join(format!("go-{n}")), b"").unwrap();
        }
        let mut got = Vec::new();
        loop {
            let line = match self.lines.recv_timeout(PATIENCE) {
                Ok(line) => line,
                Err(e) => panic!(
                    "{} driver: no line of phase {n} ({e:?}); so far {got:?}\n--- its stderr (and mcpgw connect's)\n{}\n--- gateway log\n{}",
                    self.mode,
                    self.stderr.lock().unwrap(),
                    gw.map(Gateway::log).unwrap_or_default()
                ),
            };
            let value: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(value["phase"], n, "{value}");
            if value["done"] == true {
                return (got, value);
            }
            got.push(value);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every call of a phase answered as the upstreams answer it, the server's questions put to
/// the client and its progress reported.
fn assert_phase_answered(mode: &str, phase: u32, lines: &[Value]) {
    let by_tool = |tool: &str| {
        lines
            .iter()
            .find(|l| l["tool"] == tool)
            .unwrap_or_else(|| panic!("{mode} phase {phase}: no line for {tool}: {lines:?}"))
    };
    for line in lines {
        assert!(
            line["error"].is_null() && line["is_error"] == false,
            "{mode} phase {phase}: {line}"
        );
    }
    assert_eq!(by_tool("modern__echo")["result"], "to the modern upstream");
    assert_eq!(
        by_tool("legacy__echo")["result"],
        "to the session-era upstream"
    );
    let sampled = by_tool("legacy__test_sampling");
    assert_eq!(
        sampled["result"], "LLM response: sampled by the fixture",
        "{sampled}"
    );
    assert_eq!(
        sampled["asked"],
        json!(["sampling/createMessage"]),
        "{sampled}"
    );
    let elicited = by_tool("legacy__test_elicitation");
    assert!(
        elicited["result"]
            .as_str()
            .unwrap()
            .contains("ada@example.com"),
        "{elicited}"
    );
    assert_eq!(
        elicited["asked"],
        json!(["elicitation/create"]),
        "{elicited}"
    );
    let progress = by_tool("legacy__test_tool_with_progress");
    assert_eq!(progress["result"], "Progress completed", "{progress}");
    assert_eq!(progress["progress"], 3, "{progress}");
}

#[test]
fn python_sdk_clients_of_both_eras_call_tools_through_connect_across_a_rotation_and_a_restart() {
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let modern = Upstream::start_mtls(&pki);
    let legacy = Upstream::start_mtls_with(&pki, &["--session-only"]);
    let mut gw = serve(&dir, &pki, 0, true);
    let port = gw.addr.port();
    dir.gateway_add_mtls("modern", &format!("{}/mcp", modern.base), &pki);
    dir.gateway_add_mtls("legacy", &format!("{}/mcp", legacy.base), &pki);
    let connect = with_identity(&dir, &pki, port);
    let mut drivers = [
        Driver::start(&py, &dir, ("legacy", 3), &calls(), &connect),
        Driver::start(&py, &dir, ("2026-07-28", 3), &calls(), &connect),
    ];
    for d in &mut drivers {
        let (lines, _) = d.phase(1, Some(&gw));
        assert_phase_answered(d.mode, 1, &lines);
    }

    // (a) The gateway's certificate is rotated (same CA): the same sessions go on.
    let rotated = dir.rotate_issue(&pki);
    assert!(rotated.contains("verified: a new handshake"), "{rotated}");
    for d in &mut drivers {
        let (lines, _) = d.phase(2, Some(&gw));
        assert_phase_answered(d.mode, 2, &lines);
    }

    // (b) The gateway is killed and started again on the same port and data dir, refusing
    // connections while it is down: the new process takes the session-era client's session in
    // from its store, so the session goes on under its id. (A server that forgot the session
    // has it opened again: `straight_to_a_session_era_server_...` below.)
    drop(gw);
    gw = serve(&dir, &pki, port, true);
    for d in &mut drivers {
        let (lines, _) = d.phase(3, Some(&gw));
        assert_phase_answered(d.mode, 3, &lines);
    }
    assert!(
        gw.log().contains("session taken in from the store"),
        "the restarted gateway must serve the session it had:\n{}",
        gw.log()
    );
    let stderr = drivers[0].stderr.lock().unwrap().clone();
    assert!(
        !stderr.contains("the server forgot the session"),
        "the session went on: nothing to open again:\n{stderr}"
    );
}

/// `mcpgw connect ARGS` in `dir`, driven line by line.
fn start_relay(dir: &Dir, args: &[&str]) -> StdioPeer {
    let mut cmd = dir.cmd();
    cmd.env_remove("MCPGW_BEARER").arg("connect").args(args);
    StdioPeer::spawn(cmd, "mcpgw connect")
}

fn initialize(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "connect-test", "version": "1"}}})
}

#[test]
fn an_unknown_ca_is_said_on_stderr_and_to_the_client_as_a_json_rpc_error() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let other = dir.cert_gen("other", &[]);
    let gw = serve(&dir, &pki, 0, true);
    let url = format!("https://localhost:{}/mcp", gw.addr.port());
    let mut relay = start_relay(
        &dir,
        &[
            &url,
            "--ca-cert",
            &other.s("ca.crt"),
            "--client-cert",
            &pki.s("client.crt"),
            "--client-key",
            &pki.s("client.key"),
        ],
    );
    let answer = relay.request(&initialize(1));
    assert_eq!(answer["error"]["code"], -32001, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown CA"), "{answer}");
    let (code, stderr) = relay.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("unknown CA"), "{stderr}");
}

#[test]
fn a_missing_token_is_reported_as_a_401_and_a_token_file_is_read_again_after_one() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let gw = serve(&dir, &pki, 0, false);
    let url = format!("https://localhost:{}/mcp", gw.addr.port());
    let ca = pki.s("ca.crt");

    let mut relay = start_relay(&dir, &[&url, "--ca-cert", &ca]);
    let answer = relay.request(&initialize(1));
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("HTTP 401") && message.contains("no bearer token"),
        "{answer}"
    );
    let (_, stderr) = relay.finish();
    assert!(stderr.contains("HTTP 401"), "{stderr}");

    // A token file holding a token the gateway does not know: refused; once the file holds a
    // good one, the next message goes with it.
    let file = dir.join("token");
    std::fs::write(&file, "not-a-token\n").unwrap();
    let file_arg = file.display().to_string();
    let mut relay = start_relay(&dir, &[&url, "--ca-cert", &ca, "--bearer-file", &file_arg]);
    let answer = relay.request(&initialize(1));
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("HTTP 401") && message.contains("--bearer-file"),
        "{answer}"
    );
    assert!(
        !relay.stderr().contains("not-a-token"),
        "{}",
        relay.stderr()
    );
    token_file(&dir, "token");
    let answer = relay.request(&initialize(2));
    assert_eq!(answer["result"]["serverInfo"]["name"], "mcpgw", "{answer}");
    relay.finish();
}

#[test]
fn a_listen_stream_holds_up_no_other_request_and_ends_when_stdin_closes() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let up = Upstream::start_mtls(&pki);
    let gw = serve(&dir, &pki, 0, true);
    dir.gateway_add_mtls("alpha", &format!("{}/mcp", up.base), &pki);
    let args = with_identity(&dir, &pki, gw.addr.port());
    let mut relay = start_relay(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    relay.send(&listen_request("L1", json!({"toolsListChanged": true})));
    let ack = relay.next();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    // The stream is still open: a call goes and comes back meanwhile.
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "alpha__echo", "arguments": {"text": "beside the stream"}, "_meta": modern_meta()}});
    let answer = relay.request(&call);
    assert_eq!(
        answer["result"]["content"][0]["text"], "beside the stream",
        "{answer}"
    );
    let (code, stderr) = relay.finish();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn what_a_session_era_server_sends_on_its_standing_stream_reaches_stdout() {
    let dir = Dir::new();
    let up = Upstream::start(&["--session-only", "--list-changed"]);
    let gw = Gateway::start(&dir, &["--no-auth"]);
    dir.run_expect(&["gateway", "add", "up", &format!("{}/mcp", up.base)], 0);
    let mut relay = start_relay(&dir, &[&format!("http://{}/mcp", gw.addr)]);
    let answer = relay.request(&initialize(1));
    assert_eq!(
        answer["result"]["protocolVersion"], "2025-11-25",
        "{answer}"
    );
    relay.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    // The upstream's change reaches the gateway, and the gateway tells its session's stream:
    // asked until the relay's stream is open and has heard it.
    let changed = format!("{}/tools-changed", up.base);
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut heard = Vec::new();
    while !heard
        .iter()
        .any(|m: &Value| m["method"] == "notifications/tools/list_changed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no list change on stdout: {heard:?}\n--- stderr\n{}",
            relay.stderr()
        );
        let (status, _) = common::curl(&["-X", "POST", &changed]);
        assert_eq!(status, 200, "POST {changed}");
        match relay.lines.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => heard.push(serde_json::from_str(&line).unwrap()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("stdout closed ({e})\n{}", relay.stderr()),
        }
    }
    let (code, stderr) = relay.finish();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_call_cut_by_a_gateway_restart_gets_an_error_and_is_not_sent_again() {
    let dir = Dir::new();
    let up = Upstream::start(&[]);
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let addr = gw.addr.to_string();
    dir.run_expect(&["gateway", "add", "up", &format!("{}/mcp", up.base)], 0);
    let calls = || stats(&up, None)["calls"].as_u64().unwrap();
    let mut relay = start_relay(&dir, &[&format!("http://{addr}/mcp")]);
    relay.request(&initialize(1));
    relay.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let before = calls();
    relay.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "up__sleep", "arguments": {"ms": 60000}}}));
    // Once the upstream runs it, the gateway goes away under it.
    until_stats(&up, "the call never reached the upstream", |now| {
        now["calls"].as_u64().unwrap() > before
    });
    drop(gw);
    let answer = relay.answer(&json!(2), &mut Vec::new());
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("it may have run"), "{answer}");

    // Started again where it was, the gateway takes the session in from its store: the next
    // call goes through; the cut one was not sent again.
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--listen", &addr, "--no-auth"]);
    let _gw = Gateway::spawn(cmd);
    let answer = relay.request(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "up__echo", "arguments": {"text": "after the restart"}}}));
    assert_eq!(
        answer["result"]["content"][0]["text"],
        "after the restart",
        "{answer}\n--- stderr\n{}",
        relay.stderr()
    );
    assert_eq!(calls(), before + 2, "the cut call must not be sent again");
    let (code, stderr) = relay.finish();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn straight_to_a_session_era_server_a_forgotten_session_is_opened_again_and_deleted_at_the_end() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    // The spec's 404 for an unknown session, and the official TypeScript server's 400.
    for refusal in [None, Some("--unknown-session-400")] {
        let start = |listen: &str| {
            let mut args = vec!["--session-only", "--listen", listen];
            args.extend(refusal);
            Upstream::start_mtls_with(&pki, &args)
        };
        let mut up = start("127.0.0.1:0");
        let mut args = vec![format!("https://localhost:{}/mcp", up.port())];
        args.extend(identity(&pki));
        let mut relay = start_relay(&dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let echo = |id: i64, text: &str| {
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": text}}})
        };
        let answer = relay.request(&initialize(1));
        assert_eq!(
            answer["result"]["protocolVersion"], "2025-11-25",
            "{answer}"
        );
        relay.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        let answer = relay.request(&echo(2, "before"));
        assert_eq!(answer["result"]["content"][0]["text"], "before", "{answer}");

        // Started again on the same port, the server knows no session.
        let listen = format!("127.0.0.1:{}", up.port());
        drop(up);
        up = start(&listen);
        let answer = relay.request(&echo(3, "after"));
        assert_eq!(
            answer["result"]["content"][0]["text"],
            "after",
            "{refusal:?}: {answer}\n--- stderr\n{}",
            relay.stderr()
        );
        let now = stats(&up, Some(&pki));
        assert_eq!(now["initializes"], 1, "{refusal:?}: {now}");
        assert_eq!(now["sessions"], 1, "{refusal:?}: {now}");

        let (code, stderr) = relay.finish();
        assert_eq!(code, Some(0), "{stderr}");
        let end = stats(&up, Some(&pki));
        assert_eq!(
            end["deleted"], 1,
            "{refusal:?}: the session must be deleted: {end}"
        );
        assert_eq!(end["sessions"], 0, "{refusal:?}: {end}");
    }
}

#[test]
fn a_session_era_cancellation_is_sent_on_and_reaches_the_upstream() {
    let dir = Dir::new();
    let up = Upstream::start(&[]);
    let gw = Gateway::start(&dir, &["--no-auth"]);
    dir.run_expect(&["gateway", "add", "up", &format!("{}/mcp", up.base)], 0);
    let mut relay = start_relay(&dir, &[&format!("http://{}/mcp", gw.addr)]);
    relay.request(&initialize(1));
    relay.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let calls = stats(&up, None)["calls"].as_u64().unwrap();
    relay.send(
        &json!({"jsonrpc": "2.0", "id": "slow", "method": "tools/call",
        "params": {"name": "up__sleep", "arguments": {"ms": 60000}}}),
    );
    until_stats(&up, "the call never reached the upstream", |now| {
        now["calls"].as_u64().unwrap() > calls
    });
    relay.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": "slow", "reason": "the user gave up"}}),
    );
    until_stats(&up, "the upstream never heard of the cancellation", |now| {
        !now["cancelled"].as_array().unwrap().is_empty()
    });
    let (code, stderr) = relay.finish();
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_2026_07_28_request_goes_with_its_headers_and_a_cancellation_closes_its_stream() {
    // A server that takes the request and never answers, and says what else it is sent and
    // when the request's connection closes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (events, heard) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let events = events.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 65536];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = events.send("closed".into());
                            return;
                        }
                        Ok(n) => {
                            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                            let _ = events.send(text);
                        }
                    }
                }
            });
        }
    });
    let dir = Dir::new();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut relay = start_relay(&dir, &[&url, "--header", "X-Team: blue"]);
    relay.send(
        &json!({"jsonrpc": "2.0", "id": "slow", "method": "tools/call", "params": {
        "name": "sleep", "arguments": {}, "_meta": modern_meta()}}),
    );
    let next = || {
        heard
            .recv_timeout(PATIENCE)
            .expect("the server heard nothing")
    };
    let request = next();
    assert!(request.starts_with("POST /mcp HTTP/1.1"), "{request}");
    let lower = request.to_ascii_lowercase();
    assert!(lower.contains("mcp-method: tools/call"), "{request}");
    assert!(lower.contains("mcp-name: sleep"), "{request}");
    assert!(
        lower.contains("mcp-protocol-version: 2026-07-28"),
        "{request}"
    );
    assert!(lower.contains("x-team: blue"), "{request}");
    relay.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": "slow"}}),
    );
    assert_eq!(
        next(),
        "closed",
        "the request's stream must be closed, and nothing sent"
    );
    let (code, stderr) = relay.finish();
    assert_eq!(code, Some(0), "{stderr}");
    while let Ok(more) = heard.try_recv() {
        assert!(!more.contains("notifications/cancelled"), "{more}");
    }
}

#[test]
fn python_sdk_clients_of_both_eras_reach_an_official_python_sdk_server_straight_through_connect() {
    let py = py::python();
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let port = py::free_port();
    let server = py::PyUpstream::with_pki(
        &py,
        port,
        &pki,
        &["--transport", "streamable-http", "--input-tool"],
    );
    let mut connect = vec![format!("https://localhost:{port}/mcp")];
    connect.extend(identity(&pki));
    let calls = json!([
        ["echo", {"text": "straight"}],
        ["add", {"a": 2, "b": 40}],
        ["confirm", {"question": "go on?"}],
    ]);
    for (mode, version) in [("legacy", "2025-11-25"), ("2026-07-28", "2026-07-28")] {
        let mut driver = Driver::start(&py, &dir, (mode, 1), &calls, &connect);
        let (lines, done) = driver.phase(1, None);
        let by_tool = |tool: &str| lines.iter().find(|l| l["tool"] == tool).unwrap();
        assert_eq!(by_tool("echo")["result"], "straight", "{mode}: {lines:?}");
        assert_eq!(by_tool("add")["result"], "42", "{mode}: {lines:?}");
        // The server's question reaches the client: a request in the session era, an
        // input-required result in 2026-07-28 (the client answers and calls again).
        let confirmed = by_tool("confirm");
        assert_eq!(
            confirmed["result"],
            "confirmed=True",
            "{mode}: {confirmed}\n{}",
            server.log()
        );
        assert_eq!(
            confirmed["asked"],
            json!(["elicitation/create"]),
            "{mode}: {confirmed}"
        );
        assert_eq!(done["protocol_version"], version, "{mode}: {done}");
    }
}

#[test]
fn a_client_certificate_replaced_on_disk_is_presented_from_the_next_message_on() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let stranger = dir.cert_gen("stranger", &[]);
    let gw = serve(&dir, &pki, 0, true);
    // The relay's certificate files hold one the gateway does not trust, at first.
    let (cert, key) = (dir.join("me.crt"), dir.join("me.key"));
    std::fs::copy(stranger.file("client.crt"), &cert).unwrap();
    std::fs::copy(stranger.file("client.key"), &key).unwrap();
    let url = format!("https://localhost:{}/mcp", gw.addr.port());
    let (ca, cert_arg, key_arg) = (
        pki.s("ca.crt"),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let mut relay = start_relay(
        &dir,
        &[
            &url,
            "--ca-cert",
            &ca,
            "--client-cert",
            &cert_arg,
            "--client-key",
            &key_arg,
        ],
    );
    let refused = relay.request(&initialize(1));
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("rejected the client certificate"),
        "{refused}"
    );

    common::write_atomically(&cert, &std::fs::read(pki.file("client.crt")).unwrap());
    common::write_atomically(&key, &std::fs::read(pki.file("client.key")).unwrap());
    let answer = relay.request(&initialize(2));
    assert_eq!(
        answer["result"]["serverInfo"]["name"],
        "mcpgw",
        "{answer}\n--- stderr\n{}",
        relay.stderr()
    );
    relay.finish();
}
