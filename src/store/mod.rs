//! Upstream registrations that survive restarts.
//!
//! [`Store`] is the small interface the rest of mcpgw uses. [`sqlite::SqliteStore`] is the
//! embedded default (one file in the data directory, no server to start);
//! [`postgres::PostgresStore`] is shared by several instances (`--store postgres://...`), which
//! hear of each other's changes through [`Store::subscribe`]. Both run the same numbered schema
//! versions ([`migrations`]) and decode rows with the same checks.
//!
//! The trait is synchronous: callers on async threads run it through `spawn_blocking`.

pub mod fleet;
mod migrations;
pub mod postgres;
mod row;
pub mod sessions;
pub mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use migrations::SCHEMA_VERSION;
pub use sessions::{StoredSession, Subscription};

use serde::{Deserialize, Serialize};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error("cannot open store {path}: {detail}")]
    Open {
        /// Database file, or URL (without its password).
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The database was written by a newer mcpgw.
    #[error(
        "store {path} has schema version {found}, newer than this mcpgw understands ({supported})"
    )]
    TooNew {
        /// Database file, or URL (without its password).
        path: String,
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A registration with this name exists already.
    #[error("an upstream named '{name}' is already registered")]
    Exists {
        /// The name.
        name: String,
    },
    /// The name does not follow the naming rule of [`valid_name`].
    #[error(
        "invalid upstream name '{name}': expected 1-64 characters of a-z, 0-9, '-' and '_', \
         starting with a letter or digit, without '__'"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// No registration with this name.
    #[error("no upstream named '{name}' is registered")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The database failed a query.
    #[error("store query failed: {detail}")]
    Query {
        /// What went wrong.
        detail: String,
    },
    /// The database cannot be reached; the registry in memory keeps serving calls.
    #[error("store unavailable: {store}: {detail}; the change was not made")]
    Unavailable {
        /// The URL, without its password.
        store: String,
        /// Why (connection refused, lost, no answer in time).
        detail: String,
    },
}

/// Where the registrations live (`--store`, `MCPGW_STORE`, `[store] url`).
#[derive(Debug, Clone, Default)]
pub enum StoreLocation {
    /// SQLite, `mcpgw.db` in the data directory.
    #[default]
    DataDir,
    /// A PostgreSQL database shared with other instances.
    Postgres(Box<postgres::PgUrl>),
}

/// Open the store at `location`; SQLite's file is `sqlite_file` (in the data directory).
pub async fn open(
    location: &StoreLocation,
    sqlite_file: &Path,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match location {
        StoreLocation::DataDir => Arc::new(sqlite::SqliteStore::open(sqlite_file)?),
        StoreLocation::Postgres(url) => {
            Arc::new(postgres::PostgresStore::open((**url).clone()).await?)
        }
    })
}

/// A change another instance (or this one) made to a store several instances share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// The registration of this name was added, changed or removed.
    Upstream(String),
    /// Changes may have been missed (the notice connection was down): compare everything.
    Resync,
    /// A certificate rotation was published for every instance (`cert rotate --all`,
    /// [`fleet`]); the registry has nothing to do with it.
    Rotation(i64),
    /// The session of this [`sessions::id_hash`] ended (`DELETE`d or expired) on some instance:
    /// every instance holding it in memory lets it go.
    SessionEnded(String),
    /// A server-to-client message for the session of this hash, from an instance where its
    /// client has no stream open: the instance where it has one sends it.
    SessionEvent {
        /// [`sessions::id_hash`] of the session.
        hash: String,
        /// The message, serialized.
        message: String,
    },
    /// As [`StoreChange::SessionEvent`], for a message too long for a notice: it is in the
    /// store under this row id ([`Store::load_session_event`]).
    SessionEventStored {
        /// [`sessions::id_hash`] of the session.
        hash: String,
        /// The row holding the message.
        id: i64,
    },
}

/// How the gateway speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Legacy HTTP+SSE: GET the stream, POST to the `endpoint` it announces.
    Sse,
    /// Streamable HTTP: POST JSON-RPC, answers as JSON or SSE.
    StreamableHttp,
    /// A local program speaking newline-delimited JSON-RPC on its stdin/stdout, started and
    /// supervised by the gateway ([`Registration::command`] says which). Not a `--transport`
    /// value: `gateway add --command` chooses it.
    #[value(skip)]
    Stdio,
}

