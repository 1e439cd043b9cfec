//! Stage one of argument handling: the raw command line as clap sees it.
//!
//! Nothing here is validated beyond what clap checks (types, required values, conflicts);
//! [`crate::config`] turns these into the objects the program runs with.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// An error in how the command was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// mcpgw: an MCP gateway with mutual-TLS upstreams and zero-downtime certificate rotation.
#[derive(Debug, Parser)]
#[command(
    name = "mcpgw",
    version,
    about,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// The gateway's control socket [default: <data-dir>/mcpgw.sock].
    #[arg(long, global = true, env = "MCPGW_CONTROL_SOCKET", value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// Directory for the gateway's state (store, secrets, control socket) [default: ./.mcpgw].
    #[arg(long, global = true, env = "MCPGW_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Print data as JSON.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(Box<ServeArgs>),
    /// Make a test PKI, or rotate the running gateway's certificate.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Show the running gateway's status (through the control socket).
    Status,
    /// Manage upstream MCP servers (through the control socket).
    #[command(subcommand)]
    Gateway(GatewayCommand),
    /// Bearer tokens for the gateway's HTTP listener.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Send one MCP/JSON-RPC request and print its result: through the control socket, or as a
    /// real MCP client of --url.
    Call(CallArgs),
    /// Be a stdio MCP server that relays to a remote MCP endpoint over Streamable HTTP (what a
    /// desktop client's config runs as a command).
    ///
    /// Reads newline-delimited JSON-RPC on stdin and writes the answers, and what the server
    /// sends on its own, one message a line on stdout; logs go to stderr. Both protocol eras
    /// pass through as the client speaks them. A server that forgets the session (a restarted
    /// gateway) gets the client's initialize again and the message that failed; a server that
    /// refuses connections while it restarts is retried for up to --timeout.
    Connect(ConnectArgs),
    /// Check an upstream MCP endpoint phase by phase (DNS, TCP, TLS, HTTP, MCP, tools/list).
    ///
    /// Stops at the first failing phase with one plain diagnosis and an exit code naming the
    /// cause: 10 connection refused, 11 DNS, 12 timeout, 13 other network error, 20 missing client
    /// certificate, 21 unknown CA, 22 name mismatch, 23 certificate expired or not yet valid,
    /// 24 client certificate rejected, 25 other TLS error, 30 not an MCP endpoint, 31 MCP error.
    Probe(ProbeArgs),
    /// Explain what the policy of a config file decides.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// `mcpgw __stdio-exec`: set up the child, then become the program. The gateway's own, not a
/// user's: parsed apart from [`Cli`] (`crate::run`), so that help, completions and man pages
/// never show it.
#[derive(Debug, Parser)]
#[command(name = "__stdio-exec")]
pub struct StdioExecArgs {
    /// The gateway's pid: the child exits at once if its parent is already another.
    #[arg(long)]
    pub parent: u32,
    /// Address-space limit, in MiB.
    #[arg(long)]
    pub memory_mib: Option<u64>,
    /// Open-file limit.
    #[arg(long)]
    pub open_files: Option<u64>,
    /// CPU-time limit, in seconds.
    #[arg(long)]
    pub cpu_secs: Option<u64>,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<std::ffi::OsString>,
}

/// `mcpgw policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Say whether a principal may reach a tool, prompt or resource, and which rule decides.
    ///
    /// Exit 0 when allowed, 1 when denied.
    Check(PolicyCheckArgs),
}

/// `mcpgw policy check`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["tool", "prompt", "resource"])))]
pub struct PolicyCheckArgs {
    /// The config file whose `[policy]` is asked [default: ./mcpgw.toml].
    #[arg(long, env = "MCPGW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The principal, as the gateway names it: `token:NAME`, `jwt:SUB`, `cert:NAME`,
    /// `oauth:ISSUER#SUB`.
    #[arg(long)]
    pub principal: String,
    /// Its role.
    #[arg(long, value_enum, default_value = "client")]
    pub role: TokenRole,
    /// A scope it carries (repeatable).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// A claim of its token, `NAME=VALUE` (repeatable).
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    pub claims: Vec<String>,
    /// A tool: `<upstream><separator><name>` as `/mcp` lists it, or its own name with --upstream.
    #[arg(long)]
    pub tool: Option<String>,
    /// A prompt, named like --tool.
    #[arg(long)]
    pub prompt: Option<String>,
    /// A resource URI (with --upstream).
    #[arg(long)]
    pub resource: Option<String>,
    /// The upstream it belongs to.
    #[arg(long)]
    pub upstream: Option<String>,
}

