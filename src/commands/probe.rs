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

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::cli::{ProbeArgs, UsageError};
use crate::store::{PemSource, TlsSettings, Transport};
use crate::tls::x509;
use crate::upstream::UpstreamError;
use crate::upstream::clients::ClientCache;
use crate::upstream::connection::{
    Connection, Era, META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION, MODERN_VERSION,
};
use crate::upstream::diagnose::{self, TlsCause};
use crate::upstream::identity::{PathPolicy, TlsIdentity};
use crate::upstream::tls::{self, TlsObservations};

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

/// One finished phase, as printed and as JSON.
#[derive(Debug, Serialize)]
struct Phase {
    phase: &'static str,
    ok: bool,
    ms: u64,
    summary: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    data: Value,
}

/// The phases so far; in text mode each is printed as soon as it ends.
struct Report {
    json: bool,
    phases: Vec<Phase>,
}

impl Report {
    fn push(&mut self, phase: Phase) {
        if !self.json {
            let status = if phase.ok { "ok" } else { "FAILED" };
            println!(
                "{:<8} {:<6} {:>5} ms  {}",
                phase.phase, status, phase.ms, phase.summary
            );
            for note in &phase.notes {
                println!("{:24}{note}", "");
            }
        }
        self.phases.push(phase);
    }

    fn ok(&mut self, phase: &'static str, started: Instant, summary: String, notes: Vec<String>) {
        self.ok_with(phase, started, summary, notes, Value::Null);
    }

    fn ok_with(
        &mut self,
        phase: &'static str,
        started: Instant,
        summary: String,
        notes: Vec<String>,
        data: Value,
    ) {
        self.push(Phase {
            phase,
            ok: true,
            ms: ms(started),
            summary,
            notes,
            data,
        });
    }

    /// Record the failure of `phase` and return the error that ends the probe.
    fn fail(
        &mut self,
        phase: &'static str,
        started: Instant,
        cause: Cause,
        diagnosis: String,
        notes: Vec<String>,
    ) -> ProbeFailed {
        self.push(Phase {
            phase,
            ok: false,
            ms: ms(started),
            summary: format!("{} (exit {})", cause.name(), cause.exit_code()),
            notes,
            data: Value::Null,
        });
        ProbeFailed {
            phase,
            cause,
            diagnosis,
        }
    }
}

fn ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
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
}

impl Target {
    fn from_args(args: &ProbeArgs) -> Result<Self, UsageError> {
        let usage = |detail: String| UsageError(format!("invalid URL '{}': {detail}", args.url));
        let url = url::Url::parse(&args.url).map_err(|e| usage(e.to_string()))?;
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
        if args.server_name.as_ref().is_some_and(|n| *n != host) && ip.is_none() {
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
            transport: args.transport,
            timeout: Duration::from_secs(args.timeout),
            settings: TlsSettings {
                ca: args.ca_cert.clone().map(PemSource::Path),
                client_cert: args.client_cert.clone().map(PemSource::Path),
                client_key: args.client_key.clone().map(PemSource::Path),
                server_name: args.server_name.clone(),
            },
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
    // Inputs are checked before anything is dialled: a bad file is not a network diagnosis.
    let identity = if target.tls {
        Some(
            TlsIdentity::load(&target.settings, &PathPolicy::default())
                .map_err(|e| UsageError(e.to_string()))?,
        )
    } else {
        None
    };
    let mut report = Report {
        json,
        phases: Vec::new(),
    };
    let outcome = probe(&target, identity.as_ref(), &mut report).await;
    if json {
        super::print_json(&json!({
            "url": args.url,
            "ok": outcome.is_ok(),
            "phases": report.phases,
            "failure": outcome.as_ref().err().map(|f| json!({
                "phase": f.phase,
                "cause": f.cause,
                "exit_code": f.cause.exit_code(),
                "diagnosis": f.diagnosis,
            })),
        }))?;
    }
    outcome.map_err(Into::into)
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

/// The first HTTP answer of the probe connection.
struct Answer {
    status: u16,
    content_type: Option<String>,
    version: &'static str,
    /// The body, when it is JSON (at most 64 KiB); event streams are not read.
    json_body: Option<Value>,
}

#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("no HTTP answer in time")]
    Timeout,
}

/// Send the request an MCP endpoint of this transport must answer, on `io`.
async fn exchange<S>(target: &Target, io: S, h2: bool) -> Result<Answer, ExchangeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let fut = async {
        let request = build_request(target, h2);
        let io = TokioIo::new(io);
        let (response, driver) = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            let driver = tokio::spawn(conn);
            (sender.send_request(request).await?, driver)
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            let driver = tokio::spawn(conn);
            (sender.send_request(request).await?, driver)
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase());
        let json_body = if content_type.as_deref() == Some("application/json") {
            let body = Limited::new(response.into_body(), 64 * 1024);
            body.collect()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice(&b.to_bytes()).ok())
        } else {
            None
        };
        // An event stream stays open; the probe has what it needs.
        driver.abort();
        Ok(Answer {
            status,
            content_type,
            version: if h2 { "HTTP/2" } else { "HTTP/1.1" },
            json_body,
        })
    };
    tokio::time::timeout(target.timeout, fut)
        .await
        .unwrap_or(Err(ExchangeError::Timeout))
}

