//! A downstream client certificate as a principal. The listener's `--client-ca` verifier has
//! already checked the chain during the handshake; this only names who it is, once per
//! connection: the first URI SAN (a SPIFFE id, say), else the first DNS SAN, else the
//! subject's common name.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The name a verified client certificate stands for, or `None` when it names nothing usable.
pub fn name_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut dns = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => return Some((*uri).to_owned()),
                GeneralName::DNSName(host) if dns.is_none() => dns = Some((*host).to_owned()),
                _ => {}
            }
        }
    }
    dns.or_else(|| {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    })
    // A name is text a log and a policy rule will show: control characters are not one.
    .filter(|name| !name.is_empty() && !name.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(sans: Vec<rcgen::SanType>, cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_uri_san_comes_first_then_a_dns_name_then_the_common_name() {
        let spiffe = "spiffe://example.org/ns/prod/sa/agent";
        let both = cert(
            vec![
                rcgen::SanType::DnsName("agent.example.org".try_into().unwrap()),
                rcgen::SanType::URI(spiffe.try_into().unwrap()),
            ],
            "agent",
        );
        assert_eq!(name_of(&both).as_deref(), Some(spiffe));
        let dns = cert(
            vec![rcgen::SanType::DnsName(
                "agent.example.org".try_into().unwrap(),
            )],
            "agent",
        );
        assert_eq!(name_of(&dns).as_deref(), Some("agent.example.org"));
        assert_eq!(name_of(&cert(vec![], "agent")).as_deref(), Some("agent"));
        assert_eq!(name_of(b"not a certificate"), None);
    }
}
