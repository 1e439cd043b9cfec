//! `mcpgw serve`: build everything, report ready, then wait for signals.
//!
//! Order matters: signal handlers are installed before the ready line is printed, so a SIGHUP
//! sent as soon as the gateway says it is up can never hit the default action (terminate).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::Context;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::config::{self, GlobalPaths, ServeConfig};
use crate::control::server::ControlSocket;
use crate::handoff;
use crate::http::{self, AppState, Surface};
use crate::signals::{self, Signal};
use crate::tls::serving::ServingCert;

/// Validate the configuration, then serve until SIGTERM/SIGINT.
pub fn run(args: &ServeArgs, globals: &GlobalPaths) -> anyhow::Result<()> {
    let cfg = config::resolve(args, globals)?;
    if args.check_config {
        return check_config(&cfg);
    }
    crate::logging::init(cfg.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cfg.workers {
        builder.worker_threads(n);
    }
    let wait = Arc::new(crate::h1::client::Wait::new(cfg.upstream_spin));
    let parked = wait.clone();
    let runtime = builder
        .on_thread_park(move || parked.parked())
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    wait.watch_runtime(runtime.handle());
    runtime.block_on(serve(cfg, wait))
}

async fn serve(cfg: ServeConfig, wait: Arc<crate::h1::client::Wait>) -> anyhow::Result<()> {
    prepare_data_dir(&cfg.data_dir)?;
    // Looked at before they are read, as a reload does: the watch compares with this.
    let baseline = cfg
        .tls
        .as_ref()
        .filter(|_| cfg.tls_watch.is_some())
        .map(|files| crate::reload::watch::Baseline::of(crate::reload::serving_files(files)));
    let serving = load_serving(&cfg)?;
    let Sockets {
        listener,
        control,
        offer,
        predecessor,
    } = open_sockets(&cfg).await?;
    let local = listener.local_addr()?;
    let signal_rx = signals::install().context("cannot install signal handlers")?;
    let state = build_state(&cfg, local, control.path(), serving, wait).await?;
    if let Some(baseline) = baseline {
        state.reload.seed_stamps(baseline);
    }

    let graceful = Arc::new(GracefulShutdown::new());
    let stop = CancellationToken::new();
    let tasks = Tasks {
        sweeper: spawn_session_sweeper(state.clone(), stop.clone()),
        listener: tokio::spawn(crate::server::run_listener(
            listener,
            http::App::new(state.clone(), Surface::Listener),
            state.serving.clone(),
            stop.clone(),
            graceful.clone(),
            cfg.header_timeout,
        )),
        control: tokio::spawn(control.run(
            http::App::new(state.clone(), Surface::Control),
            stop.clone(),
            graceful.clone(),
        )),
        health: state.registry.spawn_health_loop(stop.clone()),
    };
    relay_catalog_changes(state.clone());
    relay_resource_updates(state.clone());
    // Ends with `stop`; holds no connection the drain must wait for.
    let _store_sync = state.registry.spawn_store_sync(stop.clone());
    // Likewise; at the stop it takes this instance's mark out of the store.
    let _fleet = state.reload.spawn_fleet(local.to_string(), stop.clone());
    let _session_ends = http::portable::follow_ends(&state, stop.clone());
    let reload = state.reload.spawn_signal_worker();
    spawn_file_watch(&state, &cfg, stop.clone());

    announce_ready(&state, &cfg, local);
    let handed_over = take_turn_in_upgrades(offer, predecessor, stop.clone());
    wait_for_shutdown(signal_rx, &reload, &handed_over).await;
    crate::notify::stopping();
    // After a hand-off the successor serves the same address and answers the checks: no
    // balancer is to take it out.
    if !handed_over.is_cancelled() {
        pause_for_balancers(&state, cfg.drain_delay).await;
    }
    drain(&state, tasks, stop, graceful, cfg.shutdown_grace).await
}

/// `drain_delay_ms`: `/ready` says 503 while everything else serves on, so that a balancer
/// checking it stops sending here before connections are closed. Without the pause, a balancer
/// that sends a request on a kept-alive connection just as it is closed can only fail it (a
/// `POST` is not retried), since it cannot tell whether it was served.
async fn pause_for_balancers(state: &AppState, delay: std::time::Duration) {
    if delay.is_zero() {
        return;
    }
    state.set_ready(false);
    tracing::info!(
        delay_ms = delay.as_millis(),
        "stopping: /ready says 503; serving on while balancers take this instance out"
    );
    tokio::time::sleep(delay).await;
}

/// Reload when a certificate file changes on disk (`[tls] watch_interval`; 0 turns it off).
fn spawn_file_watch(state: &Arc<AppState>, cfg: &ServeConfig, stop: CancellationToken) {
    if let Some(interval) = cfg.tls_watch {
        // Ends with `stop`; a reload it started finishes on its own.
        drop(crate::reload::watch::spawn(
            state.reload.clone(),
            interval,
            stop,
        ));
    }
}

/// What the gateway serves on, and its part in upgrades ([`crate::handoff`]).
struct Sockets {
    listener: TcpListener,
    control: ControlSocket,
    /// What this gateway hands to the next one.
    offer: handoff::Offer,
    /// The gateway these sockets came from (`--upgrade`), to be told when this one serves.
    predecessor: Option<handoff::Predecessor>,
}

/// Bind the listener and the control socket, or with `--upgrade` take them from the gateway
/// running on the data directory.
async fn open_sockets(cfg: &ServeConfig) -> anyhow::Result<Sockets> {
    if !cfg.upgrade {
        let listener = if cfg.listen_stdin {
            let listener = handoff::listener_on_stdin()?;
            cfg.check_inherited(listener.local_addr()?)?;
            listener
        } else {
            bind_listener(cfg.listen).await?
        };
        let control = ControlSocket::bind(&cfg.control_socket)?;
        let offer = handoff::Offer::new(&cfg.data_dir, &listener, &control, None)
            .context("cannot bind the hand-off socket for upgrades")?;
        return Ok(Sockets {
            listener,
            control,
            offer,
            predecessor: None,
        });
    }
    let dir = cfg.data_dir.clone();
    let taken = tokio::task::spawn_blocking(move || handoff::take_over(&dir))
        .await
        .context("the hand-off did not finish")?
        .context("cannot upgrade")?;
    taken.listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(taken.listener)?;
    let control = ControlSocket::inherit(&cfg.control_socket, taken.control, taken.lock)?;
    let offer = handoff::Offer::new(&cfg.data_dir, &listener, &control, Some(taken.handoff))
        .context("cannot serve the inherited hand-off socket")?;
    Ok(Sockets {
        listener,
        control,
        offer,
        predecessor: Some(taken.predecessor),
    })
}

/// Once this gateway serves: tell the one it replaced (if any) to go, and start offering the
/// sockets to the next upgrade. The token fires when a new gateway has taken them.
fn take_turn_in_upgrades(
    offer: handoff::Offer,
    predecessor: Option<handoff::Predecessor>,
    stop: CancellationToken,
) -> CancellationToken {
    if let Some(predecessor) = predecessor {
        drop(tokio::task::spawn_blocking(move || predecessor.serving()));
    }
    let handed_over = CancellationToken::new();
    drop(tokio::spawn(offer.serve(handed_over.clone(), stop)));
    handed_over
}

/// The serving certificate, when the listener is HTTPS; a refused certificate stops start-up.
fn load_serving(cfg: &ServeConfig) -> anyhow::Result<Option<Arc<ServingCert>>> {
    let Some(files) = &cfg.tls else {
        return Ok(None);
    };
    let cert = ServingCert::load(files.clone()).context("cannot load the serving certificate")?;
    Ok(Some(Arc::new(cert)))
}

async fn bind_listener(listen: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen on {listen}: the address is already in use (another process holds the port; choose another with --listen)")
        } else {
            anyhow::anyhow!("cannot listen on {listen}: {err}")
        }
    })
}

