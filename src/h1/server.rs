//! HTTP/1.1 for the listener's hot route, `POST /mcp`, served without hyper.
//!
//! Nearly every forwarded call is a `POST /mcp` with a `Content-Length` body on a kept-alive
//! HTTP/1.1 connection, and hyper's general server was the largest item of the gateway's user
//! time on it (docs/PERFORMANCE.md, seventh pass). This loop parses the head with httparse,
//! takes the body by its length, passes the request through the same gate and handler as
//! hyper's path ([`front::post_mcp_read`]) and writes the answer itself.
//!
//! Everything else is hyper's: the first request this loop does not take hands the connection,
//! with every byte read so far, to hyper for the rest of its life. Not taken: other methods and
//! paths, HTTP/1.0 and HTTP/2, `Transfer-Encoding`, `Expect`, `Upgrade`, a missing, repeated or
//! malformed `Content-Length` or one over [`limits::MAX_BODY`], more than [`MAX_HEADERS`] headers,
//! a head over [`MAX_HEAD`] bytes, and whatever httparse refuses. So every refusal (400, 413, ...)
//! and every rarer feature keeps one implementation, and this loop only has to get the common
//! case right.
//!
//! A request refused on its head is answered without its body being read: if the body is
//! already here in full it is dropped and the connection serves on, else the connection is
//! closed. Only a principal over its request rate (429), known and only too soon, has its body
//! awaited (and dropped) so that its connection serves on.
//!
//! Kept as hyper does it: the header timeout runs from the moment the connection waits for a
//! head (so it also bounds an idle kept-alive connection); a body that does not arrive within
//! the body timeout gets 408; a client that closes its connection mid-request cancels the
//! handler; answers carry `Date`; a body of unknown length is sent chunked, each part as soon as
//! it is ready; on graceful shutdown an idle connection closes at once and a busy one after its
//! answer.

use std::io::{self, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use axum::http::{HeaderName, StatusCode};
use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::access::Connection;
use crate::h1::fields::{Fields, Incoming};
use crate::http::mcp::Reply;
use crate::http::{App, AppState, front, limits};

/// Headers of a request this loop takes; more go to hyper.
pub const MAX_HEADERS: usize = 32;
/// Bytes of a request head this loop waits for; a longer head goes to hyper.
pub const MAX_HEAD: usize = 16 * 1024;
/// Free space ensured before each read.
const READ_SPACE: usize = 4 * 1024;
/// Bytes of the next (pipelined) requests read ahead while an answer is pending; past this the
/// connection is not read until the answer is written.
const MAX_AHEAD: usize = 64 * 1024;
/// Answers up to this size are written with their head in one write.
const ONE_WRITE: usize = 64 * 1024;
/// How long an idle connection stays open after the listener stops, for a request already on
/// its way (see `ServerConn::run`).
const STOP_LINGER: Duration = Duration::from_secs(1);
/// Buffer capacity a connection keeps between requests; larger buffers are given back.
const KEEP_BUFFER: usize = 16 * 1024;

/// Timeouts and the shutdown signal of the listener.
#[derive(Clone, Debug)]
pub struct Limits {
    /// How long a client may take to send a request head (from when the connection waits).
    pub header_timeout: Duration,
    /// How long a request body may take to arrive after its head.
    pub body_timeout: Duration,
    /// How long an idle connection stays open once `stop` fires, when longer than
    /// [`STOP_LINGER`] (`drain_delay_ms`: a balancer may still send on it).
    pub linger: Duration,
    /// Fires when the listener stops: idle connections close after a moment for a request on
    /// its way, busy ones after their answer.
    pub stop: CancellationToken,
}

/// Serve one connection of the listener: `POST /mcp` here, the rest through hyper.
///
/// `watcher` is held until the connection ends (graceful shutdown waits for it) and is handed
/// to hyper with the connection.
pub async fn serve<S>(io: S, app: App, state: Arc<AppState>, watcher: Watcher, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed: the loop's state (its buffers, its timer, a request's handler) is freed once it
    // hands over, so a connection that hyper then holds open for hours (an SSE stream) keeps
    // only its socket and the few bytes read ahead.
    // Its forwarded calls borrow one upstream-timeout timer in turn (see `deadline`).
    let connection = app.connection().clone();
    let fast = crate::upstream::deadline::scope(fast(io, &state, &connection, &limits));
    let Some((io, read)) = Box::pin(fast).await else {
        return;
    };
    let io = Prefixed { prefix: read, io };
    crate::server::serve_hyper(io, app, watcher, limits.header_timeout).await;
}

