//! Upstream MCP servers: TLS identity, clients, transports, sessions, health, catalog.
//!
//! Every byte mcpgw sends to an HTTP upstream goes through
//! [`clients::ClientCache::client_for`], which carries the upstream's full TLS identity. That
//! single path is the structural fix for NET-01. A stdio upstream is a local program the
//! gateway starts ([`stdio`]): no network, no TLS, no client.

pub mod answer;
pub mod bounded;
pub mod clients;
pub mod connection;
pub mod deadline;
pub mod diagnose;
pub mod headers;
pub mod identity;
pub mod message;
pub mod param_headers;
pub mod pending;
pub mod raw;
pub mod registry;
pub mod scan;
pub mod sse;
pub mod stdio;
pub mod streamable;
pub mod tls;

/// Why a request to an upstream failed (as opposed to the upstream answering with an error).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// Could not get a client or connect; the diagnosis is user-facing.
    #[error("{diagnosis}")]
    Connect {
        /// One sentence on what is wrong.
        diagnosis: String,
    },
    /// The upstream answered HTTP with an unexpected status. The message says the status (and
    /// for a redirect where it pointed); what the body said is kept apart, for `probe` only:
    /// an upstream's error page may carry what is not the API caller's to see.
    #[error("the upstream answered HTTP {status}{detail}")]
    Status {
        /// HTTP status.
        status: u16,
        /// An explanation of ours (a redirect not followed), or empty.
        detail: String,
        /// A short excerpt of the body, for the admin's `probe`.
        excerpt: String,
    },
    /// The upstream's answer is not MCP.
    #[error("not an MCP endpoint: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// No answer in time.
    #[error("the upstream did not answer within {secs} s")]
    Timeout {
        /// The timeout.
        secs: u64,
    },
    /// The upstream forgot our session (HTTP 404 with a session id).
    #[error("the upstream ended the session")]
    SessionExpired,
    /// The SSE stream that carries answers had closed before the request was sent: the
    /// request never left, and may go on a new connection.
    #[error("the upstream closed its event stream")]
    Closed,
    /// The connection (or the event stream) carrying a request closed after the request had
    /// reached the upstream, before its answer came: the upstream may have acted on it (a
    /// `tools/call` that crashed it half-way), so it is not sent again.
    #[error(
        "the upstream closed the connection during the call ({how}); it may have run, so it is not sent again"
    )]
    ClosedDuringCall {
        /// When or how it closed (`before answering`, `its event stream ended before the
        /// answer`, a reset).
        how: String,
    },
    /// A stdio upstream's process ended while a call (or the handshake) waited for it.
    #[error("the stdio upstream's process exited ({status}) {when}{detail}")]
    Exited {
        /// How it ended: `status 1`, `signal 9`.
        status: String,
        /// When, and what follows for the call.
        when: String,
        /// Its last stderr lines, when the message goes to the operator; else empty.
        detail: String,
    },
}
