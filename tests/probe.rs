//! `mcpgw probe`: each failure cause gets its own exit code and one plain diagnosis.
//!
//! TLS failures are shown against a small in-test rustls server (fast, no MCP needed); the
//! success path and Python's alert-less refusal of a missing client certificate against the
//! official Python SDK upstream.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{Dir, Gateway, Pki};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS server on 127.0.0.1 answering every request with a plain-text 200. With `client_ca`,
/// it demands a client certificate issued by that CA. Runs until the test process ends.
fn tls_server(cert: &Path, key: &Path, client_ca: Option<&Path>) -> u16 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let chain: Vec<CertificateDer<'static>> = mcpgw::tls::pem::certs_from_file(cert).unwrap();
    let key: PrivateKeyDer<'static> = mcpgw::tls::pem::key_from_file(key).unwrap();
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in mcpgw::tls::pem::certs_from_file(ca).unwrap() {
                roots.add(c).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 8192];
                    if tls.read(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    port
}

/// Run `mcpgw probe ARGS` with a short timeout, require `code`, return (stdout, stderr).
fn probe(dir: &Dir, args: &[&str], code: i32) -> (String, String) {
    let mut all = vec!["probe", "--timeout", "5"];
    all.extend_from_slice(args);
    dir.run_expect(&all, code)
}

#[test]
fn missing_client_certificate_is_named_not_reported_as_a_reset() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let port = tls_server(
        &pki.file("server.crt"),
        &pki.file("server.key"),
        Some(&pki.file("ca.crt")),
    );
    let url = format!("https://127.0.0.1:{port}/mcp");
    let (stdout, stderr) = probe(&dir, &[&url, "--ca-cert", &pki.s("ca.crt")], 20);
    assert!(
        stderr.contains("the upstream requires a client certificate and none is configured"),
        "{stderr}"
    );
    assert!(
        stdout.contains("requested a client certificate from: CN=mcpgw test CA"),
        "{stdout}"
    );
}

#[test]
fn certificate_from_another_ca_is_an_unknown_ca() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let other = dir.cert_gen("other", &[]);
    let port = tls_server(&pki.file("server.crt"), &pki.file("server.key"), None);
    let url = format!("https://127.0.0.1:{port}/mcp");
    let (_, stderr) = probe(&dir, &[&url, "--ca-cert", &other.s("ca.crt")], 21);
    assert!(stderr.contains("unknown CA"), "{stderr}");
    assert!(stderr.contains(&other.s("ca.crt")), "{stderr}");
}

#[test]
fn dialling_an_ip_against_a_localhost_certificate_suggests_server_name() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let (cert, key) = pki.localhost_only();
    let port = tls_server(&cert, &key, None);
    let url = format!("https://127.0.0.1:{port}/mcp");
    let (_, stderr) = probe(&dir, &[&url, "--ca-cert", &pki.s("ca.crt")], 22);
    assert!(
        stderr.contains(
            "certificate for `localhost` does not cover `127.0.0.1` (use --server-name localhost)"
        ),
        "{stderr}"
    );
    // With the suggested flag the TLS phase passes; the test server is not MCP, so HTTP fails.
    let (stdout, stderr) = probe(
        &dir,
        &[
            &url,
            "--ca-cert",
            &pki.s("ca.crt"),
            "--server-name",
            "localhost",
        ],
        30,
    );
    assert!(
        stdout.contains("verifying the certificate for `localhost`"),
        "{stdout}"
    );
    assert!(stdout.contains("tls      ok"), "{stdout}");
    assert!(stderr.contains("not an MCP endpoint"), "{stderr}");
}

#[test]
fn expired_certificate_says_when_it_expired() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let issuer = mcpgw::tls::pki::load_issuer(
        "ca",
        &std::fs::read(pki.file("ca.crt")).unwrap(),
        "ca.key",
        &std::fs::read(pki.file("ca.key")).unwrap(),
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("old.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("old.key"), key.serialize_pem()).unwrap();
    let port = tls_server(&dir.join("old.crt"), &dir.join("old.key"), None);
    let url = format!("https://localhost:{port}/mcp");
    let (_, stderr) = probe(&dir, &[&url, "--ca-cert", &pki.s("ca.crt")], 23);
    assert!(stderr.contains("expired on 2021-01-01"), "{stderr}");
}

#[test]
fn closed_port_is_connection_refused() {
    let dir = Dir::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}/mcp");
    let (stdout, stderr) = probe(&dir, &[&url], 10);
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(stdout.contains("tcp      FAILED"), "{stdout}");
}

#[test]
fn gateway_health_endpoint_is_not_an_mcp_endpoint() {
    let dir = Dir::new();
    let gateway = Gateway::start(&dir, &[]);
    let url = format!("http://{}/health", gateway.addr);
    let (stdout, stderr) = probe(&dir, &[&url], 30);
    assert!(stderr.contains("not an MCP endpoint"), "{stderr}");
    assert!(stderr.contains("HTTP 405"), "{stderr}");
    assert!(stdout.contains("http     FAILED"), "{stdout}");
}

/// The Python SDK upstream (`tests/fixtures/py_upstream.py`), killed on drop.
struct PyUpstream {
    child: Child,
    url: String,
}

impl PyUpstream {
    /// Started on a free port; the SDK is installed on first use.
    fn start(pki: &Pki) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = common::prereq::python();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(python)
            .arg(root.join("tests/fixtures/py_upstream.py"))
            .args(["--port", &port.to_string()])
            .args([
                "--cert",
                &pki.s("server.crt"),
                "--key",
                &pki.s("server.key"),
            ])
            .args(["--ca", &pki.s("ca.crt"), "--transport", "streamable-http"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Owned from here, so a panic below still kills the process.
        let mut this = Self {
            child,
            url: String::new(),
        };
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("READY ") {
                        this.url = url.to_owned();
                        return this;
                    }
                }
                Err(_) => panic!("the Python upstream did not report READY"),
            }
        }
    }
}

impl Drop for PyUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn python_sdk_upstream_passes_every_phase_with_a_client_certificate_and_wants_one_without() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let upstream = PyUpstream::start(&pki);
    let (stdout, _) = probe(
        &dir,
        &[
            "--json",
            &upstream.url,
            "--ca-cert",
            &pki.s("ca.crt"),
            "--client-cert",
            &pki.s("client.crt"),
            "--client-key",
            &pki.s("client.key"),
        ],
        0,
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true, "{stdout}");
    let phases = report["phases"].as_array().unwrap();
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["resolve", "tcp", "tls", "http", "mcp", "tools"],
        "{stdout}"
    );
    assert!(phases.iter().all(|p| p["ok"] == true), "{stdout}");
    let tls = &phases[2]["data"];
    assert_eq!(tls["client_cert_requested"], true, "{stdout}");
    assert_eq!(tls["client_cert_sent"], true, "{stdout}");
    assert!(tls["version"].as_str().unwrap().starts_with("TLS"));
    assert_eq!(
        phases[4]["data"]["server_info"]["name"], "py-upstream",
        "{stdout}"
    );
    let tools = phases[5]["data"]["names"].as_array().unwrap();
    assert!(tools.iter().any(|t| t == "echo"), "{stdout}");

    // Python's ssl refuses a missing client certificate under TLS 1.3 by closing, without an
    // alert: still a missing certificate, not a "connection reset".
    let (_, stderr) = probe(&dir, &[&upstream.url, "--ca-cert", &pki.s("ca.crt")], 20);
    assert!(
        stderr.contains("the upstream requires a client certificate and none is configured"),
        "{stderr}"
    );
}
