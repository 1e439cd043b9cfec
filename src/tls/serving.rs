//! The serving certificate, swapped in memory without dropping a connection (the NET-02 fix).
//!
//! A reload is: read the files, parse, check that the key matches the certificate, that the
//! certificate is within its validity and (with a configured CA) that it chains to it, build the
//! rustls config, and only then publish it with one atomic pointer store. Any failure publishes
//! nothing, so the old certificate keeps serving. Each accepted connection takes the config that
//! is current at that moment; connections already open keep the one they were accepted with.
//!
//! The whole `ServerConfig` is published rather than just the `CertifiedKey` so that the
//! downstream client-CA verifier (`--client-ca`) is reloaded together with the certificate.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

use super::pem::{self, PemError};
use super::x509::{self, CertInfo, X509Error};

/// Why a serving certificate was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A PEM input could not be read or parsed.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A certificate is not valid X.509.
    #[error(transparent)]
    X509(#[from] X509Error),
    /// The key cannot be used by rustls.
    #[error("{source_name}: unsupported private key ({detail})")]
    Key {
        /// File or field.
        source_name: String,
        /// rustls's description.
        detail: String,
    },
    /// Key and certificate belong to different key pairs.
    #[error(
        "key does not match certificate: the private key from {key} does not belong to the certificate from {cert}"
    )]
    KeyMismatch {
        /// Certificate file or field.
        cert: String,
        /// Key file or field.
        key: String,
    },
    /// The certificate's validity ended.
    #[error("{source_name}: the certificate expired on {not_after}")]
    Expired {
        /// File or field.
        source_name: String,
        /// End of validity.
        not_after: String,
    },
    /// The certificate's validity has not begun.
    #[error("{source_name}: the certificate is not valid before {not_before}")]
    NotYetValid {
        /// File or field.
        source_name: String,
        /// Start of validity.
        not_before: String,
    },
    /// The certificate was not issued by the configured CA.
    #[error(
        "{source_name}: the certificate (issuer '{issuer}') was not issued by the configured CA in {ca}"
    )]
    UnknownIssuer {
        /// File or field.
        source_name: String,
        /// Issuer named by the certificate.
        issuer: String,
        /// The CA file.
        ca: String,
    },
    /// The client-CA bundle cannot be used to verify clients.
    #[error("{ca}: cannot verify client certificates with this CA bundle ({detail})")]
    ClientCa {
        /// The CA file.
        ca: String,
        /// rustls's description.
        detail: String,
    },
    /// A file could not be written while installing a pair.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The listener serves plain HTTP, so there is no certificate to replace.
    #[error(
        "the gateway serves plain HTTP (no --tls-cert/--tls-key); there is no certificate to rotate"
    )]
    NoTls,
}

/// Where the served material lives on disk.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// CA the certificate must chain to, if configured.
    pub ca: Option<PathBuf>,
    /// CA bundle for downstream client certificates, if configured.
    pub client_ca: Option<PathBuf>,
}

/// One published generation: the config handshakes use and what it serves.
#[derive(Debug)]
pub struct Served {
    /// rustls config for new handshakes.
    pub config: Arc<ServerConfig>,
    /// Facts about the leaf certificate.
    pub info: CertInfo,
    /// The leaf's public key (SubjectPublicKeyInfo, DER): the key that must never leave as an
    /// upstream client identity.
    pub public_key: Vec<u8>,
}

/// Old and new fingerprints of a successful swap, and what it cost.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SwapReport {
    /// Certificate served before.
    pub old: CertInfo,
    /// Certificate served now.
    pub new: CertInfo,
    /// Time to read, validate and build, in microseconds.
    pub prepare_us: u64,
    /// Time of the publish itself, in microseconds.
    pub swap_us: u64,
}

/// Counters of reload outcomes (for status and metrics).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ReloadCounts {
    /// Successful reloads and installs.
    pub ok: u64,
    /// Refused reloads and installs.
    pub failed: u64,
}

