//! Stage two of argument handling: flags, `MCPGW_*` variables, `mcpgw.toml` and defaults merged
//! into a validated [`ServeConfig`] (precedence flag > environment > file > default).
//!
//! A `ServeConfig` guarantees: the listen address is loopback, or TLS is on, or insecure binding
//! was asked for explicitly; `--no-auth` only on loopback; relative paths in the file are resolved
//! against the file's directory. Errors name the file, the key, and what was expected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{LogFormat, ServeArgs};
use crate::tls::serving::TlsFiles;

mod auth;
mod limits;
mod store;
mod upstreams;

pub use auth::{AuthConfig, FileAuth, IssuerConfig, StaticToken};
pub use limits::{FileLimits, QuotaLimits, Rate};
pub use store::FileStore;
pub use upstreams::Declared;

/// Default listen address (DESIGN.md).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4444";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = ".mcpgw";
/// File name of the control socket inside the data directory.
pub const SOCKET_NAME: &str = "mcpgw.sock";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `[policy]` is not a policy.
    #[error(transparent)]
    Policy {
        /// What was wrong.
        error: crate::access::policy::PolicyError,
    },
    /// The config file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The config file is not valid TOML or has a wrong type or unknown key.
    #[error("config file {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// The TOML parser's message (line, column, key and expected type).
        detail: String,
    },
    /// The store URL cannot be used (the message never quotes it: it may hold a password).
    #[error("{setting}: {error}")]
    Store {
        /// Where the URL was given: the flag and variable, or the file and key.
        setting: String,
        /// What is wrong with it.
        error: crate::store::postgres::PgUrlError,
    },
    /// An `[[upstream]]` program that cannot be run.
    #[error("{origin}: upstream `{name}`: {error}")]
    Upstream {
        /// The file.
        origin: String,
        /// The entry's name.
        name: String,
        /// What is wrong with it.
        error: crate::store::CommandError,
    },
    /// A value has the right type but an unusable value.
    #[error("{origin}: `{key}`: expected {expected}, got {got:?}")]
    Field {
        /// The file, or the flag/variable.
        origin: String,
        /// The key.
        key: &'static str,
        /// What would have been accepted.
        expected: &'static str,
        /// What was given.
        got: String,
    },
    /// Only one of the certificate and key was given.
    #[error("{origin}: `tls.cert` and `tls.key` must be given together")]
    TlsIncomplete {
        /// Where the half pair came from.
        origin: String,
    },
    /// Plain HTTP on a non-loopback address.
    #[error(
        "refusing to serve plain HTTP on non-loopback address {addr}: give --tls-cert/--tls-key, or --allow-insecure-bind if you really mean it"
    )]
    InsecureBind {
        /// The listen address.
        addr: SocketAddr,
    },
    /// `--no-auth` on a non-loopback address.
    #[error(
        "refusing --no-auth on non-loopback address {addr}: auth may only be turned off on loopback"
    )]
    NoAuthNotLoopback {
        /// The listen address.
        addr: SocketAddr,
    },
}

