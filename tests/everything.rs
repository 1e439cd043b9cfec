//! The official "everything" MCP server (`@modelcontextprotocol/server-everything`, in its
//! Streamable-HTTP, legacy-SSE and stdio modes) and a stdio server on the official Python SDK
//! (`tests/fixtures/py_stdio_everything.py`) behind mcpgw, driven by the official TypeScript and
//! Python SDK clients (`tests/fixtures/ts/everything_client.mjs`, `tests/fixtures/everything_client.py`):
//! every tool (sampling, elicitation, roots, progress and logging included), resource, template
//! and prompt must give the same result through the gateway's front doors (`/servers/NAME/mcp`,
//! `/servers/NAME/sse`, `/ws`, and for stdio servers `/mcp` and `/sse` too) as directly (for a
//! stdio server: the client starting it and driving its stdio itself), case by case, once the
//! drivers have replaced ids, times and other per-run values by placeholders; and two clients
//! toggling the server's per-session state through the gateway must each see only their own
//! (issue 19's acceptance; for stdio, with `--isolate`: issue 21's).
//!
//! What differs today is listed in [`GAPS`] (and [`STDIO_GAPS`]), each with its cause: the tests
//! CI runs compare every other case, and `every_case_matches_through_mcpgw_with_no_exemption`
//! (ignored until issue 19 closes them) compares all of them.
//!
//! Node and the TypeScript fixtures (the server included, pinned in tests/fixtures/ts/package.json)
//! and the Python SDK are installed on first use (`common::prereq`); the test fails with the
//! reason when they cannot be.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::node::NodeServer;
use common::{Dir, Gateway};
use serde_json::Value;

/// The gateway's name for the everything server; `/ws` (an aggregated endpoint) names its tools
/// and prompts `every__<name>`.
const NAME: &str = "every";

/// Cases known to differ through mcpgw, as (run, case, cause); a run ending in `*` is every run
/// it starts.
const GAPS: &[(&str, &str, &str)] = &[
    (
        "ts websocket /ws",
        "initialize",
        "/ws serves every upstream, as /mcp does: it answers as mcpgw, with the upstreams' \
         instructions merged, not as the one server behind it (docs/ARCHITECTURE.md, what the \
         gateway says about itself)",
    ),
    (
        "py 2026-07-28 *",
        "tools/list",
        "a 2026-07-28 client's calls to a session-era upstream go on mcpgw's own upstream \
         session, which declares sampling and elicitation but not roots (a server may ask for \
         them outside any call, with no one client to ask): the server does not offer the tool \
         that needs roots (get-roots-list)",
    ),
    (
        "ts streamable-http /mcp",
        "initialize",
        "as on /ws: /mcp serves every upstream, and answers as mcpgw",
    ),
    (
        "ts sse /sse",
        "initialize",
        "as on /ws: /sse serves every upstream, and answers as mcpgw",
    ),
    (
        "py 2026-07-28 *",
        "tools/call get-roots-list",
        "not offered (above)",
    ),
    (
        "py 2026-07-28 *",
        "logs",
        "the envelope's logLevel opt-in does not reach the server as a logging/setLevel on the \
         session the client's calls go on, and no roots sync runs (that session has no roots)",
    ),
];

/// Cases known to differ through mcpgw for a stdio server only, as in [`GAPS`].
const STDIO_GAPS: &[(&str, &str, &str)] = &[
    (
        "ts *",
        "tools/call get-env #1",
        "the tool shows the server's environment: the one mcpgw gives its stdio children (PATH, \
         HOME, LANG and the marker of the gateway that owns them), where the SDK client gives its \
         own default set (HOME, LOGNAME, PATH, SHELL, TERM, USER)",
    ),
    ("py *", "tools/call get-env", "as for the TypeScript client"),
];

