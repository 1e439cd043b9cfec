//! Start-up, configuration, auth, the control socket, and graceful shutdown of the real binary.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::{Dir, Gateway, SIGINT, SIGTERM};

fn http_get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\n{auth}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn health_is_open_and_everything_else_needs_a_token() {
    let dir = Dir::new();
    let token = "test-token-0123456789abcdef";
    std::fs::write(
        dir.join("mcpgw.toml"),
        format!("[auth]\ntokens = [\"{token}\"]\n"),
    )
    .unwrap();
    let gw = Gateway::start(&dir, &["--config", "mcpgw.toml"]);
    let (status, body) = http_get(gw.addr, "/health", None);
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["uptime_s"].is_u64());
    assert_eq!(http_get(gw.addr, "/ready", None).0, 401);
    assert_eq!(
        http_get(gw.addr, "/admin/status", Some("wrong-token-0123456789")).0,
        401
    );
    assert_eq!(http_get(gw.addr, "/ready", Some(token)).0, 200);
    let (status, body) = http_get(gw.addr, "/admin/status", Some(token));
    assert_eq!(status, 200);
    assert!(!body.contains(token));
    assert!(!gw.log().contains(token), "token leaked into the log");
}

#[test]
fn sigterm_lets_a_slow_request_finish_and_exits_zero() {
    let dir = Dir::new();
    let mut gw = Gateway::start(&dir, &["--no-auth", "--shutdown-grace", "10"]);
    // An in-flight request whose body arrives slowly: headers now, body after the SIGTERM.
    let body = br#"{"cert_pem":"x","key_pem":"y"}"#;
    let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
    write!(
        stream,
        "POST /admin/cert/install HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    gw.signal(SIGTERM);
    gw.wait_log_count("shutting down", 1, Duration::from_secs(5));
    // New connections are refused once the listener is closed.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(gw.addr).is_err(),
        "listener still accepting after SIGTERM"
    );
    assert!(gw.alive(), "exited before the in-flight request finished");
    stream.write_all(&body[10..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    // Plain HTTP has no certificate to install: the request was served to its end.
    assert!(response.starts_with("HTTP/1.1 409"), "{response}");
    assert!(response.contains("no certificate to rotate"), "{response}");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn sigint_exits_zero_and_removes_the_socket() {
    let dir = Dir::new();
    let mut gw = Gateway::start(&dir, &[]);
    let socket = dir.data_dir().join("mcpgw.sock");
    assert!(socket.exists());
    gw.signal(SIGINT);
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!socket.exists());
}

#[test]
fn control_socket_is_owner_only() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &[]);
    let socket = dir.data_dir().join("mcpgw.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(dir.data_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let (stdout, _) = dir.run_expect(&["status", "--json"], 0);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["listen"], gw.addr.to_string());
    assert_eq!(status["scheme"], "http");
}

/// Needs root, to run the client as `nobody` (uid 65534); fails without it (CI runs as root).
#[test]
fn control_socket_refuses_a_client_with_another_uid_even_when_file_modes_let_it_in() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test needs root, to run a client as another uid (uid 65534); \
         run it as root, or leave it out with `--skip control_socket_refuses_a_client`"
    );
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &[]);
    let socket = dir.data_dir().join("mcpgw.sock");
    // Open the file-mode guards so only the peer-uid check stands between `nobody` and the API.
    for path in [dir.path(), dir.data_dir().as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = dir
        .cmd()
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .args(["status"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "nobody was not refused: {stderr}"
    );
    assert!(stderr.contains("only serves its owner"), "{stderr}");
    gw.wait_log_count("refused a peer with another uid", 1, Duration::from_secs(5));
    assert!(gw.log().contains("peer_uid=65534"), "{}", gw.log());
}

#[test]
fn a_second_gateway_on_the_same_data_dir_is_refused_and_the_first_keeps_serving() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &[]);
    let (_, stderr) = dir.run_expect(&["serve", "--listen", "127.0.0.1:0"], 1);
    assert!(
        stderr.contains("another mcpgw is already serving control socket"),
        "{stderr}"
    );
    dir.run_expect(&["status"], 0);
    assert_eq!(http_get(gw.addr, "/health", None).0, 200);
}