/// The serving certificate and the machinery to replace it.
#[derive(Debug)]
pub struct ServingCert {
    files: TlsFiles,
    current: ArcSwap<Served>,
    /// Serializes reloads and installs even for callers outside [`crate::reload`], which
    /// already takes turns.
    reload_lock: Mutex<()>,
    /// Outcomes so far. Apart from the lock, so that `GET /admin/status` never waits on a
    /// reload that is reading files.
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ServingCert {
    /// Load the configured files; an error here stops start-up.
    pub fn load(files: TlsFiles) -> Result<Self, CertError> {
        let served = prepare_from_files(&files)?;
        Ok(Self {
            files,
            current: ArcSwap::from_pointee(served),
            reload_lock: Mutex::new(()),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// The generation new handshakes use now.
    pub fn current(&self) -> Arc<Served> {
        self.current.load_full()
    }

    /// The configured files.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reload outcome counters.
    pub fn counts(&self) -> ReloadCounts {
        ReloadCounts {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Re-read the configured files and swap if they pass every check.
    pub fn reload(&self) -> Result<SwapReport, CertError> {
        let _turn = self.lock();
        let started = Instant::now();
        let outcome = prepare_from_files(&self.files);
        self.finish(started, outcome)
    }

    /// Validate a new pair, write it atomically over the served files, then swap.
    /// On any failure nothing is written and nothing is swapped.
    /// `cert_source` and `key_source` name the inputs in error messages (e.g. the caller's files).
    pub fn install(
        &self,
        cert_source: &str,
        cert_pem: &[u8],
        key_source: &str,
        key_pem: &[u8],
    ) -> Result<SwapReport, CertError> {
        let _turn = self.lock();
        let started = Instant::now();
        let outcome = self
            .prepare_pair(cert_source, cert_pem, key_source, key_pem)
            .and_then(|served| {
                write_pair(&self.files.cert, cert_pem, &self.files.key, key_pem)?;
                Ok(served)
            });
        self.finish(started, outcome)
    }

    /// Every check [`Self::install`] makes of a pair, against this gateway's CA bundles, with
    /// nothing written, swapped or counted: what `cert rotate --all` asks of the instance it
    /// talks to before the pair is published to the others. The leaf's facts when it passes.
    pub fn check(
        &self,
        cert_source: &str,
        cert_pem: &[u8],
        key_source: &str,
        key_pem: &[u8],
    ) -> Result<CertInfo, CertError> {
        self.prepare_pair(cert_source, cert_pem, key_source, key_pem)
            .map(|served| served.info)
    }

    /// A submitted pair, checked and built against the CA bundles as they are on disk now.
    fn prepare_pair(
        &self,
        cert_source: &str,
        cert_pem: &[u8],
        key_source: &str,
        key_pem: &[u8],
    ) -> Result<Served, CertError> {
        let bundles = Bundles::read(&self.files)?;
        prepare(
            Named(cert_source, cert_pem),
            Named(key_source, key_pem),
            &self.files,
            &bundles,
        )
    }

    /// Publish a prepared generation (or count the refusal); the caller holds the turn.
    fn finish(
        &self,
        started: Instant,
        outcome: Result<Served, CertError>,
    ) -> Result<SwapReport, CertError> {
        match outcome {
            Ok(served) => {
                let prepared = started.elapsed();
                let new = served.info.clone();
                let swap_started = Instant::now();
                let old = self.current.swap(Arc::new(served));
                let swap = swap_started.elapsed();
                self.ok.fetch_add(1, Ordering::Relaxed);
                Ok(SwapReport {
                    old: old.info.clone(),
                    new,
                    prepare_us: micros(prepared),
                    swap_us: micros(swap),
                })
            }
            Err(err) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The lock guards no data, so a panic while holding it leaves nothing inconsistent.
        self.reload_lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A byte buffer with the name errors should use for it.
struct Named<'a>(&'a str, &'a [u8]);

/// The CA bundles the files name, read now (so a CA replaced on disk counts at the next reload).
struct Bundles {
    ca: Option<Vec<CertificateDer<'static>>>,
    client_ca: Option<Vec<CertificateDer<'static>>>,
}

impl Bundles {
    fn read(files: &TlsFiles) -> Result<Self, CertError> {
        Ok(Self {
            ca: files.ca.as_deref().map(pem::certs_from_file).transpose()?,
            client_ca: files
                .client_ca
                .as_deref()
                .map(pem::certs_from_file)
                .transpose()?,
        })
    }
}

fn prepare_from_files(files: &TlsFiles) -> Result<Served, CertError> {
    let cert_name = files.cert.display().to_string();
    let key_name = files.key.display().to_string();
    let cert_pem = pem::read(&files.cert)?;
    let key_pem = pem::read(&files.key)?;
    let bundles = Bundles::read(files)?;
    prepare(
        Named(&cert_name, &cert_pem),
        Named(&key_name, &key_pem),
        files,
        &bundles,
    )
}

/// Every check, then the rustls config. Nothing here touches shared state.
fn prepare(
    cert: Named<'_>,
    key: Named<'_>,
    files: &TlsFiles,
    bundles: &Bundles,
) -> Result<Served, CertError> {
    let chain = pem::certs(cert.0, cert.1)?;
    let key_der = pem::key(key.0, key.1)?;
    let parsed: Vec<_> = chain
        .iter()
        .map(|der| x509::parse(cert.0, der))
        .collect::<Result<_, _>>()?;
    let leaf = &parsed[0];
    let info = x509::info_of(leaf, &chain[0]);
    let public_key = leaf.public_key().raw.to_vec();

    let signing_key = signing_key(key.0, key_der)?;
    match signing_key.public_key() {
        Some(spki) if spki.as_ref() == leaf.public_key().raw => {}
        _ => {
            return Err(CertError::KeyMismatch {
                cert: cert.0.to_owned(),
                key: key.0.to_owned(),
            });
        }
    }

    let now = OffsetDateTime::now_utc().unix_timestamp();
    let validity = leaf.validity();
    if now > validity.not_after.timestamp() {
        return Err(CertError::Expired {
            source_name: cert.0.to_owned(),
            not_after: info.not_after.clone(),
        });
    }
    if now < validity.not_before.timestamp() {
        return Err(CertError::NotYetValid {
            source_name: cert.0.to_owned(),
            not_before: info.not_before.clone(),
        });
    }

    if let (Some(ca_path), Some(ca_certs)) = (&files.ca, &bundles.ca) {
        let roots: Vec<_> = ca_certs
            .iter()
            .map(|der| x509::parse(&ca_path.display().to_string(), der))
            .collect::<Result<_, _>>()?;
        if !x509::chains_to(&parsed, &roots) {
            return Err(CertError::UnknownIssuer {
                source_name: cert.0.to_owned(),
                issuer: info.issuer.clone(),
                ca: ca_path.display().to_string(),
            });
        }
    }

    let certified = Arc::new(CertifiedKey::new(chain, signing_key));
    let builder = ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError::Key {
            source_name: key.0.to_owned(),
            detail: e.to_string(),
        })?;
    let builder = match (&files.client_ca, &bundles.client_ca) {
        (Some(path), Some(certs)) => {
            let mut roots = rustls::RootCertStore::empty();
            let client_ca_err = |detail: String| CertError::ClientCa {
                ca: path.display().to_string(),
                detail,
            };
            for der in certs {
                roots
                    .add(der.clone())
                    .map_err(|e| client_ca_err(e.to_string()))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider())
                    .build()
                    .map_err(|e| client_ca_err(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(certified)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Served {
        config: Arc::new(config),
        info,
        public_key,
    })
}

fn signing_key(
    name: &str,
    der: PrivateKeyDer<'static>,
) -> Result<Arc<dyn rustls::sign::SigningKey>, CertError> {
    super::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| CertError::Key {
            source_name: name.to_owned(),
            detail: e.to_string(),
        })
}

/// One generation's certificate; the generation itself is what gets swapped.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Write both files through temp files and renames so a reader never sees half a file.
/// Existing modes are kept; a new key file is 0600.
fn write_pair(cert_path: &Path, cert: &[u8], key_path: &Path, key: &[u8]) -> Result<(), CertError> {
    let cert_tmp = write_temp(cert_path, cert, 0o644)?;
    let key_tmp = match write_temp(key_path, key, 0o600) {
        Ok(tmp) => tmp,
        Err(err) => {
            let _ = std::fs::remove_file(&cert_tmp);
            return Err(err);
        }
    };
    // Key first: if we die between the renames, the next reload sees a mismatched pair,
    // refuses it, and the old certificate keeps serving from memory.
    rename(&key_tmp, key_path)?;
    rename(&cert_tmp, cert_path)?;
    Ok(())
}

fn write_temp(path: &Path, bytes: &[u8], default_mode: u32) -> Result<PathBuf, CertError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let write_err = |error| CertError::Write {
        path: path.display().to_string(),
        error,
    };
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(default_mode);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.mcpgw-tmp-{}", std::process::id()));
    // A fresh file, never one (or a link) already at the temporary name: whatever is there is
    // a leftover of ours or planted, and is removed (a link itself, not what it points to).
    let _ = std::fs::remove_file(&tmp);
    let mut file = crate::files::own_file(mode)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(write_err)?;
    let result = file
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all());
    if let Err(error) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(error));
    }
    Ok(tmp)
}

fn rename(from: &Path, to: &Path) -> Result<(), CertError> {
    std::fs::rename(from, to).map_err(|error| {
        let _ = std::fs::remove_file(from);
        CertError::Write {
            path: to.display().to_string(),
            error,
        }
    })
}

#[cfg(test)]
mod tests;
