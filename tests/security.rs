//! Hostile input on the admin surfaces: bad tokens, hostile certificate paths, header
//! injection; and no secret ever printed in logs, errors or `--json` output.

mod common;

use std::io::{Read, Write};

use common::{Dir, Gateway};
use serde_json::json;

fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nhost: localhost\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    (
        r[9..12].parse().unwrap(),
        r.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

fn jwt(secret: &[u8], claims: serde_json::Value, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[test]
fn admin_routes_refuse_missing_forged_expired_unsigned_and_foreign_tokens() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &[]);
    let secret = mcpgw::http::auth::read_secret(&dir.data_dir()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let good = jwt(
        &secret,
        json!({"sub": "t", "aud": "mcpgw", "iat": now, "exp": now + 600, "role": "admin"}),
        jsonwebtoken::Algorithm::HS256,
    );
    assert_eq!(
        request(gw.addr, "GET", "/gateways", Some(&good), "").0,
        200,
        "a valid token must pass"
    );

    use base64::Engine;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": "t", "aud": "mcpgw", "exp": now + 600}))
    );
    let cases = [
        ("no token", None),
        (
            "wrong signature",
            Some(jwt(
                b"another secret entirely",
                json!({"sub": "t", "aud": "mcpgw", "exp": now + 600}),
                jsonwebtoken::Algorithm::HS256,
            )),
        ),
        (
            "expired",
            Some(jwt(
                &secret,
                json!({"sub": "t", "aud": "mcpgw", "iat": now - 7200, "exp": now - 3600}),
                jsonwebtoken::Algorithm::HS256,
            )),
        ),
        ("alg none", Some(none)),
        (
            "other audience",
            Some(jwt(
                &secret,
                json!({"sub": "t", "aud": "someone-else", "exp": now + 600}),
                jsonwebtoken::Algorithm::HS256,
            )),
        ),
        (
            "HS512 with our secret",
            Some(jwt(
                &secret,
                json!({"sub": "t", "aud": "mcpgw", "exp": now + 600}),
                jsonwebtoken::Algorithm::HS512,
            )),
        ),
        ("garbage", Some("not.a.jwt".to_owned())),
    ];
    for (name, token) in cases {
        for (method, path) in [
            ("GET", "/gateways"),
            ("POST", "/mcp"),
            ("GET", "/metrics"),
            ("GET", "/admin/status"),
        ] {
            let (status, _) = request(gw.addr, method, path, token.as_deref(), "{}");
            assert_eq!(status, 401, "{name}: {method} {path}");
        }
    }
    assert_eq!(request(gw.addr, "GET", "/health", None, "").0, 200);
}

