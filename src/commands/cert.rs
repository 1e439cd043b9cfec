//! `mcpgw cert gen` and `mcpgw cert rotate` (`--all`: [`fleet`]).

mod fleet;

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

use crate::cli::{CertGenArgs, CertRotateArgs};
use crate::config::{self, GlobalPaths};
use crate::control::client::ControlClient;
use crate::http::admin::Status;
use crate::reload::ReloadReport;
use crate::tls::serving::SwapReport;
use crate::tls::{peek, pem, pki, x509};
use crate::upstream::registry::IdentityReport;

const FILES: [&str; 6] = [
    "ca.crt",
    "ca.key",
    "server.crt",
    "server.key",
    "client.crt",
    "client.key",
];

/// `cert gen`: write a CA, a server and a client certificate.
pub fn gen_pki(args: &CertGenArgs, json: bool) -> anyhow::Result<()> {
    let existing: Vec<PathBuf> = FILES
        .iter()
        .map(|f| args.out.join(f))
        .filter(|p| p.exists())
        .collect();
    if !existing.is_empty() && !args.force {
        let names: Vec<String> = existing.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "refusing to overwrite {} (use --force to replace them)",
            names.join(", ")
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;

    let spec = pki::PkiSpec {
        server_cn: args.cn.clone(),
        client_cn: args.client_cn.clone(),
        extra_sans: args.sans.clone(),
        days: args.days,
        key_type: args.key_type,
    };
    // Validate SANs before spending seconds on RSA keys.
    pki::san_list(&args.sans)?;
    let spinner = pki::is_slow(args.key_type).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("generating {:?} keys", args.key_type).to_lowercase());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let set = pki::generate(&spec);
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let set = set?;

    let outputs = [
        ("ca.crt", &set.ca.cert_pem, false),
        ("ca.key", &set.ca.key_pem, true),
        ("server.crt", &set.server.cert_pem, false),
        ("server.key", &set.server.key_pem, true),
        ("client.crt", &set.client.cert_pem, false),
        ("client.key", &set.client.key_pem, true),
    ];
    for (name, contents, secret) in outputs {
        write_file(
            &args.out.join(name),
            contents.as_bytes(),
            if secret { 0o600 } else { 0o644 },
        )?;
    }

    let describe = |name: &str, pem_text: &str| -> anyhow::Result<x509::CertInfo> {
        let certs = pem::certs(name, pem_text.as_bytes())?;
        Ok(x509::info(name, &certs[0])?)
    };
    let ca = describe("ca.crt", &set.ca.cert_pem)?;
    let server = describe("server.crt", &set.server.cert_pem)?;
    let client = describe("client.crt", &set.client.cert_pem)?;
    if json {
        return super::print_json(&json!({
            "dir": args.out.display().to_string(),
            "ca": ca, "server": server, "client": client,
        }));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "wrote {} (keys 0600)",
        FILES
            .map(|f| args.out.join(f).display().to_string())
            .join(", ")
    )?;
    writeln!(out, "ca      {}  {}", ca.sha256, ca.subject)?;
    writeln!(
        out,
        "server  {}  {}  SANs: {}",
        server.sha256,
        server.subject,
        server.sans.join(", ")
    )?;
    writeln!(out, "client  {}  {}", client.sha256, client.subject)?;
    Ok(())
}

/// Write a file with `mode`, replacing any existing one (the caller checked `--force`).
fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    // Never written through a link at the name.
    let mut file = crate::files::own_file(mode)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its old mode through open(); set it explicitly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `cert rotate`: install (or mint, or re-read) a serving certificate in the running gateway,
/// then prove with a real handshake that it is served. Every form is one reload in the gateway,
/// which also re-reads each upstream's TLS identity; on a plain-HTTP gateway only the re-read
/// form is possible, and that is all it does.
pub async fn rotate(
    args: &CertRotateArgs,
    globals: &GlobalPaths,
    json: bool,
) -> anyhow::Result<()> {
    let client = ControlClient::new(config::client_socket(globals));
    let status: Status = serde_json::from_value(client.get("/admin/status").await?)?;
    let body = match status.certificate.as_ref() {
        Some(current) => install_body(args, current)?,
        None if args.issue || args.cert.is_some() => bail!(
            "the gateway serves plain HTTP (no --tls-cert/--tls-key); there is no certificate to rotate"
        ),
        None => None,
    };
    if args.all {
        let Some(body) = body else {
            bail!("--all installs a new pair on every instance: give --cert and --key, or --issue")
        };
        if status.shared_store {
            return fleet::rotate_all(&client, &status, body, args, json).await;
        }
        let note = "--all: the store is SQLite, which this one instance has to itself; this is the local rotate";
        if json {
            eprintln!("{note}");
        } else {
            writeln!(std::io::stdout().lock(), "{note}")?;
        }
        return rotate_here(&client, &status, Some(body), args, json).await;
    }
    rotate_here(&client, &status, body, args, json).await
}

