//! The children a gateway runs, written down in its data directory, so that the next gateway
//! on that directory can stop what a SIGKILLed one left running.
//!
//! On Linux the parent-death signal already kills a child when the gateway dies; the records
//! cover what it cannot (macOS, which has none; a child that escaped it). Each record is a pid,
//! which is also the child's process group. A pid is reused after its process is gone, so a
//! recorded pid is only acted on when that process carries the marker every child of this data
//! directory gets in its environment ([`owner_marker`]): a process that merely has the same pid
//! now is never touched.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The records' file name in the data directory.
pub const FILE: &str = "stdio-children.pids";

/// The environment variable each child gets, naming the data directory's gateway as its owner.
pub const OWNER_VAR: &str = "MCPGW_STDIO_OWNER";

/// The value of [`OWNER_VAR`] for the gateway of `data_dir`: a hash of its canonical path (the
/// path itself is nobody else's business).
pub fn owner_marker(data_dir: &Path) -> String {
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let digest = ring::digest::digest(&ring::digest::SHA256, path.as_os_str().as_encoded_bytes());
    hex::encode(&digest.as_ref()[..16])
}

/// The live children's pids, kept in step with the file.
#[derive(Debug)]
pub struct Records {
    path: PathBuf,
    live: Mutex<BTreeSet<u32>>,
}

impl Records {
    /// The records of the gateway of `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(FILE),
            live: Mutex::default(),
        }
    }

    /// A child started (`true`) or was reaped (`false`): the file is written again. Blocking
    /// (a small write to the data directory).
    pub fn set(&self, pid: u32, running: bool) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if running {
            live.insert(pid);
        } else {
            live.remove(&pid);
        }
        let text: String = live.iter().map(|pid| format!("{pid}\n")).collect();
        if let Err(error) = write(&self.path, text.as_bytes()) {
            tracing::warn!(file = %self.path.display(), %error, "cannot record the stdio upstreams' processes; a gateway killed now may leave them running");
        }
    }

    /// Stop what a previous gateway on this data directory left running: each recorded
    /// process group whose leader still carries `marker` is killed (SIGKILL); then the records
    /// are emptied. How many were killed. Blocking; run at start-up, before any child starts.
    pub fn sweep(&self, marker: &str) -> usize {
        let text = match crate::files::open_regular(&self.path, crate::files::Links::Refuse)
            .and_then(|f| f.read_capped(1 << 20))
        {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(crate::files::FileError::Open { error, .. })
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                return 0;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the records of stdio upstream processes; none swept");
                return 0;
            }
        };
        let mut killed = 0;
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if !carries_marker(pid, marker) {
                continue;
            }
            let Some(group) = rustix::process::Pid::from_raw(pid) else {
                continue;
            };
            match rustix::process::kill_process_group(group, rustix::process::Signal::KILL) {
                Ok(()) => {
                    killed += 1;
                    tracing::warn!(
                        pid,
                        "killed a stdio upstream's process group that a previous gateway left running"
                    );
                }
                Err(error) => {
                    tracing::warn!(pid, %error, "cannot kill a stdio upstream's process group that a previous gateway left running");
                }
            }
        }
        if let Err(error) = write(&self.path, b"") {
            tracing::warn!(file = %self.path.display(), %error, "cannot empty the records of stdio upstream processes");
        }
        killed
    }
}

/// Whether process `pid` runs with `OWNER_VAR=marker` in its environment.
fn carries_marker(pid: i32, marker: &str) -> bool {
    if pid <= 1 {
        return false;
    }
    let Some(environment) = environment_of(pid) else {
        return false;
    };
    let wanted = format!("{OWNER_VAR}={marker}");
    environment
        .split(|&b| b == 0 || b == b' ' || b == b'\n')
        .any(|entry| entry == wanted.as_bytes())
}

/// The environment of process `pid`, as `/proc` has it (NUL-separated).
#[cfg(target_os = "linux")]
fn environment_of(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// The command line and environment of process `pid`, as `ps -E` shows them (space-separated):
/// there is no `/proc` here, and no parent-death signal either, so this sweep is what stops
/// what a killed gateway left.
#[cfg(not(target_os = "linux"))]
fn environment_of(pid: i32) -> Option<Vec<u8>> {
    let out = std::process::Command::new("ps")
        .args(["-E", "-ww", "-o", "command=", "-p", &pid.to_string()])
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// Replace the file's content, created 0600 and never through a symbolic link.
fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = crate::files::own_file(0o600)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)
}
