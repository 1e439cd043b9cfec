//! Turn a failed upstream request into one sentence a user can act on.

use std::error::Error as StdError;
use std::sync::atomic::Ordering;

use rustls::{AlertDescription, CertificateError};

use super::clients::UpstreamClient;
use super::identity::TlsIdentity;
use super::tls::TlsObservations;

/// The plain diagnosis of why a request to `client`'s upstream failed; `timed_out` when the
/// error is a timeout of the connection or request.
pub fn diagnose(
    err: &(dyn StdError + 'static),
    timed_out: bool,
    client: &UpstreamClient,
) -> String {
    let obs = &client.observations;
    let requested = obs.client_cert_requested.load(Ordering::Relaxed);
    let host = client.url.host_str().unwrap_or("?").to_owned();
    let port = client.url.port_or_known_default().unwrap_or(0);

    for cause in chain(err) {
        if let Some(tls) = rustls_error(cause) {
            return describe_tls(tls, &client.identity, obs);
        }
    }
    if timed_out {
        return format!("timed out waiting for {host}:{port}");
    }
    let text = chain(err)
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    let lower = text.to_lowercase();
    if requested && !obs.has_client_cert {
        return MISSING_CLIENT_CERT.into();
    }
    if lower.contains("connection refused") {
        return format!("connection refused by {host}:{port} (is the upstream running?)");
    }
    if lower.contains("dns error") || lower.contains("failed to lookup") {
        return format!("cannot resolve host '{host}'");
    }
    if requested
        && (lower.contains("connection reset") || lower.contains("closed") || lower.contains("eof"))
    {
        return format!(
            "the upstream asked for a client certificate and closed the connection after receiving {} (it does not accept it)",
            client
                .identity
                .client_subject()
                .unwrap_or_else(|| "it".into())
        );
    }
    text
}

fn rustls_error<'a>(cause: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(e) = cause.downcast_ref::<rustls::Error>() {
        return Some(e);
    }
    // tokio-rustls puts the rustls error inside an io::Error, sometimes inside another io::Error;
    // io::Error::source() skips the wrapped error itself, so unwrap by hand.
    let mut io = cause.downcast_ref::<std::io::Error>()?;
    for _ in 0..4 {
        let inner = io.get_ref()?;
        if let Some(e) = inner.downcast_ref::<rustls::Error>() {
            return Some(e);
        }
        io = inner.downcast_ref::<std::io::Error>()?;
    }
    None
}

/// The plain diagnosis of a TLS error seen with `identity` (whose handshakes `obs` recorded).
pub fn describe_tls(err: &rustls::Error, identity: &TlsIdentity, obs: &TlsObservations) -> String {
    let requested = obs.client_cert_requested.load(Ordering::Relaxed);
    let has_cert = obs.has_client_cert;
    let trust = identity
        .ca_source
        .clone()
        .unwrap_or_else(|| "the system trust store".into());
    match err {
        rustls::Error::InvalidCertificate(cert_err) => match cert_err {
            CertificateError::NotValidForNameContext { expected, presented } => {
                let expected = expected.to_str();
                let presented: Vec<String> = presented.iter().map(|p| presented_name(p)).collect();
                let dns = presented
                    .iter()
                    .find(|p| p.parse::<std::net::IpAddr>().is_err())
                    .cloned()
                    .unwrap_or_else(|| presented.first().cloned().unwrap_or_default());
                format!(
                    "certificate for `{}` does not cover `{expected}` (use --server-name {dns})",
                    presented.join("`, `")
                )
            }
            CertificateError::NotValidForName => {
                "the upstream's certificate does not cover the host in the URL (use --server-name NAME)".into()
            }
            CertificateError::UnknownIssuer => {
                format!("unknown CA: the upstream's certificate was not issued by a CA in {trust}")
            }
            // webpki found a trust anchor with the issuer's name, but its key did not sign the
            // certificate: typically a test CA regenerated under the same name.
            CertificateError::BadSignature => format!(
                "unknown CA: the upstream's certificate was not issued by a CA in {trust} (a CA there has the same name but a different key)"
            ),
            CertificateError::ExpiredContext { not_after, .. } => format!(
                "the upstream's certificate expired on {}",
                crate::tls::x509::rfc3339(
                    time::OffsetDateTime::from_unix_timestamp(not_after.as_secs() as i64)
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
                )
            ),
            CertificateError::Expired => "the upstream's certificate has expired".into(),
            CertificateError::NotValidYetContext { .. } | CertificateError::NotValidYet => {
                "the upstream's certificate is not valid yet".into()
            }
            other => format!("the upstream's certificate was rejected: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => {
                MISSING_CLIENT_CERT.into()
            }
            AlertDescription::HandshakeFailure if requested && !has_cert => {
                MISSING_CLIENT_CERT.into()
            }
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
                if has_cert =>
            {
                format!(
                    "the upstream rejected the client certificate {} (alert: {alert:?})",
                    identity.client_subject().unwrap_or_default()
                )
            }
            other => format!("the upstream aborted the TLS handshake (alert: {other:?})"),
        },
        other => format!("TLS error: {other}"),
    }
}

