//! NET-02: the serving certificate rotates under load without a failed request, bad new
//! certificates are refused while the old one keeps serving, and the report's own openssl
//! certificates (X.509 v1) serve and rotate.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Dir, Gateway, Pki, SIGHUP, tls};

fn tls_gateway(dir: &Dir, pki: &Pki) -> Gateway {
    Gateway::start(
        dir,
        &[
            "--tls-cert",
            &pki.s("server.crt"),
            "--tls-key",
            &pki.s("server.key"),
            "--tls-ca",
            &pki.s("ca.crt"),
            // The reloads are counted below: only the ones this test asks for.
            "--tls-watch-interval",
            "0",
        ],
    )
}

fn served_fingerprint(rt: &tokio::runtime::Runtime, gw: &Gateway, pki: &Pki) -> String {
    let config = tls::client_config(&pki.file("ca.crt"));
    rt.block_on(tls::connect(gw.addr, config))
        .unwrap()
        .fingerprint
}

#[test]
fn rotation_under_load_loses_no_request_and_keeps_old_connections() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let mut gw = tls_gateway(&dir, &pki);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = tls::client_config(&pki.file("ca.crt"));

    // A keep-alive connection opened before the first rotation.
    let mut early = rt.block_on(tls::connect(gw.addr, config.clone())).unwrap();
    let first_fingerprint = early.fingerprint.clone();
    assert_eq!(rt.block_on(early.get("/health")).unwrap().0, 200);

    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    const WORKERS: usize = 8;
    const MIN_REQUESTS: usize = 1000;
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (done, ok, failures, config) =
            (done.clone(), ok.clone(), failures.clone(), config.clone());
        let addr = gw.addr;
        // Even workers open a fresh connection per request; odd ones keep one alive.
        let fresh = worker % 2 == 0;
        workers.push(rt.spawn(async move {
            let mut kept: Option<tls::Conn> = None;
            while !done.load(Ordering::Acquire) || ok.load(Ordering::Acquire) < MIN_REQUESTS {
                let result = async {
                    if fresh || kept.is_none() {
                        kept = Some(tls::connect(addr, config.clone()).await?);
                    }
                    kept.as_mut().unwrap().get("/health").await
                }
                .await;
                match result {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok((status, body)) => failures.lock().unwrap().push(format!("{status} {body}")),
                    Err(err) => failures.lock().unwrap().push(format!("{err:#}")),
                }
            }
        }));
    }

    let mut previous = first_fingerprint.clone();
    let mut seen = std::collections::HashSet::from([previous.clone()]);
    for round in 0..20 {
        std::thread::sleep(Duration::from_millis(60));
        let expected = if round % 2 == 0 {
            let fp = common::mint_server(&pki, &pki.file("server.crt"), &pki.file("server.key"));
            gw.signal(SIGHUP);
            gw.wait_log_count(&format!("new={fp}"), 1, Duration::from_secs(10));
            fp
        } else {
            let stdout = dir.rotate_issue(&pki);
            assert!(stdout.contains("verified: a new handshake"), "{stdout}");
            let line = stdout.lines().find(|l| l.starts_with("rotated: ")).unwrap();
            let (old, new) = line["rotated: ".len()..].split_once(" -> ").unwrap();
            assert_eq!(old, previous, "rotate reported a different old fingerprint");
            new.to_owned()
        };
        assert_eq!(
            served_fingerprint(&rt, &gw, &pki),
            expected,
            "round {round}"
        );
        assert!(
            seen.insert(expected.clone()),
            "round {round} served a repeated certificate"
        );
        previous = expected;
        assert!(gw.alive(), "gateway exited during rotation {round}");
    }
    common::stop_load_expecting_no_failure(&rt, &done, workers, &failures, String::new);
    assert!(ok.load(Ordering::Acquire) >= MIN_REQUESTS);
    // The connection from before the first rotation still works and still has its old certificate.
    let (status, _) = rt.block_on(early.get("/health")).unwrap();
    assert_eq!(status, 200);
    assert_eq!(early.fingerprint, first_fingerprint);
    assert!(gw.alive());
    let (stdout, _) = dir.run_expect(&["status", "--json"], 0);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["reloads"]["ok"], 20);
    assert_eq!(status["reloads"]["failed"], 0);
}

