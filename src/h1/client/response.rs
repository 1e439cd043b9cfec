//! HTTP/1.1 on one pooled upstream connection: write a request the caller serialized, read the
//! response head, then its body as it comes, by its framing (RFC 9112, section 6).
//!
//! This is all the pool needs of HTTP, done on the task that sent the request: no connection
//! task, no channel between the two, no request or header map built only to be serialized
//! again (what a general client does on every call; docs/PERFORMANCE.md, fifth pass).
//!
//! What it reads: a status line, up to [`MAX_HEADERS`] header fields within [`MAX_HEAD`]
//! bytes, interim 1xx responses (skipped), and a body framed by `Transfer-Encoding: chunked`,
//! `Content-Length`, or the connection's end. Anything else is an error naming what was wrong.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, StatusCode};

use crate::h1::fields::{Fields, Lookup, visible};

/// Largest response head.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line or trailer line.
const MAX_LINE: usize = 4096;
/// Bytes asked of the socket per read, at first.
const READ_SIZE: usize = 16 * 1024;
/// At most, after reads that kept filling what was asked: a large or streamed answer then
/// comes in a few large pieces rather than many small ones (SSE parsing re-reads an event
/// that is still growing each time a piece comes).
const MAX_READ_SIZE: usize = 1024 * 1024;

/// Any byte stream a connection runs on (TCP or TLS over TCP).
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A response head.
#[derive(Debug)]
pub struct Head {
    /// The final status.
    pub status: StatusCode,
    /// Its header fields.
    pub headers: Fields,
    /// How its body is delimited.
    pub framing: Framing,
    /// Whether the connection ends with this response.
    pub close: bool,
}

/// How a body is delimited, and how much of it is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are left, never 0 (an empty body is [`Framing::Done`]).
    Length(u64),
    /// Chunked, at this step.
    Chunked(Chunk),
    /// Until the connection closes.
    UntilClose,
    /// Fully read.
    Done,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data are left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines until an empty one.
    Trailers,
}

/// What one step of chunked decoding did.
enum Step {
    /// Chunk data.
    Data(Bytes),
    /// Moved on (a size line, a chunk's end, a trailer line).
    Moved,
    /// The buffer holds too little: read more.
    Short,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// How [`closed`] starts its message.
pub const CLOSED: &str = "the upstream closed the connection";

/// The upstream closed the connection `what` (e.g. "before answering").
pub fn closed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("{CLOSED} {what}"))
}

/// A connection's byte stream with what has been read from it and not used yet.
pub struct Buffered {
    io: Box<dyn Io>,
    buf: BytesMut,
    /// What the next read asks for.
    read_size: usize,
}

