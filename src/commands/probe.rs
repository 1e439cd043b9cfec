//! `mcpgw probe URL`: walk one upstream connection phase by phase (resolve, TCP, TLS, HTTP, MCP,
//! tools/list), time each, and stop at the first failure with one plain diagnosis and an exit
//! code naming its cause ([`Cause`]).
//!
//! The TLS phase uses tokio-rustls directly, but with the very client config the gateway builds
//! for the same identity ([`crate::upstream::tls::client_config`]), so verification and the
//! legacy CN-only rule are the gateway's. Under TLS 1.3 a server that refuses the client
//! certificate only says so (or just closes) after the client's handshake is done, so the TLS
//! phase is declared good only once an HTTP answer came back on that same connection. The MCP
//! phases then go through the gateway's own client ([`ClientCache::client_for`] and
//! [`Connection::open`]).
//!
//! The console's probe action runs the same phases through [`examine`], printing nothing and
//! answering the report `--json` prints.

mod endpoint;
mod report;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::cli::{ProbeArgs, UsageError};
use crate::store::{TlsSettings, Transport};
use crate::tls::x509;
use crate::upstream::UpstreamError;
use crate::upstream::clients::ClientCache;
use crate::upstream::connection::{Connection, Era};
use crate::upstream::diagnose::{self, TlsCause};
use crate::upstream::identity::{PathPolicy, TlsIdentity};
use crate::upstream::tls::{self, TlsObservations};
use endpoint::{Answer, ExchangeError, check_http, exchange, exchange_failure};
use report::{Phase, Report, ms};

/// Why a probe stopped. Each cause has its own exit code (shown in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Cause {
    /// (10) Nothing listens on the port.
    ConnectionRefused,
    /// (11) The host name does not resolve.
    Dns,
    /// (12) A phase did not finish within `--timeout`.
    Timeout,
    /// (13) Another network failure (unreachable, reset before TLS).
    Network,
    /// (20) The upstream asked for a client certificate and none is configured.
    MissingClientCert,
    /// (21) The upstream's certificate was not issued by a trusted CA.
    UnknownCa,
    /// (22) The upstream's certificate does not cover the name being verified.
    NameMismatch,
    /// (23) The upstream's certificate has expired (or is not valid yet).
    CertificateExpired,
    /// (24) The upstream refused the client certificate that was sent.
    ClientCertRejected,
    /// (25) Any other TLS failure.
    Tls,
    /// (30) The endpoint answers HTTP, but not as an MCP endpoint (status or content type).
    NotMcp,
    /// (31) The endpoint speaks MCP but initialize/discover or tools/list failed.
    Mcp,
}

impl Cause {
    /// The cause's stable name, as in the JSON report.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The process exit code for this cause.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::ConnectionRefused => 10,
            Self::Dns => 11,
            Self::Timeout => 12,
            Self::Network => 13,
            Self::MissingClientCert => 20,
            Self::UnknownCa => 21,
            Self::NameMismatch => 22,
            Self::CertificateExpired => 23,
            Self::ClientCertRejected => 24,
            Self::Tls => 25,
            Self::NotMcp => 30,
            Self::Mcp => 31,
        }
    }
}

impl From<TlsCause> for Cause {
    fn from(cause: TlsCause) -> Self {
        match cause {
            TlsCause::MissingClientCert => Self::MissingClientCert,
            TlsCause::UnknownCa => Self::UnknownCa,
            TlsCause::NameMismatch => Self::NameMismatch,
            TlsCause::Expired => Self::CertificateExpired,
            TlsCause::ClientCertRejected => Self::ClientCertRejected,
            _ => Self::Tls,
        }
    }
}

/// A probe that stopped at a phase; [`crate::run`] turns it into [`Cause::exit_code`].
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("{diagnosis}")]
pub struct ProbeFailed {
    /// The phase that failed.
    pub phase: &'static str,
    /// Why.
    pub cause: Cause,
    /// One sentence a user can act on.
    pub diagnosis: String,
}

/// What the validated arguments say to dial and verify.
struct Target {
    url: url::Url,
    host: String,
    ip: Option<IpAddr>,
    port: u16,
    tls: bool,
    transport: Transport,
    timeout: Duration,
    settings: TlsSettings,
    /// Sent with every request: a registered upstream's bearer and extra headers when the
    /// console probes it; none for `mcpgw probe URL`.
    headers: http::HeaderMap,
}