/// A name as rustls reports it (`DnsName("localhost")`, `IpAddress(127.0.0.1)`), bare.
fn presented_name(raw: &str) -> String {
    match raw.split_once('(') {
        Some((_, inner)) if raw.ends_with(')') => {
            inner[..inner.len() - 1].trim_matches('"').to_owned()
        }
        _ => raw.to_owned(),
    }
}

/// What kind of TLS failure a handshake (or the first exchange after it) ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsCause {
    /// The server asked for a client certificate and none is configured.
    MissingClientCert,
    /// The server's certificate was not issued by a trusted CA.
    UnknownCa,
    /// The server's certificate does not cover the name being verified.
    NameMismatch,
    /// The server's certificate is outside its validity period.
    Expired,
    /// The server refused the client certificate that was sent.
    ClientCertRejected,
    /// Anything else.
    Other,
}

/// Classify a rustls error the way [`describe_tls`] words it.
pub fn classify_tls(err: &rustls::Error, obs: &TlsObservations) -> TlsCause {
    let requested = obs.client_cert_requested.load(Ordering::Relaxed);
    let has_cert = obs.has_client_cert;
    match err {
        rustls::Error::InvalidCertificate(cert_err) => match cert_err {
            CertificateError::NotValidForNameContext { .. } | CertificateError::NotValidForName => {
                TlsCause::NameMismatch
            }
            CertificateError::UnknownIssuer | CertificateError::BadSignature => TlsCause::UnknownCa,
            CertificateError::ExpiredContext { .. }
            | CertificateError::Expired
            | CertificateError::NotValidYetContext { .. }
            | CertificateError::NotValidYet => TlsCause::Expired,
            _ => TlsCause::Other,
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => TlsCause::MissingClientCert,
            AlertDescription::HandshakeFailure if requested && !has_cert => {
                TlsCause::MissingClientCert
            }
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError
                if has_cert =>
            {
                TlsCause::ClientCertRejected
            }
            _ => TlsCause::Other,
        },
        _ => TlsCause::Other,
    }
}

/// A connection that closed or was reset right after a handshake in which the server asked for
/// a client certificate: under TLS 1.3 some servers (Python's `ssl`) refuse a missing or unknown
/// client certificate by just closing, without an alert. `None` if no certificate was requested.
pub fn closed_after_cert_request(
    identity: &TlsIdentity,
    obs: &TlsObservations,
) -> Option<(TlsCause, String)> {
    if !obs.client_cert_requested.load(Ordering::Relaxed) {
        return None;
    }
    Some(if obs.has_client_cert {
        (
            TlsCause::ClientCertRejected,
            format!(
                "the upstream asked for a client certificate and closed the connection after receiving {} (it does not accept it)",
                identity.client_subject().unwrap_or_else(|| "it".into())
            ),
        )
    } else {
        (TlsCause::MissingClientCert, MISSING_CLIENT_CERT.into())
    })
}

/// The diagnosis of a server that wants a client certificate when none is configured.
pub const MISSING_CLIENT_CERT: &str = "the upstream requires a client certificate and none is configured (give client_cert and client_key)";

/// The chain of an error and its sources.
pub fn chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = vec![err];
    let mut current = err;
    while let Some(next) = current.source() {
        out.push(next);
        current = next;
    }
    out
}

/// The rustls error somewhere in `err`'s chain (directly or inside an `io::Error`).
pub fn find_rustls<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    chain(err).into_iter().find_map(rustls_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_lose_their_debug_wrapping() {
        assert_eq!(presented_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(presented_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(presented_name("localhost"), "localhost");
    }
}