impl Transport {
    /// Stable text form, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sse => "sse",
            Self::StreamableHttp => "streamable-http",
            Self::Stdio => "stdio",
        }
    }
}

/// Which protocol era the gateway speaks to an upstream (`gateway add --era`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum EraChoice {
    /// Ask `server/discover` first and fall back to `initialize`; where the upstream speaks
    /// both, each client gets the era it speaks itself (a session-era client its own
    /// `initialize`d upstream session, a 2026-07-28 client stateless requests).
    #[default]
    #[serde(rename = "auto")]
    #[value(name = "auto")]
    Auto,
    /// Always the session era (`initialize`, `Mcp-Session-Id`), never `server/discover`.
    #[serde(rename = "2025-11-25")]
    #[value(name = "2025-11-25")]
    Session,
    /// Always the stateless 2026-07-28 era: no sessions, so no per-client upstream sessions.
    #[serde(rename = "2026-07-28")]
    #[value(name = "2026-07-28")]
    Stateless,
}

impl EraChoice {
    /// Stable text form, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Session => "2025-11-25",
            Self::Stateless => "2026-07-28",
        }
    }

    /// The choice [`Self::as_str`] names.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Auto, Self::Session, Self::Stateless]
            .into_iter()
            .find(|c| c.as_str() == text)
    }
}

/// PEM material given either as a file path (re-read on reload) or inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PemSource {
    /// A file path.
    Path(PathBuf),
    /// PEM text given at registration (never printed).
    Inline(String),
}

/// TLS settings of one upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// CA bundle to trust; the system store when absent.
    pub ca: Option<PemSource>,
    /// Client certificate chain.
    pub client_cert: Option<PemSource>,
    /// Client private key.
    pub client_key: Option<PemSource>,
    /// Name to verify the server certificate against (and send as SNI) instead of the URL host.
    pub server_name: Option<String>,
}

/// Credentials and headers sent to the upstream. Secrets: never logged or printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamAuth {
    /// `Authorization: Bearer` token.
    pub bearer: Option<String>,
    /// Extra headers, in order.
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("UpstreamAuth")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .field("headers", &names)
            .finish()
    }
}

/// A stdio upstream's program: what `gateway add NAME --command PROG ...` registered.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// The program: a path, or a name looked up in the child's `PATH`.
    pub program: String,
    /// Its arguments, in order.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables given at registration. Values are secrets (API keys): never
    /// logged or printed, only their names.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// A file of `K=V` lines read at each start of the child (values secret, as `env`'s).
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// Working directory of the child; the gateway's own when absent.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// One child per downstream session (for servers that keep per-user state) instead of one
    /// shared by every client.
    #[serde(default)]
    pub isolate: bool,
    /// Pass the gateway's whole environment to the child, not only `PATH`, `HOME`, `LANG` and
    /// what was given.
    #[serde(default)]
    pub inherit_env: bool,
    /// Resource limits of the child.
    #[serde(default)]
    pub limits: ProcessLimits,
}

/// Why a [`CommandSpec`] cannot be run; each names the field and what it holds (never an env value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No program.
    #[error("the command is empty; expected a program name or path")]
    EmptyProgram,
    /// A program, argument or path with a NUL byte cannot be passed to exec.
    #[error("{field} contains a NUL byte")]
    Nul {
        /// `command`, `args[3]`, `cwd`...
        field: String,
    },
    /// An environment variable name that a process environment cannot hold.
    #[error(
        "environment variable name {name:?} is not usable; expected letters, digits and '_', not starting with a digit"
    )]
    EnvName {
        /// The name (names are not secret; values are).
        name: String,
    },
    /// A limit of zero would stop the child from starting at all.
    #[error("limit {field} must be at least 1")]
    ZeroLimit {
        /// `memory_mib`, `open_files` or `cpu_secs`.
        field: &'static str,
    },
}