#[test]
fn hostile_registrations_are_refused_without_echoing_secrets_or_files() {
    let dir = Dir::new();
    std::fs::write(
        dir.join("secret.txt"),
        "root:$6$verysecrethash$abc:19000:0:99999:7:::\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("allowed")).unwrap();
    std::fs::write(
        dir.join("mcpgw.toml"),
        format!(
            "[upstreams]\ncert_dirs = [\"{}\"]\n",
            dir.join("allowed").display()
        ),
    )
    .unwrap();
    let gw = Gateway::start(
        &dir,
        &[
            "--no-auth",
            "--config",
            "mcpgw.toml",
            "--request-timeout",
            "2",
        ],
    );
    let post =
        |body: serde_json::Value| request(gw.addr, "POST", "/gateways", None, &body.to_string());

    // A certificate path to a non-certificate file outside the allowed directories.
    let (status, body) = post(
        json!({"name": "x", "url": "https://localhost:1/mcp", "tls_config": {"ca_cert": dir.join("secret.txt")}}),
    );
    assert!(status >= 400, "{body}");
    assert!(body.contains("outside the directories allowed"), "{body}");
    assert!(!body.contains("verysecrethash"), "{body}");

    // Inside the allowed directory, but not PEM: named, not echoed.
    std::fs::copy(dir.join("secret.txt"), dir.join("allowed/ca.pem")).unwrap();
    let (status, body) = post(
        json!({"name": "y", "url": "https://localhost:1/mcp", "tls_config": {"ca_cert": dir.join("allowed/ca.pem")}}),
    );
    assert!(status >= 400, "{body}");
    assert!(
        body.contains("is not valid PEM") || body.contains("no '-----BEGIN'"),
        "{body}"
    );
    assert!(!body.contains("verysecrethash"), "{body}");

    // CR/LF in an upstream header, and in a bearer token.
    let (status, body) = post(
        json!({"name": "z", "url": "http://127.0.0.1:1/mcp", "headers": {"X-A": "ok\r\nInjected: yes"}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("control character"), "{body}");
    let (status, _) =
        post(json!({"name": "z", "url": "http://127.0.0.1:1/mcp", "auth_token": "tok\r\nX: y"}));
    assert_eq!(status, 400);

    // A deferred registration with secrets: stored, and no secret in any answer or log.
    let bearer = "upstream-bearer-SECRET-0123456789";
    // A usable inline client identity (an unusable one is refused even deferred).
    let pki = mcpgw::tls::pki::generate(&mcpgw::tls::pki::PkiSpec::default()).unwrap();
    let inline_key = pki.client.key_pem.as_str();
    let key_body = &inline_key.lines().nth(1).unwrap()[..22];
    let (status, body) = post(
        json!({"name": "sec", "url": "http://127.0.0.1:1/mcp", "defer": true, "bearer": bearer,
        "headers": {"X-Api-Key": "header-SECRET-value"}, "client_cert": pki.client.cert_pem, "client_key": inline_key}),
    );
    assert_eq!(status, 201, "{body}");
    let (_, list) = request(gw.addr, "GET", "/gateways", None, "");
    let (show, _) = dir.run_expect(&["gateway", "show", "sec", "--json"], 0);
    let (text_show, _) = dir.run_expect(&["gateway", "show", "sec"], 0);
    for out in [&body, &list, &show, &text_show, &gw.log()] {
        for secret in [bearer, "header-SECRET-value", "PRIVATE KEY", key_body] {
            assert!(
                !out.contains(secret),
                "secret {secret:?} printed in:\n{out}"
            );
        }
    }
    // And not in the error of a call to it either.
    let (_, answer) = request(
        gw.addr,
        "POST",
        "/mcp",
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "sec__x"}})
            .to_string(),
    );
    assert!(!answer.contains(bearer), "{answer}");
}

/// The gate checks the token on the request head: a client without one that announces a large
/// body is refused at once, without the gateway waiting for (or buffering) a byte of it.
#[test]
fn a_request_without_a_token_is_refused_before_its_body_is_read() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &[]);
    for path in ["/gateways", "/admin/cert/reload", "/servers/any/mcp"] {
        let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
        // 4 MiB announced, none of it sent.
        write!(
            s,
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 4000000\r\n\r\n"
        )
        .unwrap();
        // Well under the 30 s body timeout: a gateway that read the body first would still be
        // waiting for it here.
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head)
            .unwrap_or_else(|e| panic!("{path}: no answer before the body came: {e}"));
        assert_eq!(&head, b"HTTP/1.1 401", "{path}");
    }
}

