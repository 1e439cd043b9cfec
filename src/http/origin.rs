//! DNS-rebinding protection on the listener: the `Host` and `Origin` headers must name this
//! gateway. MCP's transport spec requires servers to validate `Origin`; a browser page on
//! another site must not be able to drive a gateway on loopback.
//!
//! Rules: on a loopback listener, `Host` must be a loopback name (`localhost`, `127.0.0.1`,
//! `[::1]`, any port) unless listed in `allowed_hosts`; on another address any `Host` is
//! accepted unless `allowed_hosts` is set. An `Origin`, when present, must be `null`-free and
//! have a host that passes the same `Host` rule, or be listed in `allowed_origins`. Requests
//! without `Origin` (every non-browser client) pass the Origin rule.

use axum::http::{StatusCode, header};

use crate::h1::fields::{Lookup, is_visible, visible};
use axum::response::{IntoResponse, Response};

/// Which hosts and origins are accepted.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Whether the listener is on a loopback address.
    pub loopback: bool,
    /// Extra host names (without port) accepted in `Host` and `Origin`.
    pub allowed_hosts: Vec<String>,
    /// Exact origins accepted (`https://app.example.com`).
    pub allowed_origins: Vec<String>,
}

// Host names are compared as bytes, without regard to ASCII case: this runs on every request,
// and a `Host` that passes needs no conversion to text.

fn is_loopback_name(host: &[u8]) -> bool {
    const SUFFIX: &[u8] = b".localhost";
    ["localhost", "127.0.0.1", "[::1]", "::1"]
        .iter()
        .any(|name| host.eq_ignore_ascii_case(name.as_bytes()))
        || (host.len() >= SUFFIX.len()
            && host[host.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX))
}

/// The host part of `host[:port]` (IPv6 in brackets kept).
fn host_only(authority: &[u8]) -> &[u8] {
    if authority.first() == Some(&b'[') {
        return memchr::memchr(b']', authority).map_or(authority, |end| &authority[..=end]);
    }
    memchr::memrchr(b':', authority).map_or(authority, |at| &authority[..at])
}

impl OriginPolicy {
    fn host_ok(&self, host: &[u8]) -> bool {
        if self
            .allowed_hosts
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(host))
        {
            return true;
        }
        if self.loopback {
            is_loopback_name(host)
        } else {
            self.allowed_hosts.is_empty()
        }
    }

    /// `Ok` or the reason for a 403.
    pub fn check(&self, headers: &dyn Lookup) -> Result<(), String> {
        if let Some(host) = headers.value(&header::HOST) {
            if !is_visible(host) {
                return Err("the Host header is not text".into());
            }
            if !self.host_ok(host_only(host)) {
                let host = String::from_utf8_lossy(host);
                return Err(format!(
                    "Host '{host}' is not accepted by this gateway (DNS-rebinding protection; see allowed_hosts)"
                ));
            }
        }
        if let Some(origin) = headers.value(&header::ORIGIN) {
            let origin = visible(origin).ok_or("the Origin header is not text")?;
            if self.allowed_origins.iter().any(|o| o == origin) {
                return Ok(());
            }
            // `host_str` keeps an IPv6 literal's brackets, as `Host` carries them.
            let url = url::Url::parse(origin).ok();
            match url.as_ref().and_then(url::Url::host_str) {
                Some(h) if self.host_ok(h.as_bytes()) => {}
                _ => {
                    return Err(format!(
                        "Origin '{origin}' is not allowed (see allowed_origins)"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The 403 for a foreign `Host` or `Origin`; `None` lets the request through.
pub fn refusal(policy: &OriginPolicy, headers: &dyn Lookup) -> Option<Response> {
    policy.check(headers).err().map(|reason| {
        tracing::warn!(%reason, "request refused");
        (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({"error": {"code": "forbidden", "message": reason}})),
        )
            .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn loopback_listener_accepts_loopback_names_only() {
        let p = OriginPolicy {
            loopback: true,
            ..Default::default()
        };
        assert!(p.check(&headers(&[("host", "127.0.0.1:4444")])).is_ok());
        assert!(
            p.check(&headers(&[
                ("host", "localhost:4444"),
                ("origin", "http://localhost:3000")
            ]))
            .is_ok()
        );
        assert!(p.check(&headers(&[("host", "[::1]:4444")])).is_ok());
        // An IPv6 loopback origin, as a browser on http://[::1] sends it.
        for origin in ["http://[::1]:80", "http://[::1]", "https://[::1]:4444"] {
            assert!(
                p.check(&headers(&[("host", "[::1]:4444"), ("origin", origin)]))
                    .is_ok(),
                "{origin}"
            );
        }
        assert!(
            p.check(&headers(&[
                ("host", "[::1]:4444"),
                ("origin", "http://[::2]:80")
            ]))
            .is_err()
        );
        assert!(p.check(&headers(&[("host", "evil.example.com")])).is_err());
        // Names compare without regard to case; a port, or an IPv6 literal's brackets, aside.
        for host in ["LOCALHOST:1", "App.LocalHost", "[::1]", "127.0.0.1"] {
            assert!(p.check(&headers(&[("host", host)])).is_ok(), "{host}");
        }
        for host in [
            "localhost.evil.com",
            "xlocalhost",
            "[::2]:1",
            "[::1",
            "127.0.0.2:80",
        ] {
            let refused = p.check(&headers(&[("host", host)])).unwrap_err();
            assert!(
                refused.contains(host),
                "the reason names the Host: {refused}"
            );
        }
        assert!(
            p.check(&headers(&[
                ("host", "localhost"),
                ("origin", "http://evil.example.com")
            ]))
            .is_err()
        );
        assert!(
            p.check(&headers(&[("host", "localhost"), ("origin", "null")]))
                .is_err()
        );
    }

    #[test]
    fn allow_lists_extend_the_rules() {
        let p = OriginPolicy {
            loopback: false,
            allowed_hosts: vec!["gw.example.com".into()],
            allowed_origins: vec!["https://app.example.com".into()],
        };
        assert!(p.check(&headers(&[("host", "gw.example.com:443")])).is_ok());
        assert!(p.check(&headers(&[("host", "GW.Example.com")])).is_ok());
        assert!(p.check(&headers(&[("host", "other.example.com")])).is_err());
        assert!(
            p.check(&headers(&[
                ("host", "gw.example.com"),
                ("origin", "https://app.example.com")
            ]))
            .is_ok()
        );
        assert!(
            p.check(&headers(&[
                ("host", "gw.example.com"),
                ("origin", "https://evil.example.com")
            ]))
            .is_err()
        );
        let open = OriginPolicy {
            loopback: false,
            ..Default::default()
        };
        assert!(
            open.check(&headers(&[("host", "anything.example")]))
                .is_ok()
        );
    }
}