/// TLS to a server mcpgw dials as a client (`gateway add`, `probe`, `call --url`, `connect`):
/// whom to trust and which certificate to present. Hostname verification is always on.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// CA bundle to verify the server with [default: the system's trusted roots].
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate chain (PEM) to present when the server asks for one (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Private key of the client certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Name to verify the server's certificate against (and send as SNI) when the URL holds an
    /// IP address.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
}

impl TlsArgs {
    /// Whether any TLS flag was given.
    pub fn is_set(&self) -> bool {
        self.ca_cert.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
            || self.server_name.is_some()
    }

    /// The settings these flags name, with paths made absolute (whoever reads the files may
    /// run in another directory: the gateway, or this process after a `cd`).
    pub fn settings(&self) -> anyhow::Result<crate::store::TlsSettings> {
        use anyhow::Context as _;
        let path = |p: &Option<PathBuf>| -> anyhow::Result<Option<crate::store::PemSource>> {
            p.as_ref()
                .map(|p| {
                    std::path::absolute(p)
                        .map(crate::store::PemSource::Path)
                        .with_context(|| format!("cannot resolve {}", p.display()))
                })
                .transpose()
        };
        Ok(crate::store::TlsSettings {
            ca: path(&self.ca_cert)?,
            client_cert: path(&self.client_cert)?,
            client_key: path(&self.client_key)?,
            server_name: self.server_name.clone(),
        })
    }
}

/// `mcpgw call`
#[derive(Debug, Args)]
pub struct CallArgs {
    /// Method, e.g. tools/list or tools/call.
    pub method: String,
    /// Params as JSON, e.g. '{"name":"alpha__echo","arguments":{"text":"hi"}}'.
    pub params: Option<String>,
    /// Talk to this MCP endpoint directly instead of the gateway's control socket.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Transport for --url [default: sse when the path ends in /sse, else streamable-http].
    #[arg(long, value_enum, requires = "url")]
    pub transport: Option<crate::store::Transport>,
    /// Bearer token for --url.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MCPGW_BEARER",
        hide_env_values = true,
        requires = "url"
    )]
    pub bearer: Option<String>,
    /// TLS to --url.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// `mcpgw connect`
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The MCP endpoint (Streamable HTTP), e.g. https://gateway.example:8443/mcp.
    pub url: String,
    /// Bearer token to send (prefer --bearer-file or MCPGW_BEARER: arguments are visible to
    /// other users of the machine).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MCPGW_BEARER",
        hide_env_values = true,
        conflicts_with = "bearer_file"
    )]
    pub bearer: Option<String>,
    /// File holding the bearer token: read at start, and again when the server answers 401, so
    /// that a token rotated in the file is picked up.
    #[arg(long, value_name = "FILE")]
    pub bearer_file: Option<PathBuf>,
    /// TLS to the gateway; the certificate and key are read again after an exchange fails and
    /// while the server restarts, so that a rotated pair is picked up.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Extra header to send with every request, 'Name: value'; repeatable.
    #[arg(long = "header", value_name = "'K: V'")]
    pub headers: Vec<String>,
    /// Seconds to wait for each answer, and to keep retrying a server that refuses
    /// connections (while it restarts) before the client gets an error.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub timeout: u64,
}

/// `mcpgw gateway ...`
#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Register an upstream: connect, initialize, list its catalog, store it.
    Add(Box<GatewayAddArgs>),
    /// List registered upstreams with their health.
    List,
    /// Show one upstream: TLS identity, health, protocol, tools, warnings.
    Show {
        /// Upstream name.
        name: String,
    },
    /// Remove an upstream.
    Remove {
        /// Upstream name.
        name: String,
    },
}