impl CommandSpec {
    /// Refuse what cannot be run, whatever way it was registered (CLI, HTTP, `mcpgw.toml`).
    pub fn check(&self) -> Result<(), CommandError> {
        if self.program.trim().is_empty() {
            return Err(CommandError::EmptyProgram);
        }
        let nul = |field: String, text: &str| {
            if text.contains('\0') {
                Err(CommandError::Nul { field })
            } else {
                Ok(())
            }
        };
        nul("command".into(), &self.program)?;
        for (i, arg) in self.args.iter().enumerate() {
            nul(format!("args[{i}]"), arg)?;
        }
        for (field, path) in [("cwd", &self.cwd), ("env_file", &self.env_file)] {
            if let Some(path) = path {
                nul(field.into(), &path.to_string_lossy())?;
            }
        }
        for (name, value) in &self.env {
            let usable = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !usable {
                return Err(CommandError::EnvName { name: name.clone() });
            }
            nul(format!("the value of {name}"), value)?;
        }
        let l = &self.limits;
        for (field, value) in [
            ("memory_mib", l.memory_mib),
            ("open_files", l.open_files),
            ("cpu_secs", l.cpu_secs),
        ] {
            if value == Some(0) {
                return Err(CommandError::ZeroLimit { field });
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("CommandSpec")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &names)
            .field("env_file", &self.env_file)
            .field("cwd", &self.cwd)
            .field("isolate", &self.isolate)
            .field("inherit_env", &self.inherit_env)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Optional resource limits of a stdio upstream's child (`setrlimit` in the child). Unknown
/// names are refused: a misspelt limit in a request or `mcpgw.toml` is an error, not a limit
/// silently left unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessLimits {
    /// Address space, in MiB (`RLIMIT_AS`).
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    #[serde(default)]
    pub open_files: Option<u64>,
    /// CPU time, in seconds (`RLIMIT_CPU`).
    #[serde(default)]
    pub cpu_secs: Option<u64>,
}

/// Health as last observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Not checked yet.
    Unknown,
    /// Answering MCP.
    Online,
    /// Failed `threshold` checks in a row.
    Offline,
}

impl HealthStatus {
    /// Stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Online => "online",
            Self::Offline => "offline",
        }
    }
}

/// Health state of one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Current status.
    pub status: HealthStatus,
    /// When `status` last changed (unix seconds).
    pub since: i64,
    /// Last successful check (unix seconds).
    pub last_success: Option<i64>,
    /// Message of the last failed check.
    pub last_error: Option<String>,
    /// Failed checks since the last success.
    pub consecutive_failures: u32,
}

impl Health {
    /// The state of a registration nobody has checked yet.
    pub fn unknown(now: i64) -> Self {
        Self {
            status: HealthStatus::Unknown,
            since: now,
            last_success: None,
            last_error: None,
            consecutive_failures: 0,
        }
    }
}

/// One registered upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Unique name: 1–64 of `[a-z0-9_-]`, starting with a letter or digit.
    pub name: String,
    /// Endpoint URL (`https://host:port/sse` or `/mcp`).
    pub url: String,
    /// Transport.
    pub transport: Transport,
    /// TLS settings.
    pub tls: TlsSettings,
    /// Upstream auth.
    pub auth: UpstreamAuth,
    /// Whether the gateway uses it.
    pub enabled: bool,
    /// The protocol era spoken to it.
    #[serde(default)]
    pub era: EraChoice,
    /// One upstream session shared by every client (for servers known to keep no per-session
    /// state), instead of one per downstream session.
    #[serde(default)]
    pub shared_session: bool,
    /// For [`Transport::Stdio`], the program to run (and `url` is empty); `None` otherwise.
    #[serde(default)]
    pub command: Option<CommandSpec>,
    /// Creation time (unix seconds).
    pub created_at: i64,
    /// Last update (unix seconds).
    pub updated_at: i64,
    /// Health.
    pub health: Health,
}

/// Whether `name` is a valid registration name (also used in tool prefixes and URLs).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.contains("__")
}

