//! stdio upstreams: a local program the gateway starts, speaking newline-delimited JSON-RPC on
//! its stdin and stdout, supervised for as long as a connection to it lives.
//!
//! A child is one carrier among the others ([`super::connection`]): like a legacy SSE stream,
//! everything it sends comes on one stream (its stdout), answers are matched to their requests
//! by id ([`super::pending`]) and the rest goes to the connection's sink, where the registry
//! routes it to the client whose call is in flight. A child lives as long as its
//! [`StdioConn`]: dropping it (the registry invalidating a connection, an isolated client's
//! session ending, an upstream removed) stops the child; one that exits by itself fails the
//! calls in flight naming the exit, and tells the connection's owner, which starts another
//! through its usual backoff.
//!
//! No child outlives the gateway ([`Children`]): each leads its own process group, gets the
//! parent-death signal (Linux), is stopped group-wide at shutdown (stdin closed, then SIGTERM,
//! then SIGKILL), and is written down in the data directory so that a gateway started after a
//! SIGKILLed one kills what was left (`records.rs`).

mod child;
mod frame;
mod records;
mod stderr;

pub use stderr::without_note;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, ChildStdout};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::UpstreamError;
use super::message::{GONE_PID, MessageSink, SESSION_GONE};
use super::pending::Pending;
use super::raw::Received;
use crate::store::CommandSpec;

pub use records::{FILE as RECORDS_FILE, OWNER_VAR};

/// Every child the gateway runs: how they are started, recorded and stopped.
#[derive(Clone)]
pub struct Children {
    inner: Arc<Inner>,
}

struct Inner {
    launcher: child::Launcher,
    /// The value of [`OWNER_VAR`] in every child's environment.
    marker: String,
    records: Option<records::Records>,
    /// The supervisors of the children, waited for at shutdown.
    tracker: TaskTracker,
    /// Parent of every child's stop token: cancelled at shutdown.
    stop: CancellationToken,
}

impl std::fmt::Debug for Children {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Children")
            .field("running", &self.inner.tracker.len())
            .finish_non_exhaustive()
    }
}

