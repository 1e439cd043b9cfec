//! The lean HTTP/1.1 load generator, for plain-HTTP rows at c=16 (issue 21): one kept-alive
//! connection and MCP session per worker, each worker a task on the caller's tokio runtime that
//! owns its socket (no connection task, no channel, no header map); every call writes a request
//! whose head is serialised once (only `Content-Length` and the JSON-RPC id change) in one write
//! and reads the answer with a minimal parser: status line, `Content-Length`, body. Tasks on one
//! event loop rather than a blocking socket per OS thread: with threads every answer wakes a
//! thread of its own, where the loop takes several ready sockets per wake-up (measured, threads
//! cost more CPU per call than the hyper generator).
//!
//! Why a second HTTP generator: on two shared cores calls/s follows the CPU of every process
//! per call, and the hyper generator (`load.rs`) costs several times what the direct stdio
//! generator does, so a through/direct ratio measured the generators as much as mcpgw. This one
//! does only what a `tools/call` row needs: an answer other than a 200 with a result is a failed
//! call, and one it cannot read (chunked, SSE, no `Content-Length`) stops its worker with that
//! error; TLS, `GET` streams, redials and session ends stay with hyper.

use std::io::Write;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use anyhow::{Context, Result, anyhow, bail};

use crate::load::{
    CallBody, INITIALIZE, INITIALIZED, Plan, Report, Tally, Target, Until, has_result,
};

/// How long past its deadline a run (or the opening of its workers) may last: a silent server
/// fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One worker: its connection and MCP session.
pub struct Worker {
    stream: TcpStream,
    /// The request line and headers of a POST, up to the `Content-Length` value.
    head: Vec<u8>,
    call: CallBody,
    next_id: u64,
    /// The body of the call being made, reused.
    body: Vec<u8>,
    /// The request being written (head, length, body), reused.
    out: Vec<u8>,
    /// Bytes read: `..filled` are valid, `..done` belong to answers already handled.
    buf: Vec<u8>,
    filled: usize,
    done: usize,
    /// A request went out and its answer was not read whole: the connection is out of step.
    broken: bool,
}

/// One answer: status, where its body sits in the worker's buffer, its session header.
struct Answer {
    status: u16,
    body: std::ops::Range<usize>,
    session: Option<String>,
}

/// The request line and headers every POST of this worker carries, up to `Content-Length: `.
fn request_head(target: &Target, session: Option<&str>) -> Result<Vec<u8>> {
    let host = target
        .authority
        .to_str()
        .context("the Host header is not text")?;
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
        target.path
    );
    if let Some(s) = session {
        head.push_str(&format!("Mcp-Session-Id: {s}\r\n"));
    }
    if let Some(bearer) = &target.bearer {
        let value = bearer.to_str().context("the token is not text")?;
        head.push_str(&format!("Authorization: {value}\r\n"));
    }
    head.push_str("Content-Length: ");
    Ok(head.into_bytes())
}

impl Worker {
    /// Dial, `initialize`, `notifications/initialized`.
    pub async fn open(target: &Target, tool: &str) -> Result<Self> {
        if target.tls.is_some() {
            bail!("the lean generator speaks plain HTTP only; use the hyper one for https");
        }
        let stream = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("connect {}", target.addr))?;
        stream.set_nodelay(true)?;
        let mut w = Self {
            stream,
            head: request_head(target, None)?,
            call: CallBody::new(tool),
            next_id: 1,
            body: Vec::with_capacity(256),
            out: Vec::with_capacity(1024),
            buf: vec![0; 8192],
            filled: 0,
            done: 0,
            broken: false,
        };
        let init = w.post(INITIALIZE.as_bytes()).await?;
        if init.status != 200 || !has_result(&w.buf[init.body.clone()]) {
            bail!(
                "initialize answered {}: {}",
                init.status,
                String::from_utf8_lossy(&w.buf[init.body])
            );
        }
        let session = init
            .session
            .ok_or_else(|| anyhow!("initialize gave no Mcp-Session-Id"))?;
        w.head = request_head(target, Some(&session))?;
        let note = w.post(INITIALIZED.as_bytes()).await?;
        if !(200..300).contains(&note.status) {
            bail!("notifications/initialized answered {}", note.status);
        }
        Ok(w)
    }

    /// One `tools/call`; Err carries a short reason.
    pub async fn call(&mut self) -> Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        self.call.write(id, &mut body)?;
        let answer = self.post(&body).await;
        self.body = body;
        let answer = answer?;
        let bytes = &self.buf[answer.body];
        if answer.status != 200 || !has_result(bytes) {
            bail!(
                "HTTP {}: {}",
                answer.status,
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            );
        }
        Ok(())
    }

    /// Whether the last call left the connection unusable (an I/O error, an answer this
    /// generator does not read): the worker stops rather than read a stale answer.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Write one request with `body` in one write, read its answer.
    async fn post(&mut self, body: &[u8]) -> Result<Answer> {
        self.broken = true;
        self.out.clear();
        self.out.extend_from_slice(&self.head);
        write!(self.out, "{}\r\n\r\n", body.len())?;
        self.out.extend_from_slice(body);
        self.stream
            .write_all(&self.out)
            .await
            .context("write the request")?;
        self.read_answer().await
    }

    /// Read one answer (after dropping the last one): until its head and its body are in.
    async fn read_answer(&mut self) -> Result<Answer> {
        self.buf.copy_within(self.done..self.filled, 0);
        self.filled -= self.done;
        self.done = 0;
        let end = loop {
            if let Some(at) = self.buf[..self.filled]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
            {
                break at + 4;
            }
            if self.filled > MAX_HEAD {
                bail!("an answer head over {MAX_HEAD} bytes");
            }
            self.fill().await?;
        };
        let mut answer = parse_head(&self.buf[..end])?;
        answer.body = end..end + answer.body.end;
        while self.filled < answer.body.end {
            self.fill().await?;
        }
        self.done = answer.body.end;
        self.broken = false;
        Ok(answer)
    }

    /// Read what the socket has after the bytes already in (the buffer grows for a long body).
    async fn fill(&mut self) -> Result<()> {
        if self.filled == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        match self
            .stream
            .read(&mut self.buf[self.filled..])
            .await
            .context("read the answer")?
        {
            0 => bail!("the server closed the connection"),
            n => {
                self.filled += n;
                Ok(())
            }
        }
    }
}