/// The storage interface.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// All registrations, ordered by name.
    fn list(&self) -> Result<Vec<Registration>, StoreError>;
    /// One registration.
    fn get(&self, name: &str) -> Result<Registration, StoreError>;
    /// Add a new registration; [`StoreError::Exists`] when the name is taken,
    /// [`StoreError::InvalidName`] when it breaks [`valid_name`].
    fn insert(&self, registration: &Registration) -> Result<(), StoreError>;
    /// Replace the configuration of an existing registration (matched by name): url, transport,
    /// TLS, auth, `enabled` and `updated_at`. `created_at` and health stay as stored, so an edit
    /// based on an older read never rolls back what the health checker recorded meanwhile
    /// (that is [`Store::set_health`]'s job). [`StoreError::NotFound`] if absent.
    fn update(&self, registration: &Registration) -> Result<(), StoreError>;
    /// Remove a registration; [`StoreError::NotFound`] if absent.
    fn remove(&self, name: &str) -> Result<(), StoreError>;
    /// Record health without touching the rest of the registration.
    fn set_health(&self, name: &str, health: &Health) -> Result<(), StoreError>;
    /// The signing secret of built-in tokens every instance on this store uses: the stored one,
    /// or `proposed`, stored now, if there is none yet (the first instance's wins). A store that
    /// one instance has to itself keeps none and returns `proposed`: the data directory's file
    /// is the secret.
    fn shared_secret(&self, proposed: &[u8]) -> Result<Vec<u8>, StoreError> {
        Ok(proposed.to_vec())
    }
    /// Whether this instance should run the health check of `name` now: `true` when it holds
    /// the lease for the next `lease` (no other instance held an unexpired one), so that one
    /// instance at a time checks each upstream. A store one instance has to itself always says
    /// `true`.
    fn claim_health_check(
        &self,
        name: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let _ = (name, lease);
        Ok(true)
    }
    /// Changes written by any instance, as they are announced; `None` for a store only this
    /// instance writes (there is nothing to hear).
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreChange>> {
        None
    }
    /// Keep a session (a new one, or one opened again under the same id).
    fn save_session(&self, session: &StoredSession) -> Result<(), StoreError>;
    /// The session of this [`sessions::id_hash`], with its subscriptions; `None` if the store
    /// has none (never opened here, ended, expired).
    fn load_session(&self, id_hash: &str) -> Result<Option<StoredSession>, StoreError>;
    /// End a session: it and its subscriptions go, and (on a shared store) every instance hears
    /// of it ([`StoreChange::SessionEnded`]).
    fn end_session(&self, id_hash: &str) -> Result<(), StoreError>;
    /// Add (`subscribed`) or drop a resource subscription of a stored session; nothing for a
    /// session the store does not hold.
    fn set_subscription(
        &self,
        id_hash: &str,
        subscription: &Subscription,
        subscribed: bool,
    ) -> Result<(), StoreError>;
    /// These sessions were used at `seen_at` (Unix seconds) or later; the ones among them the
    /// store no longer holds (ended or expired while this instance missed the notice).
    fn touch_sessions(&self, id_hashes: &[String], seen_at: i64)
    -> Result<Vec<String>, StoreError>;
    /// Drop the sessions no instance has seen used since `seen_before` (Unix seconds); how many.
    fn expire_sessions(&self, seen_before: i64) -> Result<u64, StoreError>;
    /// Task `task_id` of the session `id_hash` runs on the instance peers reach at `instance`
    /// (where the session's upstream session keeps it); nothing for a session the store does not
    /// hold, or a store only this instance uses.
    fn save_task_owner(
        &self,
        _id_hash: &str,
        _task_id: &str,
        _instance: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    /// The instance [`Store::save_task_owner`] named for a task of a session.
    fn load_task_owner(
        &self,
        _id_hash: &str,
        _task_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// Every instance [`Store::save_task_owner`] named for a task of the session `id_hash`.
    fn load_task_instances(&self, _id_hash: &str) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// A message announced by [`StoreChange::SessionEventStored`], while the store keeps it.
    fn load_session_event(&self, _id: i64) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
    /// Announce a server-to-client message for a session to every instance
    /// ([`StoreChange::SessionEvent`], or [`StoreChange::SessionEventStored`] for one over
    /// [`sessions::MAX_EVENT`] bytes); nothing for a store only this instance uses.
    fn publish_session_event(&self, id_hash: &str, message: &str) -> Result<(), StoreError> {
        let _ = (id_hash, message);
        Ok(())
    }
    /// The instances sharing this store and their certificate rotations; `None` for a store
    /// one instance has to itself.
    fn fleet(&self) -> Option<&dyn fleet::Fleet> {
        None
    }
}
