//! Newline-delimited JSON-RPC, the stdio transport's framing: one message per line, in both
//! directions.
//!
//! Reading keeps at most a cap of one line in memory: a longer line is counted and skipped to
//! its end, so a child that writes 20 MiB without a newline costs the gateway no more than the
//! cap. Writing goes through one task per child that owns its stdin, so two messages never
//! interleave however many callers send at once.

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
    /// An answer (`id` and `result` or `error`, no `method`), kept as it came: a forwarded
    /// call's result is copied to the client without being parsed and written again, as an HTTP
    /// upstream's JSON body is.
    Answer {
        /// Its id, as written.
        id: String,
        /// The whole message.
        body: bytes::Bytes,
    },
    /// Any other JSON-RPC message (a JSON object): parsed.
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
        return Ok(Some(classify(line.bytes)));
    }
}

/// An answer, another message, or not JSON-RPC at all. The answer is told by a scan of its top
/// level (which checks the whole text's grammar as serde_json would), without building it.
fn classify(line: Vec<u8>) -> Frame {
    let answer_id = std::str::from_utf8(&line)
        .ok()
        .and_then(crate::upstream::scan::members)
        .and_then(|members| {
            let mut id = None;
            let (mut answer, mut method) = (false, false);
            for (key, value) in &members {
                match key.as_ref() {
                    "id" => id = Some(*value),
                    "result" | "error" => answer = true,
                    "method" => method = true,
                    _ => {}
                }
            }
            id.filter(|_| answer && !method).map(str::to_owned)
        });
    if let Some(id) = answer_id {
        return Frame::Answer {
            id,
            body: bytes::Bytes::from(line),
        };
    }
    match serde_json::from_slice::<Value>(&line) {
        Ok(value) if value.is_object() => Frame::Message(value),
        _ => Frame::NotJson {
            excerpt: excerpt(&line, 200),
        },
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

/// How many messages may wait for the child to read its stdin before a sender waits too: a
/// child that stops reading slows its callers down instead of growing the gateway's memory.
const QUEUE: usize = 256;

/// The most bytes written to the child in one go when messages queue up.
const BATCH: usize = 64 << 10;

/// The writing end of a child's stdin, shared by every sender.
///
/// One task owns the pipe and writes what senders queue: when several messages wait (or are
/// about to: see `write_queued`), they go out in one write, so a child under load reads
/// several per system call (as it would from a client that batches), and no sender's
/// cancellation can leave half a line on the pipe.
pub struct Writer {
    queue: tokio::sync::mpsc::Sender<Vec<u8>>,
    closed: tokio_util::sync::CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Writer {
    /// A writer over `w`; its task runs on the current runtime.
    pub fn new<W: AsyncWrite + Unpin + Send + 'static>(w: W) -> Self {
        let (queue, rx) = tokio::sync::mpsc::channel(QUEUE);
        let closed = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(write_queued(w, rx, closed.clone()));
        Self {
            queue,
            closed,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Queue `body` to be written as one line, whole, never interleaved with another message.
    /// Fails once the writer is closed or a write to the child failed (it stopped reading).
    pub async fn send(&self, body: &[u8]) -> std::io::Result<()> {
        if self.closed.is_cancelled() {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        self.queue
            .send(line_of(body))
            .await
            .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
    }

    /// Close it: what was queued before is written, then the child reads the end of its input
    /// (how a stdio server is asked to stop). Callers bound the wait: a child that does not
    /// read keeps the last write pending until it is killed.
    pub async fn close(&self) {
        self.closed.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The writer's task: each message queued, with those queued behind it (up to [`BATCH`]), in one
/// write; ends (closing the pipe) when the writer is closed and what was queued is written, or
/// when a write fails.
async fn write_queued<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    closed: tokio_util::sync::CancellationToken,
) {
    let mut batch = Vec::new();
    let mut closing = false;
    loop {
        let first = tokio::select! {
            biased;
            () = closed.cancelled(), if !closing => {
                // No more sends; what is queued still goes out.
                rx.close();
                closing = true;
                continue;
            }
            next = rx.recv() => match next {
                Some(line) => line,
                None => break,
            },
        };
        // Alone in the queue: let the callers the runtime is about to run queue theirs first
        // (one turn of the scheduler, not a timer). Their lines then share this write, and the
        // child reads them in one go: under load, fewer writes here and fewer reads and wake-ups
        // in the child. A lone call waits only for the tasks already due.
        if rx.is_empty() {
            tokio::task::yield_now().await;
        }
        let out = match rx.try_recv() {
            Err(_) => first,
            Ok(next) => {
                let mut out = std::mem::take(&mut batch);
                out.clear();
                out.extend_from_slice(&first);
                out.extend_from_slice(&next);
                while out.len() < BATCH {
                    let Ok(next) = rx.try_recv() else { break };
                    out.extend_from_slice(&next);
                }
                out
            }
        };
        if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
            break;
        }
        // The larger buffer is kept for the next batch, unless one huge message grew it.
        if out.capacity() > batch.capacity() && out.capacity() <= BATCH * 2 {
            batch = out;
        }
    }
    // After a failed write, senders see the closed queue from now on.
    rx.close();
    let _ = w.shutdown().await;
}