/// A way to spoil the (cert, key) files.
type Spoil = Box<dyn Fn(&std::path::Path, &std::path::Path)>;

/// Each bad input: (name, how to make the files bad, what the error must say).
fn bad_inputs(pki: &Pki, other: &Pki) -> Vec<(&'static str, Spoil, &'static str)> {
    let other_key = other.file("server.key");
    let other_pki = other.clone();
    let own_ca = pki.clone();
    vec![
        (
            "mismatched key",
            Box::new(move |_c, k| std::fs::copy(&other_key, k).map(|_| ()).unwrap()),
            "key does not match certificate",
        ),
        (
            "garbage PEM",
            Box::new(|c, _k| std::fs::write(c, "this is not a certificate\n").unwrap()),
            "is not valid PEM",
        ),
        (
            "empty file",
            Box::new(|c, _k| std::fs::write(c, "").unwrap()),
            "is empty",
        ),
        (
            "missing file",
            Box::new(|c, _k| {
                let _ = std::fs::remove_file(c);
            }),
            "cannot read",
        ),
        (
            "expired certificate",
            Box::new(move |c, k| {
                let issuer = mcpgw::tls::pki::load_issuer(
                    "ca",
                    &std::fs::read(own_ca.file("ca.crt")).unwrap(),
                    "ca.key",
                    &std::fs::read(own_ca.file("ca.key")).unwrap(),
                )
                .unwrap();
                let key = rcgen::KeyPair::generate().unwrap();
                let mut params =
                    rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2021, 1, 1);
                let cert = params.signed_by(&key, &issuer).unwrap();
                std::fs::write(c, cert.pem()).unwrap();
                std::fs::write(k, key.serialize_pem()).unwrap();
            }),
            "expired on 2021-01-01",
        ),
        (
            "certificate from another CA",
            Box::new(move |c, k| {
                std::fs::copy(other_pki.file("server.crt"), c).unwrap();
                std::fs::copy(other_pki.file("server.key"), k).unwrap();
            }),
            "was not issued by the configured CA",
        ),
    ]
}

#[test]
fn bad_certificates_via_cert_rotate_exit_1_and_change_nothing() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let other = dir.cert_gen("other", &[]);
    let mut gw = tls_gateway(&dir, &pki);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let before = served_fingerprint(&rt, &gw, &pki);
    let served_cert = std::fs::read(pki.file("server.crt")).unwrap();
    let served_key = std::fs::read(pki.file("server.key")).unwrap();

    for (name, make_bad, expected) in bad_inputs(&pki, &other) {
        let bad = dir.join(&format!("bad-{}", name.replace(' ', "-")));
        std::fs::create_dir_all(&bad).unwrap();
        let (c, k) = (bad.join("new.crt"), bad.join("new.key"));
        std::fs::copy(pki.file("server.crt"), &c).unwrap();
        std::fs::copy(pki.file("server.key"), &k).unwrap();
        make_bad(&c, &k);
        let (_, stderr) = dir.run_expect(
            &[
                "cert",
                "rotate",
                "--cert",
                c.to_str().unwrap(),
                "--key",
                k.to_str().unwrap(),
            ],
            1,
        );
        assert!(stderr.starts_with("mcpgw: "), "{name}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{name}: expected {expected:?} in {stderr:?}"
        );
        assert_eq!(
            served_fingerprint(&rt, &gw, &pki),
            before,
            "{name} changed the served certificate"
        );
        assert_eq!(
            std::fs::read(pki.file("server.crt")).unwrap(),
            served_cert,
            "{name} touched the cert file"
        );
        assert_eq!(
            std::fs::read(pki.file("server.key")).unwrap(),
            served_key,
            "{name} touched the key file"
        );
    }
    assert!(gw.alive());
}

