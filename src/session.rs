//! The key of a downstream session in the tables that outlive one request: requests in flight
//! (so that a client's `notifications/cancelled` finds its request), resource subscriptions
//! kept per upstream (so that updates reach the session), and listen streams. Which
//! transport's table holds the session is the variant, so a key is never taken apart.

use std::fmt;
use std::sync::Arc;

/// A downstream session, on whichever transport it lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionKey {
    /// A Streamable-HTTP session, by its `Mcp-Session-Id`.
    Streamable(Arc<str>),
    /// A legacy HTTP+SSE connection, by its `session_id`.
    Sse(Arc<str>),
    /// A WebSocket connection, by its number.
    Ws(u64),
    /// A 2026-07-28 `subscriptions/listen` stream, by its number.
    Listen(u64),
}

impl fmt::Display for SessionKey {
    /// As logs name it: the transport, then its own number or, for a session id (a bearer
    /// secret: whoever has it may use the session), a fingerprint of it ([`fingerprint`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Streamable(id) => write!(f, "mcp:{}", fingerprint(id)),
            Self::Sse(id) => write!(f, "sse:{}", fingerprint(id)),
            Self::Ws(n) => write!(f, "ws:{n}"),
            Self::Listen(n) => write!(f, "listen:{n}"),
        }
    }
}

/// How logs name a session id: the first 12 hex digits of its SHA-256. Lines about one session
/// can be told apart and followed; the id itself, which lets whoever holds it use the session,
/// is never written.
pub fn fingerprint(id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    hex::encode(&digest.as_ref()[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_never_name_a_session_id() {
        let id = "3f1c2a9e-secret-session-id";
        for key in [
            SessionKey::Streamable(id.into()),
            SessionKey::Sse(id.into()),
        ] {
            let shown = key.to_string();
            assert!(!shown.contains(id), "{shown}");
            assert!(shown.ends_with(&fingerprint(id)), "{shown}");
        }
        assert_eq!(fingerprint(id), fingerprint(id));
        assert_ne!(fingerprint(id), fingerprint("another"));
        assert_eq!(SessionKey::Ws(7).to_string(), "ws:7");
    }
}
