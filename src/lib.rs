//! mcpgw: an MCP gateway whose upstream connections always carry their full TLS identity (NET-01)
//! and whose serving certificate is swapped in memory without dropping a session (NET-02).
//!
//! The binary calls [`run`]; each subcommand lives in [`commands`].

// Lints that are not in Cargo.toml's [lints] because they are crate-level attributes.
#![warn(missing_debug_implementations)]

pub mod access;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod destination;
pub mod docs;
pub mod files;
pub mod h1;
pub mod handoff;
pub mod hash;
pub mod http;
pub mod jsonrpc;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod reload;
pub mod server;
pub mod session;
pub mod signals;
pub mod store;
pub mod tls;
pub mod upstream;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes of the CLI contract (DESIGN.md).
pub mod exit {
    /// The operation failed.
    pub const FAILED: u8 = 1;
    /// Usage error (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// The gateway could not be reached over its control socket.
    pub const UNREACHABLE: u8 = 3;
}

/// Parse the command line, run the subcommand and map its outcome to an exit code.
pub fn run() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == commands::stdio_exec::NAME)
    {
        let args = cli::StdioExecArgs::parse_from(std::env::args_os().skip(1));
        return finish(commands::stdio_exec::run(&args));
    }
    let cli = cli::Cli::parse();
    // One crypto provider for the whole process (DESIGN.md: ring everywhere).
    let _ = rustls::crypto::ring::default_provider().install_default();
    finish(commands::dispatch(cli))
}

/// The exit code of a command's outcome, its error printed.
fn finish(outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed stdout (`mcpgw gateway list | head`) is not a failure worth a message.
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("mcpgw: {err:#}");
            ExitCode::from(exit_code_for(&err))
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn exit_code_for(err: &anyhow::Error) -> u8 {
    if let Some(failed) = err
        .chain()
        .find_map(|c| c.downcast_ref::<commands::probe::ProbeFailed>())
    {
        failed.cause.exit_code()
    } else if err
        .chain()
        .any(|c| c.downcast_ref::<control::client::Unreachable>().is_some())
    {
        exit::UNREACHABLE
    } else if err
        .chain()
        .any(|c| c.downcast_ref::<cli::UsageError>().is_some())
    {
        exit::USAGE
    } else {
        exit::FAILED
    }
}