#[test]
fn bad_certificates_via_sighup_are_logged_and_old_keeps_serving() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let other = dir.cert_gen("other", &[]);
    let mut gw = tls_gateway(&dir, &pki);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let before = served_fingerprint(&rt, &gw, &pki);
    let good_cert = std::fs::read(pki.file("server.crt")).unwrap();
    let good_key = std::fs::read(pki.file("server.key")).unwrap();

    for (count, (name, make_bad, expected)) in bad_inputs(&pki, &other).into_iter().enumerate() {
        make_bad(&pki.file("server.crt"), &pki.file("server.key"));
        gw.signal(SIGHUP);
        let log = gw.wait_log_count(
            "certificate reload refused",
            count + 1,
            Duration::from_secs(10),
        );
        let line = log
            .lines()
            .rfind(|l| l.contains("certificate reload refused"))
            .unwrap();
        assert!(
            line.contains(expected),
            "{name}: expected {expected:?} in {line:?}"
        );
        assert_eq!(
            served_fingerprint(&rt, &gw, &pki),
            before,
            "{name} changed the served certificate"
        );
        assert!(gw.alive(), "{name} killed the gateway");
        std::fs::write(pki.file("server.crt"), &good_cert).unwrap();
        std::fs::write(pki.file("server.key"), &good_key).unwrap();
    }
}

fn curl_health(ca: &std::path::Path, addr: std::net::SocketAddr) -> (String, String) {
    // curl verifies the CN=localhost v1 certificate by its common name, as in the report's monitor loop.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            ca.to_str().unwrap(),
        ])
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", addr.port())])
        .arg(format!("https://localhost:{}/health", addr.port()))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn report_openssl_v1_certificates_serve_and_rotate() {
    let dir = Dir::new();
    let certs = dir.join("certs");
    common::report_pki(&certs);
    let version = std::process::Command::new("openssl")
        .args(["x509", "-in", "server.crt", "-noout", "-text"])
        .current_dir(&certs)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&version.stdout);
    // OpenSSL 3 without an extensions file makes v1 certificates: the case webpki refuses.
    assert!(
        text.contains("Version: 1 (0x0)"),
        "expected an X.509 v1 certificate:\n{text}"
    );

    let mut gw = Gateway::start(
        &dir,
        &[
            "--tls-cert",
            certs.join("server.crt").to_str().unwrap(),
            "--tls-key",
            certs.join("server.key").to_str().unwrap(),
            "--tls-ca",
            certs.join("ca.crt").to_str().unwrap(),
        ],
    );
    let (code, err) = curl_health(&certs.join("ca.crt"), gw.addr);
    assert_eq!(code, "200", "curl: {err}");
    let old = common::fingerprint_pem(&std::fs::read(certs.join("server.crt")).unwrap());

    // Step 2.3 and 2.4: copy over the served files, then SIGHUP.
    std::fs::copy(certs.join("server-new.crt"), certs.join("server.crt")).unwrap();
    std::fs::copy(certs.join("server-new.key"), certs.join("server.key")).unwrap();
    gw.signal(SIGHUP);
    let new = common::fingerprint_pem(&std::fs::read(certs.join("server-new.crt")).unwrap());
    let log = gw.wait_log_count(&format!("new={new}"), 1, Duration::from_secs(10));
    assert!(log.contains(&format!("old={old}")), "{log}");
    let (code, err) = curl_health(&certs.join("ca.crt"), gw.addr);
    assert_eq!(code, "200", "curl after SIGHUP: {err}");
    assert!(gw.alive());

    // And `cert rotate --issue` with the report's RSA CA (PKCS#8 key from openssl 3).
    let (stdout, _) = dir.run_expect(
        &[
            "cert",
            "rotate",
            "--issue",
            "--ca-cert",
            certs.join("ca.crt").to_str().unwrap(),
            "--ca-key",
            certs.join("ca.key").to_str().unwrap(),
        ],
        0,
    );
    assert!(stdout.contains(&format!("rotated: {new} -> ")), "{stdout}");
    let (code, err) = curl_health(&certs.join("ca.crt"), gw.addr);
    assert_eq!(code, "200", "curl after cert rotate: {err}");
}