/// `mcpgw gateway add`
#[derive(Debug, Args)]
pub struct GatewayAddArgs {
    /// Name: 1-64 of a-z, 0-9, '-', '_' (tools appear as NAME__tool).
    pub name: String,
    /// Upstream endpoint, e.g. https://localhost:9000/sse or https://10.0.0.5:9000/mcp.
    #[arg(required_unless_present = "command", conflicts_with = "command")]
    pub url: Option<String>,
    /// Transport [default: sse when the URL path ends in /sse, else streamable-http].
    #[arg(long, value_enum, conflicts_with = "command")]
    pub transport: Option<crate::store::Transport>,
    /// Run this program as a stdio upstream (the gateway starts and supervises it) instead of
    /// reaching a URL.
    #[arg(long, value_name = "PROG")]
    pub command: Option<String>,
    /// An argument of the program; repeatable, in order.
    #[arg(
        long = "arg",
        value_name = "A",
        conflicts_with = "url",
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
    /// An environment variable of the program, K=V; repeatable. Values are never shown.
    #[arg(long = "env", value_name = "K=V", conflicts_with = "url")]
    pub env: Vec<String>,
    /// A file of K=V lines for the program's environment, read at each start.
    #[arg(long, value_name = "FILE", conflicts_with = "url")]
    pub env_file: Option<PathBuf>,
    /// The program's working directory [default: the gateway's].
    #[arg(long, value_name = "DIR", conflicts_with = "url")]
    pub cwd: Option<PathBuf>,
    /// One process per client session (for servers that keep per-user state) [default: one
    /// process shared by every client].
    #[arg(long, conflicts_with = "url")]
    pub isolate: bool,
    /// Pass the gateway's whole environment to the program [default: PATH, HOME, LANG and what
    /// --env and --env-file give].
    #[arg(long, conflicts_with = "url")]
    pub inherit_env: bool,
    /// The program's address-space limit, in MiB.
    #[arg(long, value_name = "MIB", conflicts_with = "url")]
    pub memory_mib: Option<u64>,
    /// The program's open-file limit.
    #[arg(long, value_name = "N", conflicts_with = "url")]
    pub open_files: Option<u64>,
    /// The program's CPU-time limit, in seconds.
    #[arg(long, value_name = "SECS", conflicts_with = "url")]
    pub cpu_secs: Option<u64>,
    /// TLS to the upstream.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Bearer token to send upstream.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "MCPGW_UPSTREAM_BEARER",
        hide_env_values = true
    )]
    pub bearer: Option<String>,
    /// Extra header to send upstream, 'Name: value'; repeatable.
    #[arg(long = "header", value_name = "'K: V'")]
    pub headers: Vec<String>,
    /// Store the upstream even if it cannot be reached now (it starts offline).
    #[arg(long)]
    pub defer: bool,
    /// Protocol era to speak upstream; auto follows each client's era where the upstream
    /// speaks both.
    #[arg(long, value_enum, default_value_t = crate::store::EraChoice::Auto)]
    pub era: crate::store::EraChoice,
    /// One upstream session shared by every client, for a server known to keep no state per
    /// session [default: one upstream session per downstream session].
    #[arg(long)]
    pub shared_session: bool,
}

/// `mcpgw token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a bearer token (HS256 JWT) that the gateway using this data dir accepts.
    Create {
        /// Lifetime, e.g. 30m, 12h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// Subject of the token.
        #[arg(long, default_value = "mcpgw-cli")]
        sub: String,
        /// What the holder may reach: `client` (the MCP endpoints) or `admin` (also the
        /// registry, certificates and admin routes).
        #[arg(long, value_enum, default_value = "client")]
        role: TokenRole,
        /// A scope the token carries, for policy rules (repeatable).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
}

/// `token create --role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenRole {
    /// The MCP endpoints only.
    Client,
    /// Everything.
    Admin,
}

/// `mcpgw probe`
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The upstream's MCP endpoint, e.g. https://127.0.0.1:8443/mcp.
    pub url: String,
    /// TLS to the upstream.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// How to speak MCP to the upstream.
    #[arg(long, value_enum, default_value_t = crate::store::Transport::StreamableHttp)]
    pub transport: crate::store::Transport,
    /// Seconds each phase may take.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout: u64,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `mcpgw serve`: every option may also come from the config file or an `MCPGW_*` variable.