fn build_request(target: &Target, h2: bool) -> http::Request<Full<Bytes>> {
    let path = match target.url.query() {
        Some(q) => format!("{}?{q}", target.url.path()),
        None => target.url.path().to_owned(),
    };
    let authority = match target.settings.server_name.as_deref() {
        Some(name) => format!("{name}:{}", target.port),
        None => target
            .url
            .host_str()
            .map(|h| format!("{h}:{}", target.port))
            .unwrap_or_default(),
    };
    let scheme = if target.tls { "https" } else { "http" };
    let uri = if h2 {
        format!("{scheme}://{authority}{path}")
    } else {
        path
    };
    let builder = http::Request::builder().uri(uri).header(
        http::header::USER_AGENT,
        concat!("mcpgw-probe/", env!("CARGO_PKG_VERSION")),
    );
    let builder = if h2 {
        builder
    } else {
        builder.header(http::header::HOST, authority)
    };
    let request = match target.transport {
        // The stateless revision's probe: a modern server answers it, a session-era one refuses it
        // with a JSON-RPC error; either way an MCP endpoint answers JSON-RPC.
        Transport::StreamableHttp => {
            let body = json!({
                "jsonrpc": "2.0",
                "id": 0,
                "method": "server/discover",
                "params": {"_meta": {
                    META_PROTOCOL_VERSION: MODERN_VERSION,
                    META_CLIENT_CAPABILITIES: {},
                }},
            });
            builder
                .method(http::Method::POST)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::ACCEPT, "application/json, text/event-stream")
                .header("mcp-protocol-version", MODERN_VERSION)
                .header("mcp-method", "server/discover")
                .body(Full::new(Bytes::from(body.to_string())))
        }
        Transport::Sse => builder
            .method(http::Method::GET)
            .header(http::header::ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::new())),
    };
    request.unwrap_or_else(|_| http::Request::new(Full::new(Bytes::new())))
}

fn exchange_failure(target: &Target, err: &ExchangeError) -> (Cause, String) {
    match err {
        ExchangeError::Timeout => (
            Cause::Timeout,
            format!(
                "no HTTP answer from {} within {} s",
                target.url,
                target.timeout.as_secs()
            ),
        ),
        ExchangeError::Http(e) => (
            Cause::NotMcp,
            format!("no usable HTTP answer from {}: {e}", target.url),
        ),
    }
}

/// Phase 4: the endpoint's answer must look like MCP for its transport.
fn check_http(
    target: &Target,
    answer: Answer,
    started: Instant,
    report: &mut Report,
) -> Result<(), ProbeFailed> {
    let ct = answer.content_type.as_deref().unwrap_or("");
    let success = (200..300).contains(&answer.status);
    let jsonrpc = answer
        .json_body
        .as_ref()
        .is_some_and(|b| b.get("jsonrpc").is_some());
    let (method, expected, looks_mcp) = match target.transport {
        Transport::StreamableHttp => (
            "POST",
            "a JSON-RPC answer as application/json or text/event-stream",
            (success && (ct == "application/json" || ct == "text/event-stream"))
                || ((400..500).contains(&answer.status) && jsonrpc),
        ),
        Transport::Sse => (
            "GET",
            "200 with text/event-stream",
            success && ct == "text/event-stream",
        ),
    };
    let shown_ct = if ct.is_empty() {
        "without a content type".to_owned()
    } else {
        ct.to_owned()
    };
    let summary = format!("{} {} {shown_ct}", answer.version, answer.status);
    if !looks_mcp {
        let mut diagnosis = format!(
            "not an MCP endpoint: {method} {} answered HTTP {} {shown_ct} (expected {expected})",
            target.url.path(),
            answer.status
        );
        if matches!(answer.status, 401 | 403) {
            diagnosis.push_str("; the endpoint wants credentials, which probe does not send");
        }
        return Err(report.fail("http", started, Cause::NotMcp, diagnosis, vec![summary]));
    }
    report.ok_with(
        "http",
        started,
        summary,
        vec![],
        json!({"status": answer.status, "content_type": answer.content_type}),
    );
    Ok(())
}

/// Phases 5 and 6: a real MCP connection through the gateway's client, then tools/list.
async fn mcp(target: &Target, report: &mut Report) -> Result<(), ProbeFailed> {
    let started = Instant::now();
    let cache = ClientCache::new(PathPolicy::default());
    let client = cache
        .client_for(target.url.as_str(), &target.settings)
        .map_err(|e| report.fail("mcp", started, Cause::Mcp, e.to_string(), vec![]))?;
    let sink: crate::upstream::connection::MessageSink = Arc::new(|_| {});
    let conn = Connection::open(
        client,
        target.transport,
        reqwest::header::HeaderMap::new(),
        target.timeout,
        sink,
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
    (cause, format!("MCP {step} failed: {err}"))
}
