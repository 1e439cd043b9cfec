//! The floor under any gateway in front of a stdio server on this machine: a relay that does
//! only what every such gateway must do per call and nothing else. It reads an HTTP/1.1 request,
//! writes its body as one line to the child's stdin with the id made its own (several clients
//! share the child), reads the answer line, puts the client's id back and writes it as an
//! HTTP/1.1 answer. There is no JSON parse, no session table, no auth, no routing, no metrics,
//! and one thread.
//!
//! The `stdio` scenario runs it as a process of its own (`mcpload floor-relay PROGRAM ARGS…`)
//! between the lean generator and the fixture. Its CPU per call is then the least a gateway's
//! can be here, and its calls/s about the most a gateway can reach with the generator on the
//! same cores. It is a measuring instrument, not an MCP server: it answers `initialize` itself
//! and knows the fixture's answers start with their id.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

use crate::load::{INITIALIZE, INITIALIZED};

/// The line the relay prints once it listens, followed by its address.
pub const READY: &str = "FLOOR ";

/// Calls waiting for the child's answer, by the relay's id: the client's id and who waits.
type Waiting = Rc<RefCell<HashMap<u64, (Vec<u8>, oneshot::Sender<Vec<u8>>)>>>;

/// Run `program ARGS` on pipes and relay HTTP/1.1 calls to it until killed.
pub async fn relay(program: &str, args: &[String]) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {program}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = BufReader::with_capacity(4 << 10, child.stdout.take().expect("piped"));
    // The child's own session, opened once for every client.
    stdin
        .write_all(format!("{INITIALIZE}\n").as_bytes())
        .await?;
    let mut line = Vec::new();
    stdout.read_until(b'\n', &mut line).await?;
    if !crate::load::has_result(&line) {
        bail!(
            "the child answered initialize with {}",
            String::from_utf8_lossy(&line)
        );
    }
    stdin
        .write_all(format!("{INITIALIZED}\n").as_bytes())
        .await?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{READY}http://{}", listener.local_addr()?);
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let waiting: Waiting = Rc::default();
            let (lines, queue) = mpsc::unbounded_channel();
            tokio::task::spawn_local(write_lines(stdin, queue));
            tokio::task::spawn_local(read_answers(stdout, waiting.clone()));
            let next = Rc::new(Cell::new(1u64));
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let conn = Conn {
                    waiting: waiting.clone(),
                    lines: lines.clone(),
                    next: next.clone(),
                };
                tokio::task::spawn_local(async move {
                    if let Err(err) = conn.serve(stream).await {
                        eprintln!("floor relay: a connection ended: {err:#}");
                    }
                });
            }
        })
        .await
}