/// Cases known to differ through mcpgw when every client shares one child (the default): the
/// child has one session, which mcpgw opened with its own capabilities, so what a server does per
/// client session cannot be any one client's.
const SHARED_STDIO_GAPS: &[(&str, &str, &str)] = &[
    (
        "*",
        "tools/list",
        "the server offers the tools that need a client capability (get-roots-list: roots; \
         trigger-*-async: client tasks) by the capabilities of its one session, mcpgw's, which \
         declares neither",
    ),
    (
        "ts *",
        "tools/call get-roots-list #1",
        "not offered (above)",
    ),
    ("py *", "tools/call get-roots-list", "not offered (above)"),
    (
        "ts tasks *",
        "tools/call trigger-sampling-request-async",
        "not offered (above)",
    ),
    (
        "ts tasks *",
        "tools/call trigger-elicitation-request-async",
        "not offered (above)",
    ),
    (
        "ts tasks *",
        "tools/call simulate-research-query {\"topic\":\"python\",\"ambiguous\":true}",
        "its clarifying question goes by the session's capabilities, mcpgw's (no client tasks)",
    ),
    (
        "*",
        "logs",
        "what the server logs outside a call (a roots sync, a subscription's note) is of no one \
         client, and no roots sync runs (mcpgw's session has no roots)",
    ),
    ("*", "log of resources/unsubscribe arrived", "as logs"),
    ("*", "log of roots sync arrived", "as logs"),
    (
        "py *",
        "resources/list",
        "the server lists the resources earlier clients' calls created in its one session \
         (gzip-file-as-resource's linked.txt.gz, from the TypeScript runs)",
    ),
    (
        "py *",
        "resources/read demo://resource/session/linked.txt.gz",
        "listed (above), so read",
    ),
];

/// How a driver reaches a server: a URL and the transport it speaks there, or the command line
/// of a stdio server, which the driver starts itself.
#[derive(Clone, Copy)]
enum At<'a> {
    Url(&'a str, &'a str),
    Stdio(&'a [String]),
}

impl At<'_> {
    /// The driver's arguments that say so.
    fn args(self) -> Vec<String> {
        match self {
            At::Url(url, transport) => vec![
                "--url".into(),
                url.into(),
                "--transport".into(),
                transport.into(),
            ],
            At::Stdio(command) => vec![
                "--transport".into(),
                "stdio".into(),
                "--command".into(),
                serde_json::to_string(command).unwrap(),
            ],
        }
    }
}

/// The server the drivers reach directly.
enum Server {
    /// The everything server in one of its HTTP modes, and its transport as the drivers name it.
    Http(NodeServer, &'static str),
    /// The command line of a stdio server (the gateway runs its own child of it).
    Stdio(Vec<String>),
}

/// A server, and a gateway (no auth, loopback) that registered it.
struct Rig {
    server: Server,
    gateway: Gateway,
    _dir: Dir,
}

impl Rig {
    /// The everything server in `mode`: `streamableHttp` or `sse`.
    fn start(mode: &str) -> Self {
        let server = NodeServer::start("everything_server.mjs", &[mode]);
        let dir = Dir::new();
        let gateway = Gateway::start(&dir, &["--no-auth"]);
        dir.run_expect(&["gateway", "add", NAME, &server.url], 0);
        let transport = if server.url.ends_with("/sse") {
            "sse"
        } else {
            "streamable-http"
        };
        Self {
            server: Server::Http(server, transport),
            gateway,
            _dir: dir,
        }
    }

    /// The stdio server `command` registered with `mcpgw gateway add NAME --command PROG
    /// --arg A...` and `more` flags.
    fn stdio(command: Vec<String>, more: &[&str]) -> Self {
        let dir = Dir::new();
        let gateway = Gateway::start(&dir, &["--no-auth"]);
        let mut args = vec!["gateway", "add", NAME, "--command", &command[0]];
        let each: Vec<String> = command[1..].iter().map(|a| format!("--arg={a}")).collect();
        args.extend(each.iter().map(String::as_str));
        args.extend_from_slice(more);
        dir.run_expect(&args, 0);
        Self {
            server: Server::Stdio(command),
            gateway,
            _dir: dir,
        }
    }

    /// The server directly.
    fn direct(&self) -> At<'_> {
        match &self.server {
            Server::Http(server, transport) => At::Url(&server.url, transport),
            Server::Stdio(command) => At::Stdio(command),
        }
    }

    fn via(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway.addr.port())
    }

    fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.gateway.addr.port())
    }
}