/// Status, `Content-Length` (as `body`'s end, relative to the body) and the session header of
/// `head`; an error for anything a `tools/call` answer should not carry.
fn parse_head(head: &[u8]) -> Result<Answer> {
    let text = std::str::from_utf8(head).context("an answer head that is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("not an HTTP/1.1 status line: {status_line:?}"))?;
    let (mut length, mut session) = (None, None);
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("a header line without a colon: {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a {value} body (the lean generator reads Content-Length bodies only)");
        } else if name.eq_ignore_ascii_case("content-type")
            && value.starts_with("text/event-stream")
        {
            bail!("an SSE answer (the lean generator reads JSON answers only)");
        } else if name.eq_ignore_ascii_case("mcp-session-id") {
            session = Some(value.to_owned());
        }
    }
    let length = match (length, status) {
        (Some(n), _) => n,
        (None, 204 | 304) => 0,
        (None, _) => bail!("HTTP {status} without Content-Length"),
    };
    Ok(Answer {
        status,
        body: 0..length,
        session,
    })
}

/// Open `plan.concurrency` workers and warm them up.
pub async fn prepare(target: &Target, plan: &Plan) -> Result<Vec<Worker>> {
    let mut opening = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency {
        let (target, tool, warmup) = (target.clone(), plan.tool.clone(), plan.warmup);
        opening.spawn(async move {
            let mut w = Worker::open(&target, &tool).await?;
            for _ in 0..warmup {
                w.call().await.context("warm-up call")?;
            }
            Ok::<_, anyhow::Error>(w)
        });
    }
    let all = async {
        let mut workers = Vec::new();
        while let Some(w) = opening.join_next().await {
            workers.push(w??);
        }
        Ok(workers)
    };
    tokio::time::timeout(IO_TIMEOUT, all)
        .await
        .map_err(|_| anyhow!("the workers were not open and warm after {IO_TIMEOUT:?}"))?
}

/// Run the measured part with prepared workers, a task each.
pub async fn run(workers: Vec<Worker>, plan: &Plan) -> (Report, Vec<Worker>) {
    let started = Instant::now();
    let until = Until::new(plan, started);
    let mut running = tokio::task::JoinSet::new();
    for mut w in workers {
        let until = until.clone();
        running.spawn(async move {
            let mut tally = Tally::new();
            while until.another() {
                let t0 = Instant::now();
                match w.call().await {
                    Ok(()) => tally.ok(t0),
                    Err(e) => {
                        tally.failed(e);
                        if w.broken() {
                            break;
                        }
                    }
                }
            }
            (tally, w)
        });
    }
    let (mut tallies, mut workers) = (Vec::new(), Vec::new());
    let cutoff = tokio::time::Instant::from_std(started + plan.duration + IO_TIMEOUT);
    loop {
        let mut lost = Tally::default();
        match tokio::time::timeout_at(cutoff, running.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok((tally, w)))) => {
                tallies.push(tally);
                workers.push(w);
                continue;
            }
            Ok(Some(Err(e))) => lost.failed(e),
            Err(_) => {
                lost.failed(format!(
                    "{} workers still waiting for an answer {IO_TIMEOUT:?} after the deadline",
                    running.len()
                ));
                running.abort_all();
            }
        }
        tallies.push(lost);
    }
    (Report::of(tallies, started), workers)
}
