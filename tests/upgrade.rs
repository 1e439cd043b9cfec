//! Issue 22 item 6: `mcpgw serve --upgrade` takes the listening sockets of the gateway running
//! on the same data directory, the old one drains and exits 0, and clients calling all the
//! while see no failed call; with no gateway running, the upgrade fails clearly (exit 1).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::upstream::Upstream;
use common::{Dir, Gateway, clients};
use serde_json::Value;

/// Clients calling at once.
const CLIENTS: usize = 4;
/// Each client stops after this many calls, or when told.
const CALLS_PER_CLIENT: usize = 500;

/// One 2026-07-28 `tools/call` of `rs__echo`; `Err` says what went wrong.
async fn echo(http: &reqwest::Client, url: &str, text: &str) -> Result<(), String> {
    clients::echo_modern(http, url, None, text).await
}

/// `mcpgw serve --upgrade` on `dir`'s data directory, once it says it serves.
fn upgrade(dir: &Dir) -> Gateway {
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--upgrade", "--no-auth", "--listen", "127.0.0.1:0"]);
    Gateway::spawn(cmd)
}

/// The control socket answers, from `gw`'s process.
fn assert_control_served_by(dir: &Dir, gw: &Gateway) {
    let (stdout, _) = dir.run_expect(&["status", "--json"], 0);
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["pid"], gw.pid(), "{status}");
}

#[test]
fn an_upgrade_under_load_fails_no_call_and_the_old_gateway_exits_0() {
    let dir = Dir::new();
    let up = Upstream::start(&[]);
    let mut old = Gateway::start(&dir, &["--no-auth"]);
    dir.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    let url = format!("http://{}/mcp", old.addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    common::tls::install_provider();
    // Even clients open a connection per call; odd ones keep theirs alive between calls, so
    // the old process has connections busy, idle between two calls, and new at the hand-off.
    let make_client = |fresh: bool| {
        let builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        let builder = if fresh {
            builder.pool_max_idle_per_host(0)
        } else {
            builder
        };
        builder.http1_only().build().unwrap()
    };
    let http = make_client(true);
    rt.block_on(echo(&http, &url, "before")).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (done, ok, failures) = (done.clone(), ok.clone(), failures.clone());
            let (http, url) = (make_client(client % 2 == 0), url.clone());
            rt.spawn(async move {
                for n in 0..CALLS_PER_CLIENT {
                    if done.load(Ordering::Acquire) {
                        break;
                    }
                    match echo(&http, &url, &format!("c{client}-{n}")).await {
                        Ok(()) => ok.fetch_add(1, Ordering::AcqRel),
                        Err(e) => {
                            failures.lock().unwrap().push(e);
                            0
                        }
                    };
                }
            })
        })
        .collect();
    // Let the calls get going before the upgrade.
    while ok.load(Ordering::Acquire) < 50 {
        std::thread::sleep(Duration::from_millis(10));
    }

    let new = upgrade(&dir);
    assert_eq!(new.addr, old.addr, "the new gateway serves the old address");
    assert_eq!(
        old.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        old.log()
    );
    let at_exit = ok.load(Ordering::Acquire);
    // Calls go on once the old process is gone: the new one serves them.
    while ok.load(Ordering::Acquire) < at_exit + 50 && workers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(10));
    }
    common::stop_load_expecting_no_failure(&rt, &done, workers, &failures, || {
        format!("--- old log\n{}\n--- new log\n{}", old.log(), new.log())
    });
    rt.block_on(echo(&http, &url, "after")).unwrap();
    eprintln!(
        "{} calls answered, {at_exit} of them before the old gateway exited",
        ok.load(Ordering::Acquire)
    );
    let old_log = old.log();
    assert!(
        old_log.contains("a new gateway serves on the sockets; draining"),
        "{old_log}"
    );
    assert!(
        new.log().contains("took the listening sockets over"),
        "{}",
        new.log()
    );

    // The control socket moved too: it answers, from the new process.
    assert_control_served_by(&dir, &new);
}

#[test]
fn an_upgrade_with_no_gateway_running_fails_with_a_clear_message_and_exit_1() {
    let dir = Dir::new();
    let (_, stderr) = dir.run_expect(&["serve", "--upgrade", "--listen", "127.0.0.1:0"], 1);
    assert!(
        stderr.contains("no gateway is running on this data directory to upgrade"),
        "{stderr}"
    );
    assert!(stderr.contains("mcpgw.handoff.sock"), "{stderr}");
}

#[test]
fn a_second_upgrade_replaces_the_gateway_that_came_from_the_first() {
    let dir = Dir::new();
    let mut first = Gateway::start(&dir, &["--no-auth"]);
    let mut second = upgrade(&dir);
    assert_eq!(
        first.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        first.log()
    );
    let third = upgrade(&dir);
    assert_eq!(
        second.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        second.log()
    );
    assert_eq!(third.addr, first.addr);
    assert_control_served_by(&dir, &third);
    // A plain `serve` beside it is refused: the lock moved with the sockets and is held.
    let (_, stderr) = dir.run_expect(&["serve", "--listen", "127.0.0.1:0"], 1);
    assert!(
        stderr.contains("another mcpgw is already serving"),
        "{stderr}"
    );
}

