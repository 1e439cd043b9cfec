//! The control socket: the admin HTTP API on a Unix socket that only its owner can use.
//!
//! Guarded three ways: it lives in the data directory (0700), the socket file is 0600, and each
//! connection's peer uid must be the server's own (or root). A lock file keeps a second gateway
//! from removing the socket of a running one.

pub mod client;
pub mod server;
