//! TLS: reading PEM, inspecting certificates, the serving certificate that reloads in place,
//! and minting test certificates.
//!
//! Crypto is ring everywhere (DESIGN.md); [`provider`] is the one place that names it.

pub mod peek;
pub mod pem;
pub mod pki;
pub mod serving;
pub mod x509;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider used by every TLS config mcpgw builds.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
