//! Upstreams declared in `mcpgw.toml` (`[[upstream]]`): local programs the operator runs
//! with the gateway, spoken to over their stdin/stdout.
//!
//! The file is the operator's, so what it declares is trusted as the command line is (the HTTP
//! API registers commands only when `[upstreams] allow_commands_over_http` says so). Each
//! entry is written to the registry at start: added when new, replaced when it changed, left
//! alone when the same. An entry removed from the file stays registered until `gateway remove`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use crate::store::{CommandSpec, ProcessLimits, valid_name};

/// One `[[upstream]]` table.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    /// The registration name (tool prefix, `/servers/{name}/mcp`).
    pub name: String,
    /// The program: a path, or a name looked up in the child's `PATH`.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment given to the child (values secret).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A file of `K=V` lines read at each start of the child.
    pub env_file: Option<PathBuf>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// One child per downstream session.
    #[serde(default)]
    pub isolate: bool,
    /// Pass the gateway's whole environment.
    #[serde(default)]
    pub inherit_env: bool,
    /// Resource limits of the child.
    #[serde(default)]
    pub limits: ProcessLimits,
}

impl std::fmt::Debug for FileUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileUpstream")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl FileUpstream {
    /// Paths relative to the config file's directory.
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.env_file, &mut self.cwd] {
            if let Some(p) = path.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        }
    }
}

/// A declared upstream, checked: its name and program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Registration name.
    pub name: String,
    /// What to run.
    pub command: CommandSpec,
}

/// Check every `[[upstream]]`: names valid and unique, programs runnable.
pub(super) fn resolve(
    entries: Vec<FileUpstream>,
    origin: &str,
) -> Result<Vec<Declared>, ConfigError> {
    let mut declared: Vec<Declared> = Vec::with_capacity(entries.len());
    for entry in entries {
        if !valid_name(&entry.name) {
            return Err(super::field_error(
                origin,
                "upstream.name",
                "1-64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit, without '__'",
                entry.name,
            ));
        }
        if declared.iter().any(|d| d.name == entry.name) {
            return Err(super::field_error(
                origin,
                "upstream.name",
                "a name declared once",
                entry.name,
            ));
        }
        let command = CommandSpec {
            program: entry.command,
            args: entry.args,
            env: entry.env.into_iter().collect(),
            env_file: entry.env_file,
            cwd: entry.cwd,
            isolate: entry.isolate,
            inherit_env: entry.inherit_env,
            limits: entry.limits,
        };
        if let Err(error) = command.check() {
            return Err(ConfigError::Upstream {
                origin: origin.to_owned(),
                name: entry.name,
                error,
            });
        }
        declared.push(Declared {
            name: entry.name,
            command,
        });
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::super::tests::with_file;

    #[test]
    fn a_declared_upstream_becomes_a_checked_command() {
        let cfg = with_file(
            "[[upstream]]\nname = \"everything\"\ncommand = \"npx\"\n\
             args = [\"-y\", \"@modelcontextprotocol/server-everything\"]\n\
             env = { API_KEY = \"k-123\" }\nenv_file = \"everything.env\"\nisolate = true\n\
             limits = { memory_mib = 512 }\n",
        )
        .unwrap();
        let [d] = cfg.declared.as_slice() else {
            panic!("one declared upstream: {:?}", cfg.declared);
        };
        assert_eq!(d.name, "everything");
        assert_eq!(d.command.program, "npx");
        assert_eq!(d.command.args.len(), 2);
        assert_eq!(d.command.env, vec![("API_KEY".into(), "k-123".into())]);
        assert!(d.command.isolate && !d.command.inherit_env);
        assert_eq!(d.command.limits.memory_mib, Some(512));
        // Relative to the file's directory, as every path in it.
        let env_file = d.command.env_file.as_ref().unwrap();
        assert!(env_file.is_absolute() && env_file.ends_with("everything.env"));
        assert!(!format!("{d:?}").contains("k-123"));
    }

    #[test]
    fn bad_declared_upstreams_are_refused_naming_the_entry_and_field() {
        let cases = [
            ("name = \"Bad Name\"\ncommand = \"x\"", "upstream.name"),
            (
                "name = \"a\"\ncommand = \"  \"",
                "upstream `a`: the command is empty",
            ),
            (
                "name = \"a\"\ncommand = \"x\"\nenv = { \"1X\" = \"v\" }",
                "\"1X\" is not usable",
            ),
            (
                "name = \"a\"\ncommand = \"x\"\nlimits = { open_files = 0 }",
                "open_files must be at least 1",
            ),
            (
                "name = \"a\"\ncommand = \"x\"\nurl = \"http://x\"",
                "unknown field `url`",
            ),
            (
                "name = \"a\"\ncommand = \"x\"\nisloate = true",
                "unknown field `isloate`",
            ),
            (
                "name = \"a\"\ncommand = \"x\"\nlimits = { memory = 512 }",
                "unknown field `memory`",
            ),
        ];
        for (entry, expected) in cases {
            let err = with_file(&format!("[[upstream]]\n{entry}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{entry}: {err}");
            assert!(err.contains("mcpgw.toml"), "{err}");
        }
        let twice = "[[upstream]]\nname = \"a\"\ncommand = \"x\"\n";
        let err = with_file(&format!("{twice}{twice}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("declared once"), "{err}");
    }
}
