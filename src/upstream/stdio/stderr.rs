//! A child's stderr: its log, passed on to the gateway's log line by line, tagged with the
//! upstream, each line cut at a few KiB and at most so many lines a second (a child that floods
//! its stderr must not flood the gateway's log); the last lines are kept to explain a child that
//! failed ("its last stderr lines: ...").

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::AsyncRead;

use super::frame;

/// The most of one stderr line that is logged.
const MAX_LINE: usize = 4 << 10;
/// Lines logged per second; more are counted and dropped.
const LINES_PER_SECOND: u32 = 50;
/// Lines kept for a diagnosis.
const KEPT: usize = 20;

/// The last lines of a child's stderr.
#[derive(Debug, Default)]
pub struct Tail {
    lines: Mutex<VecDeque<String>>,
}

impl Tail {
    pub(super) fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == KEPT {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// `; its last stderr lines: a | b`, or nothing when it wrote none.
    pub fn note(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.is_empty() {
            return String::new();
        }
        let joined: Vec<&str> = lines.iter().map(String::as_str).collect();
        format!("{NOTE}{}", joined.join(" | "))
    }
}

/// What starts [`Tail::note`].
const NOTE: &str = "; its last stderr lines: ";

/// `diagnosis` without the child's stderr lines: what a client may be shown. A child writes
/// what it likes there (a path, a configuration dump, a key it failed to use); the operator
/// sees it in the log and in `gateway show`.
pub fn without_note(diagnosis: &str) -> &str {
    diagnosis
        .split_once(NOTE)
        .map_or(diagnosis, |(head, _)| head)
}

/// Read `stderr` to its end, logging each line for `upstream` and keeping the last in `tail`.
pub async fn pipe(upstream: String, stderr: impl AsyncRead + Unpin, tail: &Tail) {
    // A small buffer: most children write little or nothing on stderr, and every idle upstream
    // keeps this one; a long line is read in several fills (read_line joins them).
    let mut reader = tokio::io::BufReader::with_capacity(512, stderr);
    let mut window = Instant::now();
    let (mut logged, mut dropped) = (0u32, 0u64);
    while let Ok(Some(line)) = frame::read_line(&mut reader, MAX_LINE, true).await {
        let mut text = frame::excerpt(&line.bytes, MAX_LINE);
        if line.too_long() {
            text.push_str(&format!(" ({} bytes cut)", line.len - line.bytes.len()));
        }
        if window.elapsed() >= Duration::from_secs(1) {
            if dropped > 0 {
                tracing::warn!(upstream = %upstream, dropped, "stdio upstream stderr: lines dropped (more than {LINES_PER_SECOND} a second)");
            }
            (window, logged, dropped) = (Instant::now(), 0, 0);
        }
        if logged < LINES_PER_SECOND {
            logged += 1;
            tracing::info!(upstream = %upstream, line = %text, "stdio upstream stderr");
        } else {
            dropped += 1;
        }
        tail.push(text);
    }
    if dropped > 0 {
        tracing::warn!(upstream = %upstream, dropped, "stdio upstream stderr: lines dropped (more than {LINES_PER_SECOND} a second)");
    }
}