/// Serve `POST /mcp` requests until the connection ends (`None`) or has something else to
/// serve: then the socket and the bytes read of it so far, for hyper.
async fn fast<S>(
    io: S,
    state: &Arc<AppState>,
    connection: &Connection,
    limits: &Limits,
) -> Option<(S, Bytes)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = ServerConn {
        io,
        buf: BytesMut::with_capacity(2 * READ_SPACE),
        out: Vec::new(),
        fields: Vec::with_capacity(MAX_HEADERS),
        clock: Clock::new(Instant::now() + limits.header_timeout),
    };
    match conn.run(state, connection, limits).await {
        Next::Close => {
            let _ = conn.io.shutdown().await;
            None
        }
        Next::Drop => None,
        // A copy of its own size, rather than the read buffer's whole allocation.
        Next::Hyper => Some((conn.io, Bytes::copy_from_slice(&conn.buf))),
    }
}

/// How a connection's loop ended.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Close it cleanly (answered with `connection: close`, or shutdown).
    Close,
    /// Drop it: the client went away, broke the protocol or timed out.
    Drop,
    /// Hand it to hyper, with what was read.
    Hyper,
}

struct ServerConn<S> {
    io: S,
    /// Bytes read and not yet taken by a request.
    buf: BytesMut,
    /// The answer being written.
    out: Vec<u8>,
    /// The head's fields: where each name and value lies in the head.
    fields: Vec<[u32; 4]>,
    clock: Clock,
}

/// What a head in the buffer is.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A `POST /mcp` this loop takes: the head's length, the body's, and whether the client
    /// asked to close after it. Its fields are in [`ServerConn::fields`].
    Post {
        len: usize,
        body: usize,
        close: bool,
    },
    /// Not all of it has arrived.
    Partial,
    /// For hyper.
    Other,
}