/// The store, the upstream registry (with its stored upstreams loaded), metrics and auth,
/// gathered into the state every surface serves from.
async fn build_state(
    cfg: &ServeConfig,
    local: std::net::SocketAddr,
    control_socket: &std::path::Path,
    serving: Option<Arc<ServingCert>>,
    wait: Arc<crate::h1::client::Wait>,
) -> anyhow::Result<Arc<AppState>> {
    let store = crate::store::open(&cfg.store, &cfg.data_dir.join(STORE_FILE)).await?;
    let clients =
        crate::upstream::clients::ClientCache::new(crate::upstream::identity::PathPolicy {
            allowed_dirs: cfg.cert_dirs.clone(),
            serving: serving.clone(),
        })
        .with_url_policy(cfg.url_policy.clone())
        .with_wait(wait);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let children = crate::upstream::stdio::Children::new(Some(&cfg.data_dir));
    // Before any child of ours starts: what a SIGKILLed predecessor left running is stopped.
    // Not after an upgrade: the predecessor is alive, its children are its own to stop.
    let dir = cfg.data_dir.clone();
    let upgrade = cfg.upgrade;
    let swept = tokio::task::spawn_blocking({
        let children = children.clone();
        move || if upgrade { 0 } else { children.sweep() }
    })
    .await
    .with_context(|| format!("cannot sweep the stdio upstreams left in {}", dir.display()))?;
    if swept > 0 {
        tracing::warn!(
            process_groups = swept,
            "stopped stdio upstreams a previous gateway left running"
        );
    }
    let registry = crate::upstream::registry::Registry::new(
        store.clone(),
        clients,
        cfg.upstreams.clone(),
        metrics.clone(),
        children,
    );
    let loaded = registry.load().await?;
    if loaded > 0 {
        tracing::info!(upstreams = loaded, "stored upstreams loaded");
    }
    registry
        .declare(&cfg.declared)
        .await
        .context("registering the upstreams declared in the configuration")?;
    let mut auth = cfg.auth.clone();
    let secret = crate::http::auth::shared_secret(&cfg.data_dir, store).await?;
    let peers = peers(cfg, local, serving.is_some(), &secret)?;
    auth.jwt_secret = Some(secret);
    Ok(Arc::new(AppState::new(
        local,
        control_socket.to_owned(),
        serving,
        auth,
        registry,
        metrics,
        http::ListenerSettings {
            sessions: cfg.sessions,
            quotas: cfg.quotas,
            // The same bound for a slow body as for slow headers.
            body_timeout: cfg.header_timeout,
            linger: cfg.drain_delay,
            allowed_hosts: cfg.allowed_hosts.clone(),
            allowed_origins: cfg.allowed_origins.clone(),
            policy: Arc::new(crate::access::policy::Live::new(
                cfg.policy.clone(),
                cfg.config_file.clone(),
            )),
            audit: Arc::new(crate::access::audit::Audit::open(cfg.audit.as_ref())?),
            peers,
        },
    )))
}