#[test]
fn unreachable_gateway_is_exit_3() {
    let dir = Dir::new();
    let (_, stderr) = dir.run_expect(&["status"], 3);
    assert!(
        stderr.contains("cannot reach the gateway on control socket"),
        "{stderr}"
    );
}

#[test]
fn configuration_errors_name_file_key_and_expectation() {
    let dir = Dir::new();
    std::fs::write(dir.join("bad.toml"), "listen = \"everywhere\"\n").unwrap();
    let (_, stderr) = dir.run_expect(&["serve", "--config", "bad.toml"], 1);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("`listen`") && stderr.contains("ADDR:PORT"),
        "{stderr}"
    );

    std::fs::write(dir.join("typo.toml"), "[tls]\ncert = 5\n").unwrap();
    let (_, stderr) = dir.run_expect(&["serve", "--config", "typo.toml"], 1);
    assert!(
        stderr.contains("typo.toml") && stderr.contains("cert"),
        "{stderr}"
    );

    let (_, stderr) = dir.run_expect(&["serve", "--listen", "0.0.0.0:0"], 1);
    assert!(
        stderr.contains("refusing to serve plain HTTP on non-loopback"),
        "{stderr}"
    );
    let (_, stderr) = dir.run_expect(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--allow-insecure-bind",
            "--no-auth",
        ],
        1,
    );
    assert!(stderr.contains("refusing --no-auth"), "{stderr}");

    let (_, stderr) = dir.run_expect(
        &[
            "serve",
            "--tls-cert",
            "missing.crt",
            "--tls-key",
            "missing.key",
        ],
        1,
    );
    assert!(
        stderr.contains("cannot load the serving certificate") && stderr.contains("missing.crt"),
        "{stderr}"
    );

    let mut cmd = dir.cmd();
    cmd.args(["serve"]).env("MCPGW_LISTEN", "not-an-address");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));
}

#[test]
fn env_beats_file_and_flag_beats_env() {
    let dir = Dir::new();
    std::fs::write(dir.join("mcpgw.toml"), "listen = \"127.0.0.1:1\"\n").unwrap();
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--config", "mcpgw.toml"])
        .env("MCPGW_LISTEN", "127.0.0.1:0");
    let gw = Gateway::spawn(cmd);
    assert_ne!(gw.addr.port(), 1);
    drop(gw);
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("MCPGW_LISTEN", "127.0.0.1:1");
    let gw = Gateway::spawn(cmd);
    assert_ne!(gw.addr.port(), 1);
}

#[test]
fn busy_port_gets_a_clear_error() {
    let dir = Dir::new();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let (_, stderr) = dir.run_expect(&["serve", "--listen", &addr], 1);
    assert!(
        stderr.contains(&format!(
            "cannot listen on {addr}: the address is already in use"
        )),
        "{stderr}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--log-format", "json"]);
    let log = gw.wait_log_count("mcpgw ready", 1, Duration::from_secs(5));
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string());
    }
}

fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn foreign_host_or_origin_is_refused_on_a_loopback_listener() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let post = |host: &str, origin: Option<&str>| {
        let origin = origin
            .map(|o| format!("origin: {o}\r\n"))
            .unwrap_or_default();
        raw(
            gw.addr,
            &format!(
                "POST /mcp HTTP/1.1\r\nhost: {host}\r\n{origin}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let own = format!("127.0.0.1:{}", gw.addr.port());
    assert!(
        post(&own, None).starts_with("HTTP/1.1 200"),
        "own host must pass"
    );
    assert!(
        post("localhost", Some("http://localhost:6274")).starts_with("HTTP/1.1 200"),
        "local origin must pass"
    );
    let r = post("evil.example.com", None);
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("DNS-rebinding"),
        "{r}"
    );
    let r = post(&own, Some("http://evil.example.com"));
    assert!(r.starts_with("HTTP/1.1 403") && r.contains("Origin"), "{r}");
}
