//! stdio upstreams (issue 21): a program the gateway starts and supervises, reached through
//! every downstream transport like an HTTP upstream; restarted when it dies, never left behind.
//!
//! The child is `tests/fixtures/py_stdio_upstream.py` (the official Python SDK's stdio server),
//! told to misbehave where a test needs it.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Dir, Gateway};
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
    let (out, _) = add(&dir, "py", &[], &["--env", "GIVEN=yes"], 0);
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
        text(&call(&dir, "py__env", json!({"name": "MCPGW_DATA_DIR"}))),
        "<unset>"
    );
    // The child is the gateway's, and its stderr is in the gateway's log, tagged.
    let pid = child_pid(&dir, "py");
    assert!(
        children_of(gw.pid()).iter().any(|(p, _)| *p == pid),
        "{pid} is not a child of the gateway"
    );
    let log = gw.log();
    assert!(
        log.contains("py-stdio-upstream py-stdio starting") && log.contains("upstream=py"),
        "{log}"
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