/// `mcpgw.toml` as written. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `listen = "ADDR:PORT"`.
    pub listen: Option<String>,
    /// `data_dir = "DIR"`.
    pub data_dir: Option<PathBuf>,
    /// `control_socket = "PATH"`.
    pub control_socket: Option<PathBuf>,
    /// `log_format = "text" | "json"`.
    pub log_format: Option<LogFormat>,
    /// `workers = N` (runtime worker threads).
    pub workers: Option<u16>,
    /// `upstream_spin_us = N` (0 to 10000).
    pub upstream_spin_us: Option<u32>,
    /// `shutdown_grace_secs = N`.
    pub shutdown_grace_secs: Option<u64>,
    /// `drain_delay_ms = N`.
    pub drain_delay_ms: Option<u64>,
    /// `allow_insecure_bind = true`.
    pub allow_insecure_bind: Option<bool>,
    /// `no_auth = true`.
    pub no_auth: Option<bool>,
    /// `[tls]`.
    #[serde(default)]
    pub tls: FileTls,
    /// `[auth]`.
    #[serde(default)]
    pub auth: FileAuth,
    /// `[policy]`.
    #[serde(default)]
    pub policy: crate::access::policy::FilePolicy,
    /// `[audit]`.
    #[serde(default)]
    pub audit: FileAudit,
    /// `[store]`.
    #[serde(default)]
    pub store: FileStore,
    /// `[upstreams]`.
    #[serde(default)]
    pub upstreams: FileUpstreams,
    /// `[[upstream]]`: stdio upstreams declared by the operator.
    #[serde(default)]
    pub upstream: Vec<upstreams::FileUpstream>,
    /// `[mcp]`.
    #[serde(default)]
    pub mcp: FileMcp,
    /// `[http]`.
    #[serde(default)]
    pub http: FileHttp,
    /// `[limits]`.
    #[serde(default)]
    pub limits: FileLimits,
}

/// `[http]` of `mcpgw.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttp {
    /// Host names accepted in `Host`/`Origin` besides the defaults.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Exact origins accepted.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Seconds a client may take to send its request headers (slowloris guard).
    pub header_timeout_secs: Option<u64>,
    /// Connections open at once on the listener.
    pub max_connections: Option<usize>,
    /// Connections open at once from one peer address.
    pub max_connections_per_peer: Option<usize>,
}

/// `[mcp]` of `mcpgw.toml`: the downstream MCP endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMcp {
    /// Most sessions per transport.
    pub max_sessions: Option<usize>,
    /// Seconds before an unused Streamable-HTTP session is forgotten.
    pub session_idle_secs: Option<u64>,
}

/// `[upstreams]` of `mcpgw.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreams {
    /// Seconds between health checks.
    pub health_interval_secs: Option<u64>,
    /// Failures before offline.
    pub health_threshold: Option<u32>,
    /// Per-request timeout.
    pub request_timeout_secs: Option<u64>,
    /// Separator between upstream and tool names.
    pub separator: Option<String>,
    /// Directories certificate paths must lie in (empty: anywhere).
    #[serde(default)]
    pub cert_dirs: Vec<PathBuf>,
    /// Upstream destinations allowed even where `url_deny` or a built-in rule refuses them.
    #[serde(default)]
    pub url_allow: Vec<String>,
    /// Upstream destinations refused (besides link-local and cloud metadata addresses).
    #[serde(default)]
    pub url_deny: Vec<String>,
    /// Whether an administrator may register a command (a stdio upstream) over the HTTP API;
    /// the control socket and `[[upstream]]` always may.
    pub allow_commands_over_http: Option<bool>,
}

/// `[tls]` of `mcpgw.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    /// Serving certificate chain.
    pub cert: Option<PathBuf>,
    /// Serving key.
    pub key: Option<PathBuf>,
    /// CA the serving certificate must chain to.
    pub ca: Option<PathBuf>,
    /// CA bundle for downstream client certificates.
    pub client_ca: Option<PathBuf>,
    /// Seconds between looks at the certificate files for a change (0: off).
    pub watch_interval: Option<f64>,
}

/// `[audit]` of `mcpgw.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAudit {
    /// Where the audit log goes: a file, or `-` for stdout; none when unset.
    pub file: Option<String>,
}

