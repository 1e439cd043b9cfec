//! A registration that cannot be turned against the host (issue 20, item 7): certificate paths
//! that are FIFOs, devices, links or huge files; the gateway's own serving key offered as an
//! upstream client key; upstream URLs pointing at cloud metadata or denied networks; headers
//! the gateway owns; links planted at the gateway's own file names in its data directory.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::{Dir, Gateway};
use serde_json::{Value, json};

/// Long enough for any honest answer on a loaded machine, short enough that a registration
/// stuck in `open()` or reading `/dev/zero` shows up as a timeout rather than a hung test.
const PATIENCE: Duration = Duration::from_secs(10);

/// `METHOD PATH` with a JSON `body` on a fresh connection, without a token; the status and body,
/// or the I/O error (a timeout) if no whole answer came within [`PATIENCE`].
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &Value,
) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn register(addr: SocketAddr, body: Value) -> (u16, String) {
    call(addr, "POST", "/gateways", &body)
        .unwrap_or_else(|e| panic!("no answer to the registration {body} within {PATIENCE:?}: {e}"))
}

fn registered(addr: SocketAddr) -> Vec<Value> {
    let (status, body) = call(addr, "GET", "/gateways", &Value::Null).unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn fifo_and_device_certificate_paths_are_refused_at_once_while_health_answers() {
    let dir = Dir::new();
    let fifo = dir.join("ca.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let before = gw.rss_kib();
    for (path, kind) in [
        (fifo.to_str().unwrap(), "FIFO"),
        ("/dev/zero", "character device"),
    ] {
        let addr = gw.addr;
        let body = json!({"name": "hostile", "url": "https://127.0.0.1:1/mcp", "tls_config": {"ca_cert": path}});
        let registration = std::thread::spawn(move || call(addr, "POST", "/gateways", &body));
        // The gateway keeps answering whatever the registration is doing.
        let (status, _) = call(gw.addr, "GET", "/health", &Value::Null)
            .unwrap_or_else(|e| panic!("/health did not answer while {path} was registered: {e}"));
        assert_eq!(status, 200);
        let (status, answer) = registration
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("no answer to registering {path} within {PATIENCE:?}: {e}"));
        assert!(status >= 400, "{path}: {status} {answer}");
        assert!(answer.contains(path), "the path is named: {answer}");
        assert!(answer.contains(kind), "what it is is named: {answer}");
        assert!(answer.contains("not a regular file"), "{answer}");
    }
    let grown = gw.rss_kib().saturating_sub(before);
    assert!(grown < 20 * 1024, "the gateway grew by {grown} KiB");
    assert!(registered(gw.addr).is_empty(), "nothing was stored");
}

#[test]
fn a_linked_or_oversized_certificate_path_is_refused_without_being_read() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let link = dir.join("ca-link.crt");
    std::os::unix::fs::symlink(pki.file("ca.crt"), &link).unwrap();
    let big = dir.join("big.crt");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 * 1024 * 1024)
        .unwrap();
    let gw = Gateway::start(&dir, &["--no-auth", "--request-timeout", "2"]);
    let ca = |path: &std::path::Path| json!({"name": "x", "url": "https://127.0.0.1:1/mcp", "tls_config": {"ca_cert": path}});
    let (status, answer) = register(gw.addr, ca(&link));
    assert!(status >= 400, "{answer}");
    assert!(answer.contains("is a symbolic link"), "{answer}");
    let (status, answer) = register(gw.addr, ca(&big));
    assert!(status >= 400, "{answer}");
    assert!(
        answer.contains("67108864 bytes, more than the 1048576"),
        "{answer}"
    );
    // The file the link points to is accepted as itself: the refusal is of the link.
    let (_, answer) = register(gw.addr, ca(&pki.file("ca.crt")));
    assert!(!answer.contains("symbolic link"), "{answer}");
    assert!(registered(gw.addr).is_empty());
}

