//! The load generator: one HTTP/1.1 keep-alive connection per worker (hyper's client
//! connection, no pool), an MCP session per worker (`initialize`, `notifications/initialized`,
//! then `tools/call` with the session header), latencies recorded per call.
//!
//! The generator is deliberately thin: bodies are formatted, not serialised through `Value`,
//! and an answer is judged by its status and a byte search for `"result"`, so that its own
//! CPU stays small next to what it measures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};

/// Where the load goes and how to reach it.
#[derive(Clone)]
pub struct Target {
    /// `host:port` to dial (loopback only; checked at construction).
    pub addr: std::net::SocketAddr,
    /// Path of the MCP endpoint, e.g. `/mcp`.
    pub path: String,
    /// TLS client config when the URL is `https`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Name the TLS certificate must carry.
    pub server_name: ServerName<'static>,
    /// Value of the Host header.
    pub authority: HeaderValue,
    /// `Authorization` of every request (`Bearer <token>`), if any.
    pub bearer: Option<HeaderValue>,
}

impl Target {
    /// Parse `url`; `ca`/`client` are PEM files for HTTPS.
    pub fn new(
        url: &str,
        ca: Option<&std::path::Path>,
        client: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<Self> {
        let parsed = url::Url::parse(url).with_context(|| format!("invalid URL {url}"))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow!("no host in {url}"))?;
        let ip: std::net::IpAddr = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse()
            .map_err(|_| anyhow!("mcpload only targets 127.0.0.1 (got {host})"))?;
        if !ip.is_loopback() {
            bail!("mcpload only targets loopback addresses (got {ip})");
        }
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| anyhow!("no port"))?;
        let tls = match parsed.scheme() {
            "http" => None,
            "https" => Some(Arc::new(client_config(ca, client)?)),
            other => bail!("unsupported scheme {other}"),
        };
        Ok(Self {
            addr: std::net::SocketAddr::new(ip, port),
            path: parsed.path().to_owned(),
            tls,
            server_name: ServerName::IpAddress(ip.into()),
            authority: HeaderValue::from_str(&format!("{ip}:{port}"))?,
            bearer: None,
        })
    }
}