/// This instance among the others on a shared store (none on SQLite): reached at
/// `[store] advertise`, or at its listen address when that names one host.
fn peers(
    cfg: &ServeConfig,
    local: std::net::SocketAddr,
    https: bool,
    secret: &[u8],
) -> anyhow::Result<http::peers::Peers> {
    if !matches!(cfg.store, crate::store::StoreLocation::Postgres(_)) {
        return Ok(http::peers::Peers::default());
    }
    let me = match &cfg.advertise {
        Some(url) => url.clone(),
        None if local.ip().is_unspecified() => {
            tracing::warn!(listen = %local, "no `[store] advertise` and the listen address names no one host: legacy SSE sessions are served only by a balancer that sends each client to one instance");
            return Ok(http::peers::Peers::default());
        }
        None => {
            let scheme = if https { "https" } else { "http" };
            url::Url::parse(&format!("{scheme}://{local}/"))
                .context("the listen address as a URL")?
        }
    };
    Ok(http::peers::Peers::new(me, secret, cfg.peer_ca.as_deref())?)
}

/// The tasks shutdown waits for.
struct Tasks {
    listener: JoinHandle<()>,
    control: JoinHandle<()>,
    health: JoinHandle<()>,
    sweeper: JoinHandle<()>,
}

/// Forget idle Streamable-HTTP sessions now and then (lookups also expire them lazily), and
/// tell the store which sessions were used meanwhile (`http::portable::flush`).
fn spawn_session_sweeper(state: Arc<AppState>, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(http::portable::FLUSH_EVERY);
        let mut since = std::time::Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    let now = std::time::Instant::now();
                    http::portable::flush(&state, since).await;
                    since = now;
                    let gone = state.sessions.sweep();
                    if gone > 0 {
                        tracing::debug!(sessions = gone, "idle MCP sessions expired");
                    }
                    // Also those that expired on a lookup since the last tick.
                    http::delivery::sessions_ended(&state);
                }
            }
        }
    })
}