impl std::fmt::Debug for Buffered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffered")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Buffered {
    /// A wire over `io`.
    pub fn new(io: Box<dyn Io>) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            read_size: READ_SIZE,
        }
    }

    /// Between requests: reads start small again, and a large buffer left by a large answer
    /// is let go rather than kept by an idle connection.
    pub fn rewind(&mut self) {
        self.read_size = READ_SIZE;
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_SIZE {
            self.buf = BytesMut::new();
        }
    }

    /// Write all of `bytes` and flush them.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Read more into the buffer; the number of bytes read (0: the peer closed).
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(self.read_size);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ))?;
        if n >= self.read_size {
            self.read_size = (self.read_size * 2).min(MAX_READ_SIZE);
        }
        Poll::Ready(Ok(n))
    }

    /// A complete response head that already arrived (read without waiting), e.g. sent by a
    /// peer that answered before reading all of a request and then reset the connection.
    pub fn answer_already_in(&mut self) -> Option<Head> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            if let Ok(Some(head)) = self.parse_head() {
                return Some(head);
            }
            match self.poll_fill(&mut cx) {
                Poll::Ready(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Whether bytes are buffered.
    pub fn buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Whether an idle connection is still open: nothing to read, no close seen. Never waits.
    pub fn idle_and_open(&mut self) -> bool {
        if self.buffered() {
            // An idle connection has nothing to say; bytes here mean it is out of step.
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(self.poll_fill(&mut cx), Poll::Pending)
    }

    /// The response head, once the buffer holds a complete one (interim 1xx responses are
    /// consumed and skipped); `None` while more bytes are needed.
    pub fn parse_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            // Left uninitialized for httparse to fill (zeroing 100 fields per answer was a
            // tenth of the head's parse).
            let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut response,
                &self.buf,
                &mut fields,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                    return Err(invalid(format!(
                        "the upstream's response head exceeds {MAX_HEAD} bytes"
                    )));
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => {
                    return Err(invalid(format!(
                        "the upstream's response is not HTTP/1.1 ({e})"
                    )));
                }
            };
            let code = response.code.unwrap_or(0);
            let status = StatusCode::from_u16(code)
                .map_err(|_| invalid(format!("the upstream answered with status {code}")))?;
            if status.is_informational() {
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(invalid("the upstream switched protocols unasked"));
                }
                self.buf.advance(len);
                continue;
            }
            // One copy of the head; the fields are where httparse found them in the buffer,
            // which is where they lie in the copy (httparse has checked names and values).
            let base = self.buf.as_ptr() as usize;
            let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
            let spans = response.headers.iter().map(|f| {
                let (name, value) = (f.name.as_bytes(), f.value);
                let (n, v) = (at(name), at(value));
                [n, n + name.len() as u32, v, v + value.len() as u32]
            });
            let headers = Fields::new(Bytes::copy_from_slice(&self.buf[..len]), spans);
            let http10 = response.version == Some(0);
            self.buf.advance(len);
            return framing(status, headers, http10).map(Some);
        }
    }

    /// The next piece of the body framed by `framing` (updated as it goes): `Ok(None)` at its
    /// end. Pending while the socket has nothing for it.
    pub fn poll_body(
        &mut self,
        framing: &mut Framing,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            match *framing {
                Framing::Done => return Poll::Ready(Ok(None)),
                Framing::Length(left) => {
                    if self.buf.is_empty() && ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(closed("before the end of its answer")));
                    }
                    let (data, rest) = self.take(left);
                    *framing = if rest == 0 {
                        Framing::Done
                    } else {
                        Framing::Length(rest)
                    };
                    return Poll::Ready(Ok(Some(data)));
                }
                Framing::UntilClose => {
                    if self.buf.is_empty() && ready!(self.poll_fill(cx))? == 0 {
                        *framing = Framing::Done;
                        return Poll::Ready(Ok(None));
                    }
                    return Poll::Ready(Ok(Some(self.buf.split().freeze())));
                }
                Framing::Chunked(step) => match self.chunk_step(step, framing)? {
                    Step::Data(data) => return Poll::Ready(Ok(Some(data))),
                    Step::Moved => {}
                    Step::Short => {
                        if ready!(self.poll_fill(cx))? == 0 {
                            return Poll::Ready(Err(closed("inside a chunked answer")));
                        }
                    }
                },
            }
        }
    }

    /// One step of chunked decoding from the buffer.
    fn chunk_step(&mut self, step: Chunk, framing: &mut Framing) -> io::Result<Step> {
        match step {
            Chunk::Size => {
                let Some(line) = self.line()? else {
                    return Ok(Step::Short);
                };
                let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                let digits = std::str::from_utf8(digits)
                    .unwrap_or("")
                    .trim_matches([' ', '\t']);
                let size = u64::from_str_radix(digits, 16)
                    .ok()
                    .filter(|_| !digits.is_empty() && !digits.starts_with('+'))
                    .ok_or_else(|| invalid("invalid chunk size in the upstream's answer"))?;
                *framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
                Ok(Step::Moved)
            }
            Chunk::Data(left) => {
                if self.buf.is_empty() {
                    return Ok(Step::Short);
                }
                let (data, rest) = self.take(left);
                *framing = Framing::Chunked(if rest == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(rest)
                });
                Ok(Step::Data(data))
            }
            Chunk::DataEnd => {
                if self.buf.len() < 2 {
                    return Ok(Step::Short);
                }
                if &self.buf[..2] != b"\r\n" {
                    return Err(invalid(
                        "a chunk of the upstream's answer is longer than it said",
                    ));
                }
                self.buf.advance(2);
                *framing = Framing::Chunked(Chunk::Size);
                Ok(Step::Moved)
            }
            Chunk::Trailers => {
                let Some(line) = self.line()? else {
                    return Ok(Step::Short);
                };
                if line.is_empty() {
                    *framing = Framing::Done;
                }
                Ok(Step::Moved)
            }
        }
    }

    /// Up to `left` buffered bytes, and how many of `left` remain after them.
    fn take(&mut self, left: u64) -> (Bytes, u64) {
        let n = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        (self.buf.split_to(n).freeze(), left - n as u64)
    }

    /// A CRLF-ended line taken from the buffer, without its end; `None` if not all in yet.
    fn line(&mut self) -> io::Result<Option<Bytes>> {
        match memchr::memchr(b'\n', &self.buf) {
            Some(at) => {
                let line = self.buf.split_to(at + 1).freeze();
                let line = line.slice(..at);
                Ok(Some(match line.last() {
                    Some(b'\r') => line.slice(..at - 1),
                    _ => line,
                }))
            }
            None if self.buf.len() > MAX_LINE => Err(invalid(
                "a line of the upstream's chunked answer is too long",
            )),
            None => Ok(None),
        }
    }
}

