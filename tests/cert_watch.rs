//! Issue 22 item 5: the serving certificate is reloaded when its files change on disk, with no
//! signal: files rewritten in place of the old, a Kubernetes-style `..data` link swap, a pair
//! caught half-written (refused, the old one kept, the next change taken), and a client's open
//! SSE stream kept across the swap. Each check is a real TLS handshake compared by fingerprint.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Dir, Gateway, Pki, clients, fingerprint_pem, mint_server, tls, write_atomically};
use serde_json::json;

/// How long a change may take to be served: many times the watch interval, never reached when
/// the watch works.
const PICKED_UP: Duration = Duration::from_secs(20);

/// A gateway without auth serving `cert`/`key`, whose files are looked at every 100 ms.
fn watching_gateway(dir: &Dir, cert: &Path, key: &Path) -> Gateway {
    let config = dir.join("mcpgw.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nwatch_interval = 0.1\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    Gateway::start(dir, &["--config", config.to_str().unwrap(), "--no-auth"])
}

fn served(rt: &tokio::runtime::Runtime, gw: &Gateway, pki: &Pki) -> String {
    let config = tls::client_config(&pki.file("ca.crt"));
    rt.block_on(tls::connect(gw.addr, config))
        .unwrap()
        .fingerprint
}

/// Handshake until `wanted` is served; panics with the log past [`PICKED_UP`].
fn wait_served(rt: &tokio::runtime::Runtime, gw: &Gateway, pki: &Pki, wanted: &str) {
    let deadline = Instant::now() + PICKED_UP;
    loop {
        let now = served(rt, gw, pki);
        if now == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still serving {now}, not {wanted}, {PICKED_UP:?} after the files changed\n--- log\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A watching gateway serving a copy of a fresh pki's server pair (`served/tls.crt`, `.key`).
struct Watched {
    dir: Dir,
    pki: Pki,
    cert: PathBuf,
    key: PathBuf,
    /// The fingerprint served at start.
    first: String,
    gw: Gateway,
    rt: tokio::runtime::Runtime,
}

fn watched() -> Watched {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let at = dir.join("served");
    std::fs::create_dir_all(&at).unwrap();
    let (cert, key) = (at.join("tls.crt"), at.join("tls.key"));
    std::fs::copy(pki.file("server.crt"), &cert).unwrap();
    std::fs::copy(pki.file("server.key"), &key).unwrap();
    let first = fingerprint_pem(&std::fs::read(&cert).unwrap());
    let gw = watching_gateway(&dir, &cert, &key);
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(served(&rt, &gw, &pki), first);
    Watched {
        dir,
        pki,
        cert,
        key,
        first,
        gw,
        rt,
    }
}

impl Watched {
    /// Mint a new pair over the served files and wait until it is served; its fingerprint.
    fn replace_and_wait(&self) -> String {
        let second = mint_server(&self.pki, &self.cert, &self.key);
        assert_ne!(second, self.first);
        wait_served(&self.rt, &self.gw, &self.pki, &second);
        second
    }
}

#[test]
fn files_replaced_on_disk_are_served_with_no_signal() {
    let w = watched();
    w.replace_and_wait();
    let log =
        w.gw.wait_log_count("serving certificate swapped", 1, PICKED_UP);
    assert!(log.contains("certificate files changed on disk"), "{log}");
    assert!(
        log.contains("trigger=\"watch\"") || log.contains("trigger=watch"),
        "{log}"
    );
    assert!(log.contains(&w.cert.display().to_string()), "{log}");
}

#[test]
fn a_kubernetes_style_link_swap_of_the_secret_directory_is_picked_up() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    // What the kubelet lays out: the files are links through `..data` into a dated directory.
    let secret = dir.join("secret");
    let old = secret.join("..2026_12_07_10_00_00.1");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::copy(pki.file("server.crt"), old.join("tls.crt")).unwrap();
    std::fs::copy(pki.file("server.key"), old.join("tls.key")).unwrap();
    std::os::unix::fs::symlink(old.file_name().unwrap(), secret.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), secret.join(name)).unwrap();
    }
    let (cert, key) = (secret.join("tls.crt"), secret.join("tls.key"));
    let gw = watching_gateway(&dir, &cert, &key);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let first = fingerprint_pem(&std::fs::read(pki.file("server.crt")).unwrap());
    assert_eq!(served(&rt, &gw, &pki), first);

    // The update: a new dated directory, a new link renamed over `..data`, the old removed.
    let new = secret.join("..2026_12_07_11_00_00.2");
    std::fs::create_dir_all(&new).unwrap();
    let second = mint_server(&pki, &new.join("tls.crt"), &new.join("tls.key"));
    std::os::unix::fs::symlink(new.file_name().unwrap(), secret.join("..data_tmp")).unwrap();
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    std::fs::remove_dir_all(&old).unwrap();

    wait_served(&rt, &gw, &pki, &second);
    gw.wait_log_count("serving certificate swapped", 1, PICKED_UP);
}

#[test]
fn a_half_written_pair_is_refused_keeps_the_old_certificate_and_the_next_change_is_taken() {
    let w = watched();
    // A new pair minted aside; only its certificate reaches the served path for now.
    let aside = w.dir.join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    let second = mint_server(&w.pki, &aside.join("tls.crt"), &aside.join("tls.key"));
    write_atomically(&w.cert, &std::fs::read(aside.join("tls.crt")).unwrap());

    let log =
        w.gw.wait_log_count("certificate reload refused", 1, PICKED_UP);
    assert!(log.contains("key does not match certificate"), "{log}");
    assert!(
        log.contains("reloading again at their next change"),
        "{log}"
    );
    assert_eq!(served(&w.rt, &w.gw, &w.pki), w.first, "{}", w.gw.log());

    // The key arrives: that change is taken.
    write_atomically(&w.key, &std::fs::read(aside.join("tls.key")).unwrap());
    wait_served(&w.rt, &w.gw, &w.pki, &second);
    w.gw.wait_log_count("serving certificate swapped", 1, PICKED_UP);
}

#[test]
fn an_open_sse_stream_keeps_working_across_a_swap_on_disk() {
    let w = watched();
    let http = clients::http(Some(&w.pki.file("ca.crt")));
    let base = format!("https://localhost:{}", w.gw.addr.port());
    let mut sse =
        w.rt.block_on(clients::SseSession::open(http, &base, "/sse", None))
            .unwrap();

    w.replace_and_wait();

    // The stream opened under the old certificate still carries answers.
    let hello = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "watch-test", "version": "1"}}});
    let answer = w.rt.block_on(sse.request(&hello)).unwrap();
    assert_eq!(answer["id"], 1, "{answer}");
    assert!(answer["result"]["protocolVersion"].is_string(), "{answer}");
}
