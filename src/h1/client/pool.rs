//! Pooled HTTP/1.1 connections to one upstream origin, for every request mcpgw sends upstream
//! (calls, listings, health checks, and the streams of both upstream transports).
//!
//! A pool is made by `crate::upstream::clients::ClientCache` for one TLS identity and one origin, and
//! shares that identity's rustls config (so its handshakes carry the client certificate and
//! record what they saw, exactly like every other upstream connection). Compared with a general
//! purpose client it does only what the hot path needs: take an idle connection (or dial one),
//! write the request, and put the connection back once the answer's body has been read to its
//! end.
//!
//! A request goes upstream at most once. It is sent again (on another connection) only when it
//! provably never left: its write failed before the socket accepted a byte of it. Once bytes
//! are out, a connection that closes before answering is an error the caller sees
//! ([`PoolError::Cut`]): the upstream may have read the request and acted on it (a `tools/call`
//! that crashed it half-way), and sending it again would run it twice. What keeps the ordinary
//! keep-alive race (the upstream closes an idle connection as we reuse it) from turning into
//! such errors is the check before reuse ([`Pooled::reusable`]): the kernel is asked whether a
//! close (or anything) has arrived, and an idle connection is never kept past [`IDLE_TIMEOUT`],
//! shorter than the common servers' own idle timeouts.
//!
//! A connection has no task of its own: the task that sends a request also drives the
//! connection's I/O until the answer's body ends ([`Driven`]). That saves the hand-over to a
//! connection task and back (two wake-ups, often across threads) on every call.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use url::Url;

use super::response::{Buffered, Framing, Head, Io, closed};
use super::wait::{Marks, Tcp, Wait, readable_within};
use crate::destination::{Refused, UrlPolicy};
use crate::h1::fields::Fields;

/// How long a new TCP connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections older than this are closed instead of reused. Below the 5 s after which
/// Node's HTTP server and uvicorn close an idle keep-alive connection: a connection reused
/// just as its server closes it would fail the request sent on it (it is not sent again, see
/// the module's text), so the pool lets go first. Dialling again after 4 s of silence costs a
/// handshake only when calls are that rare.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle connections kept per origin.
const MAX_IDLE: usize = 64;
/// What is read of a body nobody needs any more before its connection is reused.
const DRAIN_LIMIT: usize = 1024 * 1024;
/// Events of a stream nobody needs any more read before giving up on its connection.
const DRAIN_EVENTS: usize = 1000;
/// How long such a body may take to end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// TCP connect or TLS handshake failed (the rustls error, if any, is inside).
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// `host:port`.
        target: String,
        /// What the socket or TLS said.
        #[source]
        source: std::io::Error,
    },
    /// The upstream URL policy refuses every address the host resolves to (or the pinned one).
    #[error("not connecting to {target}: {refused}")]
    Refused {
        /// `host:port`.
        target: String,
        /// The first refusal.
        refused: Refused,
    },
    /// No TCP connection within [`CONNECT_TIMEOUT`].
    #[error("timed out connecting to {target}")]
    ConnectTimeout {
        /// `host:port`.
        target: String,
    },
    /// The connection closed (or was reset) after the request was sent, before a whole answer
    /// head came: the upstream may have acted on it, so it is not sent again.
    #[error("the connection to {target} closed during the exchange: {source}")]
    Cut {
        /// `host:port`.
        target: String,
        /// Whether the connection was new (its first request): a TLS server that refuses the
        /// client certificate may close it this way too.
        fresh: bool,
        /// What the socket said.
        #[source]
        source: std::io::Error,
    },
    /// HTTP failed on an open connection (the socket's or TLS's error, or what was wrong
    /// with the answer).
    #[error("HTTP exchange with {target} failed: {source}")]
    Http {
        /// `host:port`.
        target: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

impl PoolError {
    /// Whether the error is a timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::ConnectTimeout { .. })
    }
}

/// Why no pool can be made for a URL.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The URL names no host.
    #[error("no host")]
    NoHost,
    /// The URL has no port and its scheme no default one.
    #[error("no port")]
    NoPort,
    /// The host and port cannot be sent as a `Host` header.
    #[error("'{authority}' cannot be sent as a Host header")]
    Authority {
        /// `host[:port]` as it would be sent.
        authority: String,
    },
    /// The host is not a name (or address) a certificate can be verified for.
    #[error("'{host}' is not a name a certificate can be verified for")]
    ServerName {
        /// The URL's host.
        host: String,
    },
    /// An `https` URL without a TLS configuration.
    #[error("https needs a TLS configuration")]
    NoTls,
}