/// Everything `serve` runs with, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// The policy of `[policy]`.
    pub policy: std::sync::Arc<crate::access::policy::Policy>,
    /// The config file, read again for the policy on reload.
    pub config_file: Option<PathBuf>,
    /// Where the audit log goes, if anywhere.
    pub audit: Option<crate::access::audit::Target>,
    /// TLS material, when serving HTTPS.
    pub tls: Option<TlsFiles>,
    /// How often the certificate files are looked at for a change; `None`: never.
    pub tls_watch: Option<Duration>,
    /// Take the sockets of the gateway running on the data directory (`serve --upgrade`).
    pub upgrade: bool,
    /// Serve on the listening socket given as standard input (`serve --listen-stdin`); its
    /// address is checked by [`ServeConfig::check_inherited`] once known.
    pub listen_stdin: bool,
    /// `--allow-insecure-bind` / `allow_insecure_bind`.
    pub allow_insecure_bind: bool,
    /// State directory.
    pub data_dir: PathBuf,
    /// Where registrations live.
    pub store: crate::store::StoreLocation,
    /// `[store] advertise`: where the other instances on a shared store reach this one.
    pub advertise: Option<url::Url>,
    /// `[store] peer_ca`: what the other instances' certificates are checked against.
    pub peer_ca: Option<PathBuf>,
    /// Control socket path.
    pub control_socket: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// Runtime worker threads (`None`: one per core).
    pub workers: Option<usize>,
    /// How long the only request in flight watches its upstream socket before parking.
    pub upstream_spin: Duration,
    /// Drain time on SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// `drain_delay_ms`: after SIGTERM, how long to go on serving while `/ready` says 503, so
    /// that balancers stop sending before connections are closed.
    pub drain_delay: Duration,
    /// Listener auth.
    pub auth: AuthConfig,
    /// Upstream behaviour.
    pub upstreams: crate::upstream::registry::Settings,
    /// Where upstream certificate files may be read from.
    pub cert_dirs: Vec<PathBuf>,
    /// Where upstream connections may go.
    pub url_policy: crate::destination::UrlPolicy,
    /// Downstream session bounds.
    pub sessions: SessionLimits,
    /// Per-principal quotas, the batch bound and the connection caps.
    pub quotas: QuotaLimits,
    /// Stdio upstreams declared in `[[upstream]]`, written to the registry at start.
    pub declared: Vec<Declared>,
    /// Extra accepted hosts and origins.
    pub allowed_hosts: Vec<String>,
    /// Exact accepted origins.
    pub allowed_origins: Vec<String>,
    /// Request header read timeout on the listener.
    pub header_timeout: Duration,
}

/// Bounds on downstream sessions (every transport counts against `max` on its own table).
/// Owned here, where the configuration sets it; the HTTP layer that enforces it imports it.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Most sessions open at once; past it new ones get 503.
    pub max: usize,
    /// A Streamable-HTTP session unused this long is forgotten.
    pub idle: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max: 10_000,
            idle: Duration::from_secs(30 * 60),
        }
    }
}

/// Global options that matter to `serve` (they live on the top-level command).
#[derive(Debug, Default, Clone)]
pub struct GlobalPaths {
    /// `--data-dir` / `MCPGW_DATA_DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--control-socket` / `MCPGW_CONTROL_SOCKET`.
    pub control_socket: Option<PathBuf>,
}

/// Read the file named by `--config`, if any.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.display().to_string(),
        error,
    })?;
    parse_file(path, &text)
}

/// Parse config text; `path` is only used in messages and to resolve relative paths.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    let mut file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.display().to_string(),
        detail: e.to_string().trim_end().to_owned(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &mut Option<PathBuf>| {
        if let Some(v) = p.as_mut().filter(|v| v.is_relative()) {
            *v = base.join(&*v);
        }
    };
    resolve(&mut file.data_dir);
    resolve(&mut file.control_socket);
    resolve(&mut file.tls.cert);
    resolve(&mut file.tls.key);
    resolve(&mut file.tls.ca);
    resolve(&mut file.tls.client_ca);
    file.auth.resolve_paths(base);
    for upstream in &mut file.upstream {
        upstream.resolve_paths(base);
    }
    Ok(file)
}

