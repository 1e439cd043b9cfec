//! The audit log: one JSON line per MCP request and per administrator's request, saying who
//! (principal and how it proved itself), in which session (its fingerprint, never its id),
//! what (method, upstream, tool/prompt/resource as the client named it), what the gateway
//! decided, how it ended and how long it took. Never a token, a key or a body.
//!
//! `[audit] file = "PATH"` appends to a file (created 0600, a symlink refused), `"-"` writes to
//! stdout; without it nothing is recorded and a request pays one branch. Lines are written by a
//! thread of their own so a slow disk never holds a request up; if it falls behind by
//! [`BACKLOG`] lines, further lines are dropped, counted and said in the log.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use serde::Serialize;

use super::Principal;

/// Lines waiting for the writer at most.
pub const BACKLOG: usize = 65_536;

/// Where the audit log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl Target {
    /// `-` for stdout, else a path.
    pub fn parse(text: &str) -> Self {
        if text == "-" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(text))
        }
    }
}

/// Why the audit log cannot be opened (`serve` does not start without it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The file could not be opened for appending.
    #[error("cannot open the audit log {path}: {error} (a symbolic link is refused)")]
    Open {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
}

/// What kind of request a line records.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A JSON-RPC request on an MCP endpoint.
    Mcp,
    /// A request to an administrator's route (registry, certificates, status).
    Admin,
}

/// One line of the audit log.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// What kind of request.
    pub kind: Kind,
    /// Who.
    pub principal: &'a str,
    /// How they proved it.
    pub auth: &'static str,
    /// The session's fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The JSON-RPC method, or the HTTP method and route.
    pub method: &'a str,
    /// The upstream, when the request names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    /// The tool, prompt or resource as the client named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a str>,
    /// `allow`, or `deny` when the gateway refused it (policy, role).
    pub decision: &'static str,
    /// `ok`, a JSON-RPC error code, or an HTTP status.
    pub status: serde_json::Value,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
}

impl Entry<'_> {
    /// The entry's principal fields from `principal`.
    pub fn who(principal: &Principal) -> (&str, &'static str) {
        (&principal.id, principal.method.as_str())
    }
}

/// The audit log's writer, or nothing when it is off.
#[derive(Debug, Default)]
pub struct Audit {
    lines: Option<mpsc::SyncSender<Vec<u8>>>,
    dropped: AtomicU64,
}

impl Audit {
    /// Open `target` and start its writer; `None` records nothing.
    pub fn open(target: Option<&Target>) -> Result<Self, AuditError> {
        let Some(target) = target else {
            return Ok(Self::default());
        };
        let mut out: Box<dyn Write + Send> = match target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(open_append(path)?),
        };
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(BACKLOG);
        std::thread::Builder::new()
            .name("mcpgw-audit".into())
            .spawn(move || {
                let mut buffer = Vec::with_capacity(64 * 1024);
                while let Ok(line) = rx.recv() {
                    buffer.extend_from_slice(&line);
                    // Whatever else is waiting goes in the same write.
                    while let Ok(more) = rx.try_recv() {
                        buffer.extend_from_slice(&more);
                        if buffer.len() >= 64 * 1024 {
                            break;
                        }
                    }
                    if let Err(error) = out.write_all(&buffer).and_then(|()| out.flush()) {
                        tracing::error!(%error, "cannot write the audit log");
                    }
                    buffer.clear();
                }
            })
            .map_err(|error| AuditError::Open {
                path: "(writer thread)".into(),
                error,
            })?;
        Ok(Self {
            lines: Some(tx),
            dropped: AtomicU64::new(0),
        })
    }

    /// Whether anything is recorded: a caller asks before it gathers an entry.
    pub fn enabled(&self) -> bool {
        self.lines.is_some()
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Record `entry`, stamped with the current time.
    pub fn record(&self, entry: &Entry<'_>) {
        let Some(lines) = &self.lines else {
            return;
        };
        #[derive(Serialize)]
        struct Stamped<'e, 'a> {
            time: String,
            #[serde(flatten)]
            entry: &'e Entry<'a>,
        }
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut line = serde_json::to_vec(&Stamped { time, entry }).unwrap_or_default();
        line.push(b'\n');
        if lines.try_send(line).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "the audit log is behind; lines dropped");
            }
        }
    }
}

/// Milliseconds since `started`, to the microsecond.
pub fn since(started: Instant) -> f64 {
    (started.elapsed().as_micros() as f64) / 1000.0
}

/// Open `path` for appending: created 0600, never through a symbolic link.
fn open_append(path: &std::path::Path) -> Result<std::fs::File, AuditError> {
    crate::files::own_file(0o600)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|error| AuditError::Open {
            path: path.display().to_string(),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_no_more_than_its_fields() {
        let dir = std::env::temp_dir().join(format!("mcpgw-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let audit = Audit::open(Some(&Target::File(path.clone()))).unwrap();
        audit.record(&Entry {
            kind: Kind::Mcp,
            principal: "token:alice",
            auth: "static-token",
            session: Some("abcdef012345".into()),
            method: "tools/call",
            upstream: Some("rs"),
            target: Some("rs__echo"),
            decision: "allow",
            status: "ok".into(),
            duration_ms: 1.5,
        });
        drop(audit);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.ends_with('\n') || Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["principal"], "token:alice");
        assert_eq!(line["target"], "rs__echo");
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A symbolic link at the path is refused.
        let link = dir.join("link.jsonl");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(Audit::open(Some(&Target::File(link))).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