/// Run a driver; its one line of JSON.
fn report(mut cmd: Command, what: &str) -> Value {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({})\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what} printed no JSON report ({e}):\n{stdout}"))
}

/// `everything_client.mjs AT [--prefix P] --group G`.
fn ts(at: At, prefix: &str, group: &str) -> Value {
    let dir = common::prereq::typescript_sdk();
    let mut cmd = Command::new("node");
    if matches!(at, At::Url(_, "websocket")) {
        // Node 20 has its WebSocket behind this flag (Node 22 has it on by default).
        cmd.arg("--experimental-websocket");
    }
    let args = at.args();
    cmd.arg(dir.join("everything_client.mjs"))
        .args(&args)
        .args(["--group", group]);
    if !prefix.is_empty() {
        cmd.args(["--prefix", prefix]);
    }
    report(
        cmd,
        &format!("everything_client.mjs {} {group}", args.join(" ")),
    )
}

/// `everything_client.py AT --mode M`.
fn py(at: At, mode: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/everything_client.py");
    let mut cmd = Command::new(common::prereq::python());
    let args = at.args();
    cmd.args(["-W", "ignore"])
        .arg(script)
        .args(&args)
        .args(["--mode", mode]);
    report(
        cmd,
        &format!("everything_client.py {} {mode}", args.join(" ")),
    )
}

/// A report's cases, its log lines as the case `logs`.
fn cases(report: &Value) -> BTreeMap<String, Value> {
    let mut cases: BTreeMap<String, Value> = report["cases"]
        .as_object()
        .unwrap_or_else(|| panic!("no cases in {report}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    cases.insert("logs".into(), report["logs"].clone());
    cases
}

/// Where `a` and `b` differ, as one line per JSON pointer (values cut at 300 characters).
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                diff(&format!("{path}/{k}"), va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}/{i}"), va, vb, out);
            }
        }
        // Lists of named things (tools, prompts, resources): which ones each side lacks.
        (Value::Array(x), Value::Array(y)) if keyed(x).is_some() && keyed(y).is_some() => {
            let (kx, ky) = (keyed(x).unwrap(), keyed(y).unwrap());
            let only = |a: &BTreeMap<String, &Value>, b: &BTreeMap<String, &Value>| {
                a.keys()
                    .filter(|k| !b.contains_key(*k))
                    .cloned()
                    .collect::<Vec<_>>()
            };
            out.push(format!(
                "    at {}: only directly: {:?}; only through mcpgw: {:?}",
                shown(path),
                only(&kx, &ky),
                only(&ky, &kx)
            ));
            for (k, va) in &kx {
                if let Some(vb) = ky.get(k) {
                    diff(&format!("{path}[{k}]"), va, vb, out);
                }
            }
        }
        _ if a != b => {
            let cut = |v: &Value| v.to_string().chars().take(300).collect::<String>();
            out.push(format!(
                "    at {}\n      direct:        {}\n      through mcpgw: {}",
                shown(path),
                cut(a),
                cut(b)
            ));
        }
        _ => {}
    }
}

