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
    /// As logs name it: the transport, then its own id.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Streamable(id) => write!(f, "mcp:{id}"),
            Self::Sse(id) => write!(f, "sse:{id}"),
            Self::Ws(n) => write!(f, "ws:{n}"),
            Self::Listen(n) => write!(f, "listen:{n}"),
        }
    }
}
