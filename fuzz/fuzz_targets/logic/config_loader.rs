//! Bytes as `mcpgw.toml`, through `config::parse_file` (TOML, unknown keys refused, relative
//! paths resolved against the file's directory).
//!
//! Properties: nothing panics; every error message names the file; a parsed file's relative
//! paths are no longer relative.

use std::path::Path;

/// One input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/mcpgw/mcpgw.toml");
    match mcpgw::config::parse_file(path, text) {
        Ok(file) => {
            for p in [
                &file.data_dir,
                &file.control_socket,
                &file.tls.cert,
                &file.tls.key,
                &file.tls.ca,
                &file.tls.client_ca,
            ]
            .into_iter()
            .flatten()
            {
                assert!(!p.is_relative(), "relative path left unresolved");
            }
        }
        Err(err) => {
            let msg = err.to_string();
            assert!(
                msg.contains("/etc/mcpgw/mcpgw.toml"),
                "error without the file: {msg}"
            );
        }
    }
}
