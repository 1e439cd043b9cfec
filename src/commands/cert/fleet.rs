//! `mcpgw cert rotate --all` on a shared store: the gateway the control socket reaches checks
//! the pair and publishes it ([`crate::reload::fleet`]); this prints each instance's outcome
//! and fails unless every instance alive at publication installed it.

use std::io::Write;

use anyhow::bail;
use serde_json::json;

use super::verify_handshake;
use crate::cli::CertRotateArgs;
use crate::control::client::ControlClient;
use crate::http::admin::Status;
use crate::reload::fleet::FleetReport;

/// Publish `body` (the pair, as for `POST /admin/cert/install`) for every instance and report.
pub(super) async fn rotate_all(
    client: &ControlClient,
    status: &Status,
    mut body: serde_json::Value,
    args: &CertRotateArgs,
    json: bool,
) -> anyhow::Result<()> {
    body["wait_s"] = json!(args.wait);
    let report: FleetReport =
        serde_json::from_value(client.post("/admin/cert/rotate-all", Some(&body)).await?)?;
    let fingerprint = &report.certificate.sha256;
    let missing: Vec<&String> = report
        .asked
        .iter()
        .filter(|id| !report.outcomes.iter().any(|o| &o.instance == *id))
        .collect();
    let installed_here = report
        .outcomes
        .iter()
        .any(|o| o.instance == report.publisher && o.ok);
    // The instance we reach is proven by a handshake, as a local rotate is; the others report
    // what they serve (their listeners may not be reachable from here).
    let verified = if args.no_verify_handshake || !installed_here {
        None
    } else {
        Some(verify_handshake(&status.listen, &report.certificate).await?)
    };
    if json {
        super::super::print_json(&json!({
            "rotation": report.rotation, "new": report.certificate,
            "instances": report.outcomes, "no_answer": missing,
            "verified_handshake": verified.map(|a| a.to_string()),
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "rotation {}: {fingerprint} (subject {}; not after {}) checked here, published to {} live instance(s)",
            report.rotation,
            report.certificate.subject,
            report.certificate.not_after,
            report.asked.len()
        )?;
        for o in &report.outcomes {
            let here = if o.instance == report.publisher {
                ", this instance"
            } else {
                ""
            };
            let served = o.served.as_deref().unwrap_or("nothing (plain HTTP)");
            match (&o.error, o.ok) {
                (_, true) => writeln!(
                    out,
                    "instance {} ({}{here}): installed, serving {served}",
                    o.instance, o.listen
                )?,
                (error, false) => writeln!(
                    out,
                    "instance {} ({}{here}): refused, still serving {served}: {}",
                    o.instance,
                    o.listen,
                    error.as_deref().unwrap_or("no reason given")
                )?,
            }
        }
        for id in &missing {
            writeln!(
                out,
                "instance {id}: no answer within {:.1} s (it keeps what it served)",
                report.wait_ms as f64 / 1000.0
            )?;
        }
        if let Some(addr) = verified {
            writeln!(
                out,
                "verified: a new handshake to {addr} presents {fingerprint}"
            )?;
        }
    }
    let refused = report.outcomes.iter().filter(|o| !o.ok).count();
    if refused > 0 || !missing.is_empty() {
        bail!(
            "rotation {} is not served everywhere: {refused} instance(s) refused it, {} did not answer",
            report.rotation,
            missing.len()
        );
    }
    Ok(())
}