impl<S> ServerConn<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async fn run(
        &mut self,
        state: &Arc<AppState>,
        connection: &Connection,
        limits: &Limits,
    ) -> Next {
        // One wait for the stop signal for the connection's life, rather than one registered
        // with the token and taken off it again for each request.
        let mut stop = std::pin::pin!(limits.stop.cancelled());
        // Set at the stop: when an idle connection closes if no request came by then.
        let mut closing_at: Option<Instant> = None;
        loop {
            let waiting_since = Instant::now();
            let (len, body, close) = loop {
                match parse(&self.buf, &mut self.fields) {
                    Parsed::Post { len, body, close } => break (len, body, close),
                    Parsed::Other => return Next::Hyper,
                    Parsed::Partial => {}
                }
                let timeout = waiting_since + limits.header_timeout;
                let deadline = closing_at.map_or(timeout, |at| at.min(timeout));
                tokio::select! {
                    biased;
                    read = read_more(&mut self.io, &mut self.buf) => match read {
                        Ok(0) | Err(_) => return Next::Drop,
                        Ok(_) => {}
                    },
                    // Closing an idle connection the instant the stop comes would fail the
                    // request a busy client is writing on it at that instant (or the first
                    // request of a connection accepted just before): it gets a moment for its
                    // next request, answered with `connection: close`.
                    () = &mut stop, if closing_at.is_none() => {
                        closing_at = Some(Instant::now() + STOP_LINGER.max(limits.linger));
                    },
                    expired = self.clock.until(deadline) => if expired {
                        let idle = closing_at.is_some() && self.buf.is_empty();
                        return if idle { Next::Close } else { Next::Drop };
                    },
                }
            };
            // httparse has checked the names and values: every one is a valid header field.
            let head = self.buf.split_to(len).freeze();
            let headers = Incoming::Wire(Fields::new(head, self.fields.iter().copied()));
            // Who is asking is settled on the head: no body byte is buffered for a request
            // the gateway refuses.
            let principal = match front::post_mcp_head(state, &headers, connection).await {
                Ok(principal) => principal,
                // A body already here in full is dropped and the connection goes on, as for
                // any answered request; one still to come is never read, and the connection
                // ends. But a principal only over its rate is known and only too soon: its body
                // is awaited too, since closing would lose the requests pipelined behind it.
                Err(refused)
                    if self.buf.len() >= body
                        || refused.status() == StatusCode::TOO_MANY_REQUESTS =>
                {
                    if let Err(next) = self.await_body(body, limits).await {
                        return next;
                    }
                    self.buf.advance(body);
                    match self.respond(Reply::Response(refused), close, limits).await {
                        Some(next) => return next,
                        None => continue,
                    }
                }
                Err(refused) => {
                    let _ = self.answer(refused, true).await;
                    return Next::Close;
                }
            };
            if let Err(next) = self.await_body(body, limits).await {
                return next;
            }
            let body = self.buf.split_to(body).freeze();
            let handled = front::post_mcp_read(state.clone(), principal, headers, body);
            let Some(response) = watching(&mut self.io, &mut self.buf, handled).await else {
                return Next::Drop;
            };
            if let Some(next) = self.respond(response, close, limits).await {
                return next;
            }
        }
    }

    /// Read until the buffer holds a body of `len` bytes, within the body timeout; `Err` with
    /// how the connection ends when it does not come (the client left, or 408 answered).
    async fn await_body(&mut self, len: usize, limits: &Limits) -> Result<(), Next> {
        if self.buf.len() >= len {
            return Ok(());
        }
        let deadline = Instant::now() + limits.body_timeout;
        while self.buf.len() < len {
            tokio::select! {
                biased;
                read = read_more(&mut self.io, &mut self.buf) => match read {
                    Ok(0) | Err(_) => return Err(Next::Drop),
                    Ok(_) => {}
                },
                expired = self.clock.until(deadline) => if expired {
                    let refused = limits::too_slow(limits.body_timeout);
                    let _ = self.answer(refused, true).await;
                    return Err(Next::Close);
                },
            }
        }
        Ok(())
    }

    /// Write `reply`, closing after it if the client asked or the listener is stopping; `None`
    /// when the connection serves on.
    async fn respond(&mut self, reply: Reply, close: bool, limits: &Limits) -> Option<Next> {
        let close = close || limits.stop.is_cancelled();
        if self.reply(reply, close).await.is_err() {
            return Some(Next::Drop);
        }
        if close {
            return Some(Next::Close);
        }
        self.shrink();
        None
    }

    /// Give back what one large request or answer grew the buffers to: a kept-alive connection
    /// then idles with its usual few KiB, not with its largest message's size.
    fn shrink(&mut self) {
        if self.out.capacity() > KEEP_BUFFER {
            self.out = Vec::new();
        }
        if self.buf.capacity() > KEEP_BUFFER && self.buf.len() <= 2 * READ_SPACE {
            let ahead = BytesMut::from(&self.buf[..]);
            self.buf = ahead;
        }
    }

    /// Write `reply`; with `close`, say so in its head. A serialized answer goes out as the
    /// hyper path would send it (`content-type`, `cache-control` for an event, `date`,
    /// `content-length`) without a response being built.
    async fn reply(&mut self, reply: Reply, close: bool) -> io::Result<()> {
        let (json, sse_only) = match reply {
            Reply::Answer { json, sse_only } => (json, sse_only),
            Reply::Response(response) => return self.answer(response, close).await,
        };
        let (content_type, body) = Reply::framed(json, sse_only);
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        push_field(out, b"content-type", content_type.as_bytes());
        if sse_only {
            push_field(out, b"cache-control", b"no-cache");
        }
        push_date(out);
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        push_length(out, body.len());
        out.extend_from_slice(b"\r\n");
        if out.len() + body.len() > ONE_WRITE {
            self.flush_out().await?;
            self.io.write_all(&body).await?;
            return self.io.flush().await;
        }
        out.extend_from_slice(&body);
        self.flush_out().await
    }

    /// Write `response`; with `close`, say so in its head.
    async fn answer(&mut self, response: Response, close: bool) -> io::Result<()> {
        let (parts, mut body) = response.into_parts();
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(parts.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(
            parts
                .status
                .canonical_reason()
                .unwrap_or("Unknown")
                .as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if name == CONNECTION || name == TRANSFER_ENCODING {
                continue;
            }
            push_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        if !parts.headers.contains_key(DATE) {
            push_date(out);
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        let status = parts.status;
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            out.extend_from_slice(b"\r\n");
            return self.flush_out().await;
        }
        if let Some(size) = axum::body::HttpBody::size_hint(&body).exact() {
            if !parts.headers.contains_key(CONTENT_LENGTH) {
                push_length(out, usize::try_from(size).unwrap_or(usize::MAX));
            }
            out.extend_from_slice(b"\r\n");
            while let Some(data) = self.frame(&mut body).await? {
                if self.out.len() + data.len() > ONE_WRITE {
                    self.flush_out().await?;
                    self.io.write_all(&data).await?;
                } else {
                    self.out.extend_from_slice(&data);
                }
            }
            return self.flush_out().await;
        }
        out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        self.flush_out().await?;
        while let Some(data) = self.frame(&mut body).await? {
            if data.is_empty() {
                continue;
            }
            write!(self.out, "{:x}\r\n", data.len())?;
            self.out.extend_from_slice(&data);
            self.out.extend_from_slice(b"\r\n");
            self.flush_out().await?;
        }
        self.out.extend_from_slice(b"0\r\n\r\n");
        self.flush_out().await
    }

    /// The body's next data (trailers are dropped), watching the connection meanwhile.
    async fn frame(&mut self, body: &mut Body) -> io::Result<Option<Bytes>> {
        loop {
            let next = watching(&mut self.io, &mut self.buf, body.frame()).await;
            match next {
                None => return Err(io::ErrorKind::ConnectionAborted.into()),
                Some(None) => return Ok(None),
                Some(Some(Err(err))) => return Err(io::Error::other(err)),
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    async fn flush_out(&mut self) -> io::Result<()> {
        self.io.write_all(&self.out).await?;
        self.out.clear();
        self.io.flush().await
    }
}

/// Read what the connection has into `buf`, first making room.
async fn read_more<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_SPACE {
        buf.reserve(READ_SPACE);
    }
    io.read_buf(buf).await
}

/// Run `work` while reading ahead on the connection: `None` when the client closed it (or it
/// failed) first, which drops `work` (hyper does the same for a request whose client left).
async fn watching<S, F>(io: &mut S, buf: &mut BytesMut, work: F) -> Option<F::Output>
where
    S: AsyncRead + Unpin,
    F: Future,
{
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return Some(done),
            read = read_more(io, buf), if buf.len() < MAX_AHEAD => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}

/// Classify the head at the start of `buf`; for a [`Parsed::Post`], `fields` gets where its
/// fields' names and values lie in `buf`.
fn parse(buf: &[u8], fields: &mut Vec<[u32; 4]>) -> Parsed {
    fields.clear();
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Parsed::Partial,
        Ok(httparse::Status::Partial) | Err(_) => return Parsed::Other,
    };
    if request.method != Some("POST")
        || request.path != Some(front::MCP_ROUTE)
        || request.version != Some(1)
    {
        return Parsed::Other;
    }
    let mut body = None;
    let mut close = false;
    let base = buf.as_ptr() as usize;
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        let is = |known: &HeaderName| name.eq_ignore_ascii_case(known.as_str().as_bytes());
        if is(&CONTENT_LENGTH) {
            match (body, decimal(field.value)) {
                (None, Some(n)) if n <= limits::MAX_BODY => body = Some(n),
                _ => return Parsed::Other,
            }
        } else if is(&TRANSFER_ENCODING) || is(&EXPECT) || is(&UPGRADE) {
            return Parsed::Other;
        } else if is(&CONNECTION) {
            for token in field.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::Other;
                }
            }
        }
        // Heads longer than MAX_HEAD (16 KiB) are not taken: offsets fit in u32.
        let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let (name_at, value_at) = (at(name), at(field.value));
        fields.push([
            name_at,
            name_at + name.len() as u32,
            value_at,
            value_at + field.value.len() as u32,
        ]);
    }
    match body {
        Some(body) => Parsed::Post { len, body, close },
        None => Parsed::Other,
    }
}