/// A TLS client config trusting `ca` (else the platform roots are not consulted: loopback
/// benchmarks always bring their CA), with an optional client certificate.
pub fn client_config(
    ca: Option<&std::path::Path>,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<rustls::ClientConfig> {
    let ca = ca.ok_or_else(|| anyhow!("HTTPS needs --ca FILE"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in mcpgw::tls::pem::certs_from_file(ca)? {
        roots.add(cert)?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    Ok(match client {
        Some((cert, key)) => builder.with_client_auth_cert(
            mcpgw::tls::pem::certs_from_file(cert)?,
            mcpgw::tls::pem::key_from_file(key)?,
        )?,
        None => builder.with_no_client_auth(),
    })
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Workers (connections and sessions).
    pub concurrency: usize,
    /// Stop after this many calls in total...
    pub calls: Option<u64>,
    /// ... or after this long (always bounded: the default is 10 s).
    pub duration: Duration,
    /// Tool to call (`echo`, or `NAME__echo` through mcpgw).
    pub tool: String,
    /// Untimed calls per worker before the measurement starts.
    pub warmup: u32,
    /// Close and re-dial the connection every N calls (a fresh TLS handshake), keeping the
    /// MCP session: used to make rotations visible to a running load.
    pub reconnect_every: Option<u32>,
    /// Stop early when this turns true.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Figures of one run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Successful calls.
    pub calls: u64,
    /// Failed calls (transport error, non-2xx, or a JSON-RPC error).
    pub errors: u64,
    /// Wall time of the measured part.
    pub elapsed: Duration,
    /// Latency percentiles in microseconds: p50, p90, p99, max.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Slowest call.
    pub max_us: f64,
    /// Connections dialled during the measured part.
    pub reconnects: u64,
    /// First error seen, for the report.
    pub first_error: Option<String>,
}

/// Why a run's workers stop: the shared call budget of the plan, its deadline, its stop flag.
#[derive(Clone)]
pub struct Until {
    budget: Arc<AtomicU64>,
    calls: Option<u64>,
    deadline: Instant,
    stop: Option<Arc<AtomicBool>>,
}

impl Until {
    /// `plan`'s limits, the measured part starting at `started`.
    pub fn new(plan: &Plan, started: Instant) -> Self {
        Self {
            budget: Arc::new(AtomicU64::new(0)),
            calls: plan.calls,
            deadline: started + plan.duration,
            stop: plan.stop.clone(),
        }
    }

    /// Whether a worker makes one more call (taking it from the budget if so).
    pub fn another(&self) -> bool {
        if let Some(n) = self.calls
            && self.budget.fetch_add(1, Ordering::Relaxed) >= n
        {
            return false;
        }
        Instant::now() < self.deadline
            && !self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

/// What one worker saw: latencies (ns) of its successful calls, its errors and redials.
#[derive(Default)]
pub struct Tally {
    latencies: Vec<u64>,
    errors: u64,
    reconnects: u64,
    first_error: Option<String>,
}

impl Tally {
    /// Room for a run's latencies without regrowing at every call.
    pub fn new() -> Self {
        Self {
            latencies: Vec::with_capacity(4096),
            ..Self::default()
        }
    }

    /// A call started at `t0` succeeded.
    pub fn ok(&mut self, t0: Instant) {
        self.latencies.push(t0.elapsed().as_nanos() as u64);
    }

    /// A call (or a redial) failed.
    pub fn failed(&mut self, error: impl std::fmt::Display) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| format!("{error:#}"));
    }
}

impl Report {
    /// The figures of a run that started at `started`, from its workers' tallies.
    pub fn of(tallies: impl IntoIterator<Item = Tally>, started: Instant) -> Self {
        let mut report = Report::default();
        let mut all = Vec::new();
        for t in tallies {
            all.extend(t.latencies);
            report.errors += t.errors;
            report.reconnects += t.reconnects;
            if report.first_error.is_none() {
                report.first_error = t.first_error;
            }
        }
        report.elapsed = started.elapsed();
        report.set_latencies(all);
        report
    }

    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Take the latencies (nanoseconds) of the successful calls: the call count and the
    /// percentiles.
    pub fn set_latencies(&mut self, mut all: Vec<u64>) {
        self.calls = all.len() as u64;
        all.sort_unstable();
        let pct = |p: f64| -> f64 {
            if all.is_empty() {
                return 0.0;
            }
            let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
            all[i] as f64 / 1000.0
        };
        self.p50_us = pct(0.50);
        self.p90_us = pct(0.90);
        self.p99_us = pct(0.99);
        self.max_us = all.last().map_or(0.0, |&n| n as f64 / 1000.0);
    }

    /// As JSON.
    pub fn json(&self) -> Value {
        json!({
            "calls": self.calls, "errors": self.errors, "elapsed_s": self.elapsed.as_secs_f64(),
            "calls_per_s": self.rate(), "p50_us": self.p50_us, "p90_us": self.p90_us,
            "p99_us": self.p99_us, "max_us": self.max_us, "reconnects": self.reconnects,
            "first_error": self.first_error,
        })
    }
}

type Conn = SendRequest<Full<Bytes>>;

/// One worker: its connection and MCP session.
pub struct Worker {
    target: Target,
    conn: Conn,
    session: HeaderValue,
    next_id: u64,
}

/// `Authorization: Bearer <token>`, marked sensitive.
pub fn bearer(token: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| anyhow!("the token is not a header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Dial `target` and run the HTTP/1.1 handshake.
pub async fn dial(target: &Target) -> Result<Conn> {
    let tcp = tokio::net::TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connect {}", target.addr))?;
    tcp.set_nodelay(true)?;
    match &target.tls {
        None => handshake(TokioIo::new(tcp)).await,
        Some(config) => {
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(target.server_name.clone(), tcp)
                .await
                .context("TLS handshake")?;
            handshake(TokioIo::new(tls)).await
        }
    }
}

async fn handshake<I>(io: I) -> Result<Conn>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// POST `body`; returns status, session header and body.
async fn post(
    conn: &mut Conn,
    target: &Target,
    session: Option<&HeaderValue>,
    body: impl Into<Bytes>,
) -> Result<(u16, Option<HeaderValue>, Bytes)> {
    let mut req = hyper::Request::post(target.path.as_str())
        .header(HOST, target.authority.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json, text/event-stream");
    if let Some(s) = session {
        req = req.header("mcp-session-id", s.clone());
    }
    if let Some(bearer) = &target.bearer {
        req = req.header(hyper::header::AUTHORIZATION, bearer.clone());
    }
    let req = req.body(Full::new(body.into()))?;
    conn.ready().await?;
    let resp = conn.send_request(req).await?;
    let status = resp.status().as_u16();
    let sid = resp.headers().get("mcp-session-id").cloned();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, sid, body))
}

/// The `initialize` request every generator opens its session with.
pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcpload","version":"1"}}}"#;

/// The notification that follows it.
pub const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// The `tools/call` every generator sends (`{"text": "hello mcpload"}` to `tool`), kept as
/// what comes after its id, so that a call writes only its id and that tail.
pub struct CallBody {
    tail: String,
}

impl CallBody {
    /// The call of `tool`.
    pub fn new(tool: &str) -> Self {
        Self {
            tail: format!(
                r#","method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"hello mcpload"}}}}}}"#
            ),
        }
    }

    /// Write the call with `id` to `out`.
    pub fn write(&self, id: u64, out: &mut impl std::io::Write) -> std::io::Result<()> {
        write!(out, r#"{{"jsonrpc":"2.0","id":{id}{}"#, self.tail)
    }
}

/// Whether an answer is a success: it has a `"result"` and no `"error"`.
pub fn has_result(body: &[u8]) -> bool {
    body.windows(8).any(|w| w == b"\"result\"") && !body.windows(7).any(|w| w == b"\"error\"")
}

impl Worker {
    /// Dial, `initialize`, `notifications/initialized`.
    pub async fn open(target: &Target) -> Result<Self> {
        let mut conn = dial(target).await?;
        let (status, sid, body) = post(&mut conn, target, None, INITIALIZE).await?;
        if status != 200 || !has_result(&body) {
            bail!(
                "initialize answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let session = sid.ok_or_else(|| anyhow!("initialize gave no Mcp-Session-Id"))?;
        let (status, _, _) = post(&mut conn, target, Some(&session), INITIALIZED).await?;
        if !(200..300).contains(&status) {
            bail!("notifications/initialized answered {status}");
        }
        Ok(Self {
            target: target.clone(),
            conn,
            session,
            next_id: 1,
        })
    }

    /// One `tools/call`; Err carries a short reason.
    pub async fn call(&mut self, tool: &str) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let mut body = Vec::with_capacity(160);
        CallBody::new(tool).write(id, &mut body)?;
        let (status, _, body) =
            post(&mut self.conn, &self.target, Some(&self.session), body).await?;
        if status != 200 || !has_result(&body) {
            bail!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
        }
        Ok(())
    }

    /// `DELETE` the endpoint with the session id: the client ends its session.
    pub async fn close(mut self) -> Result<()> {
        delete(&mut self.conn, &self.target, &self.session).await
    }

    /// Its session id.
    pub fn session(&self) -> HeaderValue {
        self.session.clone()
    }

    /// `GET` the endpoint with the session id: the session's server-to-client stream. Returns
    /// once the `200` head has arrived; the body keeps the stream (and its connection) open.
    pub async fn listen(mut self) -> Result<hyper::body::Incoming> {
        let req = hyper::Request::get(self.target.path.as_str())
            .header(HOST, self.target.authority.clone())
            .header(ACCEPT, "text/event-stream")
            .header("mcp-session-id", self.session.clone())
            .body(Full::new(Bytes::new()))?;
        self.conn.ready().await?;
        let resp = self.conn.send_request(req).await?;
        if resp.status() != 200 {
            bail!("GET {} answered {}", self.target.path, resp.status());
        }
        // The connection task lives as long as the body (and the sender it drives).
        std::mem::forget(self.conn);
        Ok(resp.into_body())
    }

    /// Replace the connection, keeping the MCP session (a dead connection is noticed by
    /// `is_closed` before the next call).
    pub async fn redial(&mut self) -> Result<()> {
        self.conn = dial(&self.target).await?;
        Ok(())
    }
}

/// `DELETE` the endpoint with `session` on `conn`: the client ends its session.
async fn delete(conn: &mut Conn, target: &Target, session: &HeaderValue) -> Result<()> {
    let req = hyper::Request::delete(target.path.as_str())
        .header(HOST, target.authority.clone())
        .header("mcp-session-id", session.clone())
        .body(Full::new(Bytes::new()))?;
    conn.ready().await?;
    let resp = conn.send_request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    if !status.is_success() {
        bail!("DELETE {} answered {status}", target.path);
    }
    Ok(())
}

/// End `session` on a connection of its own (its worker's carries its `GET` stream).
pub async fn end_session(target: &Target, session: &HeaderValue) -> Result<()> {
    delete(&mut dial(target).await?, target, session).await
}

/// Open `plan.concurrency` workers and warm them up.
pub async fn prepare(target: &Target, plan: &Plan) -> Result<Vec<Worker>> {
    let mut tasks = Vec::new();
    for _ in 0..plan.concurrency {
        let (target, tool, warmup) = (target.clone(), plan.tool.clone(), plan.warmup);
        tasks.push(tokio::spawn(async move {
            let mut w = Worker::open(&target).await?;
            for _ in 0..warmup {
                w.call(&tool).await.context("warm-up call")?;
            }
            Ok::<_, anyhow::Error>(w)
        }));
    }
    let mut workers = Vec::new();
    for t in tasks {
        workers.push(t.await??);
    }
    Ok(workers)
}

/// Run the measured part with prepared workers.
pub async fn run(workers: Vec<Worker>, plan: &Plan) -> (Report, Vec<Worker>) {
    let started = Instant::now();
    let until = Until::new(plan, started);
    let mut tasks = Vec::new();
    for mut w in workers {
        let (until, plan) = (until.clone(), plan.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            let mut since_dial = 0u32;
            while until.another() {
                let redial =
                    plan.reconnect_every.is_some_and(|k| since_dial >= k) || w.conn.is_closed();
                if redial {
                    since_dial = 0;
                    tally.reconnects += 1;
                    if let Err(e) = w.redial().await {
                        tally.failed(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
                since_dial += 1;
                let t0 = Instant::now();
                match w.call(&plan.tool).await {
                    Ok(()) => tally.ok(t0),
                    Err(e) => tally.failed(e),
                }
            }
            (w, tally)
        }));
    }
    let mut tallies = Vec::new();
    let mut workers = Vec::new();
    for t in tasks {
        match t.await {
            Ok((w, tally)) => {
                tallies.push(tally);
                workers.push(w);
            }
            Err(e) => {
                let mut lost = Tally::default();
                lost.failed(e);
                tallies.push(lost);
            }
        }
    }
    (Report::of(tallies, started), workers)
}

/// Prepare and run in one go.
pub async fn load(target: &Target, plan: &Plan) -> Result<Report> {
    let workers = prepare(target, plan).await?;
    Ok(run(workers, plan).await.0)
}

/// One request on a fresh connection (for `/stats` and `/gateways`); returns status and body.
pub async fn request(
    target: &Target,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, Bytes)> {
    let mut conn = dial(target).await?;
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, target.authority.clone())
        .header(CONTENT_TYPE, "application/json");
    if let Some(bearer) = &target.bearer {
        req = req.header(hyper::header::AUTHORIZATION, bearer.clone());
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    conn.ready().await?;
    let resp = conn.send_request(req).await?;
    let status = resp.status().as_u16();
    Ok((status, resp.into_body().collect().await?.to_bytes()))
}
