//! Bytes as a PEM file, through `tls::pem::certs` and `tls::pem::key`, and every certificate
//! that comes out through `tls::x509::parse` and `info_of` (subject, SANs, validity).
//!
//! Properties: nothing panics; error messages are built from the source name and fixed text
//! only, so they stay short whatever the input (a secret file is never echoed).

use mcpgw::tls::{pem, x509};

/// One input.
pub fn run(data: &[u8]) {
    let name = "fuzz.pem";
    match pem::certs(name, data) {
        Ok(certs) => {
            for der in &certs {
                if let Ok(cert) = x509::parse(name, der) {
                    let _ = x509::info_of(&cert, der);
                    let _ = x509::common_name(&cert);
                }
            }
        }
        Err(err) => short(&err.to_string()),
    }
    if let Err(err) = pem::key(name, data) {
        short(&err.to_string());
    }
}

fn short(msg: &str) {
    assert!(
        msg.len() < 200,
        "error message grew with the input: {} bytes",
        msg.len()
    );
}
