//! Pooled HTTP/1.1 connections to one upstream origin, for every request mcpgw sends upstream
//! (calls, listings, health checks, and the streams of both upstream transports).
//!
//! A pool is made by `crate::upstream::clients::ClientCache` for one TLS identity and one origin, and
//! shares that identity's rustls config (so its handshakes carry the client certificate and
//! record what they saw, exactly like every other upstream connection). Compared with a general
//! purpose client it does only what the hot path needs: take an idle connection (or dial one),
//! write the request, and put the connection back once the answer's body has been read to its
//! end. A request that an idle connection could not even start (the upstream closed it while it
//! sat in the pool) is sent again on a fresh connection.
//!
//! A connection has no task of its own: the task that sends a request also drives the
//! connection's I/O until the answer's body ends ([`Driven`]). That saves the hand-over to a
//! connection task and back (two wake-ups, often across threads) on every call.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use url::Url;

use super::response::{Buffered, Framing, Head, Io, closed};
use super::wait::{Tcp, Wait};
use crate::h1::fields::Fields;

/// How long a new TCP connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections older than this are closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
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
    /// No TCP connection within [`CONNECT_TIMEOUT`].
    #[error("timed out connecting to {target}")]
    ConnectTimeout {
        /// `host:port`.
        target: String,
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
    /// The connection closed (or was reset) before a byte of an answer came: on a reused
    /// connection, the upstream closed it while it sat idle and never read the request
    /// (servers close only idle keep-alive connections), so it may go again on a fresh one,
    /// as browsers do. An upstream that crashed half-way through on a reused connection would
    /// see the request again.
    Unanswered(std::io::Error),
    /// Anything else.
    Failed(std::io::Error),
}

/// One HTTP/1.1 connection, used by one request at a time.
struct Pooled {
    wire: Buffered,
    /// A duplicate of the socket, to wait for the answer on without tokio (see [`Wait`]).
    watch: Option<std::os::fd::OwnedFd>,
    /// Tells the socket that the wait saw it readable (see [`Tcp`]).
    seen: Arc<AtomicBool>,
}

impl Pooled {
    /// Whether an idle connection, idle since `since`, may still be used.
    fn reusable(&mut self, since: Instant) -> bool {
        since.elapsed() < IDLE_TIMEOUT && self.wire.idle_and_open()
    }

    /// Write a request and read until its response head is in.
    async fn send(&mut self, request: &[u8], wait: &Wait) -> Result<Head, SendError> {
        if let Err(e) = self.wire.write(request).await {
            // An upstream may refuse a large body from its head alone (413, 401) and close
            // without reading the rest: the write then fails, but its answer came first and is
            // already here. The connection is not reused after it.
            return match self.wire.answer_already_in() {
                Some(mut head) => {
                    head.close = true;
                    Ok(head)
                }
                None => Err(SendError::Unanswered(e)),
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
                    self.seen.store(true, Ordering::Relaxed);
                    return self.wire.poll_fill(cx);
                }
                r
            })
            .await;
            let nothing_yet = !self.wire.buffered();
            match filled {
                Ok(0) if nothing_yet => {
                    return Err(SendError::Unanswered(closed("before answering")));
                }
                Ok(0) => return Err(SendError::Failed(closed("in the middle of its answer"))),
                Ok(_) => {}
                Err(e) if nothing_yet && is_reset(&e) => return Err(SendError::Unanswered(e)),
                Err(e) => return Err(SendError::Failed(e)),
            }
        }
    }
}