/// How the body of a response with this head is delimited (RFC 9112, section 6.3).
fn framing(status: StatusCode, headers: Fields, http10: bool) -> io::Result<Head> {
    // The comma-separated tokens of every field named `name`, trimmed.
    let tokens = |name: &'static HeaderName| {
        headers
            .get_all(name)
            .flat_map(|v| visible(v).unwrap_or("").split(','))
            .map(str::trim)
    };
    let connection =
        |token: &str| tokens(&http::header::CONNECTION).any(|t| t.eq_ignore_ascii_case(token));
    let mut close = connection("close") || (http10 && !connection("keep-alive"));
    let framing = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Done
    } else if headers.contains(&http::header::TRANSFER_ENCODING) {
        let chunked = tokens(&http::header::TRANSFER_ENCODING)
            .last()
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        if chunked && !http10 {
            // With Content-Length too, the length is ignored, and the connection not reused.
            close |= headers.contains(&http::header::CONTENT_LENGTH);
            Framing::Chunked(Chunk::Size)
        } else {
            close = true;
            Framing::UntilClose
        }
    } else if headers.contains(&http::header::CONTENT_LENGTH) {
        let mut lengths = tokens(&http::header::CONTENT_LENGTH)
            .map(|t| t.parse::<u64>().ok().filter(|_| !t.starts_with('+')));
        let first = lengths.next().flatten();
        match first {
            Some(n) if lengths.all(|l| l == Some(n)) => {
                if n == 0 {
                    Framing::Done
                } else {
                    Framing::Length(n)
                }
            }
            _ => return Err(invalid("the upstream sent an invalid Content-Length")),
        }
    } else {
        close = true;
        Framing::UntilClose
    };
    Ok(Head {
        status,
        headers,
        framing,
        close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A wire whose peer writes `parts` one by one (each its own read), then closes.
    async fn wire(parts: Vec<&'static [u8]>) -> Buffered {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            for p in parts {
                if theirs.write_all(p).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        Buffered::new(Box::new(ours))
    }

    async fn head(w: &mut Buffered) -> io::Result<Head> {
        loop {
            if let Some(head) = w.parse_head()? {
                return Ok(head);
            }
            if std::future::poll_fn(|cx| w.poll_fill(cx)).await? == 0 {
                return Err(closed("before answering"));
            }
        }
    }

    async fn body(w: &mut Buffered, framing: &mut Framing) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(piece) = std::future::poll_fn(|cx| w.poll_body(framing, cx)).await? {
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_length_framed_answer_in_pieces() {
        let mut w = wire(vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: applic",
            b"ation/json\r\nContent-Length: 11\r\n\r\n{\"a\":",
            b"\"bcd\"}",
        ])
        .await;
        let mut h = head(&mut w).await.unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(
            h.headers.text(&http::header::CONTENT_TYPE),
            Some("application/json")
        );
        assert!(!h.close);
        assert_eq!(
            body(&mut w, &mut h.framing).await.unwrap(),
            b"{\"a\":\"bcd\"}"
        );
        assert_eq!(h.framing, Framing::Done);
        assert!(!w.buffered());
    }

    #[tokio::test]
    async fn header_values_come_through_as_sent() {
        let mut w = wire(vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nMcp-Session-Id: abc\r\n",
            b"X-Empty:\r\nX-Two: 1\r\nX-Two: 2\r\nX-Bin: caf\xe9\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let h = head(&mut w).await.unwrap();
        let name = HeaderName::from_static;
        assert_eq!(h.headers.text(&crate::h1::fields::SESSION_ID), Some("abc"));
        assert_eq!(h.headers.text(&name("x-empty")), Some(""));
        let two: Vec<&[u8]> = h.headers.get_all(&name("x-two")).collect();
        assert_eq!(two, [b"1", b"2"]);
        assert_eq!(h.headers.value(&name("x-bin")), Some(b"caf\xe9".as_slice()));
        assert!(!h.headers.contains(&http::header::LINK));
        assert_eq!(h.framing, Framing::Done);
    }

    #[tokio::test]
    async fn a_chunked_answer_with_extensions_and_trailers() {
        let mut w = wire(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5;ext=1\r\nhel",
            b"lo\r\n",
            b"7\r\n, world\r\n0\r\nX-Trailer: t\r\n",
            b"\r\n",
        ])
        .await;
        let mut h = head(&mut w).await.unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(body(&mut w, &mut h.framing).await.unwrap(), b"hello, world");
        assert_eq!(h.framing, Framing::Done);
        assert!(!w.buffered());
    }

    #[tokio::test]
    async fn only_a_last_coding_of_chunked_frames_by_chunks() {
        let mut w = wire(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n",
        ])
        .await;
        let h = head(&mut w).await.unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(!h.close);
        let mut w = wire(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        ])
        .await;
        let h = head(&mut w).await.unwrap();
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(h.close);
    }

    #[tokio::test]
    async fn an_answer_without_length_runs_to_the_close() {
        let mut w = wire(vec![b"HTTP/1.1 200 OK\r\n\r\nall ", b"of it"]).await;
        let mut h = head(&mut w).await.unwrap();
        assert!(h.close);
        assert_eq!(body(&mut w, &mut h.framing).await.unwrap(), b"all of it");
    }

    #[tokio::test]
    async fn bodiless_statuses_and_connection_close() {
        let mut w = wire(vec![
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        ])
        .await;
        let mut h = head(&mut w).await.unwrap();
        assert!(h.close);
        assert_eq!(body(&mut w, &mut h.framing).await.unwrap(), b"");
        let mut w = wire(vec![b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"]).await;
        let h = head(&mut w).await.unwrap();
        assert_eq!(
            h.framing,
            Framing::Done,
            "an empty body is over before it is read"
        );
        assert!(!h.close);
        let mut w = wire(vec![b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"]).await;
        assert!(
            head(&mut w).await.unwrap().close,
            "HTTP/1.0 closes by default"
        );
    }

    #[tokio::test]
    async fn broken_answers_say_what_is_wrong() {
        let err = |parts: Vec<&'static [u8]>| async move {
            let mut w = wire(parts).await;
            match head(&mut w).await {
                Err(e) => e.to_string(),
                Ok(mut h) => body(&mut w, &mut h.framing).await.unwrap_err().to_string(),
            }
        };
        let cases: [(&'static [u8], &str); 8] = [
            (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP/1.1"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0, 5\r\n\r\n",
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
                "closed the connection before the end",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
                "longer than it said",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                "inside a chunked answer",
            ),
            (b"HTTP/1.1 200 OK\r\n", "before answering"),
        ];
        for (answer, expect) in cases {
            let got = err(vec![answer]).await;
            assert!(
                got.contains(expect),
                "{:?}: {got}",
                String::from_utf8_lossy(answer)
            );
        }
        let huge: &'static [u8] = Box::leak(
            format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(MAX_HEAD))
                .into_bytes()
                .into_boxed_slice(),
        );
        assert!(err(vec![huge]).await.contains("exceeds"));
    }
}
