//! Shell completions and man pages, rendered from the clap definition.
//!
//! The rendered files are checked in under `completions/` and `man/`; a test renders them again
//! and fails when they differ, so they can never drift from the CLI. To refresh them, run
//! `MCPGW_UPDATE_GENERATED=1 cargo test --test generated`.

use std::path::PathBuf;

use clap_complete::Shell;

/// Every generated file: (path relative to the repository root, contents).
pub fn render() -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for (shell, name) in [
        (Shell::Bash, "mcpgw.bash"),
        (Shell::Zsh, "_mcpgw"),
        (Shell::Fish, "mcpgw.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut crate::cli::command(), "mcpgw", &mut buf);
        files.push((PathBuf::from("completions").join(name), buf));
    }
    let mut root = crate::cli::command().disable_help_subcommand(true);
    root.build();
    man_pages(&root, &mut files)?;
    Ok(files)
}

fn man_pages(cmd: &clap::Command, files: &mut Vec<(PathBuf, Vec<u8>)>) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, files)?;
    }
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    files.push((PathBuf::from("man").join(man.get_filename()), buf));
    Ok(())
}
