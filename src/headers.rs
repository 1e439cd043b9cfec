//! The HTTP header names of MCP's transports, made once.
//!
//! A header map looked up by `&str` parses the name (checks and lower-cases every byte) on every
//! lookup; looked up by a `HeaderName` it only hashes. These are on every forwarded call.

use http::HeaderName;

/// `Mcp-Session-Id`.
pub static SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// `MCP-Protocol-Version`.
pub static PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Mcp-Method` (2026-07-28).
pub static METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// `Mcp-Name` (2026-07-28).
pub static NAME: HeaderName = HeaderName::from_static("mcp-name");
/// `Last-Event-ID`.
pub static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
