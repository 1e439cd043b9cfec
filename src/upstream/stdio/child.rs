//! Starting a stdio upstream's program, and stopping it.
//!
//! The child is started through `mcpgw __stdio-exec` (`commands/stdio_exec.rs`), a launcher that
//! sets what must be set between fork and exec without `unsafe` here: the parent-death signal
//! (SIGKILL when the gateway dies), a check that the gateway did not die before that took effect,
//! and the resource limits; then it execs the program in its own place (same pid). The child
//! leads a process group of its own, so stopping it stops whatever it started too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use super::records::OWNER_VAR;
use crate::store::CommandSpec;
use crate::upstream::UpstreamError;

/// How long a child gets to exit after its stdin is closed, and again after SIGTERM.
pub const GRACE: Duration = Duration::from_secs(2);

/// The launcher: the gateway's own executable, and its pid for the child to check.
#[derive(Debug, Clone)]
pub struct Launcher {
    exe: PathBuf,
    parent: u32,
}

impl Launcher {
    /// The running gateway's.
    pub fn current() -> Self {
        // On Linux the running image itself, even if the file was replaced since (an upgrade).
        let exe = if cfg!(target_os = "linux") {
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mcpgw"))
        };
        Self {
            exe,
            parent: std::process::id(),
        }
    }
}

/// Start `spec`'s program with stdin, stdout and stderr piped to the gateway, `marker` in its
/// environment.
///
/// Must run on an async worker thread, never in `spawn_blocking`: Linux sends the parent-death
/// signal when the *thread* that forked the child exits, and the blocking pool's threads exit
/// when idle, which would kill a healthy child some seconds after it started. Workers live as
/// long as the runtime.
pub async fn spawn(
    launcher: &Launcher,
    spec: &CommandSpec,
    marker: &str,
) -> Result<Child, UpstreamError> {
    let mut cmd = Command::new(&launcher.exe);
    cmd.arg(crate::commands::stdio_exec::NAME)
        .arg("--parent")
        .arg(launcher.parent.to_string());
    let limits = [
        ("--memory-mib", spec.limits.memory_mib),
        ("--open-files", spec.limits.open_files),
        ("--cpu-secs", spec.limits.cpu_secs),
    ];
    for (flag, value) in limits {
        if let Some(value) = value {
            cmd.arg(flag).arg(value.to_string());
        }
    }
    cmd.arg("--").arg(&spec.program).args(&spec.args);
    if !spec.inherit_env {
        cmd.env_clear();
        for name in ["PATH", "HOME", "LANG"] {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
    }
    if let Some(file) = &spec.env_file {
        for (name, value) in read_env_file(file).await? {
            cmd.env(name, value);
        }
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd.env(OWNER_VAR, marker);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    cmd.process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().map_err(|error| UpstreamError::Connect {
        diagnosis: format!("cannot start the stdio upstream's launcher ({error})"),
    })
}

/// The `K=V` lines of an env file (blank lines and `#` comments skipped), read at each start so
/// that a rotated secret is picked up by the next child. Values are never put in a message.
async fn read_env_file(path: &Path) -> Result<Vec<(OsString, OsString)>, UpstreamError> {
    let shown = path.display();
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|error| UpstreamError::Connect {
            diagnosis: format!("cannot read the env file {shown} ({error})"),
        })?;
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            return Err(UpstreamError::Connect {
                diagnosis: format!("the env file {shown}, line {}, is not NAME=value", n + 1),
            });
        };
        vars.push((name.trim().into(), value.into()));
    }
    Ok(vars)
}

/// Signal the process group led by `pid`; a group already gone is no error.
pub fn signal_group(pid: u32, signal: rustix::process::Signal) {
    let Some(group) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let _ = rustix::process::kill_process_group(group, signal);
}

/// Stop `child`: its stdin is closed by `close_stdin` (a stdio server's cue to exit), then
/// SIGTERM to its group after [`GRACE`], then SIGKILL after another; always reaped.
pub async fn stop(
    child: &mut Child,
    close_stdin: impl std::future::Future<Output = ()>,
) -> std::io::Result<ExitStatus> {
    let pid = child.id();
    // A writer stuck on a full pipe holds the stdin lock: the signals come anyway.
    let _ = tokio::time::timeout(GRACE, close_stdin).await;
    if let Ok(status) = tokio::time::timeout(GRACE, child.wait()).await {
        return status;
    }
    if let Some(pid) = pid {
        signal_group(pid, rustix::process::Signal::TERM);
    }
    if let Ok(status) = tokio::time::timeout(GRACE, child.wait()).await {
        return status;
    }
    if let Some(pid) = pid {
        signal_group(pid, rustix::process::Signal::KILL);
    }
    child.wait().await
}

/// How a child ended, for messages: `status 1`, `signal 9`.
pub fn describe(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("status {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => status.to_string(),
        },
        Err(error) => format!("unknown status: {error}"),
    }
}
