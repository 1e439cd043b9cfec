//! HTTP/1.1, both ways, in one module.
//!
//! - [`fields`]: the wire format's header fields ([`fields::Fields`], read through
//!   [`fields::Lookup`]) and MCP's header names, made once.
//! - [`server`]: the listener's loop for its hot route, `POST /mcp`; anything else it hands to
//!   hyper.
//! - [`client`]: requests upstream, on pooled connections, for both upstream transports
//!   (Streamable HTTP and the legacy HTTP+SSE), with the upstream wait.

pub mod client;
pub mod fields;
pub mod server;
