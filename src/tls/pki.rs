//! Minting certificates with rcgen: the test PKI of `cert gen` and the new server certificate of
//! `cert rotate --issue`. Everything is X.509 v3 with the EKUs clients check.
//!
//! RSA keys are generated with the RustCrypto `rsa` crate because rcgen's ring backend cannot
//! generate them (only sign with them); the key is then handed to rcgen as PKCS#8.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::cli::KeyType;

/// Why a certificate could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A subject alternative name is neither an IP address nor a valid DNS name.
    #[error("invalid subject alternative name '{san}': expected a DNS name or an IP address")]
    InvalidSan {
        /// The name as given.
        san: String,
    },
    /// Key generation failed.
    #[error("cannot generate a {key_type} key: {detail}")]
    KeyGen {
        /// Algorithm.
        key_type: &'static str,
        /// Library's description.
        detail: String,
    },
    /// The CA key could not be used for signing.
    #[error(
        "{source_name}: cannot use this CA key for signing ({detail}); expected an unencrypted PKCS#8 or PKCS#1 PEM key"
    )]
    CaKey {
        /// File.
        source_name: String,
        /// Library's description.
        detail: String,
    },
    /// The CA certificate could not be used as an issuer.
    #[error("{source_name}: cannot use this CA certificate as an issuer ({detail})")]
    CaCert {
        /// File.
        source_name: String,
        /// Library's description.
        detail: String,
    },
    /// rcgen refused the parameters.
    #[error("cannot sign the {what} certificate: {detail}")]
    Sign {
        /// Which certificate.
        what: &'static str,
        /// Library's description.
        detail: String,
    },
}

/// A certificate and its key, both PEM.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// What `cert gen` writes.
#[derive(Debug, Clone)]
pub struct PkiSet {
    /// The self-signed CA.
    pub ca: CertAndKey,
    /// Server certificate (serverAuth).
    pub server: CertAndKey,
    /// Client certificate (clientAuth).
    pub client: CertAndKey,
}

/// What to mint.
#[derive(Debug, Clone)]
pub struct PkiSpec {
    /// Server certificate common name.
    pub server_cn: String,
    /// Client certificate common name.
    pub client_cn: String,
    /// Extra SANs beyond localhost, 127.0.0.1 and ::1.
    pub extra_sans: Vec<String>,
    /// Validity in days.
    pub days: u32,
    /// Key algorithm for all three keys.
    pub key_type: KeyType,
}

impl Default for PkiSpec {
    fn default() -> Self {
        Self {
            server_cn: "localhost".into(),
            client_cn: "mcpgw-client".into(),
            extra_sans: Vec::new(),
            days: 365,
            key_type: KeyType::EcdsaP256,
        }
    }
}

/// The SANs every generated server certificate carries.
pub const DEFAULT_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Mint a CA, a server and a client certificate.
pub fn generate(spec: &PkiSpec) -> Result<PkiSet, PkiError> {
    let ca_key = new_key(spec.key_type)?;
    let mut ca_params = base_params("mcpgw test CA", spec.days);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(sign_err("CA"))?;
    let ca = CertAndKey {
        cert_pem: ca_cert.pem(),
        key_pem: ca_key.serialize_pem(),
    };
    let issuer = Issuer::new(ca_params, ca_key);

    let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| (*s).to_owned()).collect();
    sans.extend(spec.extra_sans.iter().cloned());
    let server = issue_server(&issuer, &spec.server_cn, &sans, spec.days, spec.key_type)?;
    let client = issue_client(&issuer, &spec.client_cn, spec.days, spec.key_type)?;
    Ok(PkiSet { ca, server, client })
}

/// A server certificate (serverAuth) for `sans`, signed by `issuer`.
pub fn issue_server(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    sans: &[String],
    days: u32,
    key_type: KeyType,
) -> Result<CertAndKey, PkiError> {
    let key = new_key(key_type)?;
    let mut params = base_params(cn, days);
    params.subject_alt_names = san_list(sans)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = leaf_key_usages(key_type);
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer).map_err(sign_err("server"))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A client certificate (clientAuth) with common name `cn`, signed by `issuer`.
pub fn issue_client(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    days: u32,
    key_type: KeyType,
) -> Result<CertAndKey, PkiError> {
    let key = new_key(key_type)?;
    let mut params = base_params(cn, days);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = leaf_key_usages(key_type);
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer).map_err(sign_err("client"))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// An issuer from an existing CA certificate and key (PEM), e.g. the report's openssl-made CA.
pub fn load_issuer(
    cert_name: &str,
    cert_pem: &[u8],
    key_name: &str,
    key_pem: &[u8],
) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key_der = super::pem::key(key_name, key_pem).map_err(|e| PkiError::CaKey {
        source_name: key_name.to_owned(),
        detail: e.to_string(),
    })?;
    let key = key_pair_from_der(key_name, key_der)?;
    let certs = super::pem::certs(cert_name, cert_pem).map_err(|e| PkiError::CaCert {
        source_name: cert_name.to_owned(),
        detail: e.to_string(),
    })?;
    Issuer::from_ca_cert_der(&certs[0], key).map_err(|e| PkiError::CaCert {
        source_name: cert_name.to_owned(),
        detail: e.to_string(),
    })
}