/// Catalog changes become list_changed notifications on every session's GET stream.
fn relay_catalog_changes(state: Arc<AppState>) {
    let mut changes = state.registry.subscribe_changes();
    tokio::spawn(async move {
        while let Ok(()) | Err(RecvError::Lagged(_)) = changes.recv().await {
            for kind in ["tools", "prompts", "resources"] {
                let change = serde_json::json!({
                    "jsonrpc": "2.0", "method": format!("notifications/{kind}/list_changed")
                });
                state.sessions.broadcast(&change);
                state.listens.broadcast(&state, &change);
            }
        }
    });
}

/// An upstream's resource update goes to the sessions that subscribed to it there.
fn relay_resource_updates(state: Arc<AppState>) {
    let mut updates = state.registry.subscribe_updates();
    tokio::spawn(async move {
        loop {
            let update = match updates.recv().await {
                Ok(update) => update,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "resource updates came faster than they were relayed"
                    );
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            let uri = update
                .message
                .pointer("/params/uri")
                .and_then(|u| u.as_str());
            let (Some(up), Some(uri)) = (state.registry.get(&update.upstream), uri) else {
                continue;
            };
            let mut ended = false;
            for session in up.subscribers(uri) {
                let named =
                    state
                        .subscribed_as
                        .named_for(&session, &update.upstream, &update.message);
                ended |= !http::delivery::notify_session(&state, &session, &named);
            }
            // A session found gone: cleared as any that ended (and the upstream told, if
            // it was the last subscriber).
            if ended {
                http::delivery::sessions_ended(&state);
            }
        }
    });
}

/// Mark ready and say so: in the log, on stdout (the line scripts and tests wait for) and to
/// systemd.
fn announce_ready(state: &AppState, cfg: &ServeConfig, local: std::net::SocketAddr) {
    state.set_ready(true);
    let scheme = if state.serving.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(listen = %local, scheme, control_socket = %cfg.control_socket.display(), auth = cfg.auth.enabled, "mcpgw ready");
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "mcpgw: listening on {scheme}://{local}");
    let _ = stdout.flush();
    drop(stdout);
    crate::notify::ready();
}

/// Serve until SIGTERM/SIGINT, or until a new gateway took the sockets over; SIGHUP wakes the
/// reload worker.
async fn wait_for_shutdown(
    mut signal_rx: UnboundedReceiver<Signal>,
    reload: &Notify,
    handed_over: &CancellationToken,
) {
    loop {
        tokio::select! {
            () = handed_over.cancelled() => break,
            signal = signal_rx.recv() => match signal {
                Some(Signal::Reload) => reload.notify_one(),
                Some(Signal::Shutdown) | None => break,
            },
        }
    }
}

/// Stop accepting, end long-lived streams, wait for the tasks, then give in-flight
/// connections `grace` to finish.
async fn drain(
    state: &AppState,
    tasks: Tasks,
    stop: CancellationToken,
    graceful: Arc<GracefulShutdown>,
    grace: std::time::Duration,
) -> anyhow::Result<()> {
    tracing::info!(
        grace_s = grace.as_secs(),
        "shutting down: no new connections, draining"
    );
    state.set_ready(false);
    state.close_streams();
    stop.cancel();
    let _ = tasks.listener.await;
    let _ = tasks.control.await;
    let _ = tasks.health.await;
    let _ = tasks.sweeper.await;
    // Connections a balancer keeps alive are answered with `connection: close` meanwhile,
    // and closed idle only after (`drain_delay_ms`).
    if !state.linger.is_zero() {
        tokio::time::sleep(state.linger).await;
    }
    // The accept loops held the only other references; they have returned.
    let graceful = Arc::try_unwrap(graceful)
        .map_err(|_| anyhow::anyhow!("internal error: accept loop still running after shutdown"))?;
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!(
            grace_s = grace.as_secs(),
            "grace period over; closing the remaining connections"
        ),
    }
    // No call can reach a stdio upstream any more: each child is stopped and reaped.
    state.registry.stop_children().await;
    Ok(())
}