/// Merge the layers and validate, one part of the configuration after another (each step
/// below reads its flag, then the file, then the default, and names the file on an error).
pub fn resolve(args: &ServeArgs, globals: &GlobalPaths) -> Result<ServeConfig, ConfigError> {
    let (file, origin) = match &args.config {
        Some(path) => (read_file(path)?, path.display().to_string()),
        None => (FileConfig::default(), "defaults".to_owned()),
    };
    let listen = resolve_listen(args, &file, &origin)?;
    let tls = resolve_tls(args, &file.tls, &origin)?;
    let no_auth = check_exposure(args, &file, listen, tls.is_some())?;
    let runtime = resolve_runtime(args, &file, &origin)?;
    let auth = auth::resolve(file.auth, !no_auth, &origin)?;
    let policy = crate::access::policy::Policy::compile(file.policy, &origin)
        .map_err(|error| ConfigError::Policy { error })?;
    let upstreams = resolve_upstreams(args, &file.upstreams, &origin)?;
    let declared = upstreams::resolve(file.upstream, &origin)?;
    let cert_dirs = resolve_cert_dirs(args, &file.upstreams);
    let url_policy =
        crate::destination::UrlPolicy::new(&file.upstreams.url_allow, &file.upstreams.url_deny)
            .map_err(|e| {
                field_error(
                    &origin,
                    "upstreams.url_allow/url_deny",
                    "addresses, networks (ADDR/BITS) or host names with * globs",
                    e.rule,
                )
            })?;
    let sessions = resolve_sessions(&file.mcp, &origin)?;
    let quotas = limits::resolve(&file.limits, &file.http, sessions, &origin)?;
    let store = store::resolve(args, &file.store, &origin)?;
    let data_dir = globals
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let control_socket = globals
        .control_socket
        .clone()
        .or(file.control_socket)
        .unwrap_or_else(|| data_dir.join(SOCKET_NAME));

    Ok(ServeConfig {
        listen,
        tls,
        tls_watch: resolve_watch(args, &file.tls, &origin)?,
        upgrade: args.upgrade,
        listen_stdin: args.listen_stdin,
        allow_insecure_bind: args.allow_insecure_bind || file.allow_insecure_bind.unwrap_or(false),
        data_dir,
        store,
        advertise: store::advertise(args, &file.store, &origin)?,
        peer_ca: file.store.peer_ca.clone(),
        control_socket,
        log_format: args
            .log_format
            .or(file.log_format)
            .unwrap_or(LogFormat::Text),
        workers: runtime.workers,
        upstream_spin: runtime.upstream_spin,
        shutdown_grace: runtime.shutdown_grace,
        drain_delay: runtime.drain_delay,
        auth,
        policy: std::sync::Arc::new(policy),
        config_file: args.config.clone(),
        audit: file
            .audit
            .file
            .as_deref()
            .map(crate::access::audit::Target::parse),
        upstreams,
        cert_dirs,
        url_policy,
        header_timeout: Duration::from_secs(
            file.http.header_timeout_secs.unwrap_or(30).clamp(1, 3600),
        ),
        allowed_hosts: file.http.allowed_hosts,
        allowed_origins: file.http.allowed_origins,
        sessions,
        quotas,
        declared,
    })
}

/// A [`ConfigError::Field`] for `key` of `origin`.
pub(crate) fn field_error(
    origin: &str,
    key: &'static str,
    expected: &'static str,
    got: String,
) -> ConfigError {
    ConfigError::Field {
        origin: origin.to_owned(),
        key,
        expected,
        got,
    }
}

fn resolve_listen(
    args: &ServeArgs,
    file: &FileConfig,
    origin: &str,
) -> Result<SocketAddr, ConfigError> {
    Ok(match (args.listen, &file.listen) {
        (Some(addr), _) => addr,
        (None, Some(text)) => text.parse().map_err(|_| {
            field_error(
                origin,
                "listen",
                "an ADDR:PORT socket address such as \"127.0.0.1:4444\"",
                text.clone(),
            )
        })?,
        (None, None) => DEFAULT_LISTEN
            .parse()
            .expect("default listen address parses"),
    })
}

