//! TLS to the database, as libpq's `sslmode` defines it, on rustls with the ring provider
//! every other TLS config of mcpgw uses, through `tokio-postgres-rustls` (see
//! docs/ARCHITECTURE.md for why that crate).
//!
//! - `prefer` and `require` encrypt without verifying (libpq's meaning: a passive eavesdropper
//!   is kept out, an impostor is not); `require` with `sslrootcert` verifies the chain, as
//!   libpq does.
//! - `verify-ca` verifies the chain, not the name; `verify-full` both, as HTTPS does.
//!
//! The handshake signature is checked in every mode: "unverified" skips only the question of
//! who issued the certificate.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::url::{PgUrl, PgUrlError, SslMode};

/// The TLS connector for `url`'s `sslmode`; `None` for `disable`.
pub(super) fn connector(url: &PgUrl) -> Result<Option<MakeRustlsConnect>, PgUrlError> {
    let provider = crate::tls::provider();
    let chain = match (url.ssl, &url.root_cert) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::Prefer, _) | (SslMode::Require, None) => None,
        (SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull, _) => {
            let roots = roots(url)?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| root_err(url, e.to_string()))?;
            Some(webpki)
        }
    };
    let verifier = Arc::new(DbVerifier {
        chain,
        check_name: url.ssl == SslMode::VerifyFull,
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| root_err(url, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}

fn root_err(url: &PgUrl, detail: String) -> PgUrlError {
    PgUrlError::RootCert {
        path: url
            .root_cert
            .as_ref()
            .map_or_else(|| "(system store)".into(), |p| p.display().to_string()),
        detail,
    }
}

/// `sslrootcert`'s certificates, or the system store's when it is not given.
fn roots(url: &PgUrl) -> Result<RootCertStore, PgUrlError> {
    let mut roots = RootCertStore::empty();
    let certs = match &url.root_cert {
        Some(path) => {
            crate::tls::pem::certs_from_file(path).map_err(|e| root_err(url, e.to_string()))?
        }
        None => rustls_native_certs::load_native_certs().certs,
    };
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(root_err(
            url,
            "no certificate that can serve as a trust anchor".into(),
        ));
    }
    Ok(roots)
}

/// The database's certificate judged by `sslmode`: webpki's chain verification when `chain`
/// is set (`verify-ca`, `verify-full`, `require` with `sslrootcert`), with the name checked
/// only for `verify-full`; any certificate otherwise. The handshake signature is always
/// checked with the provider's algorithms (as webpki's verifier does too).
#[derive(Debug)]
struct DbVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for DbVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // webpki checks the name after the chain, so this error means the chain was good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
