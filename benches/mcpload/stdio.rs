//! The direct stdio load generator: the upstream fixture spawned with `--stdio`, one MCP
//! session on its stdin/stdout (`initialize`, `notifications/initialized`), then `tools/call`
//! with a fixed number of requests in flight: each answer read is replaced by a new request.
//!
//! It runs on the calling thread with blocking pipe I/O (one process, one session: nothing to
//! multiplex), and judges an answer as the HTTP generator does, by a byte search, so that its
//! own CPU stays small next to what it measures.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::load::{CallBody, INITIALIZE, INITIALIZED, Report, has_result};

/// The fixture on stdio, killed when dropped.
pub struct Direct {
    child: Child,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
}

/// What to run.
#[derive(Clone, Copy)]
pub struct Run {
    /// Requests in flight.
    pub concurrency: usize,
    /// Stop sending after this many calls...
    pub calls: Option<u64>,
    /// ... or after this long.
    pub duration: Duration,
}

impl Direct {
    /// Spawn `bin ARGS` (the fixture with `--stdio`), its stderr to `stderr`, and open its
    /// session.
    pub fn spawn(bin: &Path, args: &[&str], stderr: &Path) -> Result<Self> {
        let log = std::fs::File::create(stderr)?;
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let stdin = BufWriter::new(child.stdin.take().expect("piped"));
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut direct = Self {
            child,
            stdin,
            stdout,
            next_id: 1,
        };
        direct.write(INITIALIZE)?;
        direct.stdin.flush()?;
        let answer = direct.read()?;
        if !has_result(answer.as_bytes()) {
            bail!("initialize answered {answer}");
        }
        direct.write(INITIALIZED)?;
        direct.stdin.flush()?;
        Ok(direct)
    }

    /// Pid of the fixture.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn write(&mut self, line: &str) -> Result<()> {
        self.stdin.write_all(line.as_bytes())?;
        self.stdin.write_all(b"\n")?;
        Ok(())
    }

    fn read(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the fixture closed its stdout");
        }
        Ok(line)
    }

    /// Send one `tools/call`; its id.
    fn call(&mut self, body: &CallBody) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        body.write(id, &mut self.stdin)?;
        self.stdin.write_all(b"\n")?;
        Ok(id)
    }

    /// Keep `run.concurrency` calls of `tool` in flight until the budget or the time is spent,
    /// then wait for the answers still due.
    pub fn run(&mut self, tool: &str, run: Run) -> Result<Report> {
        let started = Instant::now();
        let deadline = started + run.duration;
        let mut sent = 0u64;
        let more = |sent: u64| run.calls.is_none_or(|n| sent < n) && Instant::now() < deadline;
        let body = CallBody::new(tool);
        let mut in_flight = HashMap::with_capacity(run.concurrency);
        while in_flight.len() < run.concurrency && more(sent) {
            in_flight.insert(self.call(&body)?, Instant::now());
            sent += 1;
        }
        self.stdin.flush()?;
        let (mut latencies, mut errors, mut first_error) = (Vec::new(), 0u64, None);
        while !in_flight.is_empty() {
            let line = self.read()?;
            let Some(id) = id_of(&line) else {
                // A notification or a line that is not an answer: not a call's end.
                continue;
            };
            let Some(at) = in_flight.remove(&id) else {
                bail!("an answer to no request in flight: {line}");
            };
            if has_result(line.as_bytes()) {
                latencies.push(at.elapsed().as_nanos() as u64);
            } else {
                errors += 1;
                first_error.get_or_insert_with(|| line.chars().take(200).collect::<String>());
            }
            if more(sent) {
                in_flight.insert(self.call(&body)?, Instant::now());
                sent += 1;
            }
            // Write what is due once no answer is waiting to be read: fewer, larger writes.
            if self.stdout.buffer().is_empty() {
                self.stdin.flush()?;
            }
        }
        let mut report = Report {
            errors,
            elapsed: started.elapsed(),
            first_error,
            ..Report::default()
        };
        report.set_latencies(latencies);
        Ok(report)
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The numeric `id` of an answer line (`{"jsonrpc":"2.0","id":N,...`), without parsing the rest.
fn id_of(line: &str) -> Option<u64> {
    let at = line.find(r#""id":"#)? + 5;
    let digits: &str = line[at..].split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}