/// The serving files: both of certificate and key, or neither.
fn resolve_tls(
    args: &ServeArgs,
    file: &FileTls,
    origin: &str,
) -> Result<Option<TlsFiles>, ConfigError> {
    let cert = args.tls_cert.clone().or_else(|| file.cert.clone());
    let key = args.tls_key.clone().or_else(|| file.key.clone());
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert,
            key,
            ca: args.tls_ca.clone().or_else(|| file.ca.clone()),
            client_ca: args.client_ca.clone().or_else(|| file.client_ca.clone()),
        })),
        (None, None) => Ok(None),
        _ => Err(ConfigError::TlsIncomplete {
            origin: origin.to_owned(),
        }),
    }
}

/// `--tls-watch-interval` or `[tls] watch_interval`: 1 s unless set; 0 turns the watch off.
fn resolve_watch(
    args: &ServeArgs,
    file: &FileTls,
    origin: &str,
) -> Result<Option<Duration>, ConfigError> {
    let secs = args
        .tls_watch_interval
        .or(file.watch_interval)
        .unwrap_or(1.0);
    if !(0.0..=3600.0).contains(&secs) {
        return Err(field_error(
            origin,
            "tls.watch_interval",
            "a number of seconds from 0 (off) to 3600",
            secs.to_string(),
        ));
    }
    Ok((secs > 0.0).then(|| Duration::from_secs_f64(secs)))
}

/// Off loopback, plain HTTP needs an explicit yes and auth cannot be turned off. Returns
/// whether auth is off.
fn check_exposure(
    args: &ServeArgs,
    file: &FileConfig,
    listen: SocketAddr,
    tls: bool,
) -> Result<bool, ConfigError> {
    let allow_insecure = args.allow_insecure_bind || file.allow_insecure_bind.unwrap_or(false);
    let no_auth = args.no_auth || file.no_auth.unwrap_or(false);
    exposure(listen, tls, allow_insecure, no_auth)?;
    Ok(no_auth)
}

/// The rule of [`check_exposure`], for an address known only once the socket is in hand.
fn exposure(
    listen: SocketAddr,
    tls: bool,
    allow_insecure: bool,
    no_auth: bool,
) -> Result<(), ConfigError> {
    if !tls && !listen.ip().is_loopback() && !allow_insecure {
        return Err(ConfigError::InsecureBind { addr: listen });
    }
    if no_auth && !listen.ip().is_loopback() {
        return Err(ConfigError::NoAuthNotLoopback { addr: listen });
    }
    Ok(())
}

impl ServeConfig {
    /// The exposure rule applied to the address of a socket handed over (`--listen-stdin`),
    /// which the configuration could not see.
    pub fn check_inherited(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        exposure(
            addr,
            self.tls.is_some(),
            self.allow_insecure_bind,
            !self.auth.enabled,
        )
    }
}

/// How the process runs: drain time, worker threads, upstream wait.
struct Runtime {
    shutdown_grace: Duration,
    drain_delay: Duration,
    workers: Option<usize>,
    upstream_spin: Duration,
}

fn resolve_runtime(
    args: &ServeArgs,
    file: &FileConfig,
    origin: &str,
) -> Result<Runtime, ConfigError> {
    let grace = args
        .shutdown_grace
        .or(file.shutdown_grace_secs)
        .unwrap_or(30);
    if grace > 3600 {
        return Err(field_error(
            origin,
            "shutdown_grace_secs",
            "a number of seconds from 0 to 3600",
            grace.to_string(),
        ));
    }
    let drain_delay = file.drain_delay_ms.unwrap_or(0);
    if drain_delay > 60_000 {
        return Err(field_error(
            origin,
            "drain_delay_ms",
            "a number of milliseconds from 0 to 60000",
            drain_delay.to_string(),
        ));
    }
    let workers = args.workers.or(file.workers);
    if workers.is_some_and(|w| !(1..=1024).contains(&w)) {
        return Err(field_error(
            origin,
            "workers",
            "a number of threads from 1 to 1024",
            workers.unwrap_or_default().to_string(),
        ));
    }
    let spin = args
        .upstream_spin_us
        .or(file.upstream_spin_us)
        .unwrap_or(100);
    if spin > 10_000 {
        return Err(field_error(
            origin,
            "upstream_spin_us",
            "a number of microseconds from 0 to 10000",
            spin.to_string(),
        ));
    }
    Ok(Runtime {
        shutdown_grace: Duration::from_secs(grace),
        drain_delay: Duration::from_millis(drain_delay),
        workers: workers.map(usize::from),
        upstream_spin: Duration::from_micros(u64::from(spin)),
    })
}