/// rcgen's ring backend only reads PKCS#8; convert PKCS#1 RSA keys first.
fn key_pair_from_der(
    name: &str,
    der: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<KeyPair, PkiError> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;
    let ca_key_err = |detail: String| PkiError::CaKey {
        source_name: name.to_owned(),
        detail,
    };
    let pkcs8 = match der {
        rustls::pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        rustls::pki_types::PrivateKeyDer::Pkcs1(k) => {
            let rsa = rsa::RsaPrivateKey::from_pkcs1_der(k.secret_pkcs1_der())
                .map_err(|e| ca_key_err(e.to_string()))?;
            rsa.to_pkcs8_der()
                .map_err(|e| ca_key_err(e.to_string()))?
                .as_bytes()
                .to_vec()
        }
        _ => {
            return Err(ca_key_err(
                "SEC1 EC keys are not supported; convert with `openssl pkcs8 -topk8 -nocrypt`"
                    .into(),
            ));
        }
    };
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8);
    KeyPair::try_from(&pkcs8).map_err(|e| ca_key_err(e.to_string()))
}

/// A fresh key of the given type.
pub fn new_key(key_type: KeyType) -> Result<KeyPair, PkiError> {
    match key_type {
        KeyType::EcdsaP256 => {
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(keygen_err("ecdsa-p256"))
        }
        KeyType::Ed25519 => {
            KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(keygen_err("ed25519"))
        }
        KeyType::Rsa2048 => rsa_key(2048, "rsa2048"),
        KeyType::Rsa4096 => rsa_key(4096, "rsa4096"),
    }
}

/// Whether generating this key type takes long enough to deserve a spinner.
pub fn is_slow(key_type: KeyType) -> bool {
    matches!(key_type, KeyType::Rsa2048 | KeyType::Rsa4096)
}

fn rsa_key(bits: usize, name: &'static str) -> Result<KeyPair, PkiError> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
        .map_err(|e| keygen_err(name)(e.to_string()))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| keygen_err(name)(e.to_string()))?;
    let pkcs8 = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).map_err(keygen_err(name))
}

fn base_params(cn: &str, days: u32) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that disagree by a few minutes.
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(i64::from(days));
    params.serial_number = Some(random_serial());
    params
}

fn leaf_key_usages(key_type: KeyType) -> Vec<KeyUsagePurpose> {
    let mut usages = vec![KeyUsagePurpose::DigitalSignature];
    if matches!(key_type, KeyType::Rsa2048 | KeyType::Rsa4096) {
        usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    usages
}

fn random_serial() -> SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // SystemRandom only fails when the OS has no entropy source at all.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and no leading zero byte
    SerialNumber::from_slice(&bytes)
}

/// Parse SAN strings: IP addresses become iPAddress entries, everything else a dNSName.
pub fn san_list(sans: &[String]) -> Result<Vec<SanType>, PkiError> {
    let mut out: Vec<SanType> = Vec::new();
    for san in sans {
        let entry = match san.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                if !valid_dns_name(san) {
                    return Err(PkiError::InvalidSan { san: san.clone() });
                }
                SanType::DnsName(
                    san.as_str()
                        .try_into()
                        .map_err(|_| PkiError::InvalidSan { san: san.clone() })?,
                )
            }
        };
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(out)
}

fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn keygen_err<E: std::fmt::Display>(key_type: &'static str) -> impl Fn(E) -> PkiError {
    move |e| PkiError::KeyGen {
        key_type,
        detail: e.to_string(),
    }
}

fn sign_err(what: &'static str) -> impl Fn(rcgen::Error) -> PkiError {
    move |e| PkiError::Sign {
        what,
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sans_accept_ips_and_dns_and_refuse_junk() {
        let ok = san_list(&["a.example".into(), "10.0.0.1".into(), "::1".into()]).unwrap();
        assert_eq!(ok.len(), 3);
        let err = san_list(&["bad name!".into()]).unwrap_err();
        assert!(err.to_string().contains("'bad name!'"), "{err}");
    }

    #[test]
    fn issuer_from_generated_ca_signs_new_server_cert() {
        let set = generate(&PkiSpec::default()).unwrap();
        let issuer = load_issuer(
            "ca.crt",
            set.ca.cert_pem.as_bytes(),
            "ca.key",
            set.ca.key_pem.as_bytes(),
        )
        .unwrap();
        let new = issue_server(
            &issuer,
            "localhost",
            &["localhost".into()],
            1,
            KeyType::Ed25519,
        )
        .unwrap();
        let leaf = crate::tls::pem::certs("n", new.cert_pem.as_bytes()).unwrap();
        let ca = crate::tls::pem::certs("c", set.ca.cert_pem.as_bytes()).unwrap();
        let leaf = crate::tls::x509::parse("n", &leaf[0]).unwrap();
        let ca = crate::tls::x509::parse("c", &ca[0]).unwrap();
        assert!(crate::tls::x509::signed_by(&leaf, &ca));
    }
}