/// Credentials in an upstream URL would be stored and shown with it: refused, pointing to where
/// they belong, without echoing them; nothing is registered.
#[test]
fn credentials_in_an_upstream_url_are_refused_without_being_echoed() {
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    for (url, says) in [
        ("http://alice:pa55word@127.0.0.1:1/mcp", "user:password@"),
        ("http://alice@127.0.0.1:1/mcp", "user:password@"),
        ("http://127.0.0.1:1/mcp?api_key=pa55word", "'api_key'"),
        ("http://127.0.0.1:1/mcp?x=1&Token=pa55word", "'Token'"),
    ] {
        let body = json!({"name": "creds", "url": url}).to_string();
        let (status, answer) = request(gw.addr, "POST", "/gateways", None, &body);
        assert_eq!(status, 400, "{url}: {answer}");
        assert!(answer.contains(says), "{url}: {answer}");
        assert!(answer.contains("--bearer"), "{url}: {answer}");
        assert!(!answer.contains("pa55word"), "{url}: {answer}");
    }
    // The CLI goes through the same route.
    let out = dir.run(&[
        "gateway",
        "add",
        "creds",
        "http://bob:pa55word@127.0.0.1:1/mcp",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("user:password@"), "{stderr}");
    assert!(!stderr.contains("pa55word"), "{stderr}");
    let (_, listed) = request(gw.addr, "GET", "/gateways", None, "");
    assert_eq!(listed, "[]", "nothing was registered");
}

/// An upstream's error page is not echoed to whoever registers it (it may be an internal
/// service's, with what is not theirs to see); the admin's `probe` still shows it.
#[test]
fn an_upstream_error_body_is_not_echoed_by_registration_but_probe_shows_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let page = "db_password=hunter2";
    // Every request gets a 500 with the page; bounded: the test makes a handful.
    std::thread::spawn(move || {
        for stream in listener.incoming().take(20) {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    let dir = Dir::new();
    let gw = Gateway::start(&dir, &["--no-auth"]);
    let url = format!("http://127.0.0.1:{port}/mcp");
    let body = json!({"name": "internal", "url": url}).to_string();
    let (status, answer) = request(gw.addr, "POST", "/gateways", None, &body);
    assert_eq!(status, 502, "{answer}");
    assert!(answer.contains("HTTP 500"), "{answer}");
    assert!(!answer.contains("hunter2"), "{answer}");
    let out = dir.run(&["probe", &url, "--timeout", "5"]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{printed}");
    assert!(printed.contains("HTTP 500"), "{printed}");
    assert!(
        printed.contains(page),
        "the admin's probe shows the body: {printed}"
    );
}

/// A session id lets whoever holds it use the session: the log names sessions by a fingerprint,
/// never by their id, even at debug level (Streamable HTTP and legacy SSE).
#[test]
fn session_ids_are_never_written_to_the_log() {
    let dir = Dir::new();
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
        .env("RUST_LOG", "debug");
    let gw = Gateway::spawn(cmd);
    // A Streamable-HTTP session, used once.
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
    .to_string();
    write!(s, "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\naccept: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{init}", init.len()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let id = answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("mcp-session-id:")
                .then(|| l.split_once(':').unwrap().1.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no session id: {answer}"));
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    write!(s, "POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\naccept: application/json\r\nmcp-session-id: {id}\r\nmcp-protocol-version: 2025-06-18\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{list}", list.len()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A legacy SSE session: its id is in the endpoint event.
    let mut sse = std::net::TcpStream::connect(gw.addr).unwrap();
    write!(
        sse,
        "GET /sse HTTP/1.1\r\nhost: localhost\r\naccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    sse.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains("session_id=") || !seen[seen.find("session_id=").unwrap()..].contains('\n')
    {
        let n = sse.read(&mut buf).unwrap();
        assert!(n > 0, "{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let at = seen.find("session_id=").unwrap() + "session_id=".len();
    let sse_id: String = seen[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    assert!(sse_id.len() >= 16, "{seen}");
    drop(sse);
    let log = gw.wait_log_count("SSE session closed", 1, std::time::Duration::from_secs(10));
    assert!(
        log.contains("session"),
        "the debug log names sessions: {log}"
    );
    assert!(
        !log.contains(&id),
        "the Streamable session id is in the log:\n{log}"
    );
    assert!(
        !log.contains(&sse_id),
        "the SSE session id is in the log:\n{log}"
    );
}
