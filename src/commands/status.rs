//! `mcpgw status`: what the running gateway serves.

use std::io::Write;

use crate::config::{self, GlobalPaths};
use crate::control::client::ControlClient;
use crate::http::admin::Status;

/// Ask the gateway for its status and print it.
pub async fn run(globals: &GlobalPaths, json: bool) -> anyhow::Result<()> {
    let client = ControlClient::new(config::client_socket(globals));
    let value = client.get("/admin/status").await?;
    if json {
        return super::print_json(&value);
    }
    let status: Status = serde_json::from_value(value)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "mcpgw {} (pid {}), up {}s",
        status.version, status.pid, status.uptime_s
    )?;
    writeln!(out, "listening on {}://{}", status.scheme, status.listen)?;
    writeln!(out, "control socket {}", status.control_socket)?;
    if let Some(cert) = status.certificate {
        writeln!(out, "certificate sha256 {}", cert.sha256)?;
        writeln!(out, "  subject   {}", cert.subject)?;
        writeln!(out, "  issuer    {}", cert.issuer)?;
        writeln!(out, "  sans      {}", cert.sans.join(", "))?;
        writeln!(out, "  not after {}", cert.not_after)?;
    }
    if let Some(r) = status.reloads {
        writeln!(
            out,
            "certificate reloads: {} ok, {} refused",
            r.ok, r.failed
        )?;
    }
    Ok(())
}