fn resolve_upstreams(
    args: &ServeArgs,
    file: &FileUpstreams,
    origin: &str,
) -> Result<crate::upstream::registry::Settings, ConfigError> {
    let interval = args
        .health_interval
        .or(file.health_interval_secs)
        .unwrap_or(30);
    let threshold = args.health_threshold.or(file.health_threshold).unwrap_or(3);
    let timeout = args
        .request_timeout
        .or(file.request_timeout_secs)
        .unwrap_or(30);
    if interval == 0 || threshold == 0 || timeout == 0 {
        return Err(field_error(
            origin,
            "upstreams",
            "health_interval_secs, health_threshold and request_timeout_secs of at least 1",
            format!("{interval}, {threshold}, {timeout}"),
        ));
    }
    let separator = file.separator.clone().unwrap_or_else(|| "__".into());
    if separator.is_empty() || separator.chars().any(|c| c.is_whitespace()) {
        return Err(field_error(
            origin,
            "upstreams.separator",
            "a non-empty separator without white space",
            separator,
        ));
    }
    Ok(crate::upstream::registry::Settings {
        request_timeout: Duration::from_secs(timeout),
        health_interval: Duration::from_secs(interval),
        health_threshold: threshold,
        separator,
        allow_commands_over_http: file.allow_commands_over_http.unwrap_or(false),
    })
}

/// `cert_dirs` relative to the config file's directory.
fn resolve_cert_dirs(args: &ServeArgs, file: &FileUpstreams) -> Vec<PathBuf> {
    let base = args
        .config
        .as_ref()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    file.cert_dirs
        .iter()
        .map(|d| {
            if d.is_relative() {
                base.join(d)
            } else {
                d.clone()
            }
        })
        .collect()
}

fn resolve_sessions(file: &FileMcp, origin: &str) -> Result<SessionLimits, ConfigError> {
    let max_sessions = file.max_sessions.unwrap_or(10_000);
    let session_idle = file.session_idle_secs.unwrap_or(1800);
    if max_sessions == 0 || session_idle == 0 {
        return Err(field_error(
            origin,
            "mcp",
            "max_sessions and session_idle_secs of at least 1",
            format!("{max_sessions}, {session_idle}"),
        ));
    }
    Ok(SessionLimits {
        max: max_sessions,
        idle: Duration::from_secs(session_idle),
    })
}