/// The rotate of the gateway the control socket reaches: install `body` (or re-read the files
/// when `None`), then prove the swap with a handshake.
async fn rotate_here(
    client: &ControlClient,
    status: &Status,
    body: Option<serde_json::Value>,
    args: &CertRotateArgs,
    json: bool,
) -> anyhow::Result<()> {
    let answer = match body {
        Some(body) => client.post("/admin/cert/install", Some(&body)).await?,
        None => client.post("/admin/cert/reload", None).await?,
    };
    let report: ReloadReport = serde_json::from_value(answer)?;
    let Some(swap) = report.certificate.as_ref() else {
        if json {
            return super::print_json(&json!({"certificate": null, "upstreams": report.upstreams}));
        }
        writeln!(
            std::io::stdout().lock(),
            "plain HTTP: no serving certificate to rotate; {} upstream TLS identities re-read",
            report.upstreams.checked
        )?;
        return print_upstreams(&report.upstreams);
    };
    let verified = if args.no_verify_handshake {
        None
    } else {
        Some(verify_handshake(&status.listen, &swap.new).await?)
    };
    if json {
        return super::print_json(&json!({
            "old": swap.old, "new": swap.new,
            "prepare_us": swap.prepare_us, "swap_us": swap.swap_us,
            "verified_handshake": verified.map(|a| a.to_string()),
            "upstreams": report.upstreams,
        }));
    }
    print_rotation(swap, verified)?;
    print_upstreams(&report.upstreams)
}

/// The `POST /admin/cert/install` body for `--cert/--key` or `--issue`; `None` means re-read
/// the served files.
fn install_body(
    args: &CertRotateArgs,
    current: &x509::CertInfo,
) -> anyhow::Result<Option<serde_json::Value>> {
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        return Ok(Some(json!({
            "cert_pem": read_text(cert)?, "key_pem": read_text(key)?,
            "cert_source": cert.display().to_string(), "key_source": key.display().to_string(),
        })));
    }
    if !args.issue {
        return Ok(None);
    }
    let (ca_cert, ca_key) = (
        args.ca_cert.as_deref().context("--issue needs --ca-cert")?,
        args.ca_key.as_deref().context("--issue needs --ca-key")?,
    );
    let issuer = pki::load_issuer(
        &ca_cert.display().to_string(),
        &pem::read(ca_cert)?,
        &ca_key.display().to_string(),
        &pem::read(ca_key)?,
    )?;
    // The new certificate names what the current one names, unless told otherwise.
    let sans = if args.sans.is_empty() {
        current.sans.clone()
    } else {
        args.sans.clone()
    };
    let cn = common_name(&current.subject).unwrap_or_else(|| "localhost".to_owned());
    let minted = pki::issue_server(&issuer, &cn, &sans, args.days, args.key_type)?;
    Ok(Some(json!({
        "cert_pem": minted.cert_pem, "key_pem": minted.key_pem,
        "cert_source": "the certificate minted by --issue", "key_source": "the key minted by --issue",
    })))
}

/// Open a new TLS connection to the listener and require that it presents the new certificate.
async fn verify_handshake(listen: &str, new: &x509::CertInfo) -> anyhow::Result<SocketAddr> {
    let addr = dial_address(listen)?;
    let name = new
        .sans
        .iter()
        .find(|s| s.parse::<std::net::IpAddr>().is_err())
        .cloned()
        .or_else(|| common_name(&new.subject))
        .unwrap_or_else(|| "localhost".to_owned());
    let der = peek::presented_certificate(addr, &name, Duration::from_secs(10))
        .await
        .with_context(|| format!("rotated, but could not confirm with a handshake to {addr}"))?;
    let seen = x509::fingerprint(&der);
    if seen != new.sha256 {
        bail!(
            "the gateway reported {} as installed, but a new handshake to {addr} presented {seen}",
            new.sha256
        );
    }
    Ok(addr)
}

fn print_rotation(swap: &SwapReport, verified: Option<SocketAddr>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "rotated: {} -> {}", swap.old.sha256, swap.new.sha256)?;
    writeln!(
        out,
        "  subject {}; not after {}",
        swap.new.subject, swap.new.not_after
    )?;
    writeln!(
        out,
        "  validated in {} µs, swapped in {} µs",
        swap.prepare_us, swap.swap_us
    )?;
    if let Some(addr) = verified {
        writeln!(
            out,
            "verified: a new handshake to {addr} presents {}",
            swap.new.sha256
        )?;
    }
    Ok(())
}

/// What the reload did to each upstream whose identity changed or became unusable.
fn print_upstreams(upstreams: &IdentityReport) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for name in &upstreams.changed {
        writeln!(
            out,
            "upstream {name}: new TLS identity, reconnects on its next request"
        )?;
    }
    for unusable in &upstreams.unusable {
        writeln!(
            out,
            "upstream {}: TLS files unusable, current connection kept ({})",
            unusable.upstream, unusable.reason
        )?;
    }
    Ok(())
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = pem::read(path)?;
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not PEM text (it is not UTF-8)", path.display()))
}

/// The CN out of an x509-parser subject string such as `CN=localhost, O=x`.
fn common_name(subject: &str) -> Option<String> {
    subject
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("CN="))
        .map(str::to_owned)
}

/// Where to dial the listener: a wildcard bind is reached on loopback.
fn dial_address(listen: &str) -> anyhow::Result<SocketAddr> {
    let mut addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("the gateway reported an unusable listen address {listen:?}"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(addr)
}