/// Why a request on a connection got no response head.
enum SendError {
    /// The write failed before the socket accepted a byte of the request: it never reached
    /// the upstream, and may go again on another connection.
    Unsent(std::io::Error),
    /// The connection closed (or was reset) after the socket accepted (some of) the request,
    /// before a whole answer head came: the upstream may have acted on it.
    Cut(std::io::Error),
    /// Anything else.
    Failed(std::io::Error),
}

/// One HTTP/1.1 connection, used by one request at a time.
struct Pooled {
    wire: Buffered,
    /// A duplicate of the socket, to wait for the answer on without tokio (see [`Wait`]).
    watch: Option<std::os::fd::OwnedFd>,
    /// Shared with the socket: whether the wait saw it readable, whether it accepted bytes
    /// (see [`Tcp`]).
    marks: Arc<Marks>,
}

impl Pooled {
    /// Whether an idle connection, idle since `since`, may still be used: not too old, and
    /// nothing to read on it (no close, no reset, no stray bytes). The kernel is asked
    /// directly, since tokio hears of a close only at its I/O driver's next turn; what it
    /// reports is then read through TLS, if any, so that a TLS message that is no answer
    /// (a session ticket) does not count against the connection.
    fn reusable(&mut self, since: Instant) -> bool {
        if since.elapsed() >= IDLE_TIMEOUT {
            return false;
        }
        if let Some(fd) = &self.watch
            && readable_within(fd, Duration::ZERO)
        {
            self.marks.seen.store(true, Ordering::Relaxed);
        }
        self.wire.idle_and_open()
    }

    /// Write a request and read until its response head is in.
    async fn send(&mut self, request: &[u8], wait: &Wait) -> Result<Head, SendError> {
        self.marks.wrote.store(false, Ordering::Relaxed);
        if let Err(e) = self.wire.write(request).await {
            // An upstream may refuse a large body from its head alone (413, 401) and close
            // without reading the rest: the write then fails, but its answer came first and is
            // already here. The connection is not reused after it.
            return match self.wire.answer_already_in() {
                Some(mut head) => {
                    head.close = true;
                    Ok(head)
                }
                None if self.marks.wrote.load(Ordering::Relaxed) => Err(SendError::Cut(e)),
                None => Err(SendError::Unsent(e)),
            };
        }
        let mut waited = false;
        loop {
            if let Some(head) = self.wire.parse_head().map_err(SendError::Failed)? {
                return Ok(head);
            }
            let filled = std::future::poll_fn(|cx| {
                let r = self.wire.poll_fill(cx);
                if r.is_pending()
                    && !std::mem::replace(&mut waited, true)
                    && let Some(fd) = &self.watch
                    && wait.wait(fd)
                {
                    // The answer is here: read it now, on this thread, instead of waiting for
                    // the I/O driver to hear of it (see [`Tcp`]).
                    self.marks.seen.store(true, Ordering::Relaxed);
                    return self.wire.poll_fill(cx);
                }
                r
            })
            .await;
            let nothing_yet = !self.wire.buffered();
            match filled {
                Ok(0) if nothing_yet => return Err(SendError::Cut(closed("before answering"))),
                Ok(0) => return Err(SendError::Cut(closed("in the middle of its answer head"))),
                Ok(_) => {}
                Err(e) if is_reset(&e) => return Err(SendError::Cut(e)),
                Err(e) => return Err(SendError::Failed(e)),
            }
        }
    }
}

/// Whether a read or write failed because the peer closed or reset the connection.
pub fn is_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// Connections to one origin with one TLS identity.
pub struct Pool {
    /// Where to dial: the URL's host, or the pinned address for a server-name override.
    dial: Dial,
    /// For messages: `host:port`.
    target: String,
    /// TLS: the identity's config (HTTP/1.1 only) and the name to verify.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// The `Host` header.
    authority: HeaderValue,
    idle: Mutex<Vec<(Pooled, Instant)>>,
    /// The upstream wait, shared by every pool of the gateway.
    wait: Arc<Wait>,
    /// Judges every address before it is dialled.
    policy: Arc<UrlPolicy>,
}

