//! The one reload path: SIGHUP, `cert rotate` and `POST /admin/cert/reload` each re-read the
//! serving certificate and every upstream TLS identity, and each logs one line and counts one
//! outcome. The upstream is the Rust fixture behind mutual TLS; its `whoami` tool answers with
//! the CN of the client certificate the gateway presented on that connection.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::upstream::Upstream;
use common::{Dir, Gateway, Pki, SIGHUP, curl};
use serde_json::{Value, json};

const RELOADS: &str = "mcpgw_certificate_reloads_total";
const CHANGED: &str = "upstream TLS identity changed on disk";
const SWAPPED: &str = "serving certificate swapped";
const REFUSED: &str = "certificate reload refused";

/// An mTLS upstream registered with a client certificate the test can replace on disk, behind
/// a gateway on HTTPS (serving its own copy of the server pair) or plain HTTP.
struct Setup {
    dir: Dir,
    pki: Pki,
    _upstream: Upstream,
    gw: Gateway,
    client_crt: PathBuf,
    client_key: PathBuf,
}

impl Setup {
    fn start(https: bool) -> Self {
        let dir = Dir::new();
        let pki = dir.cert_gen("pki", &[]);
        let upstream = Upstream::start_mtls(&pki);
        let (gw_crt, gw_key) = (dir.join("gw.crt"), dir.join("gw.key"));
        std::fs::copy(pki.file("server.crt"), &gw_crt).unwrap();
        std::fs::copy(pki.file("server.key"), &gw_key).unwrap();
        // Each test asks for its reloads by one trigger and counts them: no file watch beside.
        let mut args = vec!["--no-auth", "--tls-watch-interval", "0"];
        let (gw_crt, gw_key) = (gw_crt.display().to_string(), gw_key.display().to_string());
        if https {
            args.extend(["--tls-cert", &gw_crt, "--tls-key", &gw_key]);
        }
        let gw = Gateway::start(&dir, &args);
        let (client_crt, client_key) = (dir.join("live.crt"), dir.join("live.key"));
        std::fs::copy(pki.file("client.crt"), &client_crt).unwrap();
        std::fs::copy(pki.file("client.key"), &client_key).unwrap();
        dir.run_expect(
            &[
                "gateway",
                "add",
                "rot",
                &format!("https://localhost:{}/mcp", upstream.port()),
                "--ca-cert",
                &pki.s("ca.crt"),
                "--client-cert",
                client_crt.to_str().unwrap(),
                "--client-key",
                client_key.to_str().unwrap(),
            ],
            0,
        );
        let setup = Self {
            dir,
            pki,
            _upstream: upstream,
            gw,
            client_crt,
            client_key,
        };
        assert_eq!(setup.whoami(), "mcpgw-client");
        setup
    }

    /// curl to the gateway's listener, over HTTPS (trusting the test CA) when it serves it.
    fn curl(&self, path: &str, extra: &[&str]) -> (u16, String) {
        let port = self.gw.addr.port();
        let (ca, resolve) = (self.pki.s("ca.crt"), format!("localhost:{port}:127.0.0.1"));
        let scheme = if self.gw.https { "https" } else { "http" };
        let url = format!("{scheme}://localhost:{port}{path}");
        let mut args = vec!["--cacert", &ca, "--resolve", &resolve, &url];
        args.extend_from_slice(extra);
        curl(&args)
    }

    /// The CN of the client certificate the upstream saw on the gateway's connection.
    fn whoami(&self) -> String {
        let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "rot__whoami", "arguments": {}}});
        let body = call.to_string();
        let (status, text) = self.curl(
            "/mcp",
            &[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                &body,
            ],
        );
        assert_eq!(status, 200, "{text}\n--- log\n{}", self.gw.log());
        let answer: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        answer["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("no text in {answer}"))
            .to_owned()
    }

    /// Replace the registered client certificate on disk with one for `cn` (key first, as a
    /// careful operator would; the gateway reads neither until a reload).
    fn rotate_client_certificate(&self, cn: &str) {
        let issuer = mcpgw::tls::pki::load_issuer(
            "ca.crt",
            &std::fs::read(self.pki.file("ca.crt")).unwrap(),
            "ca.key",
            &std::fs::read(self.pki.file("ca.key")).unwrap(),
        )
        .unwrap();
        let minted =
            mcpgw::tls::pki::issue_client(&issuer, cn, 30, mcpgw::cli::KeyType::EcdsaP256).unwrap();
        common::write_atomically(&self.client_key, minted.key_pem.as_bytes());
        common::write_atomically(&self.client_crt, minted.cert_pem.as_bytes());
    }

    /// `POST /admin/cert/reload` on the listener.
    fn admin_reload(&self) -> (u16, String) {
        self.curl("/admin/cert/reload", &["-X", "POST"])
    }

    /// The value of `mcpgw_certificate_reloads_total{result, trigger}` (absent: 0).
    fn reloads(&self, result: &str, trigger: &str) -> f64 {
        let (status, text) = self.curl("/metrics", &[]);
        assert_eq!(status, 200, "{text}");
        let labels = [
            format!("result=\"{result}\""),
            format!("trigger=\"{trigger}\""),
        ];
        text.lines()
            .filter(|l| l.starts_with(&format!("{RELOADS}{{")))
            .find(|l| labels.iter().all(|label| l.contains(label.as_str())))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .unwrap_or(0.0)
    }

    /// Wait until `message` was logged once for `trigger`, let any second line arrive, then
    /// require exactly one line with `message` in the whole log, carrying that trigger.
    fn assert_logged_once(&self, message: &str, trigger: &str) {
        self.gw.wait_log_count(message, 1, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(300));
        let log = self.gw.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(message)).collect();
        assert_eq!(
            lines.len(),
            1,
            "{message:?} logged {} times\n{log}",
            lines.len()
        );
        assert!(
            lines[0].contains(&format!("trigger=\"{trigger}\"")),
            "{message:?} without trigger {trigger}: {}",
            lines[0]
        );
    }

    /// After one reload by `trigger` on an HTTPS gateway: the next new upstream connection
    /// carries the new client certificate, one swap and one identity change were logged, and
    /// only `trigger`'s ok counter moved, by one.
    fn assert_one_reload_by(&self, trigger: &str, new_cn: &str) {
        self.assert_logged_once(CHANGED, trigger);
        self.assert_logged_once(SWAPPED, trigger);
        assert_eq!(self.whoami(), new_cn);
        for t in ["SIGHUP", "control", "install"] {
            let want = if t == trigger { 1.0 } else { 0.0 };
            assert_eq!(self.reloads("ok", t), want, "ok reloads by {t}");
            assert_eq!(self.reloads("failed", t), 0.0, "failed reloads by {t}");
        }
    }
}

