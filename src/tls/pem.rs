//! Reading certificates and keys from PEM, with errors that say which file and what was wrong
//! without ever echoing the file's contents (it may be a key, or something that is not PEM at all).

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::{FileError, Links};

/// Why a PEM input could not be used. `source` names a file path or an inline field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// The file could not be read, or is not a regular file of a sensible size.
    #[error(transparent)]
    File(#[from] FileError),
    /// The input has no bytes at all.
    #[error("{source_name} is empty")]
    Empty {
        /// The file or field.
        source_name: String,
    },
    /// The input is not PEM, or a PEM section is broken.
    #[error("{source_name} is not valid PEM ({detail})")]
    Malformed {
        /// The file or field.
        source_name: String,
        /// What was wrong, without the offending bytes.
        detail: &'static str,
    },
    /// PEM, but no CERTIFICATE section.
    #[error(
        "{source_name} contains no certificate (expected a '-----BEGIN CERTIFICATE-----' section)"
    )]
    NoCertificate {
        /// The file or field.
        source_name: String,
    },
    /// PEM, but no private key section.
    #[error(
        "{source_name} contains no private key (expected a 'PRIVATE KEY', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY' section)"
    )]
    NoKey {
        /// The file or field.
        source_name: String,
    },
}

/// Read one of the operator's own files (its configured paths, which may be symbolic links)
/// for PEM parsing: a regular file, at most [`crate::files::MAX_PEM_BYTES`].
pub fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    Ok(crate::files::read_pem_file(path, Links::Follow)?)
}

/// All certificates in a PEM input, in order.
pub fn certs(source_name: &str, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let mut out = Vec::new();
    for item in sections(source_name, bytes)? {
        if item.0 == SectionKind::Certificate {
            out.push(CertificateDer::from(item.1));
        }
    }
    if out.is_empty() {
        return Err(PemError::NoCertificate {
            source_name: source_name.to_owned(),
        });
    }
    Ok(out)
}

/// The first private key in a PEM input (PKCS#8, PKCS#1 or SEC1).
pub fn key(source_name: &str, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    for (kind, der) in sections(source_name, bytes)? {
        if let Some(key) = PrivateKeyDer::from_pem(kind, der) {
            return Ok(key);
        }
    }
    Err(PemError::NoKey {
        source_name: source_name.to_owned(),
    })
}

/// Certificates from a file.
pub fn certs_from_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    certs(&path.display().to_string(), &read(path)?)
}

/// Private key from a file.
pub fn key_from_file(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    key(&path.display().to_string(), &read(path)?)
}

fn sections(source_name: &str, bytes: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, PemError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(PemError::Empty {
            source_name: source_name.to_owned(),
        });
    }
    let mut out = Vec::new();
    let mut reader = std::io::Cursor::new(bytes);
    loop {
        match pem::from_buf(&mut reader) {
            Ok(Some(section)) => out.push(section),
            Ok(None) => break,
            Err(err) => {
                return Err(PemError::Malformed {
                    source_name: source_name.to_owned(),
                    detail: describe(&err),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(PemError::Malformed {
            source_name: source_name.to_owned(),
            detail: "no '-----BEGIN' section found",
        });
    }
    Ok(out)
}

/// The PEM errors carry the offending line; describe them without it so no secret leaks.
fn describe(err: &pem::Error) -> &'static str {
    match err {
        pem::Error::MissingSectionEnd { .. } => "a section has no matching '-----END' line",
        pem::Error::IllegalSectionStart { .. } => "a '-----BEGIN' line is malformed",
        pem::Error::Base64Decode(_) => "a section's base64 body does not decode",
        pem::Error::Io(_) => "read error",
        _ => "unrecognised PEM structure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_is_named_empty() {
        let err = certs("x.pem", b"  \n").unwrap_err();
        assert!(matches!(err, PemError::Empty { .. }), "{err}");
    }

    #[test]
    fn garbage_is_malformed_and_not_echoed() {
        let err = certs("x.pem", b"root:$6$secrethash:19000:0:99999:7:::\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.pem is not valid PEM"), "{msg}");
        assert!(!msg.contains("secrethash"), "{msg}");
    }

    #[test]
    fn truncated_section_is_reported() {
        let err = certs("x.pem", b"-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap_err();
        assert!(err.to_string().contains("no matching '-----END'"), "{err}");
    }

    #[test]
    fn key_file_without_key_says_so() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = key("k.pem", pem).unwrap_err();
        assert!(matches!(err, PemError::NoKey { .. }), "{err}");
    }
}