impl Target {
    fn from_args(args: &ProbeArgs) -> Result<Self, UsageError> {
        let settings = args
            .tls
            .settings()
            .map_err(|e| UsageError(format!("{e:#}")))?;
        Self::new(
            &args.url,
            args.transport,
            settings,
            Duration::from_secs(args.timeout),
        )
    }

    fn new(
        text: &str,
        transport: Transport,
        settings: TlsSettings,
        timeout: Duration,
    ) -> Result<Self, UsageError> {
        let usage = |detail: String| UsageError(format!("invalid URL '{text}': {detail}"));
        let url = url::Url::parse(text).map_err(|e| usage(e.to_string()))?;
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(usage("expected an http:// or https:// URL".into())),
        };
        let host = url
            .host_str()
            .ok_or_else(|| usage("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let ip = host.parse::<IpAddr>().ok();
        if settings.server_name.as_ref().is_some_and(|n| *n != host) && ip.is_none() {
            return Err(UsageError(
                "--server-name can only be combined with an IP address in the URL".into(),
            ));
        }
        Ok(Self {
            port: url.port_or_known_default().unwrap_or(443),
            url,
            host,
            ip,
            tls,
            transport,
            timeout,
            settings,
            headers: http::HeaderMap::new(),
        })
    }

    /// The name the certificate is verified against.
    fn verified_name(&self) -> &str {
        self.settings.server_name.as_deref().unwrap_or(&self.host)
    }
}

/// Run `mcpgw probe`.
pub async fn run(args: &ProbeArgs, json: bool) -> anyhow::Result<()> {
    let target = Target::from_args(args)?;
    let (report, outcome) = walk(&target, &PathPolicy::default(), !json).await?;
    if json {
        super::print_json(&outcome_json(&args.url, &report, outcome.as_ref()))?;
    }
    outcome.map_err(Into::into)
}

/// Probe `url` as `mcpgw probe` does, printing nothing, with TLS files read under `policy` and
/// `headers` on every request (the upstream's credentials, as the gateway sends them): the
/// report of every phase run, as `mcpgw probe --json` prints it (the console's probe action).
/// `Err` when the inputs are unusable (a bad URL or TLS file), before anything is dialled.
pub async fn examine(
    url: &str,
    transport: Transport,
    settings: TlsSettings,
    headers: http::HeaderMap,
    policy: &PathPolicy,
    timeout: Duration,
) -> Result<Value, UsageError> {
    let mut target = Target::new(url, transport, settings, timeout)?;
    target.headers = headers;
    let (report, outcome) = walk(&target, policy, false).await?;
    Ok(outcome_json(url, &report, outcome.as_ref()))
}

/// Load the identity, then run every phase; `print` shows each as it ends.
async fn walk(
    target: &Target,
    policy: &PathPolicy,
    print: bool,
) -> Result<(Report, Result<(), ProbeFailed>), UsageError> {
    // Inputs are checked before anything is dialled: a bad file is not a network diagnosis.
    let identity = if target.tls {
        Some(TlsIdentity::load(&target.settings, policy).map_err(|e| UsageError(e.to_string()))?)
    } else {
        None
    };
    let mut report = Report {
        print,
        phases: Vec::new(),
    };
    let outcome = probe(target, identity.as_ref(), &mut report).await;
    Ok((report, outcome))
}

/// The report as JSON: the phases, and the failure with its exit code.
fn outcome_json(url: &str, report: &Report, outcome: Result<&(), &ProbeFailed>) -> Value {
    json!({
        "url": url,
        "ok": outcome.is_ok(),
        "phases": report.phases,
        "failure": outcome.err().map(|f| json!({
            "phase": f.phase,
            "cause": f.cause,
            "exit_code": f.cause.exit_code(),
            "diagnosis": f.diagnosis,
        })),
    })
}

async fn probe(
    target: &Target,
    identity: Option<&TlsIdentity>,
    report: &mut Report,
) -> Result<(), ProbeFailed> {
    let addrs = resolve(target, report).await?;
    let tcp = connect(target, &addrs, report).await?;
    let answer = match identity {
        Some(identity) => tls_and_http(target, identity, tcp, report).await?,
        None => {
            report.ok(
                "tls",
                Instant::now(),
                "not used (http:// URL)".into(),
                vec![],
            );
            let started = Instant::now();
            let answer = exchange(target, tcp, false).await.map_err(|e| {
                let (cause, diagnosis) = exchange_failure(target, &e);
                report.fail("http", started, cause, diagnosis, vec![])
            })?;
            (answer, started)
        }
    };
    check_http(target, answer.0, answer.1, report)?;
    mcp(target, report).await
}

/// Phase 1: host name to addresses.
async fn resolve(target: &Target, report: &mut Report) -> Result<Vec<SocketAddr>, ProbeFailed> {
    let started = Instant::now();
    let mut notes = Vec::new();
    let addrs = match target.ip {
        Some(ip) => {
            if let Some(name) = &target.settings.server_name {
                notes.push(format!(
                    "dialling {ip}, verifying the certificate for `{name}`"
                ));
            }
            vec![SocketAddr::new(ip, target.port)]
        }
        None => {
            let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
            match tokio::time::timeout(target.timeout, lookup).await {
                Err(_) => {
                    return Err(report.fail(
                        "resolve",
                        started,
                        Cause::Timeout,
                        format!(
                            "resolving '{}' timed out after {} s",
                            target.host,
                            target.timeout.as_secs()
                        ),
                        notes,
                    ));
                }
                Ok(Err(e)) => {
                    return Err(report.fail(
                        "resolve",
                        started,
                        Cause::Dns,
                        format!("cannot resolve host '{}' ({e})", target.host),
                        notes,
                    ));
                }
                Ok(Ok(found)) => found.collect(),
            }
        }
    };
    let list = addrs
        .iter()
        .map(|a| a.ip().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    report.ok_with(
        "resolve",
        started,
        format!("{} -> {list}", target.host),
        notes,
        json!({ "addresses": addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>() }),
    );
    Ok(addrs)
}

/// Phase 2: the first address that accepts a TCP connection.
async fn connect(
    target: &Target,
    addrs: &[SocketAddr],
    report: &mut Report,
) -> Result<TcpStream, ProbeFailed> {
    let started = Instant::now();
    let mut last: Option<(Cause, String)> = None;
    for addr in addrs {
        match tokio::time::timeout(target.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                report.ok("tcp", started, format!("connected to {addr}"), vec![]);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Some((
                    Cause::ConnectionRefused,
                    format!("connection refused by {addr} (is the upstream running?)"),
                ));
            }
            Ok(Err(e)) => {
                last = Some((Cause::Network, format!("cannot connect to {addr}: {e}")));
            }
            Err(_) => {
                last = Some((
                    Cause::Timeout,
                    format!(
                        "connecting to {addr} timed out after {} s",
                        target.timeout.as_secs()
                    ),
                ));
            }
        }
    }
    let (cause, diagnosis) = last.unwrap_or((
        Cause::Dns,
        format!("'{}' resolved to no address", target.host),
    ));
    Err(report.fail("tcp", started, cause, diagnosis, vec![]))
}

/// Phase 3 (and the exchange phase 4 reports on): handshake, then one HTTP request on the
/// same connection, since only its answer proves the server accepted the handshake.
async fn tls_and_http(
    target: &Target,
    identity: &TlsIdentity,
    tcp: TcpStream,
    report: &mut Report,
) -> Result<(Answer, Instant), ProbeFailed> {
    let started = Instant::now();
    let obs = Arc::new(TlsObservations {
        has_client_cert: identity.client.is_some(),
        ..TlsObservations::default()
    });
    let config = tls::client_config(identity, obs.clone())
        .map_err(|e| report.fail("tls", started, Cause::Tls, e.to_string(), vec![]))?;
    let name = ServerName::try_from(target.verified_name().to_owned()).map_err(|_| {
        let diagnosis = format!(
            "'{}' is not a valid TLS server name",
            target.verified_name()
        );
        report.fail("tls", started, Cause::Tls, diagnosis, vec![])
    })?;
    let connector = TlsConnector::from(Arc::new(config));
    let handshake = tokio::time::timeout(target.timeout, connector.connect(name, tcp)).await;
    let stream = match handshake {
        Err(_) => {
            let diagnosis = format!(
                "the TLS handshake did not finish within {} s",
                target.timeout.as_secs()
            );
            return Err(report.fail("tls", started, Cause::Timeout, diagnosis, vec![]));
        }
        Ok(Err(e)) => {
            let (cause, diagnosis) = tls_failure(&e, identity, &obs)
                .unwrap_or_else(|| (Cause::Tls, format!("the TLS handshake failed: {e}")));
            return Err(report.fail("tls", started, cause, diagnosis, observed(&obs)));
        }
        Ok(Ok(stream)) => stream,
    };
    let handshake_ms = ms(started);
    let (summary, mut notes, data) = describe_session(stream.get_ref().1, identity, &obs);
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");

    let exchange_started = Instant::now();
    let answer = match exchange(target, stream, h2).await {
        Ok(answer) => answer,
        Err(e) => {
            let tls_cause = match &e {
                ExchangeError::Http(err) => tls_failure(err, identity, &obs),
                ExchangeError::Timeout => None,
            };
            if let Some((cause, diagnosis)) = tls_cause {
                return Err(report.fail("tls", started, cause, diagnosis, notes));
            }
            report.ok_with("tls", started, summary, notes, data);
            let (cause, diagnosis) = exchange_failure(target, &e);
            return Err(report.fail("http", exchange_started, cause, diagnosis, vec![]));
        }
    };
    notes.push("the upstream answered an HTTP request on this connection".into());
    report.push(Phase {
        phase: "tls",
        ok: true,
        ms: handshake_ms,
        summary,
        notes,
        data,
    });
    Ok((answer, exchange_started))
}

/// A TLS-level reading of an error: a rustls error anywhere in its chain, or a close/reset right
/// after the server asked for a client certificate.
fn tls_failure(
    err: &(dyn std::error::Error + 'static),
    identity: &TlsIdentity,
    obs: &TlsObservations,
) -> Option<(Cause, String)> {
    if let Some(tls_err) = diagnose::find_rustls(err) {
        return Some((
            diagnose::classify_tls(tls_err, obs).into(),
            diagnose::describe_tls(tls_err, identity, obs),
        ));
    }
    let closed = diagnose::chain(err).iter().any(|cause| {
        let text = cause.to_string().to_lowercase();
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            )
        }) || text.contains("closed")
            || text.contains("reset")
            || text.contains("eof")
    });
    if closed {
        return diagnose::closed_after_cert_request(identity, obs)
            .map(|(cause, text)| (cause.into(), text));
    }
    None
}