/// `serve --check-config`: every check start-up makes before it binds or writes anything.
/// Deliberately touches no listener, control socket, store or data directory, so it is safe
/// to run beside a live gateway (e.g. before `systemctl reload`).
fn check_config(cfg: &ServeConfig) -> anyhow::Result<()> {
    let tls = match &cfg.tls {
        Some(files) => {
            let cert =
                ServingCert::load(files.clone()).context("cannot load the serving certificate")?;
            let info = &cert.current().info;
            format!(
                "tls on, certificate sha256 {}, not after {}",
                info.sha256, info.not_after
            )
        }
        None => "tls off".to_owned(),
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "configuration OK")?;
    writeln!(
        stdout,
        "listen {}, {tls}, auth {}, data dir {}",
        cfg.listen,
        if cfg.auth.enabled { "on" } else { "off" },
        cfg.data_dir.display()
    )?;
    Ok(())
}

/// The store's file name in the data directory.
const STORE_FILE: &str = "mcpgw.db";

/// Refuse a data directory where something other than a regular file sits at one of the
/// gateway's own file names (a symbolic link to a file elsewhere, to be read as the signing
/// secret or written through). The store and the control socket's lock are also opened with
/// `O_NOFOLLOW`; this check covers every name before any of them is opened.
fn refuse_planted_links(dir: &std::path::Path) -> anyhow::Result<()> {
    let store_companions = ["-wal", "-shm", "-journal"].map(|end| format!("{STORE_FILE}{end}"));
    let lock = format!("{}.lock", crate::config::SOCKET_NAME);
    let own = [
        crate::http::auth::SECRET_FILE,
        STORE_FILE,
        lock.as_str(),
        crate::upstream::stdio::RECORDS_FILE,
    ]
    .into_iter()
    .chain(store_companions.iter().map(String::as_str));
    for name in own {
        let path = dir.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let what = if meta.file_type().is_symlink() {
            "a symbolic link"
        } else if !meta.is_file() {
            "not a regular file"
        } else {
            continue;
        };
        anyhow::bail!(
            "{} is {what}, where the gateway keeps its own file; it follows no link there: \
             remove it, or choose another data directory ({DATA_DIR_HINT})",
            path.display()
        );
    }
    Ok(())
}

/// Said after every data-directory failure: the operator's next step.
const DATA_DIR_HINT: &str =
    "choose a writable directory with --data-dir, MCPGW_DATA_DIR or `data_dir` in the config file";

fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let shown = dir.display();
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create data directory {shown} ({DATA_DIR_HINT})"))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict data directory {shown}"))?;
    }
    if !dir.is_dir() {
        anyhow::bail!("data directory {shown} exists but is not a directory ({DATA_DIR_HINT})");
    }
    // Whoever else can write here can plant a signing secret or a symlink at one of the
    // gateway's own file names: refuse such a directory rather than trust what is in it.
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read data directory {shown} ({DATA_DIR_HINT})"))?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "data directory {shown} is writable by its group or by others (mode {mode:o}); \
             restrict it (chmod go-w {shown}) or choose another ({DATA_DIR_HINT})"
        );
    }
    let (owner, me) = (
        std::os::unix::fs::MetadataExt::uid(&meta),
        rustix::process::geteuid().as_raw(),
    );
    if owner != me {
        anyhow::bail!(
            "data directory {shown} belongs to uid {owner}, not to the gateway's user (uid {me}); \
             use a directory of its own ({DATA_DIR_HINT})"
        );
    }
    refuse_planted_links(dir)?;
    // Prove it is writable now rather than failing later on the first registration.
    let probe = dir.join(".mcpgw-write-test");
    let _ = std::fs::remove_file(&probe);
    crate::files::own_file(0o600)
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| format!("data directory {shown} is not writable ({DATA_DIR_HINT})"))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