/// A `Content-Length` value: ASCII digits only (no sign, no space, no list).
fn decimal(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0')),
    )
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `content-length: N`.
fn push_length(out: &mut Vec<u8>, n: usize) {
    push_field(
        out,
        b"content-length",
        crate::h1::fields::decimal(n, &mut [0; 20]),
    );
}

/// `date: <IMF-fixdate>`, formatted once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        push_field(out, b"date", text.as_bytes());
    });
}

/// One timer per connection for its header and body deadlines. It is only ever set earlier
/// than the deadline waited for, so most requests reuse it as it is: when it fires before the
/// deadline it is moved to it (a timer registered once per timeout period, not per request).
struct Clock {
    sleep: Pin<Box<Sleep>>,
    at: Instant,
}

impl Clock {
    fn new(at: Instant) -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// Wait for the timer; `true` once `deadline` has passed, `false` when it fired early (it
    /// is then moved to `deadline`).
    async fn until(&mut self, deadline: Instant) -> bool {
        if self.at > deadline {
            self.at = deadline;
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().await;
        if Instant::now() >= deadline {
            return true;
        }
        self.at = deadline;
        self.sleep.as_mut().reset(deadline);
        false
    }
}

/// The connection as hyper gets it: the bytes this loop read first, then the socket.
struct Prefixed<S> {
    prefix: Bytes,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        if self.prefix.is_empty() {
            self.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1::fields::Lookup;

    fn classify(text: &str) -> Parsed {
        let mut fields = Vec::new();
        parse(text.as_bytes(), &mut fields)
    }

    #[test]
    fn only_a_plain_post_to_mcp_with_a_length_is_taken() {
        let post = "POST /mcp HTTP/1.1\r\nhost: a\r\ncontent-length: 7\r\n\r\n";
        assert_eq!(
            classify(post),
            Parsed::Post {
                len: post.len(),
                body: 7,
                close: false
            }
        );
        let close =
            "POST /mcp HTTP/1.1\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(classify(close), Parsed::Post { close: true, .. }));
        assert_eq!(
            classify("POST /mcp HTTP/1.1\r\nhost: a\r\ncontent"),
            Parsed::Partial
        );
        assert_eq!(classify(""), Parsed::Partial);
        for other in [
            "GET /mcp HTTP/1.1\r\n\r\n",
            "POST /mcp?x=1 HTTP/1.1\r\ncontent-length: 1\r\n\r\n",
            "POST /mcp/http HTTP/1.1\r\ncontent-length: 1\r\n\r\n",
            "POST /mcp HTTP/1.0\r\ncontent-length: 1\r\n\r\n",
            "POST /mcp HTTP/1.1\r\n\r\n",
            "POST /mcp HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST /mcp HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST /mcp HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
            "POST /mcp HTTP/1.1\r\ncontent-length: 1, 1\r\n\r\n",
            "POST /mcp HTTP/1.1\r\ncontent-length: +1\r\n\r\n",
            "POST /mcp HTTP/1.1\r\ncontent-length: 99999999\r\n\r\n",
            "POST /mcp HTTP/1.1\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
            "POST /mcp HTTP/1.1\r\ncontent-length: 5\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "\x16\x03\x01\x02\x00",
            "POST /mcp HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert_eq!(classify(other), Parsed::Other, "{other:?}");
        }
    }

    #[tokio::test]
    async fn a_connection_gives_back_what_a_large_message_grew_its_buffers_to() {
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = ServerConn {
            io,
            buf: BytesMut::with_capacity(4 * 1024 * 1024),
            out: Vec::with_capacity(ONE_WRITE + 1024),
            fields: Vec::new(),
            clock: Clock::new(Instant::now() + Duration::from_secs(30)),
        };
        conn.buf.extend_from_slice(b"POST /mcp HTTP/1.1\r\n");
        conn.shrink();
        assert!(conn.out.capacity() <= KEEP_BUFFER);
        assert!(conn.buf.capacity() <= KEEP_BUFFER);
        assert_eq!(
            &conn.buf[..],
            b"POST /mcp HTTP/1.1\r\n",
            "bytes read ahead are kept"
        );
        // Usual sizes are kept as they are.
        conn.out.reserve(4096);
        let kept = conn.out.capacity();
        conn.shrink();
        assert_eq!(conn.out.capacity(), kept);
    }

    #[test]
    fn too_many_headers_or_too_long_a_head_go_to_hyper() {
        let mut many = String::from("POST /mcp HTTP/1.1\r\ncontent-length: 0\r\n");
        for i in 0..MAX_HEADERS {
            many.push_str(&format!("x-{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(classify(&many), Parsed::Other);
        let long = format!("POST /mcp HTTP/1.1\r\nx-long: {}", "a".repeat(MAX_HEAD));
        assert_eq!(classify(&long), Parsed::Other);
    }

    #[test]
    fn field_values_are_found_where_they_lie_in_the_head() {
        let text = "POST /mcp HTTP/1.1\r\nMcp-Session-Id:  abc \r\ncontent-length: 2\r\n\r\n";
        let mut fields = Vec::new();
        assert!(matches!(
            parse(text.as_bytes(), &mut fields),
            Parsed::Post { body: 2, .. }
        ));
        let values: Vec<(&str, &str)> = fields
            .iter()
            .map(|&[ns, ne, vs, ve]| {
                let at = |a: u32, b: u32| &text[a as usize..b as usize];
                (at(ns, ne), at(vs, ve))
            })
            .collect();
        assert_eq!(values, [("Mcp-Session-Id", "abc"), ("content-length", "2")]);
        let fields = Fields::new(Bytes::from(text), fields);
        assert_eq!(fields.text(&crate::h1::fields::SESSION_ID), Some("abc"));
        assert_eq!(fields.text(&CONTENT_LENGTH), Some("2"));
    }
}