impl Children {
    /// The children of the gateway of `data_dir` (recorded there); without one, nothing is
    /// recorded (a registry in a test).
    pub fn new(data_dir: Option<&Path>) -> Self {
        Self {
            inner: Arc::new(Inner {
                launcher: child::Launcher::current(),
                marker: data_dir.map(records::owner_marker).unwrap_or_default(),
                records: data_dir.map(records::Records::new),
                tracker: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Kill what a previous gateway on this data directory left running (see `records.rs`);
    /// how many process groups. Blocking; at start-up, before any child starts.
    pub fn sweep(&self) -> usize {
        self.inner
            .records
            .as_ref()
            .map_or(0, |r| r.sweep(&self.inner.marker))
    }

    /// Children running now.
    pub fn running(&self) -> usize {
        self.inner.tracker.len()
    }

    /// Start `spec` for upstream `name`; what it sends outside an answer goes to `sink`.
    pub async fn start(
        &self,
        name: &str,
        spec: &CommandSpec,
        sink: MessageSink,
    ) -> Result<StdioConn, UpstreamError> {
        let mut child = child::spawn(&self.inner.launcher, spec, &self.inner.marker).await?;
        let (Some(pid), Some(stdin), Some(stdout), Some(stderr)) = (
            child.id(),
            child.stdin.take(),
            child.stdout.take(),
            child.stderr.take(),
        ) else {
            return Err(UpstreamError::Connect {
                diagnosis: "the stdio upstream's process has no pipes".into(),
            });
        };
        // Nothing awaits from here until the supervisor owns the child: a caller that gives up
        // meanwhile cannot leave it unsupervised.
        let shared = Arc::new(Shared {
            writer: frame::Writer::new(stdin),
            alive: AtomicBool::new(true),
            exit: OnceLock::new(),
            tail: stderr::Tail::default(),
            skipped: AtomicU64::new(0),
            ended: CancellationToken::new(),
        });
        let pending = Pending::default();
        let reader = tokio::spawn(read_stdout(
            name.to_owned(),
            stdout,
            pending.clone(),
            shared.clone(),
            sink.clone(),
        ));
        let logger = {
            let (name, shared) = (name.to_owned(), shared.clone());
            tokio::spawn(async move { stderr::pipe(name, stderr, &shared.tail).await })
        };
        let stop = self.inner.stop.child_token();
        let supervised = Supervised {
            children: self.clone(),
            name: name.to_owned(),
            pid,
            shared: shared.clone(),
            pending: pending.clone(),
            sink,
        };
        self.inner
            .tracker
            .spawn(supervised.run(child, reader, logger, stop.clone()));
        tracing::info!(upstream = %name, pid, program = %spec.program, "stdio upstream started");
        Ok(StdioConn {
            pid,
            pending,
            shared,
            stop: stop.clone(),
            _stop: stop.drop_guard(),
        })
    }

    /// Stop every child (stdin closed, SIGTERM, SIGKILL, each after a grace period) and wait
    /// for them; at shutdown. A child started after this is stopped at once.
    pub async fn stop_all(&self) {
        self.inner.stop.cancel();
        self.inner.tracker.close();
        let bound = child::GRACE * 3 + Duration::from_secs(1);
        if tokio::time::timeout(bound, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.inner.tracker.len(),
                "stdio upstreams still stopping at the end of shutdown"
            );
        }
    }

    /// Write `pid` down as running, or no longer.
    async fn record(&self, pid: u32, running: bool) {
        if self.inner.records.is_none() {
            return;
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(records) = &this.inner.records {
                records.set(pid, running);
            }
        })
        .await;
    }
}

/// What the connection and the child's tasks share.
struct Shared {
    writer: frame::Writer,
    /// Cleared when stdout ends or the child exits: nothing more can be sent.
    alive: AtomicBool,
    /// How the child ended (`status 1`, `signal 9`), once it did.
    exit: OnceLock<String>,
    tail: stderr::Tail,
    /// Lines of stdout that were not JSON-RPC messages.
    skipped: AtomicU64,
    /// Cancelled once the child is reaped.
    ended: CancellationToken,
}

/// A running child, as a carrier of one connection's messages. Dropping it stops the child.
pub struct StdioConn {
    pid: u32,
    pending: Pending<Received>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    _stop: DropGuard,
}

impl std::fmt::Debug for StdioConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioConn")
            .field("pid", &self.pid)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl StdioConn {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the child can still be sent messages.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }

    /// Send an already serialized message; for a request (`expect` is its id), wait for its
    /// answer on stdout.
    pub async fn send_raw(
        &self,
        body: &[u8],
        expect: Option<&Value>,
        timeout: Duration,
    ) -> Result<Option<Received>, UpstreamError> {
        // Registered before the check: an exit after it clears the waiter, one before it is seen.
        let mut waiter = expect.map(|id| self.pending.expect(id));
        if !self.is_alive() {
            return Err(UpstreamError::Closed);
        }
        let exchange = async {
            // A failed write did not deliver the whole line: the child never had the request.
            self.shared
                .writer
                .send(body)
                .await
                .map_err(|_| UpstreamError::Closed)?;
            match waiter.as_mut() {
                Some(waiter) => (&mut waiter.rx).await.map(Some).map_err(|_| {
                    self.exited(
                        "during the call (it may have run, so it is not sent again)",
                        false,
                    )
                }),
                None => Ok(None),
            }
        };
        // On the connection task's kept timer, as an HTTP upstream's request is.
        super::deadline::within(timeout, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout {
                secs: timeout.as_secs(),
            }))
    }

    /// Stop the child and wait until it is reaped.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.shared.ended.cancelled().await;
    }

    /// The error of a call cut short by the child's exit; `stderr` adds its last lines.
    fn exited(&self, when: &str, stderr: bool) -> UpstreamError {
        UpstreamError::Exited {
            status: self
                .shared
                .exit
                .get()
                .cloned()
                .unwrap_or_else(|| "status unknown".into()),
            when: when.to_owned(),
            detail: if stderr {
                self.shared.tail.note()
            } else {
                String::new()
            },
        }
    }

    /// `error`, which ended the handshake, said in the child's terms: how it exited or that it
    /// stayed silent, with its last stderr lines (the operator's first clue).
    pub async fn explain_start(&self, error: UpstreamError) -> UpstreamError {
        match error {
            UpstreamError::Exited { .. } | UpstreamError::Closed => {
                // A write that found its stdin closed may come before the exit is reaped: the
                // status is worth a moment's wait (bounded: a child that closed its stdin but
                // runs on is being stopped meanwhile).
                let _ = tokio::time::timeout(Duration::from_secs(1), self.shared.ended.cancelled())
                    .await;
                self.exited("before answering the MCP handshake", true)
            }
            UpstreamError::Timeout { secs } => {
                let skipped = self.shared.skipped.load(Ordering::Relaxed);
                let garbage = if skipped > 0 {
                    format!("; it wrote {skipped} lines on stdout that are not JSON-RPC messages")
                } else {
                    String::new()
                };
                UpstreamError::Connect {
                    diagnosis: format!(
                        "the stdio upstream did not answer the MCP handshake (server/discover or initialize) within {secs} s{garbage}{}",
                        self.shared.tail.note()
                    ),
                }
            }
            other => other,
        }
    }
}