enum Dial {
    Name(String, u16),
    Addr(SocketAddr),
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool for `url`'s origin. `url`'s host is the name verified and sent as `Host`;
    /// `pin` dials an address instead of resolving it. `tls` is used for `https`; answers are
    /// waited for with `wait`; `policy` judges each address before it is dialled.
    pub fn new(
        url: &Url,
        pin: Option<SocketAddr>,
        tls: Option<Arc<rustls::ClientConfig>>,
        wait: Arc<Wait>,
        policy: Arc<UrlPolicy>,
    ) -> Result<Self, OriginError> {
        let host = url.host_str().ok_or(OriginError::NoHost)?;
        let port = url.port_or_known_default().ok_or(OriginError::NoPort)?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let authority =
            HeaderValue::from_str(&authority).map_err(|_| OriginError::Authority { authority })?;
        let tls = match (url.scheme(), tls) {
            ("https", Some(config)) => {
                let name =
                    ServerName::try_from(bare.to_owned()).map_err(|_| OriginError::ServerName {
                        host: bare.to_owned(),
                    })?;
                Some((tokio_rustls::TlsConnector::from(config), name))
            }
            ("https", None) => return Err(OriginError::NoTls),
            _ => None,
        };
        Ok(Self {
            dial: match pin {
                Some(addr) => Dial::Addr(addr),
                None => Dial::Name(bare.to_owned(), port),
            },
            target: format!("{host}:{port}"),
            tls,
            authority,
            idle: Mutex::new(Vec::new()),
            wait,
            policy,
        })
    }

    /// The value of the `Host` header for this origin.
    pub fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    /// Send `request` (a serialized HTTP/1.1 request, head and body), at most once: it goes
    /// again, on another connection, only if a pooled one failed its write before taking a
    /// byte of it (see the module's text). The connection goes back to the pool when the
    /// response's body has been read to its end; dropping the body unfinished closes it.
    pub async fn send(self: &Arc<Self>, request: &[u8]) -> Result<Answered, PoolError> {
        let _busy = self.wait.busy();
        while let Some(mut conn) = self.take_idle() {
            match conn.send(request, &self.wait).await {
                Ok(head) => return Ok(self.driven(head, conn)),
                Err(SendError::Unsent(_)) => continue,
                Err(e) => return Err(self.failed(e, false)),
            }
        }
        // Dialling (and a TLS handshake) is rare once the pool is warm, and its future large:
        // boxed, so that every request's future does not carry its space.
        let mut conn = Box::pin(self.connect()).await?;
        match conn.send(request, &self.wait).await {
            Ok(head) => Ok(self.driven(head, conn)),
            Err(e) => Err(self.failed(e, true)),
        }
    }

    /// The error of a request that got no answer head, on a `fresh` connection or a reused one.
    fn failed(&self, error: SendError, fresh: bool) -> PoolError {
        let target = self.target.clone();
        match error {
            SendError::Cut(source) => PoolError::Cut {
                target,
                fresh,
                source,
            },
            SendError::Unsent(source) | SendError::Failed(source) => {
                PoolError::Http { target, source }
            }
        }
    }

    fn driven(self: &Arc<Self>, head: Head, conn: Pooled) -> Answered {
        Answered {
            status: head.status,
            headers: head.headers,
            body: Driven {
                conn: Some(conn),
                framing: head.framing,
                close: head.close,
                pool: self.clone(),
            },
        }
    }

