//! Newline-delimited JSON-RPC, the stdio transport's framing: one message per line, in both
//! directions.
//!
//! Reading keeps at most a cap of one line in memory: a longer line is counted and skipped to
//! its end, so a child that writes 20 MiB without a newline costs the gateway no more than the
//! cap. Writing puts a whole message and its newline in one buffer and writes it under a lock,
//! so two messages never interleave on the child's stdin however many callers send at once.

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// The largest message a child may send (and the most of one line kept in memory).
pub const MAX_MESSAGE: usize = 16 << 20;

/// One line read, cut at the cap.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    /// The line without its end (`\n` or `\r\n`), at most the cap; empty when the line was
    /// longer than the cap.
    pub bytes: Vec<u8>,
    /// How long the line really was.
    pub len: usize,
}

impl Line {
    /// Whether the line was longer than the cap (and its bytes were dropped).
    pub fn too_long(&self) -> bool {
        self.bytes.len() < self.len
    }
}

/// Read the next line of `reader`, keeping at most `cap` bytes of it: a longer one comes back
/// with `len` only (`keep_head` keeps its first `cap` bytes instead, for logs). `None` at the end
/// of the stream. The last line needs no newline.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    cap: usize,
    keep_head: bool,
) -> std::io::Result<Option<Line>> {
    let mut bytes = Vec::new();
    let mut len = 0usize;
    let mut over = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            if len == 0 {
                return Ok(None);
            }
            break;
        }
        let (chunk, used, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        len += chunk.len();
        if !over {
            if bytes.len() + chunk.len() <= cap {
                bytes.extend_from_slice(chunk);
            } else if keep_head {
                bytes.extend_from_slice(&chunk[..cap - bytes.len()]);
                over = true;
            } else {
                // Freed at once: what is over the cap is never held.
                bytes = Vec::new();
                over = true;
            }
        }
        reader.consume(used);
        if end {
            break;
        }
    }
    if bytes.last() == Some(&b'\r') && !over {
        bytes.pop();
        len -= 1;
    }
    Ok(Some(Line { bytes, len }))
}

/// What one line of a child's stdout holds.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A JSON-RPC message (a JSON object).
    Message(Value),
    /// A line over [`MAX_MESSAGE`], skipped.
    TooLong {
        /// Its length.
        len: usize,
    },
    /// A line that is not a JSON object, skipped (a program's stray `print`).
    NotJson {
        /// Its start, for the log.
        excerpt: String,
    },
}

/// The next frame of a child's stdout; blank lines are skipped. `None` at the end.
pub async fn read_frame<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    cap: usize,
) -> std::io::Result<Option<Frame>> {
    loop {
        let Some(line) = read_line(reader, cap, false).await? else {
            return Ok(None);
        };
        if line.too_long() {
            return Ok(Some(Frame::TooLong { len: line.len }));
        }
        if line.bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return Ok(Some(match serde_json::from_slice::<Value>(&line.bytes) {
            Ok(value) if value.is_object() => Frame::Message(value),
            _ => Frame::NotJson {
                excerpt: excerpt(&line.bytes, 200),
            },
        }));
    }
}

/// The first `max` bytes of `bytes`, as text.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > max {
        text.push('…');
    }
    text
}

/// The line that carries `body`: the message, then a newline. A message copied as a client sent
/// it may be pretty-printed: a line break in JSON can only be whitespace between tokens (inside
/// a string it must be escaped), so it becomes a space and the message stays one line.
pub fn line_of(body: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(body.len() + 1);
    line.extend_from_slice(body);
    for b in &mut line {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    line.push(b'\n');
    line
}

/// The writing end of a child's stdin, shared by every sender; `None` once closed.
pub struct Writer<W> {
    inner: tokio::sync::Mutex<Option<W>>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// A writer over `w`.
    pub fn new(w: W) -> Self {
        Self {
            inner: tokio::sync::Mutex::new(Some(w)),
        }
    }

    /// Write `body` as one line, whole (a partial write is continued), never interleaved with
    /// another message.
    pub async fn send(&self, body: &[u8]) -> std::io::Result<()> {
        let line = line_of(body);
        let mut w = self.inner.lock().await;
        let Some(w) = w.as_mut() else {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        };
        w.write_all(&line).await?;
        w.flush().await
    }

    /// Close it: the child reads the end of its input (how a stdio server is asked to stop).
    pub async fn close(&self) {
        if let Some(mut w) = self.inner.lock().await.take() {
            let _ = w.shutdown().await;
        }
    }
}
