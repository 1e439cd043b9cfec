//! Operations: `serve --check-config`, clear start-up errors for an unusable data directory, and
//! systemd readiness notifications (`NOTIFY_SOCKET`), all against the real binary.

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dir, Gateway, Pki, SIGHUP, SIGTERM};

/// Run a command that must exit by itself within 30 s; returns (code, stdout, stderr).
fn run_bounded(mut cmd: Command) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not exit within 30 s\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Write `mcpgw.toml` serving HTTPS with `cert`/`key`, plus `extra` lines.
fn tls_config(dir: &Dir, cert: &Path, key: &Path, extra: &str) -> PathBuf {
    let path = dir.join("mcpgw.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:4444\"\n{extra}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    path
}

fn check_config(dir: &Dir, config: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--check-config", "--config"])
        .arg(config)
        .args(extra);
    run_bounded(cmd)
}

fn pki(dir: &Dir) -> Pki {
    dir.cert_gen("pki", &[])
}

#[test]
fn check_config_accepts_a_good_config_and_prints_a_summary() {
    let dir = Dir::new();
    let pki = pki(&dir);
    let config = tls_config(&dir, &pki.file("server.crt"), &pki.file("server.key"), "");
    let (code, stdout, stderr) = check_config(&dir, &config, &[]);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let fingerprint = common::fingerprint_pem(&std::fs::read(pki.file("server.crt")).unwrap());
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("configuration OK"), "{stdout}");
    let summary = lines.next().unwrap_or_default();
    assert!(summary.contains("listen 127.0.0.1:4444"), "{summary}");
    assert!(summary.contains("tls on"), "{summary}");
    assert!(summary.contains(&fingerprint), "{summary}");
    assert!(summary.contains("not after 20"), "{summary}");
    assert!(
        !dir.data_dir().exists(),
        "--check-config created the data directory"
    );

    // Plain HTTP on loopback is a valid configuration too.
    let plain = dir.join("plain.toml");
    std::fs::write(&plain, "listen = \"127.0.0.1:4445\"\n").unwrap();
    let (code, stdout, stderr) = check_config(&dir, &plain, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("tls off"), "{stdout}");
}

#[test]
fn check_config_names_a_missing_certificate() {
    let dir = Dir::new();
    let pki = pki(&dir);
    let missing = dir.join("nowhere/server.crt");
    let config = tls_config(&dir, &missing, &pki.file("server.key"), "");
    let (code, stdout, stderr) = check_config(&dir, &config, &[]);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.starts_with("mcpgw: "), "{stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()),
        "message does not name the file: {stderr}"
    );
    assert!(!stdout.contains("configuration OK"), "{stdout}");
}

#[test]
fn check_config_names_a_bad_or_mismatched_key() {
    let dir = Dir::new();
    let pki = pki(&dir);
    let garbage = dir.join("garbage.key");
    std::fs::write(&garbage, "root:$6$secrethash:19000:0:99999:7:::\n").unwrap();
    let config = tls_config(&dir, &pki.file("server.crt"), &garbage, "");
    let (code, _, stderr) = check_config(&dir, &config, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("garbage.key"), "{stderr}");
    assert!(stderr.contains("not valid PEM"), "{stderr}");
    assert!(
        !stderr.contains("secrethash"),
        "file contents echoed: {stderr}"
    );

    // A real key, but of another certificate.
    let config = tls_config(&dir, &pki.file("server.crt"), &pki.file("client.key"), "");
    let (code, _, stderr) = check_config(&dir, &config, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("key does not match certificate"),
        "{stderr}"
    );
    assert!(stderr.contains("client.key"), "{stderr}");
}

#[test]
fn check_config_names_an_unknown_toml_key() {
    let dir = Dir::new();
    let pki = pki(&dir);
    let config = tls_config(
        &dir,
        &pki.file("server.crt"),
        &pki.file("server.key"),
        "shutdown_grace = 5",
    );
    let (code, _, stderr) = check_config(&dir, &config, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.starts_with("mcpgw: config file "), "{stderr}");
    assert!(stderr.contains("mcpgw.toml"), "{stderr}");
    assert!(stderr.contains("shutdown_grace"), "{stderr}");
    assert!(stderr.contains("unknown field"), "{stderr}");
}

#[test]
fn check_config_beside_a_running_gateway_binds_and_touches_nothing() {
    let dir = Dir::new();
    let pki = pki(&dir);
    let config = tls_config(&dir, &pki.file("server.crt"), &pki.file("server.key"), "");
    let mut gateway = Gateway::start(&dir, &["--config", config.to_str().unwrap()]);
    let socket = dir.data_dir().join("mcpgw.sock");
    let before = std::fs::metadata(&socket).unwrap();

    // Same data dir and control socket, and the very port the gateway holds: a check that
    // bound or cleaned anything would fail or replace the socket.
    let addr = gateway.addr.to_string();
    let (code, stdout, stderr) = check_config(&dir, &config, &["--listen", &addr]);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains(&format!("listen {addr}")), "{stdout}");

    let after = std::fs::metadata(&socket).expect("control socket removed by --check-config");
    assert_eq!(
        (before.ino(), before.mtime()),
        (after.ino(), after.mtime()),
        "control socket replaced"
    );
    assert!(gateway.alive(), "gateway died\n{}", gateway.log());
    dir.run_expect(&["status"], 0);

    // With a data dir that does not exist yet, nothing is created either.
    let fresh = dir.join("fresh-data");
    let (code, _, stderr) = check_config(
        &dir,
        &config,
        &["--data-dir", fresh.to_str().unwrap(), "--listen", &addr],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !fresh.exists(),
        "--check-config created {}",
        fresh.display()
    );
}

