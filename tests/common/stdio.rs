//! A child process that speaks newline-delimited JSON-RPC on its stdio (the MCP stdio
//! transport), driven a line at a time: what it writes comes through a channel, what it says
//! on stderr is collected for failure messages.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// How long any one line may take before a test gives up (a hang guard, not a timing).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A child's stdout lines (as they come) and its stderr (collected).
pub fn read_output(child: &mut Child) -> (Receiver<String>, Arc<Mutex<String>>) {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (rx, super::collect_lines(child.stderr.take().unwrap()))
}

/// The running process, killed on drop.
pub struct StdioPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its stdout, a line at a time.
    pub lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    what: &'static str,
}

impl StdioPeer {
    /// Start `cmd` (`what`, for messages) with its stdio piped.
    pub fn spawn(mut cmd: Command, what: &'static str) -> Self {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {what}: {e}"));
        let stdin = child.stdin.take();
        let (lines, stderr) = read_output(&mut child);
        Self {
            child,
            stdin,
            lines,
            stderr,
            what,
        }
    }

    /// Write `msg` as one line.
    pub fn send(&mut self, msg: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line on stdout.
    pub fn next(&self) -> Value {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")),
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "{}: no line on stdout\n--- stderr\n{}",
                    self.what,
                    self.stderr()
                )
            }
            Err(e) => panic!(
                "{}: stdout closed ({e})\n--- stderr\n{}",
                self.what,
                self.stderr()
            ),
        }
    }

    /// The next line that is the answer to `id` (what comes before it is kept in `seen`).
    pub fn answer(&self, id: &Value, seen: &mut Vec<Value>) -> Value {
        loop {
            let line = self.next();
            if line.get("method").is_none() && line["id"] == *id {
                return line;
            }
            seen.push(line);
        }
    }

    /// Send `msg` and return its answer.
    pub fn request(&mut self, msg: &Value) -> Value {
        self.send(msg);
        self.answer(&msg["id"], &mut Vec::new())
    }

    /// What it said on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Close stdin and wait for the exit: its status code and stderr.
    pub fn finish(mut self) -> (Option<i32>, String) {
        drop(self.stdin.take());
        let stderr = self.stderr.clone();
        let code = super::wait_exit(&mut self.child, self.what, PATIENCE, || {
            stderr.lock().unwrap().clone()
        });
        // Its stderr's reader ends with the process's stderr: what it wrote last is read by now
        // or right after.
        std::thread::sleep(Duration::from_millis(50));
        (code, self.stderr())
    }
}

impl Drop for StdioPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