/// What the client-certificate exchange looked like, for a failed handshake's report.
fn observed(obs: &TlsObservations) -> Vec<String> {
    if !obs.client_cert_requested.load(Ordering::Relaxed) {
        return vec![];
    }
    vec![cert_request_note(obs)]
}

fn cert_request_note(obs: &TlsObservations) -> String {
    let cas = obs
        .acceptable_cas
        .lock()
        .map(|names| names.clone())
        .unwrap_or_default();
    let sent = if obs.has_client_cert {
        "one was sent"
    } else {
        "none is configured"
    };
    if cas.is_empty() {
        format!("the server requested a client certificate (any CA); {sent}")
    } else {
        format!(
            "the server requested a client certificate from: {}; {sent}",
            cas.join("; ")
        )
    }
}

/// Version, cipher, ALPN, the peer chain and the client-certificate exchange of a session.
fn describe_session(
    conn: &rustls::ClientConnection,
    identity: &TlsIdentity,
    obs: &TlsObservations,
) -> (String, Vec<String>, Value) {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => "unknown".to_owned(),
    };
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let chain: Vec<x509::CertInfo> = conn
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, der)| x509::info(&format!("peer certificate {i}"), der).ok())
        .collect();
    let mut notes = Vec::new();
    for (i, cert) in chain.iter().enumerate() {
        notes.push(format!(
            "peer[{i}] {} SANs [{}] not after {} sha256 {}",
            cert.subject,
            cert.sans.join(", "),
            cert.not_after,
            cert.sha256
        ));
    }
    let requested = obs.client_cert_requested.load(Ordering::Relaxed);
    if requested {
        notes.push(cert_request_note(obs));
        if let Some(subject) = identity.client_subject() {
            notes.push(format!("client certificate sent: {subject}"));
        }
    } else {
        notes.push("the server did not request a client certificate".into());
    }
    let legacy = obs.legacy_cn_accepted.load(Ordering::Relaxed);
    if legacy {
        notes.push("legacy CN-only certificate accepted; reissue with SANs".into());
    }
    let summary = format!(
        "{version}, {suite}, ALPN {}",
        alpn.as_deref().unwrap_or("none")
    );
    let data = json!({
        "version": version,
        "cipher_suite": suite,
        "alpn": alpn,
        "verified_name": identity.server_name,
        "peer_chain": chain,
        "client_cert_requested": requested,
        "acceptable_cas": obs.acceptable_cas.lock().map(|n| n.clone()).unwrap_or_default(),
        "client_cert_sent": requested && obs.has_client_cert,
        "legacy_cn_only_accepted": legacy,
    });
    (summary, notes, data)
}