/// The control socket a client command should dial.
pub fn client_socket(globals: &GlobalPaths) -> PathBuf {
    globals.control_socket.clone().unwrap_or_else(|| {
        globals
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
            .join(SOCKET_NAME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn with_file(text: &str) -> Result<ServeConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcpgw.toml");
        std::fs::write(&path, text).unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        resolve(&args, &GlobalPaths::default())
    }

    #[test]
    fn defaults_are_loopback_plain_http() {
        let cfg = resolve(&ServeArgs::default(), &GlobalPaths::default()).unwrap();
        assert_eq!(cfg.listen.to_string(), DEFAULT_LISTEN);
        assert!(cfg.tls.is_none());
        assert!(cfg.auth.enabled);
        assert_eq!(cfg.control_socket, PathBuf::from(".mcpgw/mcpgw.sock"));
    }

    #[test]
    fn bad_listen_names_file_key_and_expectation() {
        let err = with_file("listen = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.contains("mcpgw.toml"), "{err}");
        assert!(err.contains("`listen`"), "{err}");
        assert!(err.contains("ADDR:PORT"), "{err}");
    }

    #[test]
    fn wrong_type_and_unknown_key_are_reported_with_the_file() {
        let err = with_file("shutdown_grace_secs = \"ten\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mcpgw.toml") && err.contains("shutdown_grace_secs"),
            "{err}"
        );
        let err = with_file("lisen = \"127.0.0.1:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field") && err.contains("lisen"),
            "{err}"
        );
    }

    #[test]
    fn workers_come_from_the_file_and_zero_is_refused() {
        assert_eq!(with_file("workers = 1\n").unwrap().workers, Some(1));
        assert_eq!(with_file("").unwrap().workers, None);
        let err = with_file("workers = 0\n").unwrap_err().to_string();
        assert!(
            err.contains("mcpgw.toml") && err.contains("`workers`") && err.contains("1 to 1024"),
            "{err}"
        );
    }

    #[test]
    fn upstream_spin_defaults_to_100_us_and_is_bounded() {
        let spin = |text: &str| with_file(text).map(|c| c.upstream_spin);
        assert_eq!(spin("").unwrap(), Duration::from_micros(100));
        assert_eq!(spin("upstream_spin_us = 0\n").unwrap(), Duration::ZERO);
        let err = spin("upstream_spin_us = 20000\n").unwrap_err().to_string();
        assert!(
            err.contains("mcpgw.toml")
                && err.contains("upstream_spin_us")
                && err.contains("0 to 10000"),
            "{err}"
        );
    }

    #[test]
    fn flag_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcpgw.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1111\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:2222".parse().unwrap()),
            ..ServeArgs::default()
        };
        let cfg = resolve(&args, &GlobalPaths::default()).unwrap();
        assert_eq!(cfg.listen.port(), 2222);
    }

    #[test]
    fn plain_http_on_public_address_is_refused() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:4444".parse().unwrap()),
            ..ServeArgs::default()
        };
        let err = resolve(&args, &GlobalPaths::default()).unwrap_err();
        assert!(matches!(err, ConfigError::InsecureBind { .. }));
        let args = ServeArgs {
            listen: Some("0.0.0.0:4444".parse().unwrap()),
            allow_insecure_bind: true,
            ..ServeArgs::default()
        };
        assert!(resolve(&args, &GlobalPaths::default()).is_ok());
    }

    #[test]
    fn the_certificate_watch_is_on_every_second_unless_set_and_zero_turns_it_off() {
        let every = |text: &str| with_file(text).map(|cfg| cfg.tls_watch);
        assert_eq!(every("").unwrap(), Some(Duration::from_secs(1)));
        assert_eq!(every("[tls]\nwatch_interval = 0\n").unwrap(), None);
        assert_eq!(
            every("[tls]\nwatch_interval = 0.25\n").unwrap(),
            Some(Duration::from_millis(250))
        );
        let err = every("[tls]\nwatch_interval = -1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.watch_interval"), "{err}");
    }

    #[test]
    fn relative_tls_paths_resolve_against_the_file() {
        let cfg = with_file("[tls]\ncert = \"s.crt\"\nkey = \"s.key\"\n").unwrap();
        let tls = cfg.tls.unwrap();
        assert!(tls.cert.is_absolute() && tls.cert.ends_with("s.crt"));
    }

    #[test]
    fn short_token_is_refused_without_echo() {
        let err = with_file("[auth]\ntokens = [\"short\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.tokens") && !err.contains("\"short\""),
            "{err}"
        );
    }

    #[test]
    fn an_unusable_url_rule_is_named_with_its_key() {
        let err = with_file("[upstreams]\nurl_deny = [\"10.0.0.0/40\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("upstreams.url_allow/url_deny") && err.contains("10.0.0.0/40"),
            "{err}"
        );
        let cfg = with_file("[upstreams]\nurl_allow = [\"169.254.169.254\"]\n").unwrap();
        cfg.url_policy
            .check_ip("169.254.169.254".parse().unwrap())
            .unwrap();
    }
}
