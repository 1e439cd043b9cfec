//! The headers a registration adds to every request to its upstream (`--header`, `--bearer`):
//! checked once, here, when the registration is made and whenever a connection is opened with
//! it, on every transport.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::store::UpstreamAuth;

/// Why an upstream's configured headers cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum AuthHeaderError {
    /// A configured header name is not a valid field name.
    #[error("invalid header name '{name}'")]
    Name {
        /// The name as configured.
        name: String,
    },
    /// A configured header value holds a byte a field value cannot.
    #[error("invalid value for header '{name}' (control characters are not allowed)")]
    Value {
        /// The header's name (never its value, which may be a secret).
        name: String,
    },
    /// The bearer token holds a byte a field value cannot.
    #[error("invalid bearer token (control characters are not allowed)")]
    Bearer,
    /// A header the gateway owns, or one that belongs to a single hop.
    #[error("header '{name}' cannot be set for an upstream: {why}")]
    Reserved {
        /// The header's name, as configured.
        name: String,
        /// Whose it is.
        why: &'static str,
    },
    /// An `Authorization` header beside a bearer token.
    #[error(
        "header '{name}' and a bearer token both set the upstream's Authorization: give one of them"
    )]
    TwoAuthorizations {
        /// The header's name, as configured.
        name: String,
    },
}

/// Headers a registration may not set, and why: the gateway writes them itself (the
/// message's framing, the MCP session and protocol version, the 2026-07-28 routing headers),
/// or they belong to one hop and would change how the connection itself behaves.
const RESERVED: &[(&str, &str)] = &[
    ("host", "the gateway writes it from the upstream URL"),
    ("content-length", "the gateway frames every message itself"),
    (
        "transfer-encoding",
        "the gateway frames every message itself",
    ),
    ("content-type", "the gateway writes it for every message"),
    ("accept", "the gateway writes it for every message"),
    ("user-agent", "the gateway writes it for every message"),
    ("expect", "the gateway frames every message itself"),
    ("connection", "a hop-by-hop header, the gateway's own"),
    ("keep-alive", "a hop-by-hop header, the gateway's own"),
    ("proxy-connection", "a hop-by-hop header, the gateway's own"),
    (
        "proxy-authorization",
        "a hop-by-hop header, the gateway's own",
    ),
    ("te", "a hop-by-hop header, the gateway's own"),
    ("trailer", "a hop-by-hop header, the gateway's own"),
    ("upgrade", "a hop-by-hop header, the gateway's own"),
    (
        "mcp-session-id",
        "the gateway manages the upstream's MCP session",
    ),
    (
        "mcp-protocol-version",
        "the gateway negotiates the protocol version",
    ),
    (
        "mcp-method",
        "the gateway writes it for every 2026-07-28 message",
    ),
    (
        "mcp-name",
        "the gateway writes it for every 2026-07-28 message",
    ),
    ("last-event-id", "the gateway resumes event streams itself"),
];

/// Static request headers: upstream auth and extra headers. The one check of a registration's
/// headers, made when it is registered and again whenever a connection is opened with it (every
/// transport opens its connections here), so a stored registration is held to it too.
pub fn auth_headers(auth: &UpstreamAuth) -> Result<HeaderMap, AuthHeaderError> {
    let mut headers = HeaderMap::new();
    for (name, value) in &auth.headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| AuthHeaderError::Name { name: name.clone() })?;
        if let Some((_, why)) = RESERVED.iter().find(|(r, _)| n == *r) {
            return Err(AuthHeaderError::Reserved {
                name: name.clone(),
                why,
            });
        }
        if n == http::header::AUTHORIZATION && auth.bearer.is_some() {
            return Err(AuthHeaderError::TwoAuthorizations { name: name.clone() });
        }
        let mut v = HeaderValue::from_bytes(value.as_bytes())
            .map_err(|_| AuthHeaderError::Value { name: name.clone() })?;
        // Registrants' headers often carry keys: kept out of any debug output.
        v.set_sensitive(true);
        headers.append(n, v);
    }
    if let Some(token) = &auth.bearer {
        let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| AuthHeaderError::Bearer)?;
        v.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, v);
    }
    Ok(headers)
}
