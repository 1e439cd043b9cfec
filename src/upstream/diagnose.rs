//! Turn a failed upstream request into one sentence a user can act on.

use std::error::Error as StdError;
use std::sync::atomic::Ordering;

use rustls::{AlertDescription, CertificateError};

use super::clients::UpstreamClient;

/// The plain diagnosis of why a request to `client`'s upstream failed.
pub fn diagnose(err: &reqwest::Error, client: &UpstreamClient) -> String {
    let obs = &client.observations;
    let requested = obs.client_cert_requested.load(Ordering::Relaxed);
    let host = client.url.host_str().unwrap_or("?").to_owned();
    let port = client.url.port_or_known_default().unwrap_or(0);

    for cause in chain(err) {
        if let Some(tls) = rustls_error(cause) {
            return describe_tls(tls, client, requested);
        }
    }
    if err.is_timeout() {
        return format!("timed out waiting for {host}:{port}");
    }
    let text = chain(err)
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    let lower = text.to_lowercase();
    if requested && !obs.has_client_cert {
        return "the upstream requires a client certificate and none is configured (give client_cert and client_key)".into();
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

fn chain<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = vec![err];
    let mut current = err;
    while let Some(next) = current.source() {
        out.push(next);
        current = next;
    }
    out
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

fn describe_tls(err: &rustls::Error, client: &UpstreamClient, requested: bool) -> String {
    let has_cert = client.observations.has_client_cert;
    let trust = client
        .identity
        .ca_source
        .clone()
        .unwrap_or_else(|| "the system trust store".into());
    match err {
        rustls::Error::InvalidCertificate(cert_err) => match cert_err {
            CertificateError::NotValidForNameContext { expected, presented } => {
                let expected = expected.to_str();
                // rustls renders names as `DnsName("localhost")` / `IpAddress(..)`: keep the name.
                let names: Vec<String> = presented.iter().map(|p| plain_name(p)).collect();
                let dns = names
                    .iter()
                    .find(|p| p.parse::<std::net::IpAddr>().is_err())
                    .cloned()
                    .unwrap_or_else(|| names.first().cloned().unwrap_or_default());
                format!(
                    "certificate for `{}` does not cover `{expected}` (use --server-name {dns})",
                    names.join("`, `")
                )
            }
            CertificateError::NotValidForName => {
                "the upstream's certificate does not cover the host in the URL (use --server-name NAME)".into()
            }
            CertificateError::UnknownIssuer => {
                format!("unknown CA: the upstream's certificate was not issued by a CA in {trust}")
            }
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
                "the upstream requires a client certificate and none is configured (give client_cert and client_key)".into()
            }
            AlertDescription::HandshakeFailure if requested && !has_cert => {
                "the upstream requires a client certificate and none is configured (give client_cert and client_key)".into()
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
                    client.identity.client_subject().unwrap_or_default()
                )
            }
            other => format!("the upstream aborted the TLS handshake (alert: {other:?})"),
        },
        other => format!("TLS error: {other}"),
    }
}

fn plain_name(presented: &str) -> String {
    match (presented.find('"'), presented.rfind('"')) {
        (Some(a), Some(b)) if b > a => presented[a + 1..b].to_owned(),
        _ => presented.to_owned(),
    }
}
