//! Open a TLS handshake only to see which certificate a listener presents.
//!
//! Used by `cert rotate` to prove that the new certificate is what new clients get. Trust is not
//! the question here (the caller compares fingerprints with what the gateway reported), but the
//! handshake signature is still checked against the presented certificate's own key, so a server
//! that does not hold the key cannot pass.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// The DER of the leaf certificate `addr` presents for `server_name`.
pub async fn presented_certificate(
    addr: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> anyhow::Result<CertificateDer<'static>> {
    let seen = Arc::new(Capture::default());
    let config = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(seen.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        connector.connect(name, tcp).await
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake with {addr} timed out after {timeout:?}"))??;
    let leaf = seen.leaf.lock().unwrap_or_else(|p| p.into_inner()).take();
    leaf.ok_or_else(|| anyhow::anyhow!("{addr} presented no certificate"))
}

/// A verifier that records the leaf and checks the handshake signature with the leaf's own key.
#[derive(Debug, Default)]
struct Capture {
    leaf: Mutex<Option<CertificateDer<'static>>>,
    spki: Mutex<Vec<u8>>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = super::x509::parse("presented certificate", end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        *self.spki.lock().unwrap_or_else(|p| p.into_inner()) = cert.public_key().raw.to_vec();
        *self.leaf.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(end_entity.clone().into_owned());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered by this client.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        _cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let spki = self.spki.lock().unwrap_or_else(|p| p.into_inner()).clone();
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &rustls::pki_types::SubjectPublicKeyInfoDer::from(spki.as_slice()),
            dss,
            &super::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        super::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