/// Precedence: flag > environment > file > default.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Config file (TOML).
    #[arg(long, env = "MCPGW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:4444].
    #[arg(long, env = "MCPGW_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Serving certificate chain (PEM); enables HTTPS.
    #[arg(
        long,
        env = "MCPGW_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// Private key of the serving certificate (PEM).
    #[arg(
        long,
        env = "MCPGW_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// CA that must have issued the serving certificate; a reload to a certificate it did not issue is refused.
    #[arg(long, env = "MCPGW_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// CA bundle for client certificates: clients must present one it issued (downstream mTLS).
    #[arg(long, env = "MCPGW_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,

    /// Seconds between looks at the certificate files (and the upstreams') for a change, which
    /// reloads them as SIGHUP does; 0 turns the watch off [default: 1].
    #[arg(long, env = "MCPGW_TLS_WATCH_INTERVAL", value_name = "SECS")]
    pub tls_watch_interval: Option<f64>,

    /// Allow listening on a non-loopback address without TLS.
    #[arg(long, env = "MCPGW_ALLOW_INSECURE_BIND")]
    pub allow_insecure_bind: bool,

    /// Turn bearer auth off (refused unless the listen address is loopback).
    #[arg(long, env = "MCPGW_NO_AUTH")]
    pub no_auth: bool,

    /// Log format [default: text].
    #[arg(long, env = "MCPGW_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Where registrations live: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE]
    /// for a database several instances share [default: SQLite in the data directory].
    #[arg(long, env = "MCPGW_STORE", value_name = "URL", value_parser = StoreUrlArg::new, hide_env_values = true)]
    pub store: Option<StoreUrlArg>,

    /// Where the other instances on a shared store reach this one (http:// or https://HOST:PORT),
    /// for the legacy SSE messages they forward here [default: `[store] advertise`, else the
    /// listen address when it names one host].
    #[arg(long, env = "MCPGW_ADVERTISE", value_name = "URL")]
    pub advertise: Option<String>,

    /// Worker threads of the async runtime [default: one per CPU core].
    ///
    /// One thread avoids cross-thread wake-ups per forwarded call (less CPU and latency per
    /// call) at the price of using a single core; see docs/PERFORMANCE.md.
    #[arg(long, env = "MCPGW_WORKERS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// How long, in microseconds, a call made while the gateway was idle watches its upstream
    /// socket before its thread parks [default: 100; 0 never].
    ///
    /// At low load this spares the answer a wake-up of an idle CPU (tens of microseconds on a
    /// virtual machine) and a hand-over between threads, for at most this much CPU per call;
    /// under load nobody watches. See docs/PERFORMANCE.md.
    #[arg(long, env = "MCPGW_UPSTREAM_SPIN_US", value_name = "MICROS", value_parser = clap::value_parser!(u32).range(0..=10000))]
    pub upstream_spin_us: Option<u32>,

    /// Seconds between upstream health checks [default: 30].
    #[arg(long, env = "MCPGW_HEALTH_INTERVAL", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub health_interval: Option<u64>,

    /// Consecutive failed checks before an upstream is offline [default: 3].
    #[arg(long, env = "MCPGW_HEALTH_THRESHOLD", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub health_threshold: Option<u32>,

    /// Seconds an upstream request may take [default: 30].
    #[arg(long, env = "MCPGW_REQUEST_TIMEOUT", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: Option<u64>,

    /// Seconds that in-flight requests get to finish on SIGTERM/SIGINT [default: 30].
    #[arg(long, env = "MCPGW_SHUTDOWN_GRACE", value_name = "SECS")]
    pub shutdown_grace: Option<u64>,

    /// Validate the configuration and the serving certificate, print a summary and exit
    /// (0: usable, 1: not); binds nothing, creates nothing.
    #[arg(long)]
    pub check_config: bool,

    /// Replace the gateway running on this data directory without refusing a connection: take
    /// its listening sockets (and control socket) over, serve on them, then have it drain
    /// and exit. Fails (exit 1) when no gateway runs there. --listen is not used: the address
    /// is the running gateway's.
    #[arg(long, conflicts_with = "check_config")]
    pub upgrade: bool,

    /// Serve on the listening TCP socket given as standard input instead of binding --listen:
    /// systemd socket activation (`StandardInput=socket` in the service, `Accept=no` in the
    /// socket unit) or any launcher that hands over a bound socket. The same rules apply to its
    /// address as to --listen's (plain HTTP only on loopback unless allowed).
    #[arg(long, conflicts_with_all = ["upgrade", "check_config"])]
    pub listen_stdin: bool,
}