#[test]
fn a_new_gateway_that_goes_away_before_serving_leaves_the_old_one_serving() {
    use std::io::{Read, Write};
    let dir = Dir::new();
    let mut old = Gateway::start(&dir, &["--no-auth"]);
    // What a new process that dies after taking the sockets looks like to the old one: it
    // asks, receives, and goes away without saying it serves.
    let mut conn =
        std::os::unix::net::UnixStream::connect(dir.data_dir().join("mcpgw.handoff.sock")).unwrap();
    conn.write_all(b"mcpgw-upgrade 1\n").unwrap();
    let mut header = [0u8; 256];
    let n = conn.read(&mut header).unwrap();
    let header: Value = serde_json::from_slice(&header[..n]).unwrap();
    assert_eq!(header["pid"], old.pid(), "{header}");
    drop(conn);

    old.wait_log_count("upgrade abandoned", 1, Duration::from_secs(20));
    assert!(old.alive(), "{}", old.log());
    let (code, body) = common::curl(&[&format!("http://{}/health", old.addr)]);
    assert_eq!(code, 200, "{body}");
    // The next upgrade goes through.
    let new = upgrade(&dir);
    assert_eq!(
        old.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        old.log()
    );
    assert_control_served_by(&dir, &new);
}

#[test]
fn a_session_opened_on_the_old_gateway_goes_on_on_the_new_one() {
    let dir = Dir::new();
    let up = Upstream::start(&[]);
    let mut old = Gateway::start(&dir, &["--no-auth"]);
    dir.run_expect(&["gateway", "add", "rs", &format!("{}/mcp", up.base)], 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{}/mcp", old.addr);
    let session = rt
        .block_on(clients::Streamable::open(clients::http(None), &url, None))
        .unwrap();
    let args = serde_json::json!({"text": "before"});
    let answer = rt
        .block_on(session.call(1.into(), "rs__echo", args))
        .unwrap();
    assert!(clients::text(&answer).contains("before"), "{answer}");

    let new = upgrade(&dir);
    assert_eq!(
        old.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        old.log()
    );
    // The new process never saw the session open: it takes it in from the store (SQLite
    // here), with what its client said at `initialize`.
    let args = serde_json::json!({"text": "after"});
    let answer = rt
        .block_on(session.call(2.into(), "rs__echo", args))
        .unwrap();
    assert!(
        clients::text(&answer).contains("after"),
        "{answer}\n{}",
        new.log()
    );
    assert!(
        new.log().contains("session taken in from the store"),
        "{}",
        new.log()
    );
    // Ended on the new one, it is gone.
    assert_eq!(rt.block_on(session.close()).unwrap(), 204);
    let gone = rt.block_on(session.call(3.into(), "rs__echo", serde_json::json!({"text": "x"})));
    assert!(gone.unwrap_err().to_string().contains("404"));
}

/// `mcpgw serve --listen-stdin` with `stdin` as its standard input, and what it printed if it
/// stopped.
fn serve_on_stdin(dir: &Dir, stdin: std::process::Stdio) -> std::process::Output {
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--listen-stdin", "--no-auth"]);
    cmd.stdin(stdin);
    cmd.output().unwrap()
}

#[test]
fn a_gateway_serves_on_the_listening_socket_it_is_given_as_standard_input() {
    // What systemd does with `StandardInput=socket`: the socket is bound (and listening)
    // before the gateway starts, and connections made meanwhile wait in its backlog.
    let dir = Dir::new();
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let early = std::thread::spawn(move || common::curl(&[&format!("http://{addr}/health")]));
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--listen-stdin", "--no-auth"]);
    let gw = Gateway::spawn_with_stdin(
        cmd,
        std::process::Stdio::from(std::os::fd::OwnedFd::from(socket)),
    );
    assert_eq!(gw.addr, addr, "it serves the address it was given");
    let (code, body) = early.join().unwrap();
    assert_eq!(
        code, 200,
        "a connection made before it started is served: {body}"
    );
    assert!(
        gw.log()
            .contains("serving on the socket given as standard input"),
        "{}",
        gw.log()
    );
}

#[test]
fn listen_stdin_refuses_what_is_not_a_listening_tcp_socket_and_an_exposed_plain_address() {
    let dir = Dir::new();
    let out = serve_on_stdin(&dir, std::process::Stdio::null());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--listen-stdin: standard input is not a listening TCP socket"),
        "{stderr}"
    );
    // Every interface, plain HTTP, no auth: the rules of --listen apply to the given socket.
    let exposed = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let out = serve_on_stdin(
        &dir,
        std::process::Stdio::from(std::os::fd::OwnedFd::from(exposed)),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to serve plain HTTP"), "{stderr}");
}
