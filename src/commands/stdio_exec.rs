//! `mcpgw __stdio-exec`: how the gateway starts a stdio upstream's program (not a command for
//! users: parsed apart from the others, see `crate::run`, and shown nowhere).
//!
//! Some things must happen in the child between fork and exec, and the crate has no `unsafe`
//! for a `pre_exec` hook: so the gateway starts itself as this launcher (environment, working
//! directory, process group and pipes already set by the gateway), which
//! 1. asks for SIGKILL when its parent dies (Linux; elsewhere the gateway's start-up sweep
//!    covers a gateway that died without stopping its children),
//! 2. checks that its parent is still the gateway that started it: one that died before step 1
//!    took effect would never send the signal, so the launcher exits instead,
//! 3. applies the resource limits, and
//! 4. execs the program in its own place: same pid, same process group, the parent-death
//!    signal kept.

use std::os::unix::process::CommandExt;

use anyhow::Context;

use crate::cli::StdioExecArgs;

/// The launcher's first argument.
pub const NAME: &str = "__stdio-exec";

/// Become the program; returns only when that failed.
pub fn run(args: &StdioExecArgs) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .context("cannot ask for the parent-death signal")?;
    let parent = rustix::process::getppid().map(|p| p.as_raw_pid());
    if parent != i32::try_from(args.parent).ok() {
        anyhow::bail!("the gateway that started this stdio upstream is gone; not starting it");
    }
    let limits = [
        (
            rustix::process::Resource::As,
            args.memory_mib.map(|m| m.saturating_mul(1 << 20)),
        ),
        (rustix::process::Resource::Nofile, args.open_files),
        (rustix::process::Resource::Cpu, args.cpu_secs),
    ];
    for (resource, limit) in limits {
        if let Some(limit) = limit {
            let rlimit = rustix::process::Rlimit {
                current: Some(limit),
                maximum: Some(limit),
            };
            rustix::process::setrlimit(resource, rlimit)
                .with_context(|| format!("cannot set the limit {resource:?} to {limit}"))?;
        }
    }
    let (program, rest) = args.command.split_first().context("no program to run")?;
    let error = std::process::Command::new(program).args(rest).exec();
    Err(error).with_context(|| format!("cannot run {}", program.to_string_lossy()))
}