#[test]
fn the_gateways_own_serving_key_is_refused_as_an_upstream_client_key() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    // The same key under another name: refused by the key, not the path.
    std::fs::copy(pki.file("server.key"), dir.join("copy.key")).unwrap();
    let _gw = Gateway::start_tls(&dir, &pki, &["--request-timeout", "2"]);
    let copy = dir.join("copy.key").display().to_string();
    for key in [pki.s("server.key"), copy] {
        let out = dir.run(&[
            "gateway",
            "add",
            "self",
            "https://127.0.0.1:1/mcp",
            "--client-cert",
            &pki.s("server.crt"),
            "--client-key",
            &key,
            "--defer",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {stderr}");
        assert!(
            stderr.contains(&format!("{key} is the gateway's own serving key")),
            "{stderr}"
        );
    }
    let (listed, _) = dir.run_expect(&["gateway", "list", "--json"], 0);
    assert_eq!(listed.trim(), "[]", "nothing was stored");
    // A client identity of its own is fine.
    dir.gateway_add_mtls_with("own", "https://127.0.0.1:1/mcp", &pki, &["--defer"]);
}

/// A gateway without auth whose `[upstreams]` section is `section`.
fn with_upstreams_config(section: &str) -> (Dir, Gateway) {
    let dir = Dir::new();
    std::fs::write(dir.join("mcpgw.toml"), format!("[upstreams]\n{section}\n")).unwrap();
    let gw = Gateway::start(&dir, &["--no-auth", "--config", "mcpgw.toml"]);
    (dir, gw)
}

#[test]
fn upstream_urls_are_held_to_the_url_policy_at_registration_and_when_dialled() {
    let up = common::upstream::Upstream::start(&[]);
    let port = up.port();
    let (_dir, gw) = with_upstreams_config(
        "url_deny = [\"127.0.0.0/8\", \"*.corp.test\"]\nurl_allow = [\"127.0.0.1\"]",
    );
    let url = |host: &str| json!({"name": "x", "url": format!("http://{host}/mcp"), "defer": true});

    let (status, answer) = register(gw.addr, url("169.254.169.254"));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.contains("169.254.0.0/16"),
        "the rule is named: {answer}"
    );
    assert!(
        answer.contains("url_allow"),
        "the setting is named: {answer}"
    );
    let (status, answer) = register(gw.addr, url("metadata.google.internal"));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = register(gw.addr, url(&format!("127.0.0.2:{port}")));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("'127.0.0.0/8' of `url_deny`"), "{answer}");
    let (status, answer) = register(gw.addr, url("db.corp.test"));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("'*.corp.test' of `url_deny`"), "{answer}");
    assert!(registered(gw.addr).is_empty());
    let allowed = json!({"name": "ok", "url": format!("http://127.0.0.1:{port}/mcp")});
    let (status, answer) = register(gw.addr, allowed);
    assert_eq!(status, 201, "allowed by url_allow: {answer}");

    // A name passes the name rules, but every address it resolves to is refused: not dialled.
    let (_dir, gw) = with_upstreams_config("url_deny = [\"127.0.0.0/8\", \"::1\"]");
    let by_name = json!({"name": "named", "url": format!("http://localhost:{port}/mcp")});
    let (status, answer) = register(gw.addr, by_name);
    assert_eq!(status, 502, "{answer}");
    assert!(answer.contains("not connecting to localhost"), "{answer}");
    assert!(answer.contains("of `url_deny`"), "{answer}");
    assert!(registered(gw.addr).is_empty());
}

#[test]
fn headers_the_gateway_owns_are_refused_in_a_registration() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let with = |headers: Value, bearer: Option<&str>| {
        let mut body = json!({"name": "h", "url": "http://127.0.0.1:1/mcp", "defer": true, "headers": headers});
        if let Some(token) = bearer {
            body["bearer"] = json!(token);
        }
        register(gw.addr, body)
    };
    for name in [
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Mcp-Session-Id",
        "MCP-Protocol-Version",
        "Mcp-Method",
        "Mcp-Name",
    ] {
        let (status, answer) = with(json!({name: "x"}), None);
        assert_eq!(status, 400, "{name}: {answer}");
        assert!(
            answer.contains(&format!("header '{name}' cannot be set")),
            "{answer}"
        );
    }
    // The same through the CLI's `--header` lines.
    let out = dir.run(&[
        "gateway",
        "add",
        "h",
        "http://127.0.0.1:1/mcp",
        "--defer",
        "--header",
        "mcp-session-id: stolen",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be set"));
    let (status, answer) = with(json!({"Authorization": "Bearer a"}), Some("b-token"));
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("give one of them"), "{answer}");
    assert!(!answer.contains("b-token"), "{answer}");
    assert!(registered(gw.addr).is_empty());
    // An Authorization header alone is a credential like any other.
    let (status, answer) = with(json!({"Authorization": "Bearer a", "X-Tenant": "t"}), None);
    assert_eq!(status, 201, "{answer}");
}

/// Run `serve` and wait for it to exit by itself; a gateway still running after a while (it
/// accepted the data directory) is stopped, and the exit code is `None`.
fn serve_until_exit(dir: &Dir) -> (Option<i32>, String) {
    let mut child = dir
        .cmd()
        .args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    (code, stderr)
}

#[test]
fn links_planted_at_the_gateways_own_file_names_are_refused_and_their_targets_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let secret = "ab".repeat(32);
    for (own, target_exists) in [
        ("jwt.secret", true),
        ("mcpgw.db", false),
        ("mcpgw.sock.lock", false),
    ] {
        let dir = Dir::new();
        let data = dir.data_dir();
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Another gateway's secret, or a file the attacker wants created or truncated.
        let victim = dir.join("victim");
        if target_exists {
            std::fs::write(&victim, &secret).unwrap();
        }
        std::os::unix::fs::symlink(&victim, data.join(own)).unwrap();
        let (code, stderr) = serve_until_exit(&dir);
        assert_eq!(code, Some(1), "{own}: serve must refuse to start: {stderr}");
        assert!(
            stderr.contains(&format!("{own} is a symbolic link")),
            "{stderr}"
        );
        if target_exists {
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), secret);
        } else {
            assert!(!victim.exists(), "{own}: the link's target was created");
        }
    }
}