/// `mcpgw cert ...`
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Write a test PKI: ca.crt ca.key server.crt server.key client.crt client.key.
    Gen(CertGenArgs),
    /// Install a new serving certificate in the running gateway without dropping a connection.
    ///
    /// With --cert/--key the given pair is installed; with --issue a new server certificate is minted
    /// from the CA; with neither, the served files are re-read from disk (like SIGHUP).
    Rotate(CertRotateArgs),
}

/// Key algorithm for generated certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 bits, PKCS#1 v1.5 with SHA-256.
    Rsa2048,
    /// RSA 4096 bits, PKCS#1 v1.5 with SHA-256.
    Rsa4096,
}

/// `mcpgw cert gen`
#[derive(Debug, Args)]
pub struct CertGenArgs {
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Common name of the server certificate.
    #[arg(long, default_value = "localhost")]
    pub cn: String,
    /// Common name of the client certificate.
    #[arg(long, default_value = "mcpgw-client")]
    pub client_cn: String,
    /// Extra subject alternative name (DNS name or IP address) for the server certificate; repeatable.
    /// localhost, 127.0.0.1 and ::1 are always included.
    #[arg(long = "san", value_name = "DNS-or-IP")]
    pub sans: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Key algorithm.
    #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
    pub key_type: KeyType,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// `mcpgw cert rotate`
#[derive(Debug, Args)]
pub struct CertRotateArgs {
    /// New certificate chain (PEM) to install.
    #[arg(long, value_name = "FILE", requires = "key", conflicts_with = "issue")]
    pub cert: Option<PathBuf>,
    /// Private key of the new certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Mint a new server certificate from a CA.
    #[arg(long, requires_all = ["ca_cert", "ca_key"])]
    pub issue: bool,
    /// CA certificate for --issue.
    #[arg(long, value_name = "FILE", requires = "issue")]
    pub ca_cert: Option<PathBuf>,
    /// CA private key for --issue.
    #[arg(long, value_name = "FILE", requires = "issue")]
    pub ca_key: Option<PathBuf>,
    /// Subject alternative names for --issue [default: those of the certificate now served]; repeatable.
    #[arg(long = "san", value_name = "DNS-or-IP", requires = "issue")]
    pub sans: Vec<String>,
    /// Validity in days for --issue.
    #[arg(long, default_value_t = 365, requires = "issue", value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// Key algorithm for --issue.
    #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256, requires = "issue")]
    pub key_type: KeyType,
    /// Skip the confirming TLS handshake against the listener.
    #[arg(long)]
    pub no_verify_handshake: bool,
    /// Install the pair on every instance sharing the store (PostgreSQL), each checking it
    /// before it swaps, and print one line per instance; on SQLite, the local rotate.
    #[arg(long)]
    pub all: bool,
    /// Seconds to wait for every instance's outcome with --all.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0, requires = "all", value_parser = wait_seconds)]
    pub wait: f64,
}

/// `--wait`: 0 to 60 seconds (the key stays in the store while the instances are waited for).
fn wait_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if (0.0..=60.0).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!("{text} is outside 0 to 60 seconds"))
    }
}

/// The clap command, for generating completions and man pages.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// The text of `--store`, kept out of `Debug` output: it may hold a database password.
#[derive(Clone, Default)]
pub struct StoreUrlArg(pub String);

impl StoreUrlArg {
    fn new(text: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self(text.to_owned()))
    }
}

impl std::fmt::Debug for StoreUrlArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreUrlArg(<redacted>)")
    }
}