#[test]
fn cert_rotate_without_arguments_gives_the_upstream_the_rotated_client_certificate() {
    let s = Setup::start(true);
    s.rotate_client_certificate("rotated-by-cert-rotate");
    let (stdout, _) = s.dir.run_expect(&["cert", "rotate"], 0);
    assert!(stdout.contains("rotated:"), "{stdout}");
    assert!(
        stdout.contains("upstream rot: new TLS identity"),
        "{stdout}"
    );
    s.assert_one_reload_by("control", "rotated-by-cert-rotate");
}

#[test]
fn admin_cert_reload_gives_the_upstream_the_rotated_client_certificate() {
    let s = Setup::start(true);
    s.rotate_client_certificate("rotated-by-admin");
    let (status, text) = s.admin_reload();
    assert_eq!(status, 200, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["upstreams"]["changed"], json!(["rot"]), "{report}");
    assert!(
        report["certificate"]["new"]["sha256"].is_string(),
        "{report}"
    );
    s.assert_one_reload_by("control", "rotated-by-admin");
}

#[test]
fn sighup_gives_the_upstream_the_rotated_client_certificate() {
    let s = Setup::start(true);
    s.rotate_client_certificate("rotated-by-sighup");
    s.gw.signal(SIGHUP);
    s.assert_one_reload_by("SIGHUP", "rotated-by-sighup");
}

#[test]
fn admin_cert_reload_on_plain_http_still_rereads_upstream_identities() {
    let s = Setup::start(false);
    s.rotate_client_certificate("rotated-on-plain-http");
    let (status, text) = s.admin_reload();
    assert_eq!(status, 200, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["certificate"], Value::Null, "{report}");
    assert_eq!(report["upstreams"]["changed"], json!(["rot"]), "{report}");
    s.assert_logged_once(CHANGED, "control");
    s.assert_logged_once("no serving certificate to reload", "control");
    assert_eq!(s.whoami(), "rotated-on-plain-http");
}

#[test]
fn cert_rotate_on_plain_http_rereads_upstream_identities_and_refuses_a_new_pair() {
    let s = Setup::start(false);
    s.rotate_client_certificate("rotated-by-cert-rotate-on-plain-http");
    let (stdout, _) = s.dir.run_expect(&["cert", "rotate"], 0);
    assert!(
        stdout.contains("no serving certificate to rotate"),
        "{stdout}"
    );
    assert!(
        stdout.contains("upstream rot: new TLS identity"),
        "{stdout}"
    );
    s.assert_logged_once(CHANGED, "control");
    s.assert_logged_once("no serving certificate to reload", "control");
    assert_eq!(s.whoami(), "rotated-by-cert-rotate-on-plain-http");
    // A new pair needs an HTTPS listener to serve it.
    let (_, stderr) = s.dir.rotate_issue_expect(&s.pki, 1);
    assert!(stderr.contains("no certificate to rotate"), "{stderr}");
}

#[test]
fn refused_admin_reload_says_why_counts_one_failure_and_still_rereads_upstream_identities() {
    let s = Setup::start(true);
    let served_before = common::fingerprint_pem(&std::fs::read(s.dir.join("gw.crt")).unwrap());
    common::write_atomically(&s.dir.join("gw.crt"), b"not a certificate\n");
    s.rotate_client_certificate("rotated-beside-a-bad-certificate");
    let (status, text) = s.admin_reload();
    assert_eq!(status, 422, "{text}");
    assert!(
        text.contains("gw.crt"),
        "the answer must name the refused file: {text}"
    );
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["error"]["code"], "certificate_rejected", "{answer}");
    assert_eq!(answer["upstreams"]["changed"], json!(["rot"]), "{answer}");
    s.assert_logged_once(REFUSED, "control");
    s.assert_logged_once(CHANGED, "control");
    assert!(!s.gw.log().contains(SWAPPED));
    assert_eq!(s.reloads("failed", "control"), 1.0);
    assert_eq!(s.reloads("ok", "control"), 0.0);
    assert_eq!(s.whoami(), "rotated-beside-a-bad-certificate");
    // Still serving the certificate it had.
    let (status, text) = s.curl("/admin/status", &[]);
    assert_eq!(status, 200, "{text}");
    let view: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        view["certificate"]["sha256"],
        served_before.as_str(),
        "{view}"
    );
}