fn serve_with_data_dir(dir: &Dir, data_dir: &Path) -> (Option<i32>, String, String) {
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir);
    run_bounded(cmd)
}

#[test]
fn serve_refuses_a_data_dir_below_a_regular_file_with_a_clear_message() {
    let dir = Dir::new();
    std::fs::write(dir.join("blocker"), b"a file, not a directory").unwrap();
    let data = dir.join("blocker/data");
    let (code, stdout, stderr) = serve_with_data_dir(&dir, &data);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "mcpgw: cannot create data directory {}",
            data.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--data-dir"), "no hint: {stderr}");
    assert!(!stdout.contains("listening"), "{stdout}");
}

#[test]
fn serve_refuses_a_data_dir_that_is_a_regular_file() {
    let dir = Dir::new();
    let data = dir.join("data-file");
    std::fs::write(&data, b"").unwrap();
    let (code, _, stderr) = serve_with_data_dir(&dir, &data);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "data directory {} exists but is not a directory",
            data.display()
        )),
        "{stderr}"
    );
}

/// Run by `nobody` (uid 65534) when the tests run as root, since root writes through any mode;
/// by the current user otherwise.
#[test]
fn serve_refuses_a_read_only_data_dir() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = Dir::new();
    let data = dir.join("ro");
    std::fs::create_dir(&data).unwrap();
    let mut cmd = dir.cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data);
    if rustix::process::geteuid().is_root() {
        const NOBODY: u32 = 65534;
        // nobody's own read-only directory, in a test directory it may enter.
        std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        cmd.uid(NOBODY).gid(NOBODY);
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o500)).unwrap();
    let (code, _, stderr) = run_bounded(cmd);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "data directory {} is not writable",
            data.display()
        )),
        "{stderr}"
    );
}

/// Receive the next datagram as text, failing after 15 s.
fn next_state(socket: &UnixDatagram, gateway: &Gateway) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 512];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(err) => panic!(
            "no notification within 15 s: {err}\n--- log\n{}",
            gateway.log()
        ),
    }
}

fn start_notified(dir: &Dir, pki: &Pki, notify_socket: &str) -> Gateway {
    let mut cmd = dir.cmd();
    cmd.env("NOTIFY_SOCKET", notify_socket)
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(pki.file("server.crt"))
        .arg("--tls-key")
        .arg(pki.file("server.key"));
    Gateway::spawn(cmd)
}

#[test]
fn notify_socket_hears_ready_then_reloading_ready_on_sighup_then_stopping_on_sigterm() {
    let dir = Dir::new();
    let pki = pki(&dir);
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut gateway = start_notified(&dir, &pki, path.to_str().unwrap());

    assert_eq!(next_state(&socket, &gateway), "READY=1");
    gateway.signal(SIGHUP);
    assert_eq!(next_state(&socket, &gateway), "RELOADING=1");
    assert_eq!(next_state(&socket, &gateway), "READY=1");
    gateway.signal(SIGTERM);
    assert_eq!(next_state(&socket, &gateway), "STOPPING=1");
    assert_eq!(gateway.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn notify_socket_in_the_abstract_namespace_is_reached_with_an_at_sign() {
    let dir = Dir::new();
    let pki = pki(&dir);
    let name = format!("mcpgw-test-notify-{}", std::process::id());
    let socket =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    let mut gateway = start_notified(&dir, &pki, &format!("@{name}"));
    assert_eq!(next_state(&socket, &gateway), "READY=1");
    gateway.signal(SIGTERM);
    assert_eq!(next_state(&socket, &gateway), "STOPPING=1");
    assert_eq!(gateway.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn gateway_without_notify_socket_starts_as_before() {
    // NOTIFY_SOCKET unset (the test runner may itself run under systemd).
    let dir = Dir::new();
    let mut cmd = dir.cmd();
    cmd.env_remove("NOTIFY_SOCKET")
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let mut gateway = Gateway::spawn(cmd);
    gateway.signal(SIGTERM);
    assert_eq!(gateway.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn serve_refuses_a_data_dir_others_can_write_to() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let data = dir.join("shared");
    std::fs::create_dir(&data).unwrap();
    // A planted signing secret the gateway must not adopt.
    std::fs::write(data.join("jwt.secret"), "00".repeat(32)).unwrap();
    for mode in [0o777, 0o770, 0o1777] {
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut cmd = dir.cmd();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data);
        let (code, _, stderr) = run_bounded(cmd);
        assert_eq!(code, Some(1), "mode {mode:o}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "data directory {} is writable by its group or by others",
                data.display()
            )),
            "mode {mode:o}: {stderr}"
        );
    }
    // Restricted, the same directory is served.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::remove_file(data.join("jwt.secret")).unwrap();
    let gw = Gateway::start(&dir, &["--no-auth", "--data-dir", data.to_str().unwrap()]);
    let (status, _) = common::curl(&[&format!("http://{}/health", gw.addr)]);
    assert_eq!(status, 200);
}