/// Write what is queued to the child's stdin, everything queued at once in one write (as the
/// gateway's writer does, so that the child reads the same way behind both).
async fn write_lines(mut stdin: ChildStdin, mut queue: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut out = Vec::with_capacity(64 << 10);
    while let Some(first) = queue.recv().await {
        out.clear();
        out.extend_from_slice(&first);
        while let Ok(more) = queue.try_recv() {
            out.extend_from_slice(&more);
        }
        if stdin.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Hand each answer line of the child to the call waiting for its id.
async fn read_answers(mut stdout: BufReader<tokio::process::ChildStdout>, waiting: Waiting) {
    loop {
        let mut line = Vec::with_capacity(256);
        match stdout.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Some((at, len, id)) = find_id(&line) else {
            continue;
        };
        let Some((theirs, tx)) = waiting.borrow_mut().remove(&id) else {
            continue;
        };
        let mut answer = Vec::with_capacity(line.len() + theirs.len());
        answer.extend_from_slice(&line[..at]);
        answer.extend_from_slice(&theirs);
        answer.extend_from_slice(&line[at + len..]);
        let _ = tx.send(answer);
    }
}

/// The first `"id":` of `text` followed by a number: where the number starts, its length and
/// its value.
fn find_id(text: &[u8]) -> Option<(usize, usize, u64)> {
    let key = b"\"id\":";
    let start = text.windows(key.len()).position(|w| w == key)? + key.len();
    let len = text[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let value = std::str::from_utf8(&text[start..start + len])
        .ok()?
        .parse()
        .ok()?;
    Some((start, len, value))
}

/// The first `"id":` of `text`, of any JSON value up to the next `,` or `}`: where it starts and
/// its length.
fn client_id(text: &[u8]) -> Option<(usize, usize)> {
    let key = b"\"id\":";
    let start = text.windows(key.len()).position(|w| w == key)? + key.len();
    let len = text[start..]
        .iter()
        .take_while(|&&b| b != b',' && b != b'}')
        .count();
    Some((start, len))
}

/// One client connection.
struct Conn {
    waiting: Waiting,
    lines: mpsc::UnboundedSender<Vec<u8>>,
    next: Rc<Cell<u64>>,
}

impl Conn {
    async fn serve(self, mut stream: TcpStream) -> Result<()> {
        let mut buf = vec![0u8; 8192];
        let (mut filled, mut done) = (0usize, 0usize);
        let mut out = Vec::with_capacity(1024);
        loop {
            buf.copy_within(done..filled, 0);
            filled -= done;
            let head_end = loop {
                if let Some(at) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                if filled == buf.len() {
                    bail!("a request head over {} bytes", buf.len());
                }
                match stream.read(&mut buf[filled..]).await? {
                    0 => return Ok(()),
                    n => filled += n,
                }
            };
            let length = content_length(&buf[..head_end])?;
            if head_end + length > buf.len() {
                buf.resize(head_end + length, 0);
            }
            while filled < head_end + length {
                match stream.read(&mut buf[filled..]).await? {
                    0 => bail!("the client closed the connection inside a body"),
                    n => filled += n,
                }
            }
            done = head_end + length;
            let body = &buf[head_end..done];
            out.clear();
            match client_id(body) {
                None => {
                    out.extend_from_slice(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                }
                Some((at, len)) if is_initialize(body) => {
                    let answer = format!(
                        r#"{{"jsonrpc":"2.0","id":{},"result":{{"protocolVersion":"2025-11-25","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"floor-relay","version":"1"}}}}}}"#,
                        String::from_utf8_lossy(&body[at..at + len])
                    );
                    respond(&mut out, &answer.into_bytes(), "mcp-session-id: floor\r\n");
                }
                Some((at, len)) => {
                    let answer = self.call(body, at, len).await?;
                    respond(&mut out, &answer, "");
                }
            }
            stream.write_all(&out).await?;
        }
    }

    /// Send `body` (its id at `at`, `len` bytes) to the child under an id of the relay's, and
    /// wait for the answer, the client's id put back.
    async fn call(&self, body: &[u8], at: usize, len: usize) -> Result<Vec<u8>> {
        let ours = self.next.get();
        self.next.set(ours + 1);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .borrow_mut()
            .insert(ours, (body[at..at + len].to_vec(), tx));
        let digits = ours.to_string();
        let mut line = Vec::with_capacity(body.len() + digits.len() + 1);
        line.extend_from_slice(&body[..at]);
        line.extend_from_slice(digits.as_bytes());
        line.extend_from_slice(&body[at + len..]);
        line.push(b'\n');
        self.lines
            .send(line)
            .map_err(|_| anyhow!("the child's stdin is closed"))?;
        rx.await
            .map_err(|_| anyhow!("the child's stdout is closed"))
    }
}

fn is_initialize(body: &[u8]) -> bool {
    let method = b"\"method\":\"initialize\"";
    body.windows(method.len()).any(|w| w == method)
}

/// The `Content-Length` of a request head (0 without one).
fn content_length(head: &[u8]) -> Result<usize> {
    let text = std::str::from_utf8(head).context("a request head that is not UTF-8")?;
    for line in text.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            return value
                .trim()
                .parse()
                .with_context(|| format!("Content-Length {value:?}"));
        }
    }
    Ok(0)
}

/// A 200 answer carrying the JSON `body`, with `extra` header lines, written to `out`.
fn respond(out: &mut Vec<u8>, body: &[u8], extra: &str) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}
