//! The stdio side of `mcpgw connect`: newline-delimited JSON-RPC, as the MCP stdio transport
//! frames it. One thread owns stdout and writes one whole message a line, so that messages
//! from concurrent requests and streams never interleave; one thread reads stdin a line at a
//! time, each line at most [`MAX_LINE`] bytes.

use std::io::{BufRead, Read, Write};

use serde_json::Value;

/// Largest message accepted on stdin (the gateway's own limit for a message).
pub const MAX_LINE: usize = crate::upstream::answer::MAX_BODY;

/// What goes to the stdout thread.
#[derive(Debug)]
enum Line {
    /// One serialized message, newline included.
    Message(Vec<u8>),
    /// Everything sent before has been written: say so.
    Flushed(tokio::sync::oneshot::Sender<()>),
}

/// The way to stdout: cheap to clone, callable from any thread or task.
#[derive(Debug, Clone)]
pub struct Out(std::sync::mpsc::Sender<Line>);

impl Out {
    /// Start the thread that owns stdout.
    pub fn start() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Line>();
        std::thread::spawn(move || {
            let mut stdout = std::io::stdout().lock();
            for line in rx {
                match line {
                    Line::Message(bytes) => {
                        // The client is gone: nothing more can reach it; stdin ends next.
                        if stdout
                            .write_all(&bytes)
                            .and_then(|()| stdout.flush())
                            .is_err()
                        {
                            return;
                        }
                    }
                    Line::Flushed(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Self(tx)
    }

    /// Write `msg` as one line (JSON escapes every newline inside strings).
    pub fn send(&self, msg: &Value) {
        let Ok(mut bytes) = serde_json::to_vec(msg) else {
            return;
        };
        bytes.push(b'\n');
        let _ = self.0.send(Line::Message(bytes));
    }

    /// Wait until every message sent so far is written.
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.0.send(Line::Flushed(done)).is_ok() {
            let _ = written.await;
        }
    }
}

/// One line of stdin.
#[derive(Debug)]
pub enum Incoming {
    /// A line, its newline removed.
    Line(Vec<u8>),
    /// A line longer than [`MAX_LINE`], skipped.
    TooLong,
}

/// Read `input` a line at a time into `lines` until its end (or until nobody reads `lines`).
pub fn read_lines(mut input: impl BufRead, lines: tokio::sync::mpsc::Sender<Incoming>) {
    loop {
        let mut line = Vec::new();
        let read = input
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let incoming = if line.last() == Some(&b'\n') || line.len() <= MAX_LINE {
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            Incoming::Line(line)
        } else {
            // Skip the rest of the line, without keeping it.
            loop {
                let mut rest = Vec::new();
                match input
                    .by_ref()
                    .take(MAX_LINE as u64)
                    .read_until(b'\n', &mut rest)
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) if rest.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
            Incoming::TooLong
        };
        if lines.blocking_send(incoming).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_trimmed_and_an_overlong_one_is_skipped_whole() {
        let mut input = b"{\"a\":1}\r\n\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend(b"\nlast");
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        read_lines(std::io::Cursor::new(input), tx);
        let mut got = Vec::new();
        while let Ok(line) = rx.try_recv() {
            got.push(match line {
                Incoming::Line(l) => String::from_utf8(l).unwrap(),
                Incoming::TooLong => "<too long>".into(),
            });
        }
        assert_eq!(got, ["{\"a\":1}", "", "<too long>", "last"]);
    }
}
