use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::tls::pki::{self, PkiSpec};

struct Fixture {
    dir: tempfile::TempDir,
    set: pki::PkiSet,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let set = pki::generate(&PkiSpec::default()).unwrap();
        std::fs::write(dir.path().join("server.crt"), &set.server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &set.server.key_pem).unwrap();
        std::fs::set_permissions(
            dir.path().join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.crt"), &set.ca.cert_pem).unwrap();
        Self { dir, set }
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.path().join("server.crt"),
            key: self.dir.path().join("server.key"),
            ca: Some(self.dir.path().join("ca.crt")),
            client_ca: None,
        }
    }

    fn issuer(&self) -> rcgen::Issuer<'static, rcgen::KeyPair> {
        pki::load_issuer(
            "ca",
            self.set.ca.cert_pem.as_bytes(),
            "ca.key",
            self.set.ca.key_pem.as_bytes(),
        )
        .unwrap()
    }
}

#[test]
fn reload_swaps_to_new_pair_on_disk() {
    let fx = Fixture::new();
    let serving = ServingCert::load(fx.files()).unwrap();
    let before = serving.current().info.sha256.clone();
    let new = pki::issue_server(
        &fx.issuer(),
        "localhost",
        &["localhost".into()],
        2,
        crate::cli::KeyType::EcdsaP256,
    )
    .unwrap();
    std::fs::write(fx.dir.path().join("server.crt"), &new.cert_pem).unwrap();
    std::fs::write(fx.dir.path().join("server.key"), &new.key_pem).unwrap();
    let report = serving.reload().unwrap();
    assert_eq!(report.old.sha256, before);
    assert_ne!(report.new.sha256, before);
    assert_eq!(serving.current().info.sha256, report.new.sha256);
    assert_eq!(serving.counts().ok, 1);
}

#[test]
fn mismatched_key_is_refused_and_old_kept() {
    let fx = Fixture::new();
    let serving = ServingCert::load(fx.files()).unwrap();
    let before = serving.current().info.sha256.clone();
    let other = pki::generate(&PkiSpec::default()).unwrap();
    std::fs::write(fx.dir.path().join("server.key"), &other.server.key_pem).unwrap();
    let err = serving.reload().unwrap_err();
    assert!(
        err.to_string().contains("key does not match certificate"),
        "{err}"
    );
    assert_eq!(serving.current().info.sha256, before);
    assert_eq!(serving.counts().failed, 1);
}

#[test]
fn certificate_from_another_ca_is_refused() {
    let fx = Fixture::new();
    let serving = ServingCert::load(fx.files()).unwrap();
    let other = pki::generate(&PkiSpec::default()).unwrap();
    let err = serving
        .install(
            "new.crt",
            other.server.cert_pem.as_bytes(),
            "new.key",
            other.server.key_pem.as_bytes(),
        )
        .unwrap_err();
    assert!(matches!(err, CertError::UnknownIssuer { .. }), "{err}");
    // Nothing written.
    let on_disk = std::fs::read_to_string(fx.dir.path().join("server.crt")).unwrap();
    assert_eq!(on_disk, fx.set.server.cert_pem);
}

#[test]
fn expired_certificate_is_refused() {
    let fx = Fixture::new();
    let serving = ServingCert::load(fx.files()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.signed_by(&key, &fx.issuer()).unwrap();
    let err = serving
        .install(
            "old.crt",
            cert.pem().as_bytes(),
            "old.key",
            key.serialize_pem().as_bytes(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("expired on 2021-01-01"), "{err}");
}

#[test]
fn install_writes_atomically_and_keeps_key_mode() {
    let fx = Fixture::new();
    let serving = ServingCert::load(fx.files()).unwrap();
    let new = pki::issue_server(
        &fx.issuer(),
        "localhost",
        &["localhost".into()],
        2,
        crate::cli::KeyType::Ed25519,
    )
    .unwrap();
    serving
        .install(
            "n.crt",
            new.cert_pem.as_bytes(),
            "n.key",
            new.key_pem.as_bytes(),
        )
        .unwrap();
    let key_path = fx.dir.path().join("server.key");
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), new.key_pem);
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(fx.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("mcpgw-tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn missing_and_empty_files_are_named() {
    let fx = Fixture::new();
    let serving = ServingCert::load(fx.files()).unwrap();
    std::fs::write(fx.dir.path().join("server.crt"), "").unwrap();
    let err = serving.reload().unwrap_err().to_string();
    assert!(err.contains("server.crt is empty"), "{err}");
    std::fs::remove_file(fx.dir.path().join("server.crt")).unwrap();
    let err = serving.reload().unwrap_err().to_string();
    assert!(
        err.contains("cannot read") && err.contains("server.crt"),
        "{err}"
    );
}
