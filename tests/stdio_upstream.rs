//! stdio upstreams (issue 21): a program the gateway starts and supervises, reached through
//! every downstream transport like an HTTP upstream; restarted when it dies, never left behind.
//!
//! The child is `tests/fixtures/py_stdio_upstream.py` (the official Python SDK's stdio server),
//! told to misbehave where a test needs it.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Dir, Gateway, clients};
use serde_json::{Value, json};

/// The fixture's path.
fn script() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/py_stdio_upstream.py")
        .display()
        .to_string()
}

/// `gateway add NAME --command PYTHON --arg SCRIPT [--arg A]... EXTRA...`, expecting `code`;
/// (stdout, stderr).
fn add(
    dir: &Dir,
    name: &str,
    fixture_args: &[&str],
    extra: &[&str],
    code: i32,
) -> (String, String) {
    let python = common::py::python().display().to_string();
    let script = script();
    let mut args = vec![
        "gateway",
        "add",
        name,
        "--command",
        &python,
        "--arg",
        &script,
    ];
    for a in fixture_args {
        args.extend(["--arg", a]);
    }
    args.extend_from_slice(extra);
    dir.run_expect(&args, code)
}

/// `mcpgw call tools/call` through the control socket: the tool's result.
fn call(dir: &Dir, tool: &str, arguments: Value) -> Value {
    let params = json!({"name": tool, "arguments": arguments}).to_string();
    let (out, _) = dir.run_expect(&["call", "tools/call", &params], 0);
    serde_json::from_str(&out).unwrap()
}

/// [`call`], expecting a failure; its message.
fn call_fails(dir: &Dir, tool: &str, arguments: Value) -> String {
    let params = json!({"name": tool, "arguments": arguments}).to_string();
    let (_, err) = dir.run_expect(&["call", "tools/call", &params], 1);
    err
}

fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The pids whose parent is `parent`, and their state letters (`/proc/PID/stat`).
fn children_of(parent: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) S ppid ...`: comm may hold spaces, so read after its closing parenthesis.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut fields = rest.split(' ');
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent {
            out.push((pid, state));
        }
    }
    out
}

/// Whether process `pid` exists (and is not a zombie).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rfind(')').map(|i| stat[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// Poll `check` every 20 ms until it holds; panics with `what` after `limit`.
fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pid of the child behind upstream `name` (its `pid` tool).
fn child_pid(dir: &Dir, name: &str) -> i32 {
    text(&call(dir, &format!("{name}__pid"), json!({})))
        .parse()
        .unwrap()
}

#[test]
fn a_registered_command_answers_tools_through_the_gateway_with_a_minimal_environment() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    std::fs::write(
        dir.join("env"),
        "# a comment\nFROM_FILE=file value\n\nGIVEN=overridden\n",
    )
    .unwrap();
    let env_file = dir.join("env").display().to_string();
    let extra = [
        "--env",
        "GIVEN=yes",
        "--env-file",
        &env_file,
        "--open-files",
        "77",
    ];
    let (out, _) = add(&dir, "py", &[], &extra, 0);
    assert!(out.contains("registered py"), "{out}");
    assert!(out.contains("stdio"), "{out}");

    assert_eq!(
        text(&call(&dir, "py__echo", json!({"text": "héllo"}))),
        "héllo"
    );
    assert_eq!(text(&call(&dir, "py__add", json!({"a": 2, "b": 40}))), "42");
    // What was given, and not what the gateway has but did not pass.
    assert_eq!(
        text(&call(&dir, "py__env", json!({"name": "GIVEN"}))),
        "yes"
    );
    assert_eq!(
        text(&call(&dir, "py__env", json!({"name": "FROM_FILE"}))),
        "file value"
    );
    assert_eq!(
        text(&call(&dir, "py__env", json!({"name": "MCPGW_DATA_DIR"}))),
        "<unset>"
    );
    // The child is the gateway's, and its stderr is in the gateway's log, tagged.
    let pid = child_pid(&dir, "py");
    assert!(
        children_of(gw.pid()).iter().any(|(p, _)| *p == pid),
        "{pid} is not a child of the gateway"
    );
    // Its limits were set before it ran.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("77")),
        "{limits}"
    );
    let log = gw.log();
    assert!(
        log.contains("py-stdio-upstream py-stdio starting") && log.contains("upstream=py"),
        "{log}"
    );
    // Environment values are secrets: never in the log.
    assert!(!log.contains("file value"), "{log}");
}

#[test]
fn gateway_add_takes_a_url_or_a_command_never_both_nor_neither() {
    let dir = Dir::new();
    let (_, err) = dir.run_expect(&["gateway", "add", "x"], 2);
    assert!(err.contains("<URL>"), "{err}");
    let (_, err) = dir.run_expect(
        &[
            "gateway",
            "add",
            "x",
            "http://127.0.0.1:1/mcp",
            "--command",
            "y",
        ],
        2,
    );
    assert!(err.contains("cannot be used with"), "{err}");
    let (_, err) = dir.run_expect(
        &["gateway", "add", "x", "http://127.0.0.1:1/mcp", "--isolate"],
        2,
    );
    assert!(
        err.contains("--isolate") && err.contains("cannot be used with"),
        "{err}"
    );
}

#[test]
fn a_child_that_dies_during_a_call_fails_it_naming_the_exit_and_is_started_again() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    add(&dir, "py", &[], &[], 0);
    let first = child_pid(&dir, "py");

    let err = call_fails(&dir, "py__crash", json!({}));
    assert!(
        err.contains("upstream 'py'") && err.contains("exited (status 3) during the call"),
        "{err}"
    );
    // Reaped, not left a zombie; and a new child answers.
    until(
        Duration::from_secs(10),
        "the dead child was not reaped",
        || !running(first) && children_of(gw.pid()).iter().all(|(p, _)| *p != first),
    );
    let second = child_pid(&dir, "py");
    assert_ne!(first, second);
    assert_eq!(
        text(&call(&dir, "py__echo", json!({"text": "back"}))),
        "back"
    );
}

/// A Streamable-HTTP session with the gateway's `/mcp` (no auth), on its own runtime.
fn session(gw: &Gateway, rt: &tokio::runtime::Runtime) -> clients::Streamable {
    let url = format!("http://{}/mcp", gw.addr);
    rt.block_on(clients::Streamable::open(clients::http(None), &url, None))
        .unwrap()
}

/// Open file descriptors of process `pid` other than sockets (the test's own HTTP connections
/// to the gateway come and go with its client's pool): pipes, pidfds, files.
fn fds(pid: i32) -> usize {
    fd_targets(pid)
        .iter()
        .filter(|t| !t.contains("->socket:"))
        .count()
}

/// What the descriptors of process `pid` are (for a failure's message).
fn fd_targets(pid: i32) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!("{}->{}", e.file_name().to_string_lossy(), target.display())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn killing_the_child_under_load_fails_the_calls_in_flight_naming_the_exit_and_it_comes_back() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    add(&dir, "py", &[], &[], 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mcp = std::sync::Arc::new(session(&gw, &rt));
    let pid = child_pid(&dir, "py");

    // Four callers whose calls are in flight (each sleeps upstream) when the child is killed.
    let calls: Vec<_> = (0..4)
        .map(|n| {
            let mcp = mcp.clone();
            rt.spawn(async move { mcp.call(json!(n), "py__slow", json!({"seconds": 30})).await })
        })
        .collect();
    until(
        Duration::from_secs(20),
        "the calls never reached the child",
        || {
            gw.log()
                .matches("Processing request of type CallToolRequest")
                .count()
                >= 4
                || gw.log().matches("slow").count() >= 4
        },
    );
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    for call in calls {
        let answer = rt.block_on(call).unwrap().unwrap().to_string();
        assert!(
            answer.contains("upstream 'py'")
                && answer.contains("exited (signal 9) during the call"),
            "{answer}"
        );
    }
    // Back, through the backoff: the tools answer again, from another child.
    let mut back = None;
    until(Duration::from_secs(30), "the child never came back", || {
        let answer = rt
            .block_on(mcp.call(json!("again"), "py__echo", json!({"text": "back"})))
            .unwrap();
        back = Some(answer.clone());
        answer["result"]["content"][0]["text"] == "back"
    });
    assert_ne!(child_pid(&dir, "py"), pid, "{back:?}");
}

#[test]
fn a_hundred_crash_restart_cycles_leave_no_zombie_no_descriptor_and_little_memory() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    add(&dir, "py", &["--bare"], &[], 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mcp = session(&gw, &rt);
    let cycle = |n: usize| {
        let crashed = rt
            .block_on(mcp.call(json!(n), "py__crash", json!({})))
            .unwrap()
            .to_string();
        assert!(crashed.contains("exited (status 3)"), "{crashed}");
        // Restarted (or being restarted): the next call answers.
        until(Duration::from_secs(30), "the child never came back", || {
            let answer = rt
                .block_on(mcp.call(json!("echo"), "py__echo", json!({"text": "up"})))
                .unwrap();
            answer["result"]["content"][0]["text"] == "up"
        });
    };
    // Warm-up: buffers, pools and the tracing machinery reach their working size.
    for n in 0..5 {
        cycle(n);
    }
    let (fds_before, rss_before) = (fds(gw.pid()), gw.rss_kib());
    let targets_before = fd_targets(gw.pid());
    for n in 0..100 {
        cycle(n);
    }
    // Every dead child reaped: only the live one is a child of the gateway, and no zombie.
    until(
        Duration::from_secs(10),
        "a dead child was left unreaped",
        || {
            let children = children_of(gw.pid());
            children.len() == 1 && children.iter().all(|(_, state)| *state != 'Z')
        },
    );
    // A descriptor may be in use for a moment (a connection being closed); a leaked one stays.
    let settled = Instant::now() + Duration::from_secs(10);
    while fds(gw.pid()) > fds_before && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        fds(gw.pid()) <= fds_before,
        "descriptors leaked: before {targets_before:?}, after {:?}",
        fd_targets(gw.pid())
    );
    let rss_after = gw.rss_kib();
    assert!(
        rss_after <= rss_before + 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let metrics = rt
        .block_on(async {
            clients::http(None)
                .get(format!("http://{}/metrics", gw.addr))
                .send()
                .await?
                .text()
                .await
        })
        .unwrap();
    let restarts = metrics
        .lines()
        .find(|l| {
            l.starts_with("mcpgw_upstream_restarts_total{upstream=\"py\",transport=\"stdio\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no restart counter:\n{metrics}"));
    // One restart per crash: a late notice of an old child does not restart a newer one.
    assert_eq!(restarts, 105.0, "restarts counted");
}

#[test]
fn a_gateway_killed_with_five_children_leaves_none_running_and_none_to_sweep() {
    let dir = Dir::new();
    let mut gw = Gateway::start(&dir, &["--no-auth"]);
    for n in 0..5 {
        add(&dir, &format!("py{n}"), &["--bare"], &[], 0);
    }
    let pids: Vec<i32> = (0..5).map(|n| child_pid(&dir, &format!("py{n}"))).collect();
    assert!(pids.iter().all(|p| running(*p)));
    gw.signal(9);
    gw.wait_exit(Duration::from_secs(10));
    until(
        Duration::from_secs(1),
        "a child outlived the gateway by a second",
        || pids.iter().all(|p| !running(*p)),
    );
    // The next gateway finds the records, but nothing of theirs alive.
    let gw = Gateway::start(&dir, &["--no-auth"]);
    assert_eq!(
        text(&call(&dir, "py0__echo", json!({"text": "again"}))),
        "again"
    );
    let log = gw.log();
    assert!(!log.contains("left running"), "{log}");
}

#[test]
fn the_start_up_sweep_kills_a_recorded_group_that_carries_the_marker_and_spares_one_that_does_not()
{
    let dir = Dir::new();
    // The marker, as a child of this data directory carries it.
    let marker = {
        let mut gw = Gateway::start(&dir, &["--no-auth"]);
        add(&dir, "py", &["--bare"], &[], 0);
        let pid = child_pid(&dir, "py");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let marker = environ
            .split(|&b| b == 0)
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .find(|e| e.starts_with("MCPGW_STDIO_OWNER="))
            .expect("no marker in the child's environment");
        dir.run_expect(&["gateway", "remove", "py"], 0);
        gw.signal(common::SIGTERM);
        gw.wait_exit(Duration::from_secs(20));
        marker
    };
    let (name, value) = marker.split_once('=').unwrap();
    let plant = |with_marker: bool| {
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("300");
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        if with_marker {
            cmd.env(name, value);
        }
        cmd.spawn().unwrap()
    };
    let (mut ours, mut other) = (plant(true), plant(false));
    std::fs::write(
        dir.data_dir().join("stdio-children.pids"),
        format!("{}\n{}\n", ours.id(), other.id()),
    )
    .unwrap();

    let gw = Gateway::start(&dir, &["--no-auth"]);
    until(
        Duration::from_secs(10),
        "the marked group was not killed",
        || ours.try_wait().unwrap().is_some(),
    );
    assert!(
        other.try_wait().unwrap().is_none(),
        "a process without the marker was killed"
    );
    let log = gw.log();
    assert!(log.contains("left running"), "{log}");
    let _ = other.kill();
    let _ = other.wait();
}

#[test]
fn a_child_that_writes_garbage_a_huge_line_or_nothing_gets_a_clear_error_and_harms_no_other_upstream()
 {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth", "--request-timeout", "3"]);
    add(&dir, "ok", &["--bare"], &[], 0);

    // Lines that are not messages, and a 20 MiB one, are skipped: the server behind them works.
    add(&dir, "garbage", &["--garbage"], &[], 0);
    assert_eq!(
        text(&call(&dir, "garbage__echo", json!({"text": "g"}))),
        "g"
    );
    add(&dir, "huge", &["--huge-line"], &[], 0);
    assert_eq!(text(&call(&dir, "huge__echo", json!({"text": "h"}))), "h");
    let log = gw.log();
    assert!(
        log.contains("not a JSON-RPC message") && log.contains("over the size limit"),
        "{log}"
    );

    // Silence, and an exit before the handshake: refused, saying why, with the child's stderr.
    let (_, err) = add(&dir, "silent", &["--silent"], &[], 1);
    assert!(
        err.contains("did not answer the MCP handshake")
            && err.contains("within 3 s")
            && err.contains("py-stdio-upstream py-stdio starting"),
        "{err}"
    );
    let (_, err) = add(&dir, "dead", &["--exit-at-once"], &[], 1);
    assert!(
        err.contains("exited (status 1) before answering the MCP handshake")
            && err.contains("fatal: this server was told to exit at once"),
        "{err}"
    );
    // A program that does not exist: the launcher says so.
    let (_, err) = dir.run_expect(
        &[
            "gateway",
            "add",
            "nothing",
            "--command",
            "/nonexistent/server",
        ],
        1,
    );
    assert!(err.contains("cannot run /nonexistent/server"), "{err}");

    // The others are untouched, and the refused children are gone.
    assert_eq!(
        text(&call(&dir, "ok__echo", json!({"text": "fine"}))),
        "fine"
    );
    assert_eq!(text(&call(&dir, "huge__echo", json!({"text": "h2"}))), "h2");
    until(
        Duration::from_secs(10),
        "a refused child is still running",
        || children_of(gw.pid()).len() == 3,
    );
}

#[test]
fn a_gateway_stopping_or_an_upstream_removed_stops_its_children() {
    let dir = Dir::new();
    let mut gw = Gateway::start(&dir, &["--no-auth"]);
    add(&dir, "a", &["--bare"], &[], 0);
    add(&dir, "b", &["--bare"], &[], 0);
    let (a, b) = (child_pid(&dir, "a"), child_pid(&dir, "b"));
    dir.run_expect(&["gateway", "remove", "a"], 0);
    until(
        Duration::from_secs(10),
        "the removed upstream's child runs on",
        || !running(a),
    );
    assert!(running(b));
    gw.signal(common::SIGTERM);
    assert_eq!(gw.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(!running(b), "the child outlived the gateway's shutdown");
}

#[test]
fn an_isolated_upstream_gives_each_session_its_own_child_stopped_when_the_session_ends() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    add(&dir, "iso", &["--bare"], &["--isolate"], 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (one, two) = (session(&gw, &rt), session(&gw, &rt));
    let pid_of = |s: &clients::Streamable| -> i32 {
        let answer = rt
            .block_on(s.call(json!(1), "iso__pid", json!({})))
            .unwrap();
        answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .parse()
            .unwrap()
    };
    let (p1, p2) = (pid_of(&one), pid_of(&two));
    assert_ne!(p1, p2);
    assert_eq!(pid_of(&one), p1, "a session's calls go to its own child");
    rt.block_on(one.close()).unwrap();
    until(
        Duration::from_secs(10),
        "the ended session's child runs on",
        || !running(p1),
    );
    assert!(running(p2));
    assert_eq!(pid_of(&two), p2);
}

#[test]
fn an_isolated_upstream_runs_at_most_32_children_for_sessions_and_says_so_beyond() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    add(&dir, "iso", &["--bare"], &["--isolate"], 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sessions: Vec<_> = (0..33).map(|_| session(&gw, &rt)).collect();
    let echo = |s: &clients::Streamable| {
        rt.block_on(s.call(json!(1), "iso__echo", json!({"text": "x"})))
            .unwrap()
    };
    for s in &sessions[..32] {
        let answer = echo(s);
        assert_eq!(answer["result"]["content"][0]["text"], "x", "{answer}");
    }
    let refused = echo(&sessions[32]).to_string();
    assert!(refused.contains("already runs 32 children"), "{refused}");
    // One session ends: its child stops, and the next session gets one.
    rt.block_on(sessions[0].close()).unwrap();
    let mut answer = Value::Null;
    until(
        Duration::from_secs(10),
        "no child for a waiting session",
        || {
            answer = echo(&sessions[32]);
            answer["result"]["content"][0]["text"] == "x"
        },
    );
    // The gateway's own child and one per session.
    until(Duration::from_secs(10), "children left over", || {
        children_of(gw.pid()).len() == 33
    });
}

#[test]
fn a_childs_question_reaches_the_client_whose_call_asked_it() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth", "--request-timeout", "20"]);
    add(&dir, "py", &[], &[], 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = clients::http(None);
    let base = format!("http://{}", gw.addr);
    // Everything the child sends comes on its stdout: the elicitation goes with the call in flight.
    let done = rt.block_on(clients::confirm_over_sse(
        &http,
        &base,
        "/servers/py/sse",
        "ship it?",
        true,
    ));
    assert_eq!(clients::text(&done), "confirmed=True", "{done}");
}

#[test]
fn the_launcher_runs_nothing_when_its_parent_is_not_the_gateway_that_started_it() {
    // Its parent here is the test, not pid 1: as if the gateway had died before the child
    // asked for the parent-death signal (the child is then adopted by another process).
    let out = std::process::Command::new(common::bin())
        .args(["__stdio-exec", "--parent", "1", "--", "echo", "ran"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "the program ran");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is gone; not starting it"), "{err}");
    // With the right parent it becomes the program.
    let me = std::process::id().to_string();
    let out = std::process::Command::new(common::bin())
        .args(["__stdio-exec", "--parent", &me, "--", "echo", "ran"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
}

#[test]
fn an_upstream_declared_in_the_config_file_runs_and_is_replaced_when_its_command_changes() {
    let dir = Dir::new();
    let python = common::py::python().display().to_string();
    let config = |name: &str| {
        format!(
            "[[upstream]]\nname = \"decl\"\ncommand = {python:?}\nargs = [{:?}, \"--bare\", \"--name\", {name:?}]\n",
            script()
        )
    };
    let file = dir.join("mcpgw.toml");
    let file_arg = file.display().to_string();
    std::fs::write(&file, config("first")).unwrap();
    let mut gw = Gateway::start(&dir, &["--no-auth", "--config", &file_arg]);
    assert_eq!(
        text(&call(&dir, "decl__echo", json!({"text": "one"}))),
        "one"
    );
    let first = child_pid(&dir, "decl");
    gw.signal(common::SIGTERM);
    gw.wait_exit(Duration::from_secs(20));
    assert!(!running(first), "the child outlived its gateway");

    std::fs::write(&file, config("second")).unwrap();
    let gw = Gateway::start(&dir, &["--no-auth", "--config", &file_arg]);
    assert_eq!(
        text(&call(&dir, "decl__echo", json!({"text": "two"}))),
        "two"
    );
    let (out, _) = dir.run_expect(&["--json", "gateway", "show", "decl"], 0);
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["server_info"]["name"], "second", "{view}");
    // The first program's child (started from the store, then replaced) is stopped.
    until(
        Duration::from_secs(10),
        "the replaced child runs on",
        || children_of(gw.pid()).len() == 1,
    );
}

/// `POST /gateways` with a command on the TCP listener, as `token`: (status, body).
fn post_command(gw: &Gateway, token: &str, name: &str) -> (u16, String) {
    let body = json!({
        "name": name,
        "command": common::py::python().display().to_string(),
        "args": [script(), "--bare"],
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let answer = clients::http(None)
            .post(format!("http://{}/gateways", gw.addr))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    })
}

#[test]
fn a_command_is_registered_over_http_only_by_an_admin_where_the_operator_allowed_it() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &[]);
    let (admin, _) = dir.run_expect(&["token", "create", "--role", "admin"], 0);
    let (client, _) = dir.run_expect(&["token", "create"], 0);
    let (status, body) = post_command(&gw, admin.trim(), "evil");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("allow_commands_over_http"), "{body}");
    let (status, body) = post_command(&gw, client.trim(), "evil");
    assert_eq!(status, 403, "{body}");
    let (out, _) = dir.run_expect(&["--json", "gateway", "list"], 0);
    assert_eq!(out.trim(), "[]", "nothing registered, nothing started");
    assert!(children_of(gw.pid()).is_empty());
    drop(gw);

    let file = dir.join("mcpgw.toml");
    std::fs::write(&file, "[upstreams]\nallow_commands_over_http = true\n").unwrap();
    let gw = Gateway::start(&dir, &["--config", &file.display().to_string()]);
    let (status, body) = post_command(&gw, client.trim(), "evil");
    assert_eq!(status, 403, "a client still may not: {body}");
    let (status, body) = post_command(&gw, admin.trim(), "allowed");
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        text(&call(&dir, "allowed__echo", json!({"text": "ok"}))),
        "ok"
    );
}

#[test]
fn a_disabled_stdio_upstream_starts_no_child_even_when_its_declaration_changes() {
    let dir = Dir::new();
    let python = common::py::python().display().to_string();
    let config = |name: &str| {
        format!(
            "[upstreams]\nallow_commands_over_http = true\n\n\
             [[upstream]]\nname = \"decl\"\ncommand = {python:?}\nargs = [{:?}, \"--bare\", \"--name\", {name:?}]\n\
             env = {{ API_KEY = \"k-secret-123\" }}\n",
            script()
        )
    };
    let file = dir.join("mcpgw.toml");
    let file_arg = file.display().to_string();
    std::fs::write(&file, config("first")).unwrap();
    let mut gw = Gateway::start(&dir, &["--no-auth", "--config", &file_arg]);
    let first = child_pid(&dir, "decl");

    // The printed page of a stdio upstream: its command line, variables by name only.
    let (out, _) = dir.run_expect(&["gateway", "show", "decl"], 0);
    assert!(out.contains(&format!("command     {python}")), "{out}");
    assert!(out.contains("--name first"), "{out}");
    assert!(out.contains("env         API_KEY"), "{out}");
    assert!(out.contains(&format!("pid         {first}")), "{out}");
    assert!(out.contains("enabled     yes"), "{out}");
    assert!(!out.contains("k-secret-123"), "a value printed: {out}");
    assert!(
        !out.contains("ca cert") && !out.contains("bearer"),
        "TLS lines on a stdio page: {out}"
    );

    // Disabled through the API: the child is stopped and none replaces it.
    let body = json!({
        "name": "decl",
        "command": python,
        "args": [script(), "--bare", "--name", "first"],
        "env": {"API_KEY": "k-secret-123"},
        "enabled": false,
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        clients::http(None)
            .put(format!("http://{}/gateways/decl", gw.addr))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);
    until(
        Duration::from_secs(10),
        "the disabled child runs on",
        || !running(first),
    );
    assert!(
        children_of(gw.pid()).is_empty(),
        "a disabled upstream has a child"
    );
    let (out, _) = dir.run_expect(&["gateway", "show", "decl"], 0);
    assert!(out.contains("enabled     no"), "{out}");
    assert!(out.contains("pid         -"), "{out}");

    // Its declaration changes: registered again, still disabled, still not started.
    gw.signal(common::SIGTERM);
    gw.wait_exit(Duration::from_secs(20));
    std::fs::write(&file, config("second")).unwrap();
    let gw = Gateway::start(&dir, &["--no-auth", "--config", &file_arg]);
    let (out, _) = dir.run_expect(&["--json", "gateway", "show", "decl"], 0);
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["enabled"], false, "{view}");
    assert_eq!(
        view["command"]["args"][3], "second",
        "the new declaration is stored: {view}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        children_of(gw.pid()).is_empty(),
        "the changed declaration started a disabled upstream's child"
    );
}