/// Whether a read failed because the peer closed or reset the connection.
fn is_reset(e: &std::io::Error) -> bool {
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
    /// waited for with `wait`.
    pub fn new(
        url: &Url,
        pin: Option<SocketAddr>,
        tls: Option<Arc<rustls::ClientConfig>>,
        wait: Arc<Wait>,
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
        })
    }

    /// The value of the `Host` header for this origin.
    pub fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    /// Send `request` (a serialized HTTP/1.1 request, head and body). It goes again on a
    /// fresh connection if a pooled one turns out closed before answering. The connection goes
    /// back to the pool when the response's body has been read to its end; dropping the body
    /// unfinished closes it.
    pub async fn send(self: &Arc<Self>, request: &[u8]) -> Result<Answered, PoolError> {
        let _busy = self.wait.busy();
        while let Some(mut conn) = self.take_idle() {
            match conn.send(request, &self.wait).await {
                Ok(head) => return Ok(self.driven(head, conn)),
                Err(SendError::Unanswered(_)) => continue,
                Err(SendError::Failed(source)) => return Err(self.failed(source)),
            }
        }
        // Dialling (and a TLS handshake) is rare once the pool is warm, and its future large:
        // boxed, so that every request's future does not carry its space.
        let mut conn = Box::pin(self.connect()).await?;
        match conn.send(request, &self.wait).await {
            Ok(head) => Ok(self.driven(head, conn)),
            Err(SendError::Unanswered(source) | SendError::Failed(source)) => {
                Err(self.failed(source))
            }
        }
    }

    fn failed(&self, source: std::io::Error) -> PoolError {
        PoolError::Http {
            target: self.target.clone(),
            source,
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

    async fn connect(&self) -> Result<Pooled, PoolError> {
        let connect_err = |source| PoolError::Connect {
            target: self.target.clone(),
            source,
        };
        let dial = async {
            match &self.dial {
                Dial::Name(host, port) => TcpStream::connect((host.as_str(), *port)).await,
                Dial::Addr(addr) => TcpStream::connect(addr).await,
            }
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, dial)
            .await
            .map_err(|_| PoolError::ConnectTimeout {
                target: self.target.clone(),
            })?
            .map_err(connect_err)?;
        tcp.set_nodelay(true).map_err(connect_err)?;
        let watch = std::os::fd::AsFd::as_fd(&tcp).try_clone_to_owned().ok();
        let seen = Arc::new(AtomicBool::new(false));
        let tcp = Tcp {
            stream: tcp,
            seen: seen.clone(),
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
            seen,
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
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A TCP server on 127.0.0.1 that hands each connection to `handle`; its URL, and the
    /// count of connections it accepted.
    async fn serve_each<F, Fut>(handle: F) -> (Url, Arc<AtomicUsize>)
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap())).unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counter = accepts.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(handle(sock));
            }
        });
        (url, accepts)
    }

    /// A raw HTTP/1.1 server on 127.0.0.1 answering `ok` to every request; counts accepted
    /// connections and, with `close_after = Some(d)`, closes each connection `d` after its first
    /// answer without saying so (as a server does with an idle keep-alive connection).
    async fn server(close_after: Option<Duration>) -> (Url, Arc<AtomicUsize>) {
        serve_each(move |mut sock| async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let Ok(n) = sock.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                // Requests here carry a 2-byte body after the blank line.
                while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    if buf.len() < end + 4 + 2 {
                        break;
                    }
                    buf.drain(..end + 4 + 2);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if sock.write_all(answer).await.is_err() {
                        return;
                    }
                    if let Some(delay) = close_after {
                        tokio::time::sleep(delay).await;
                        return;
                    }
                }
            }
        })
        .await
    }

    fn request(pool: &Pool) -> Vec<u8> {
        let host = pool.authority().to_str().unwrap();
        format!("POST /mcp HTTP/1.1\r\nhost: {host}\r\ncontent-length: 2\r\n\r\n{{}}").into_bytes()
    }

    async fn call(pool: &Arc<Pool>) -> Bytes {
        let response = pool.send(&request(pool)).await.unwrap();
        response.body.collect().await.unwrap().to_bytes()
    }

    /// An upstream that refuses a large body from its head alone (413, 401, ...) answers and
    /// closes before reading the rest; the write then fails with a reset, but the answer came
    /// first and is what the caller gets.
    #[tokio::test]
    async fn an_answer_sent_before_a_large_body_was_read_is_heard() {
        let (url, _) = serve_each(|mut sock| async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let refusal = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large";
            let _ = sock.write_all(refusal).await;
            // Dropped with the body unread: the kernel resets the connection.
        })
        .await;
        let pool = Arc::new(Pool::new(&url, None, None, Arc::default()).unwrap());
        let host = pool.authority().to_str().unwrap().to_owned();
        let body = vec![b'x'; 16 << 20];
        let mut request = format!(
            "POST /mcp HTTP/1.1\r\nhost: {host}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let response = pool
            .send(&request)
            .await
            .expect("the upstream's answer, not the reset of the write");
        assert_eq!(response.status, 413);
        let text = response.body.collect().await.unwrap().to_bytes();
        assert_eq!(&text[..], b"too large");
        assert!(
            pool.take_idle().is_none(),
            "a connection cut mid-request is not pooled"
        );
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (url, accepts) = server(None).await;
        let pool = Arc::new(Pool::new(&url, None, None, Arc::default()).unwrap());
        for _ in 0..50 {
            assert_eq!(call(&pool).await, "ok");
        }
        assert_eq!(accepts.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_then_reuse_them() {
        let (url, accepts) = server(None).await;
        let pool = Arc::new(Pool::new(&url, None, None, Arc::default()).unwrap());
        for _ in 0..5 {
            let calls: Vec<_> = (0..4)
                .map(|_| {
                    let pool = pool.clone();
                    tokio::spawn(async move { call(&pool).await })
                })
                .collect();
            for c in calls {
                assert_eq!(c.await.unwrap(), "ok");
            }
        }
        let opened = accepts.load(Ordering::SeqCst);
        assert!(
            (1..=4).contains(&opened),
            "{opened} connections for 4 at a time"
        );
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_not_reported() {
        let (url, accepts) = server(Some(Duration::ZERO)).await;
        let pool = Arc::new(Pool::new(&url, None, None, Arc::default()).unwrap());
        for _ in 0..20 {
            assert_eq!(call(&pool).await, "ok");
        }
        assert_eq!(accepts.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn idle_connections_the_upstream_closed_are_expired() {
        let (url, _) = server(Some(Duration::from_millis(200))).await;
        let pool = Arc::new(Pool::new(&url, None, None, Arc::default()).unwrap());
        let response = pool.send(&request(&pool)).await.unwrap();
        let body = response.body.collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        // Still open: pooled, and a sweep keeps it.
        pool.expire_idle();
        assert_eq!(pool.idle_count(), 1);
        // The server closes it 200 ms after answering; once that is seen, the sweep drops it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..100 {
            pool.expire_idle();
            if pool.idle_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn an_unanswered_body_is_drained_before_reuse() {
        let (url, accepts) = server(None).await;
        let pool = Arc::new(Pool::new(&url, None, None, Arc::default()).unwrap());
        for _ in 0..10 {
            let response = pool.send(&request(&pool)).await.unwrap();
            response.body.finish();
            // The drain runs in the background; wait for the connection to come back.
            for _ in 0..100 {
                if pool.idle_count() == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        assert_eq!(accepts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_with_bytes_after_its_answer_is_not_reused() {
        // Each connection answers once, with junk after the answer's end: a connection out of
        // step with its requests must be closed, not handed to the next request.
        let (url, accepts) = serve_each(|mut sock| async move {
            let mut buf = [0u8; 4096];
            if sock.read(&mut buf).await.unwrap_or(0) > 0 {
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokJUNK";
                let _ = sock.write_all(answer).await;
                // Held open: only the junk tells the pool something is wrong.
                let _ = sock.read(&mut buf).await;
            }
        })
        .await;
        let pool = Arc::new(Pool::new(&url, None, None, Arc::default()).unwrap());
        for _ in 0..3 {
            assert_eq!(call(&pool).await, "ok");
        }
        assert_eq!(accepts.load(Ordering::SeqCst), 3);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn refused_connections_say_so() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap())).unwrap();
        drop(listener);
        let pool = Arc::new(Pool::new(&url, None, None, Arc::default()).unwrap());
        let err = pool.send(&request(&pool)).await.unwrap_err();
        assert!(err.to_string().contains("Connection refused"), "{err}");
        assert!(!err.is_timeout());
    }
}