/// Phases 5 and 6: a real MCP connection through the gateway's client, then tools/list.
async fn mcp(target: &Target, report: &mut Report) -> Result<(), ProbeFailed> {
    let started = Instant::now();
    let cache = ClientCache::new(PathPolicy::default());
    let client = cache
        .client_for(target.url.as_str(), &target.settings)
        .map_err(|e| report.fail("mcp", started, Cause::Mcp, e.to_string(), vec![]))?;
    let sink: crate::upstream::connection::MessageSink = Arc::new(|_| {});
    let link = crate::upstream::connection::Link::Http {
        client,
        transport: target.transport,
        headers: target.headers.clone(),
    };
    let conn = Connection::open(
        link,
        target.timeout,
        sink,
        crate::store::EraChoice::Auto,
        crate::upstream::connection::gateway_hello(),
    )
    .await
    .map_err(|e| {
        let (cause, diagnosis) = mcp_failure("connecting", &e);
        report.fail("mcp", started, cause, diagnosis, vec![])
    })?;
    let era = match &conn.era {
        Era::Session { .. } => "session",
        Era::Stateless { .. } => "stateless",
    };
    let version = conn.era.version().to_owned();
    let info = &conn.server_info;
    let server = format!(
        "{} {}",
        info.get("name").and_then(Value::as_str).unwrap_or("?"),
        info.get("version").and_then(Value::as_str).unwrap_or("")
    );
    report.ok_with(
        "mcp",
        started,
        format!("{era} era, protocol {version}, server {}", server.trim()),
        vec![],
        json!({"era": era, "protocol_version": version, "server_info": info}),
    );

    let started = Instant::now();
    let mut names: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    // Bounded: a server that keeps handing out cursors cannot keep the probe forever.
    for _ in 0..50 {
        let params = cursor.as_ref().map(|c| json!({"cursor": c}));
        let answer = conn
            .request("tools/list", params, target.timeout)
            .await
            .map_err(|e| {
                let (cause, diagnosis) = mcp_failure("tools/list", &e);
                report.fail("tools", started, cause, diagnosis, vec![])
            })?;
        if let Some(err) = answer.get("error") {
            let message = err.get("message").and_then(Value::as_str).unwrap_or("");
            let diagnosis = format!("tools/list failed: {message} ({err})");
            return Err(report.fail("tools", started, Cause::Mcp, diagnosis, vec![]));
        }
        let result = answer.get("result").cloned().unwrap_or_default();
        names.extend(
            result
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned)),
        );
        cursor = result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    report.ok_with(
        "tools",
        started,
        format!("{} tools: {}", names.len(), names.join(", ")),
        vec![],
        json!({"count": names.len(), "names": names}),
    );
    Ok(())
}

fn mcp_failure(step: &str, err: &UpstreamError) -> (Cause, String) {
    let cause = match err {
        UpstreamError::Timeout { .. } => Cause::Timeout,
        UpstreamError::Status { .. } => Cause::NotMcp,
        _ => Cause::Mcp,
    };
    // The admin's own diagnosis: what the upstream's body said too.
    let excerpt = match err {
        UpstreamError::Status { excerpt, .. } => excerpt.as_str(),
        _ => "",
    };
    (cause, format!("MCP {step} failed: {err}{excerpt}"))
}