/// A JSON pointer as shown in a diff (`/` for the whole value).
fn shown(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

/// The elements of a list by their `name`, `uri` or `uriTemplate`, if each has one.
fn keyed(list: &[Value]) -> Option<BTreeMap<String, &Value>> {
    list.iter()
        .map(|v| {
            let key = ["name", "uri", "uriTemplate"]
                .iter()
                .find_map(|k| v.get(*k)?.as_str())?;
            Some((key.to_owned(), v))
        })
        .collect()
}

/// The comparisons of one rig's runs.
#[derive(Default)]
struct Comparison {
    /// (run, case) -> readable diff, for every case that differs.
    differences: BTreeMap<(String, String), String>,
    /// How many cases were compared.
    compared: usize,
}

impl Comparison {
    /// Compare one run through mcpgw with the run made directly, case by case; `era_only`
    /// cases exist in one era only and are not compared.
    fn add(&mut self, run: &str, direct: &Value, via: &Value, era_only: &[&str]) {
        let (direct, via) = (cases(direct), cases(via));
        let names: BTreeSet<&String> = direct.keys().chain(via.keys()).collect();
        for name in names {
            if era_only.contains(&name.as_str()) {
                continue;
            }
            self.compared += 1;
            let missing = Value::String("<case missing>".into());
            let (a, b) = (
                direct.get(name).unwrap_or(&missing),
                via.get(name).unwrap_or(&missing),
            );
            let mut lines = Vec::new();
            diff("", a, b, &mut lines);
            if !lines.is_empty() {
                self.differences
                    .insert((run.to_owned(), name.clone()), lines.join("\n"));
            }
        }
    }

    /// Every difference not in `exempt`, as a readable report; `None` when there is none.
    fn unexplained(&self, exempt: impl Fn(&str, &str) -> bool) -> Option<String> {
        assert!(self.compared > 0, "nothing was compared");
        let left: Vec<String> = self
            .differences
            .iter()
            .filter(|((run, case), _)| !exempt(run, case))
            .map(|((run, case), lines)| format!("  [{run}] {case}\n{lines}"))
            .collect();
        (!left.is_empty()).then(|| {
            format!(
                "{} of {} cases differ through mcpgw:\n{}",
                left.len(),
                self.compared,
                left.join("\n")
            )
        })
    }
}

fn known_gap(run: &str, case: &str) -> bool {
    listed(GAPS, run, case)
}

/// [`known_gap`] for a stdio server: [`GAPS`] and [`STDIO_GAPS`].
fn known_stdio_gap(run: &str, case: &str) -> bool {
    listed(GAPS, run, case) || listed(STDIO_GAPS, run, case)
}

/// [`known_stdio_gap`] for a child shared by every client: [`SHARED_STDIO_GAPS`] too.
fn known_shared_stdio_gap(run: &str, case: &str) -> bool {
    known_stdio_gap(run, case) || listed(SHARED_STDIO_GAPS, run, case)
}

fn listed(gaps: &[(&str, &str, &str)], run: &str, case: &str) -> bool {
    gaps.iter().any(|(r, c, _)| {
        let runs = r
            .strip_suffix('*')
            .map_or(*r == run, |start| run.starts_with(start));
        runs && *c == case
    })
}

/// Every driver and front door, each compared with the same driver run directly (the tasks
/// group too: the task-required tool `simulate-research-query`, with and without an elicitation
/// on the side, and the `trigger-*-async` tools the server offers to clients that run its
/// requests as tasks); the Python
/// client in 2026-07-28 through the gateway is compared with its session-era run directly (the
/// server speaks only the session era), its era's own cases (`ping`, `logging/setLevel`) aside.
///
/// `aggregated`: the TypeScript client also goes through the endpoints that serve every
/// upstream over Streamable HTTP and legacy SSE, `/mcp` and `/sse` (names prefixed, as on
/// `/ws`).
fn compare(rig: &Rig, aggregated: bool) -> Comparison {
    let mut cmp = Comparison::default();
    let direct = rig.direct();
    let ts_direct = ts(direct, "", "main");
    let mcp = format!("/servers/{NAME}/mcp");
    let sse = format!("/servers/{NAME}/sse");
    for (transport, path) in [("streamable-http", &mcp), ("sse", &sse)] {
        let via = ts(At::Url(&rig.via(path), transport), "", "main");
        cmp.add(&format!("ts {transport} {path}"), &ts_direct, &via, &[]);
    }
    let prefix = format!("{NAME}__");
    if aggregated {
        for (transport, path) in [("streamable-http", "/mcp"), ("sse", "/sse")] {
            let via = ts(At::Url(&rig.via(path), transport), &prefix, "main");
            cmp.add(&format!("ts {transport} {path}"), &ts_direct, &via, &[]);
        }
    }
    let via = ts(At::Url(&rig.ws(), "websocket"), &prefix, "main");
    cmp.add("ts websocket /ws", &ts_direct, &via, &[]);
    let tasks_direct = ts(direct, "", "tasks");
    let via = ts(At::Url(&rig.via(&mcp), "streamable-http"), "", "tasks");
    cmp.add("ts tasks /servers/every/mcp", &tasks_direct, &via, &[]);

    let py_direct = py(direct, "legacy");
    for (transport, path) in [("streamable-http", &mcp), ("sse", &sse)] {
        let via = py(At::Url(&rig.via(path), transport), "legacy");
        cmp.add(
            &format!("py legacy {transport} {path}"),
            &py_direct,
            &via,
            &[],
        );
        let via = py(At::Url(&rig.via(path), transport), "2026-07-28");
        let era_only = ["ping", "logging/setLevel debug"];
        cmp.add(
            &format!("py 2026-07-28 {transport} {path}"),
            &py_direct,
            &via,
            &era_only,
        );
    }
    cmp
}

#[test]
fn a_streamable_http_everything_server_answers_alike_through_mcpgw_and_directly() {
    let rig = Rig::start("streamableHttp");
    if let Some(report) = compare(&rig, false).unexplained(known_gap) {
        panic!("{report}");
    }
}

#[test]
fn an_sse_everything_server_answers_alike_through_mcpgw_and_directly() {
    let rig = Rig::start("sse");
    if let Some(report) = compare(&rig, false).unexplained(known_gap) {
        panic!("{report}");
    }
}

/// The session ids (UUIDs) a toggle report's texts and simulated log lines name.
fn sessions_named(side: &Value) -> BTreeSet<String> {
    let is_uuid = |w: &[u8]| {
        w.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
    };
    let lines = side["texts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(side["simulated_logs"].as_array().unwrap())
        .filter_map(Value::as_str);
    let mut named = BTreeSet::new();
    for line in lines {
        for window in line.as_bytes().windows(36).filter(|w| is_uuid(w)) {
            named.insert(String::from_utf8_lossy(window).into_owned());
        }
    }
    named
}

/// Two clients at once toggle the server's per-session state (simulated logging and resource
/// updates) through mcpgw: each must start and then stop its own, and see only its own
/// session's simulated log lines (one upstream session per downstream session).
#[test]
fn two_clients_toggling_state_through_mcpgw_see_only_their_own() {
    for mode in ["streamableHttp", "sse"] {
        let rig = Rig::start(mode);
        for (transport, path) in [("streamable-http", "mcp"), ("sse", "sse")] {
            let url = rig.via(&format!("/servers/{NAME}/{path}"));
            let report = ts(At::Url(&url, transport), "", "toggle");
            let what = format!("{mode} upstream, {transport} front door: {report:#}");
            assert_each_toggled_its_own(&report, &what);
            let mut named = Vec::new();
            for side in ["a", "b"] {
                let sessions = sessions_named(&report[side]);
                assert_eq!(sessions.len(), 1, "{side} saw {sessions:?}\n{what}");
                named.push(sessions);
            }
            assert_ne!(named[0], named[1], "both clients share a session\n{what}");
        }
    }
}

/// Each side of a toggle report started and then stopped its own simulated logging and
/// resource updates, and got a simulated log line.
fn assert_each_toggled_its_own(report: &Value, what: &str) {
    for side in ["a", "b"] {
        let texts: Vec<&str> = report[side]["texts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(texts.len(), 4, "{what}");
        for (text, want) in texts
            .iter()
            .zip(["Started", "Started", "Stopped", "Stopped"])
        {
            assert!(text.starts_with(want), "{side} got {text:?}\n{what}");
        }
        assert!(
            !report[side]["simulated_logs"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{side} got no simulated log line\n{what}"
        );
    }
}

/// Every case, [`GAPS`] included, compared with no exemption.
#[test]
#[ignore = "issue 19: differs through mcpgw today: initialize (mcpgw's serverInfo, no \
            instructions); /ws tools/list and resources/list (the registration-time catalog, not \
            the client's own session's); the Python client in 2026-07-28 (its calls go on \
            mcpgw's own upstream session: get-roots-list and trigger-url-elicitation not \
            offered, no logs; over /servers/NAME/sse the server's sampling and elicitation \
            requests answered -32601)"]
fn every_case_matches_through_mcpgw_with_no_exemption() {
    let mut failures = Vec::new();
    for mode in ["streamableHttp", "sse"] {
        let rig = Rig::start(mode);
        let cmp = compare(&rig, false);
        if let Some(report) = cmp.unexplained(|_, _| false) {
            failures.push(format!("--- {mode} upstream: {report}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The everything server in its stdio mode, on the installed package (no `npx`, no network).
fn everything_stdio() -> Vec<String> {
    let entry = common::prereq::typescript_sdk()
        .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    vec!["node".into(), entry.display().to_string(), "stdio".into()]
}

/// The official Python SDK's stdio server fixture (`tests/fixtures/py_stdio_everything.py`).
fn python_stdio() -> Vec<String> {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/py_stdio_everything.py");
    vec![
        common::prereq::python().display().to_string(),
        script.display().to_string(),
    ]
}

/// Compare `rig`'s runs, failing with every unexplained difference and the gateway's own log
/// lines (its children's stderr left out).
fn assert_alike(rig: &Rig, known: impl Fn(&str, &str) -> bool) {
    if let Some(report) = compare(rig, true).unexplained(known) {
        let log = rig.gateway.log();
        let own: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("stdio upstream stderr"))
            .collect();
        panic!("{report}\n--- gateway log\n{}", own.join("\n"));
    }
}

/// The everything server as a stdio upstream (one child, shared by every client): through
/// `/servers/every/mcp`, `/servers/every/sse`, `/mcp`, `/sse` and `/ws` as when the SDK clients
/// start it and drive its stdio themselves, but for what one shared session cannot do per
/// client ([`SHARED_STDIO_GAPS`]).
#[test]
fn a_stdio_everything_server_answers_alike_through_mcpgw_and_directly() {
    let rig = Rig::stdio(everything_stdio(), &[]);
    assert_alike(&rig, known_shared_stdio_gap);
}

/// The same with `--isolate`: each client session gets a child of its own, started for it, so
/// every case matches (the environment aside).
#[test]
fn an_isolated_stdio_everything_server_answers_alike_through_mcpgw_and_directly() {
    let rig = Rig::stdio(everything_stdio(), &["--isolate"]);
    assert_alike(&rig, known_stdio_gap);
}

/// The same for a stdio server on the official Python SDK (sampling, elicitation, roots,
/// progress and logs, requests and log lines of the server's own outside any call included),
/// shared by every client. Registered with `--era 2025-11-25`: see
/// `a_dual_era_python_stdio_server_behind_era_auto_answers_alike_through_mcpgw`.
#[test]
fn a_python_sdk_stdio_server_answers_alike_through_mcpgw_and_directly() {
    let rig = Rig::stdio(python_stdio(), &["--era", "2025-11-25"]);
    assert_alike(&rig, known_shared_stdio_gap);
}

/// The same with `--isolate`: every case matches.
#[test]
fn an_isolated_python_sdk_stdio_server_answers_alike_through_mcpgw_and_directly() {
    let rig = Rig::stdio(python_stdio(), &["--isolate", "--era", "2025-11-25"]);
    assert_alike(&rig, known_stdio_gap);
}

/// The Python SDK's stdio server speaks both eras, and a stdio connection is one era for its
/// whole life: with `--era auto` (the default) mcpgw speaks the session era to a stdio child,
/// so the server's own requests and log lines have their way back, as registered with
/// `--era 2025-11-25` above.
#[test]
fn a_dual_era_python_stdio_server_behind_era_auto_answers_alike_through_mcpgw() {
    let rig = Rig::stdio(python_stdio(), &[]);
    assert_alike(&rig, known_shared_stdio_gap);
}

/// With `--isolate`, each client gets a child of its own: two clients toggling the everything
/// server's per-session state through mcpgw each start and stop their own (with one shared
/// child, the second would stop what the first started).
#[test]
fn two_clients_of_an_isolated_stdio_everything_server_each_toggle_their_own() {
    let rig = Rig::stdio(everything_stdio(), &["--isolate"]);
    for (transport, path) in [("streamable-http", "mcp"), ("sse", "sse")] {
        let url = rig.via(&format!("/servers/{NAME}/{path}"));
        let report = ts(At::Url(&url, transport), "", "toggle");
        let what = format!("isolated stdio upstream, {transport} front door: {report:#}");
        assert_each_toggled_its_own(&report, &what);
    }
}
