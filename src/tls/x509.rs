//! Certificate facts mcpgw reports and checks: fingerprint, names, validity, issuer.
//!
//! Parsed with x509-parser rather than webpki because the certificates users bring include
//! X.509 v1 ones made by plain `openssl x509 -req` (CN only, no extensions), which webpki refuses.

use rustls::pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// Why a certificate could not be inspected or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum X509Error {
    /// The DER is not an X.509 certificate.
    #[error("{source_name}: not a valid X.509 certificate ({detail})")]
    Parse {
        /// File or field.
        source_name: String,
        /// Parser's description.
        detail: String,
    },
}

/// What mcpgw shows about a certificate.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Subject alternative names (DNS names and IP addresses).
    pub sans: Vec<String>,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// End of validity, seconds since the epoch.
    pub not_after_unix: i64,
    /// X.509 version (1 or 3).
    pub version: u32,
}

/// SHA-256 fingerprint of a DER certificate, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// Parse a DER certificate, naming its source on failure.
pub fn parse<'a>(source_name: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, X509Error> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| X509Error::Parse {
            source_name: source_name.to_owned(),
            detail: e.to_string(),
        })
}

/// Facts about one certificate.
pub fn info(source_name: &str, der: &CertificateDer<'_>) -> Result<CertInfo, X509Error> {
    let cert = parse(source_name, der)?;
    Ok(info_of(&cert, der))
}

/// Facts about an already parsed certificate.
pub fn info_of(cert: &X509Certificate<'_>, der: &[u8]) -> CertInfo {
    let validity = cert.validity();
    CertInfo {
        sha256: fingerprint(der),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans: sans(cert),
        not_before: rfc3339(validity.not_before.to_datetime()),
        not_after: rfc3339(validity.not_after.to_datetime()),
        not_after_unix: validity.not_after.timestamp(),
        version: cert.version().0 + 1,
    }
}

/// DNS names and IP addresses from the subjectAltName extension.
pub fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => ip_string(bytes),
            _ => None,
        })
        .collect()
}

/// The subject's common name, if any.
pub fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

fn ip_string(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// Format a time as RFC 3339 (UTC).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Whether `issuer` signed `cert`: names match and the signature verifies with the issuer's key.
pub fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.issuer() == issuer.subject() && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

/// Whether `chain` (leaf first, then any intermediates) leads to one of `roots`.
pub fn chains_to(chain: &[X509Certificate<'_>], roots: &[X509Certificate<'_>]) -> bool {
    let Some(mut current) = chain.first() else {
        return false;
    };
    // Bounded by the chain length: each step moves to a later intermediate.
    for step in 0..chain.len() {
        if roots.iter().any(|root| signed_by(current, root)) {
            return true;
        }
        match chain[step + 1..]
            .iter()
            .find(|next| signed_by(current, next))
        {
            Some(next) => current = next,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::pki;

    #[test]
    fn info_reports_sans_version_and_fingerprint() {
        let set = pki::generate(&pki::PkiSpec::default()).unwrap();
        let certs = crate::tls::pem::certs("server.crt", set.server.cert_pem.as_bytes()).unwrap();
        let info = info("server.crt", &certs[0]).unwrap();
        assert_eq!(info.version, 3);
        assert!(info.sans.contains(&"localhost".to_owned()));
        assert!(info.sans.contains(&"127.0.0.1".to_owned()));
        assert!(info.sans.contains(&"::1".to_owned()));
        assert_eq!(info.sha256.len(), 64);
        assert!(info.subject.contains("localhost"));
    }

    #[test]
    fn chain_check_accepts_own_ca_and_refuses_another() {
        let a = pki::generate(&pki::PkiSpec::default()).unwrap();
        let b = pki::generate(&pki::PkiSpec::default()).unwrap();
        let leaf = crate::tls::pem::certs("s", a.server.cert_pem.as_bytes()).unwrap();
        let ca_a = crate::tls::pem::certs("a", a.ca.cert_pem.as_bytes()).unwrap();
        let ca_b = crate::tls::pem::certs("b", b.ca.cert_pem.as_bytes()).unwrap();
        let leaf = [parse("s", &leaf[0]).unwrap()];
        assert!(chains_to(&leaf, &[parse("a", &ca_a[0]).unwrap()]));
        assert!(!chains_to(&leaf, &[parse("b", &ca_b[0]).unwrap()]));
    }
}
