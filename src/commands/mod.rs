//! One file per subcommand. Each takes its parsed arguments and returns `anyhow::Result`;
//! [`crate::run`] maps the outcome to an exit code.

pub mod call;
pub mod cert;
pub mod gateway;
pub mod policy;
pub mod probe;
pub mod serve;
pub mod status;
pub mod stdio_exec;
pub mod token;

use crate::cli::{CertCommand, Cli, Command, PolicyCommand, TokenCommand};
use crate::config::GlobalPaths;

/// Run the chosen subcommand.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let globals = GlobalPaths {
        data_dir: cli.data_dir,
        control_socket: cli.control_socket,
    };
    match cli.command {
        Command::Serve(args) => serve::run(&args, &globals),
        Command::Cert(CertCommand::Gen(args)) => cert::gen_pki(&args, cli.json),
        Command::Cert(CertCommand::Rotate(args)) => {
            runtime()?.block_on(cert::rotate(&args, &globals, cli.json))
        }
        Command::Status => runtime()?.block_on(status::run(&globals, cli.json)),
        Command::Gateway(cmd) => runtime()?.block_on(gateway::run(cmd, &globals, cli.json)),
        Command::Call(args) => runtime()?.block_on(call::run(&args, &globals, cli.json)),
        Command::Token(TokenCommand::Create {
            ttl,
            sub,
            role,
            scopes,
        }) => token::create(&globals, &ttl, &sub, role, &scopes, cli.json),
        Command::Policy(PolicyCommand::Check(args)) => policy::check(&args, cli.json),
        Command::Probe(args) => runtime()?.block_on(probe::run(&args, cli.json)),
    }
}

/// A small runtime for client commands.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Print a value as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}