/// Read the child's stdout to its end: answers to their waiters, other messages to `sink`,
/// lines that are not messages logged and skipped.
async fn read_stdout(
    name: String,
    stdout: ChildStdout,
    pending: Pending<Received>,
    shared: Arc<Shared>,
    sink: MessageSink,
) {
    // Every idle upstream keeps this buffer: 4 KiB still takes a burst of small answers in one
    // read, and a longer line is joined across fills (frame::read_line).
    let mut reader = tokio::io::BufReader::with_capacity(4 << 10, stdout);
    loop {
        match frame::read_frame(&mut reader, frame::MAX_MESSAGE).await {
            Ok(Some(frame::Frame::Answer { id, body })) => {
                pending.answer(&id, Received::Json(body));
            }
            Ok(Some(frame::Frame::Message(message))) => {
                if let Some(other) = pending.deliver(message) {
                    sink(other);
                }
            }
            Ok(Some(frame::Frame::TooLong { len })) => {
                shared.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(upstream = %name, bytes = len, max = frame::MAX_MESSAGE, "stdio upstream wrote a message over the size limit on stdout; skipped");
            }
            Ok(Some(frame::Frame::NotJson { excerpt })) => {
                shared.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(upstream = %name, line = %excerpt, "stdio upstream wrote a line on stdout that is not a JSON-RPC message; skipped");
            }
            Ok(None) | Err(_) => break,
        }
    }
    shared.alive.store(false, Ordering::Release);
}

/// One child's supervisor: waits for it to exit or to be told to stop it, then cleans up.
struct Supervised {
    children: Children,
    name: String,
    pid: u32,
    shared: Arc<Shared>,
    pending: Pending<Received>,
    sink: MessageSink,
}

impl Supervised {
    async fn run(
        self,
        mut child: Child,
        mut reader: JoinHandle<()>,
        mut logger: JoinHandle<()>,
        stop: CancellationToken,
    ) {
        // Written down here, where nothing can cancel it before it is written off again.
        self.children.record(self.pid, true).await;
        let mut read_all = false;
        let (status, asked) = tokio::select! {
            status = child.wait() => (status, false),
            // Its stdout closed while it runs: it can answer nothing more.
            _ = &mut reader => {
                read_all = true;
                (child::stop(&mut child, self.shared.writer.close()).await, false)
            }
            () = stop.cancelled() => (child::stop(&mut child, self.shared.writer.close()).await, true),
        };
        // What it started in its group goes with it. Its pid (the group's id) is not given to
        // another process while the group has members, so this reaches only its own.
        child::signal_group(self.pid, rustix::process::Signal::KILL);
        let how = child::describe(&status);
        let _ = self.shared.exit.set(how.clone());
        // What it wrote before it ended still reaches the callers waiting for it.
        let drain = Duration::from_secs(1);
        if !read_all && tokio::time::timeout(drain, &mut reader).await.is_err() {
            reader.abort();
        }
        if tokio::time::timeout(drain, &mut logger).await.is_err() {
            logger.abort();
        }
        self.shared.alive.store(false, Ordering::Release);
        self.pending.close();
        self.children.record(self.pid, false).await;
        self.shared.ended.cancel();
        if asked {
            tracing::debug!(upstream = %self.name, pid = self.pid, status = %how, "stdio upstream stopped");
            return;
        }
        tracing::warn!(upstream = %self.name, pid = self.pid, status = %how, "stdio upstream exited");
        // Its owner starts another now (through its backoff), not at the next call.
        (self.sink)(serde_json::json!({
            "jsonrpc": "2.0",
            "method": SESSION_GONE,
            "params": {GONE_PID: self.pid},
        }));
    }
}