    fn take_idle(&self) -> Option<Pooled> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((mut conn, since)) = idle.pop() {
            if conn.reusable(since) {
                return Some(conn);
            }
        }
        None
    }

    /// Pool a connection whose last answer ended cleanly.
    fn put(&self, conn: Pooled) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Stale entries are dropped when taken, by the health round's sweep, or here when they
        // fill the pool; not on every return, which would poll every idle connection per call.
        if idle.len() >= MAX_IDLE {
            idle.retain_mut(|(c, since)| c.reusable(*since));
        }
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    /// Close the idle connections that have sat longer than the idle timeout or were closed by
    /// the upstream.
    pub fn expire_idle(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain_mut(|(c, since)| c.reusable(*since));
    }

    /// How many connections sit idle (for tests).
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The addresses the URL policy lets this pool dial, in the order given; an error when it
    /// lets none (a name that resolves only to a metadata address is never dialled).
    fn admitted(&self, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, PoolError> {
        let mut refused = None;
        let admitted: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|addr| match self.policy.check_ip(addr.ip()) {
                Ok(()) => true,
                Err(why) => {
                    refused.get_or_insert(why);
                    false
                }
            })
            .collect();
        match refused {
            Some(refused) if admitted.is_empty() => Err(PoolError::Refused {
                target: self.target.clone(),
                refused,
            }),
            _ => Ok(admitted),
        }
    }

    async fn connect(&self) -> Result<Pooled, PoolError> {
        let connect_err = |source| PoolError::Connect {
            target: self.target.clone(),
            source,
        };
        let dial = async {
            let addrs = match &self.dial {
                Dial::Name(host, port) => tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(connect_err)?
                    .collect(),
                Dial::Addr(addr) => vec![*addr],
            };
            let admitted = self.admitted(addrs)?;
            TcpStream::connect(&admitted[..]).await.map_err(connect_err)
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, dial)
            .await
            .map_err(|_| PoolError::ConnectTimeout {
                target: self.target.clone(),
            })??;
        tcp.set_nodelay(true).map_err(connect_err)?;
        let watch = std::os::fd::AsFd::as_fd(&tcp).try_clone_to_owned().ok();
        let marks = Arc::new(Marks::default());
        let tcp = Tcp {
            stream: tcp,
            marks: marks.clone(),
        };
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(connect_err)?,
            ),
        };
        Ok(Pooled {
            wire: Buffered::new(io),
            watch,
            marks,
        })
    }
}

/// An upstream's answer: its status and header fields, and its body still to be read.
#[derive(Debug)]
pub struct Answered {
    /// The final status.
    pub status: StatusCode,
    /// The head's fields.
    pub headers: Fields,
    /// The body, read from the connection as it is polled.
    pub body: Driven,
}

/// A response body that reads its connection as it is read, and puts the connection back in
/// the pool once it has ended. Dropped before its end, it closes the connection.
pub struct Driven {
    conn: Option<Pooled>,
    framing: Framing,
    /// The connection ends with this response.
    close: bool,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Driven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driven")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl Driven {
    /// The body has ended: pool its connection, if it is fit for another request.
    fn release(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && !self.close
            && !conn.wire.buffered()
        {
            conn.wire.rewind();
            self.pool.put(conn);
        }
    }

    /// The caller is done with a body that may still be arriving: read the rest in the
    /// background (bounded in bytes and time) so the connection can be reused if it ends.
    pub fn finish(mut self) {
        if self.framing == Framing::Done {
            return self.release();
        }
        tokio::spawn(async move {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
                let mut seen = 0usize;
                while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut self).await {
                    seen += frame.data_ref().map_or(0, Bytes::len);
                    if seen > DRAIN_LIMIT {
                        return;
                    }
                }
            })
            .await;
        });
    }
}

impl hyper::body::Body for Driven {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(conn.wire.poll_body(&mut this.framing, cx)) {
            Ok(Some(data)) => {
                if this.framing == Framing::Done {
                    this.release();
                }
                Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
            }
            Ok(None) => {
                this.release();
                Poll::Ready(None)
            }
            Err(e) => {
                this.conn = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done || self.conn.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.framing {
            Framing::Length(n) => hyper::body::SizeHint::with_exact(n),
            Framing::Done => hyper::body::SizeHint::with_exact(0),
            _ => hyper::body::SizeHint::default(),
        }
    }
}

/// Read what is left of an event stream nobody needs any more, bounded in count and time, so
/// that its connection ends up back in the pool (see [`Driven`]).
pub fn finish_events<S, T, E>(mut events: S)
where
    S: futures_util::Stream<Item = Result<T, E>> + Unpin + Send + 'static,
{
    use futures_util::StreamExt;
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            for _ in 0..DRAIN_EVENTS {
                match events.next().await {
                    Some(Ok(_)) => {}
                    None | Some(Err(_)) => return,
                }
            }
        })
        .await;
    });
}

#[cfg(test)]
mod tests;
