//! The rustls client side of an upstream connection, built once per [`TlsIdentity`].
//!
//! Verification is webpki's, strict, with one narrow exception for the certificates the NET-01
//! report's own openssl steps produce (X.509 v1, CN only, no SAN): such a server certificate is
//! accepted only if it is signed directly by a CA from *this upstream's own* CA file, is within
//! its validity, and its CN equals the name being verified; the handshake signature is then
//! checked with its key. The first acceptance is recorded so it can be shown and logged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::identity::TlsIdentity;
use crate::tls::x509;

/// Why a client config could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsBuildError {
    /// No usable CA certificate.
    #[error("{source_name}: no usable CA certificate ({detail})")]
    Roots {
        /// CA source.
        source_name: String,
        /// What went wrong.
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("cannot build the TLS client configuration: {detail}")]
    Config {
        /// rustls's description.
        detail: String,
    },
}

/// What happened in handshakes made with one identity (for diagnosis and display).
#[derive(Debug, Default)]
pub struct TlsObservations {
    /// A legacy CN-only certificate was accepted.
    pub legacy_cn_accepted: AtomicBool,
    /// The server sent a CertificateRequest.
    pub client_cert_requested: AtomicBool,
    /// The CA names the server said it accepts, as distinguished-name strings.
    pub acceptable_cas: Mutex<Vec<String>>,
    /// Whether this identity has a client certificate to send.
    pub has_client_cert: bool,
}

/// Build the rustls client config for an identity.
pub fn client_config(
    identity: &TlsIdentity,
    observations: Arc<TlsObservations>,
) -> Result<ClientConfig, TlsBuildError> {
    let provider = crate::tls::provider();
    let mut roots = RootCertStore::empty();
    match &identity.ca {
        Some(certs) => {
            let (added, _ignored) = roots.add_parsable_certificates(certs.iter().cloned());
            if added == 0 {
                return Err(TlsBuildError::Roots {
                    source_name: identity.ca_source.clone().unwrap_or_default(),
                    detail: "none of its certificates can serve as a trust anchor".into(),
                });
            }
        }
        None => {
            // The system store; honours SSL_CERT_FILE / SSL_CERT_DIR.
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(TlsBuildError::Roots {
                    source_name: "the system trust store".into(),
                    detail: "no certificates found (set SSL_CERT_FILE, or give ca_cert)".into(),
                });
            }
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsBuildError::Config {
            detail: e.to_string(),
        })?;
    let verifier = Arc::new(UpstreamVerifier {
        webpki,
        own_ca: identity.ca.clone(),
        observations: observations.clone(),
    });
    let client_key = match &identity.client {
        Some((chain, key)) => Some(Arc::new(CertifiedKey::new(
            chain.clone(),
            provider
                .key_provider
                .load_private_key(key.clone_key())
                .map_err(|e| TlsBuildError::Config {
                    detail: e.to_string(),
                })?,
        ))),
        None => None,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsBuildError::Config {
            detail: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(ClientCert {
            key: client_key,
            observations,
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Sends the configured client certificate whenever the server asks, and notes that it asked.
#[derive(Debug)]
struct ClientCert {
    key: Option<Arc<CertifiedKey>>,
    observations: Arc<TlsObservations>,
}

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.observations
            .client_cert_requested
            .store(true, Ordering::Relaxed);
        let names: Vec<String> = root_hint_subjects
            .iter()
            .filter_map(|der| {
                x509_parser::x509::X509Name::from_der(der)
                    .ok()
                    .map(|(_, n)| n.to_string())
            })
            .collect();
        if let Ok(mut slot) = self.observations.acceptable_cas.lock() {
            *slot = names;
        }
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

use x509_parser::prelude::FromDer;

/// webpki verification plus the legacy CN-only rule.
#[derive(Debug)]
struct UpstreamVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    own_ca: Option<Vec<CertificateDer<'static>>>,
    observations: Arc<TlsObservations>,
}

impl UpstreamVerifier {
    fn legacy_acceptable(
        &self,
        end_entity: &CertificateDer<'_>,
        name: &ServerName<'_>,
        now: UnixTime,
    ) -> bool {
        let (Some(own_ca), ServerName::DnsName(dns)) = (&self.own_ca, name) else {
            return false;
        };
        let Ok(leaf) = x509::parse("upstream certificate", end_entity) else {
            return false;
        };
        let cn_only = leaf.version().0 == 0 || x509::sans(&leaf).is_empty();
        let validity = leaf.validity();
        let now = now.as_secs() as i64;
        let in_time =
            validity.not_before.timestamp() <= now && now <= validity.not_after.timestamp();
        let cn_matches =
            x509::common_name(&leaf).is_some_and(|cn| cn.eq_ignore_ascii_case(dns.as_ref()));
        let signed_by_own_ca = own_ca
            .iter()
            .any(|ca| x509::parse("ca", ca).is_ok_and(|ca| x509::signed_by(&leaf, &ca)));
        cn_only && in_time && cn_matches && signed_by_own_ca
    }
}

fn is_legacy_shape(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let leaf = x509::parse("upstream certificate", cert).ok()?;
    (leaf.version().0 == 0 || x509::sans(&leaf).is_empty()).then(|| leaf.public_key().raw.to_vec())
}

impl ServerCertVerifier for UpstreamVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(ok) => Ok(ok),
            Err(err) => {
                if self.legacy_acceptable(end_entity, server_name, now) {
                    self.observations
                        .legacy_cn_accepted
                        .store(true, Ordering::Relaxed);
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(err)
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Legacy certificates are only supported over TLS 1.3, where rustls can verify with a raw key.
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match self.webpki.verify_tls13_signature(message, cert, dss) {
            Ok(ok) => Ok(ok),
            Err(err) => match is_legacy_shape(cert) {
                // webpki cannot parse a v1 certificate; verify with the key it carries.
                Some(spki) => rustls::crypto::verify_tls13_signature_with_raw_key(
                    message,
                    &rustls::pki_types::SubjectPublicKeyInfoDer::from(spki.as_slice()),
                    dss,
                    &crate::tls::provider().signature_verification_algorithms,
                ),
                None => Err(err),
            },
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
