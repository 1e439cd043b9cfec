//! A `TlsIdentity` is everything that decides how a TLS connection to one upstream looks: the
//! *contents* of its CA bundle, client chain and key, and the server name to verify. Its cache
//! key hashes all of it, so two upstreams that share a CA but not a client certificate can never
//! share a client (the NET-01 "client-blind" cache), and a file rotated on disk yields a new key.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::{self, Links, MAX_PEM_BYTES, Opened};
use crate::store::{PemSource, TlsSettings};
use crate::tls::pem::{self, PemError};
use crate::tls::serving::ServingCert;
use crate::tls::x509::{self, X509Error};

/// Why an upstream's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A PEM input is unreadable or malformed.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A certificate does not parse.
    #[error(transparent)]
    X509(#[from] X509Error),
    /// Only half of the client identity was given.
    #[error("client_cert and client_key must be given together (got only the {given})")]
    HalfClientIdentity {
        /// Which half was given.
        given: &'static str,
    },
    /// The client key is not the key of the client certificate.
    #[error(
        "key does not match certificate: the client key from {key} does not belong to the client certificate from {cert}"
    )]
    ClientKeyMismatch {
        /// Certificate source.
        cert: String,
        /// Key source.
        key: String,
    },
    /// The key cannot be used by rustls.
    #[error("{source_name}: unsupported private key ({detail})")]
    Key {
        /// Key source.
        source_name: String,
        /// rustls's description.
        detail: String,
    },
    /// A path lies outside the directories certificates may be read from.
    #[error("{path} is outside the directories allowed for certificates ({allowed})")]
    PathNotAllowed {
        /// The path.
        path: String,
        /// The allowed directories.
        allowed: String,
    },
    /// A path no longer names the file that was opened from it (replaced meanwhile).
    #[error("{path} was replaced while it was being opened; try again")]
    Replaced {
        /// The path.
        path: String,
    },
    /// The gateway's own serving key (its file, or the same key elsewhere) given as an
    /// upstream client identity.
    #[error(
        "{source_name} is the gateway's own serving key, which it never presents to an upstream: give the upstream client identity a key of its own (`mcpgw cert gen` issues one)"
    )]
    ServingKey {
        /// The file or field.
        source_name: String,
    },
    /// The server-name override is not a valid DNS name or IP address.
    #[error("invalid server_name '{name}': expected a DNS name or an IP address")]
    ServerName {
        /// As given.
        name: String,
    },
}

/// Loaded TLS material of one upstream.
pub struct TlsIdentity {
    /// Trusted CAs; `None` means the system store.
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// Where the CA came from (for messages).
    pub ca_source: Option<String>,
    /// Client chain and key.
    pub client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// Name to verify instead of the URL host.
    pub server_name: Option<String>,
    key: [u8; 32],
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            ca_source: self.ca_source.clone(),
            client: self
                .client
                .as_ref()
                .map(|(chain, key)| (chain.clone(), key.clone_key())),
            server_name: self.server_name.clone(),
            key: self.key,
        }
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("ca", &self.ca_source)
            .field("client_cert", &self.client.as_ref().map(|(c, _)| c.len()))
            .field("server_name", &self.server_name)
            .field("key", &hex::encode(&self.key[..8]))
            .finish()
    }
}

/// What registered certificate paths and keys may be: where the files may lie, and which key
/// they may not hold (the gateway's own serving key).
#[derive(Debug, Clone, Default)]
pub struct PathPolicy {
    /// Allowed directories; empty means anywhere.
    pub allowed_dirs: Vec<PathBuf>,
    /// The gateway's serving certificate, when it serves HTTPS: neither its key file nor its
    /// key may become an upstream client identity (the gateway would present its own key to
    /// whatever URL was registered).
    pub serving: Option<Arc<ServingCert>>,
}

