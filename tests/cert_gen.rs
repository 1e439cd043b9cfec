//! `mcpgw cert gen`: a PKI openssl accepts, with the right names and usages, private keys 0600,
//! and nothing overwritten without --force.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::Dir;

fn openssl_text(path: &std::path::Path) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl_verify(pki: &common::Pki) {
    let out = std::process::Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            &pki.s("ca.crt"),
            &pki.s("server.crt"),
            &pki.s("client.crt"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openssl verify: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("server.crt: OK") && stdout.contains("client.crt: OK"),
        "{stdout}"
    );
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn default_pki_verifies_with_openssl_and_has_sans_and_ekus() {
    let dir = Dir::new();
    let pki = dir.cert_gen(
        "pki",
        &[
            "--san",
            "gw.example.test",
            "--san",
            "10.1.2.3",
            "--client-cn",
            "alice",
        ],
    );
    openssl_verify(&pki);
    let server = openssl_text(&pki.file("server.crt"));
    assert!(server.contains("Version: 3"), "{server}");
    for san in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
        "DNS:gw.example.test",
        "IP Address:10.1.2.3",
    ] {
        assert!(server.contains(san), "missing {san}:\n{server}");
    }
    assert!(server.contains("TLS Web Server Authentication"), "{server}");
    assert!(server.contains("ecdsa-with-SHA256"), "{server}");
    let client = openssl_text(&pki.file("client.crt"));
    assert!(client.contains("TLS Web Client Authentication"), "{client}");
    assert!(
        client.contains("CN = alice") || client.contains("CN=alice"),
        "{client}"
    );
    let ca = openssl_text(&pki.file("ca.crt"));
    assert!(ca.contains("CA:TRUE"), "{ca}");
    for key in ["ca.key", "server.key", "client.key"] {
        assert_eq!(mode(&pki.file(key)), 0o600, "{key}");
    }
    for cert in ["ca.crt", "server.crt", "client.crt"] {
        assert_eq!(mode(&pki.file(cert)), 0o644, "{cert}");
    }
}

#[test]
fn every_key_type_verifies() {
    let dir = Dir::new();
    for (key_type, alg) in [
        ("ed25519", "ED25519"),
        ("rsa2048", "sha256WithRSAEncryption"),
    ] {
        let pki = dir.cert_gen(key_type, &["--key-type", key_type]);
        openssl_verify(&pki);
        assert!(
            openssl_text(&pki.file("server.crt")).contains(alg),
            "{key_type}"
        );
    }
}

#[test]
fn existing_files_are_kept_without_force_and_replaced_with_it() {
    let dir = Dir::new();
    let pki = dir.cert_gen("pki", &[]);
    let before = std::fs::read(pki.file("server.crt")).unwrap();
    std::fs::set_permissions(
        pki.file("client.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (_, stderr) = dir.run_expect(&["cert", "gen", "--out", &pki.dir.display().to_string()], 1);
    assert!(
        stderr.contains("refusing to overwrite") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(pki.file("server.crt")).unwrap(), before);

    dir.run_expect(
        &[
            "cert",
            "gen",
            "--out",
            &pki.dir.display().to_string(),
            "--force",
        ],
        0,
    );
    assert_ne!(std::fs::read(pki.file("server.crt")).unwrap(), before);
    assert_eq!(
        mode(&pki.file("client.key")),
        0o600,
        "--force must also restore the key mode"
    );
    openssl_verify(&pki);
}

#[test]
fn invalid_san_is_refused_before_any_file_is_written() {
    let dir = Dir::new();
    let (_, stderr) = dir.run_expect(&["cert", "gen", "--out", "pki", "--san", "not a name"], 1);
    assert!(
        stderr.contains("invalid subject alternative name 'not a name'"),
        "{stderr}"
    );
    assert!(!dir.join("pki/ca.key").exists());
}

#[test]
fn json_output_describes_the_certificates() {
    let dir = Dir::new();
    let (stdout, _) = dir.run_expect(&["cert", "gen", "--out", "pki", "--json"], 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["server"]["version"], 3);
    assert_eq!(v["server"]["sans"][0], "localhost");
    assert!(!stdout.contains("PRIVATE KEY"));
}