impl PathPolicy {
    /// Whether the file opened from `path` may be read: judged on what was opened, so a path
    /// swapped between a check and the open cannot escape.
    fn check(&self, path: &Path, opened: &Opened) -> Result<(), IdentityError> {
        let shown = || path.display().to_string();
        if let Some(serving) = &self.serving {
            let key = &serving.files().key;
            if std::fs::metadata(key).is_ok_and(|m| (m.dev(), m.ino()) == opened.id()) {
                return Err(IdentityError::ServingKey {
                    source_name: shown(),
                });
            }
        }
        if self.allowed_dirs.is_empty() {
            return Ok(());
        }
        // Links and `..` resolved, and the name still naming the opened file.
        let real = opened
            .real_path()
            .ok_or_else(|| IdentityError::Replaced { path: shown() })?;
        if self
            .allowed_dirs
            .iter()
            .any(|dir| std::fs::canonicalize(dir).is_ok_and(|d| real.starts_with(d)))
        {
            return Ok(());
        }
        Err(IdentityError::PathNotAllowed {
            path: shown(),
            allowed: self
                .allowed_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// Refuse the serving certificate's key as a client key, whatever file or field it came in.
    fn check_key(&self, source_name: &str, public_key: Option<&[u8]>) -> Result<(), IdentityError> {
        let serving = self.serving.as_ref().map(|s| s.current());
        match (serving, public_key) {
            (Some(served), Some(key)) if served.public_key == key => {
                Err(IdentityError::ServingKey {
                    source_name: source_name.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The bytes of a certificate source: a registrant's path is opened once, without following a
/// link, a regular file of at most [`MAX_PEM_BYTES`], and checked by `policy` before it is read.
fn read_source(
    source: &PemSource,
    label: &str,
    policy: &PathPolicy,
) -> Result<(String, Vec<u8>), IdentityError> {
    match source {
        PemSource::Path(path) => {
            let opened = files::open_regular(path, Links::Refuse).map_err(PemError::from)?;
            policy.check(path, &opened)?;
            let bytes = opened.read_capped(MAX_PEM_BYTES).map_err(PemError::from)?;
            Ok((path.display().to_string(), bytes))
        }
        PemSource::Inline(text) => Ok((format!("inline {label}"), text.as_bytes().to_vec())),
    }
}

impl TlsIdentity {
    /// Read and check the material named by `settings` (files are read now, every time).
    pub fn load(settings: &TlsSettings, policy: &PathPolicy) -> Result<Self, IdentityError> {
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut feed = |tag: &[u8], bytes: &[u8]| {
            // Length-prefix every field so no two different identities hash alike.
            hasher.update(tag);
            hasher.update(&(bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };

        let (ca, ca_source) = match &settings.ca {
            Some(source) => {
                let (name, bytes) = read_source(source, "ca_cert", policy)?;
                let certs = pem::certs(&name, &bytes)?;
                for c in &certs {
                    feed(b"ca", c);
                }
                (Some(certs), Some(name))
            }
            None => {
                feed(b"ca-system", b"");
                (None, None)
            }
        };

        let client = match (&settings.client_cert, &settings.client_key) {
            (Some(cert_src), Some(key_src)) => {
                let (cert_name, cert_bytes) = read_source(cert_src, "client_cert", policy)?;
                let (key_name, key_bytes) = read_source(key_src, "client_key", policy)?;
                let chain = pem::certs(&cert_name, &cert_bytes)?;
                let key = pem::key(&key_name, &key_bytes)?;
                let signing = crate::tls::provider()
                    .key_provider
                    .load_private_key(key.clone_key())
                    .map_err(|e| IdentityError::Key {
                        source_name: key_name.clone(),
                        detail: e.to_string(),
                    })?;
                policy.check_key(&key_name, signing.public_key().as_deref())?;
                let leaf = x509::parse(&cert_name, &chain[0])?;
                if signing.public_key().as_deref() != Some(leaf.public_key().raw) {
                    return Err(IdentityError::ClientKeyMismatch {
                        cert: cert_name,
                        key: key_name,
                    });
                }
                for c in &chain {
                    feed(b"client-cert", c);
                }
                feed(b"client-key", key.secret_der());
                Some((chain, key))
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(IdentityError::HalfClientIdentity {
                    given: "client_cert",
                });
            }
            (None, Some(_)) => {
                return Err(IdentityError::HalfClientIdentity {
                    given: "client_key",
                });
            }
        };

        if let Some(name) = &settings.server_name {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                return Err(IdentityError::ServerName { name: name.clone() });
            }
            feed(b"server-name", name.as_bytes());
        }
        // Verification mode: always full verification; the tag keeps room for future modes.
        feed(b"verify", b"strict+legacy-cn-own-ca");

        let digest = hasher.finish();
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        Ok(Self {
            ca,
            ca_source,
            client,
            server_name: settings.server_name.clone(),
            key,
        })
    }

    /// SHA-256 over all of the identity's contents.
    pub fn cache_key(&self) -> [u8; 32] {
        self.key
    }

    /// Subject of the client certificate, for display.
    pub fn client_subject(&self) -> Option<String> {
        let (chain, _) = self.client.as_ref()?;
        x509::parse("client certificate", &chain[0])
            .ok()
            .map(|c| c.subject().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pki;

    fn inline(set: &pki::PkiSet, with_client: bool) -> TlsSettings {
        TlsSettings {
            ca: Some(PemSource::Inline(set.ca.cert_pem.clone())),
            client_cert: with_client.then(|| PemSource::Inline(set.client.cert_pem.clone())),
            client_key: with_client.then(|| PemSource::Inline(set.client.key_pem.clone())),
            server_name: None,
        }
    }

    #[test]
    fn key_covers_client_identity_not_just_the_ca() {
        let a = pki::generate(&pki::PkiSpec::default()).unwrap();
        let policy = PathPolicy::default();
        let with = TlsIdentity::load(&inline(&a, true), &policy).unwrap();
        let without = TlsIdentity::load(&inline(&a, false), &policy).unwrap();
        assert_ne!(with.cache_key(), without.cache_key());
        // Same CA, different client certificate: different key.
        let mut other_client = inline(&a, true);
        let b = pki::generate(&pki::PkiSpec::default()).unwrap();
        other_client.client_cert = Some(PemSource::Inline(b.client.cert_pem.clone()));
        other_client.client_key = Some(PemSource::Inline(b.client.key_pem.clone()));
        let other = TlsIdentity::load(&other_client, &policy).unwrap();
        assert_ne!(with.cache_key(), other.cache_key());
        // Same contents: same key.
        assert_eq!(
            with.cache_key(),
            TlsIdentity::load(&inline(&a, true), &policy)
                .unwrap()
                .cache_key()
        );
        let mut named = inline(&a, true);
        named.server_name = Some("localhost".into());
        assert_ne!(
            with.cache_key(),
            TlsIdentity::load(&named, &policy).unwrap().cache_key()
        );
    }

    #[test]
    fn mismatched_client_key_and_half_identity_are_refused() {
        let a = pki::generate(&pki::PkiSpec::default()).unwrap();
        let mut s = inline(&a, true);
        s.client_key = Some(PemSource::Inline(a.server.key_pem.clone()));
        let err = TlsIdentity::load(&s, &PathPolicy::default()).unwrap_err();
        assert!(
            err.to_string().contains("key does not match certificate"),
            "{err}"
        );
        s.client_key = None;
        let err = TlsIdentity::load(&s, &PathPolicy::default()).unwrap_err();
        assert!(matches!(err, IdentityError::HalfClientIdentity { .. }));
    }

    #[test]
    fn paths_outside_allowed_dirs_are_refused_without_reading_them() {
        let policy = PathPolicy {
            allowed_dirs: vec![std::env::temp_dir()],
            serving: None,
        };
        let s = TlsSettings {
            ca: Some(PemSource::Path("/etc/passwd".into())),
            ..TlsSettings::default()
        };
        let err = TlsIdentity::load(&s, &policy).unwrap_err().to_string();
        assert!(err.contains("outside the directories allowed"), "{err}");
        assert!(!err.contains("root:"), "{err}");
    }
}
