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
use tokio_util::sync::CancellationToken;

use crate::cli::ServeArgs;
use crate::config::{self, GlobalPaths, ServeConfig};
use crate::control::server::ControlSocket;
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
    let serving = match &cfg.tls {
        Some(files) => Some(Arc::new(
            ServingCert::load(files.clone()).context("cannot load the serving certificate")?,
        )),
        None => None,
    };
    let listener = TcpListener::bind(cfg.listen).await.map_err(|err| {
        if err.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen on {}: the address is already in use (another process holds the port; choose another with --listen)", cfg.listen)
        } else {
            anyhow::anyhow!("cannot listen on {}: {err}", cfg.listen)
        }
    })?;
    let local = listener.local_addr()?;
    let control = ControlSocket::bind(&cfg.control_socket)?;
    let mut signal_rx = signals::install().context("cannot install signal handlers")?;

    let store_path = cfg.data_dir.join("mcpgw.db");
    let store: Arc<dyn crate::store::Store> =
        Arc::new(crate::store::sqlite::SqliteStore::open(&store_path)?);
    let clients =
        crate::upstream::clients::ClientCache::new(crate::upstream::identity::PathPolicy {
            allowed_dirs: cfg.cert_dirs.clone(),
        })
        .with_wait(wait);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let registry = crate::upstream::registry::Registry::new(
        store,
        clients,
        cfg.upstreams.clone(),
        metrics.clone(),
    );
    let loaded = registry.load().await?;
    if loaded > 0 {
        tracing::info!(upstreams = loaded, "stored upstreams loaded");
    }
    let mut auth = cfg.auth.clone();
    auth.jwt_secret = Some(crate::http::auth::load_or_create_secret(&cfg.data_dir)?);

    let state = Arc::new(AppState::new(
        local,
        control.path().to_owned(),
        serving.clone(),
        auth,
        registry.clone(),
        metrics.clone(),
        http::ListenerSettings {
            sessions: cfg.sessions,
            // The same bound for a slow body as for slow headers.
            body_timeout: cfg.header_timeout,
            allowed_hosts: cfg.allowed_hosts.clone(),
            allowed_origins: cfg.allowed_origins.clone(),
        },
    ));
    let graceful = Arc::new(GracefulShutdown::new());
    let stop = CancellationToken::new();
    // Forget idle Streamable-HTTP sessions now and then (lookups also expire them lazily).
    let sweeper = {
        let (state, stop) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        let gone = state.sessions.sweep();
                        if gone > 0 {
                            tracing::debug!(sessions = gone, "idle MCP sessions expired");
                        }
                        // Also those that expired on a lookup since the last tick.
                        http::mcp::prune_subscriptions(&state);
                    }
                }
            }
        })
    };
    let listener_task = tokio::spawn(crate::server::run_listener(
        listener,
        http::App::new(state.clone(), Surface::Listener),
        serving.clone(),
        stop.clone(),
        graceful.clone(),
        cfg.header_timeout,
    ));
    let control_task = tokio::spawn(control.run(
        http::App::new(state.clone(), Surface::Control),
        stop.clone(),
        graceful.clone(),
    ));
    // Catalog changes become list_changed notifications on every session's GET stream.
    {
        let (state, mut changes) = (state.clone(), registry.subscribe_changes());
        tokio::spawn(async move {
            while let Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) =
                changes.recv().await
            {
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
    // An upstream's resource update goes to the sessions that subscribed to it there.
    {
        let (state, registry, mut updates) = (
            state.clone(),
            registry.clone(),
            registry.subscribe_updates(),
        );
        tokio::spawn(async move {
            loop {
                let update = match updates.recv().await {
                    Ok(update) => update,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "resource updates came faster than they were relayed"
                        );
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                };
                let uri = update
                    .message
                    .pointer("/params/uri")
                    .and_then(|u| u.as_str());
                let (Some(up), Some(uri)) = (registry.get(&update.upstream), uri) else {
                    continue;
                };
                let mut ended = false;
                for session in up.subscribers(uri) {
                    ended |= !http::mcp::notify_session(&state, &session, &update.message);
                }
                // A session found gone: cleared as any that ended (and the upstream told, if
                // it was the last subscriber).
                if ended {
                    http::mcp::prune_subscriptions(&state);
                }
            }
        });
    }
    let reload = spawn_reloader(serving.clone(), registry.clone(), metrics);
    let health = registry.spawn_health_loop(stop.clone());

    state.set_ready(true);
    let scheme = if serving.is_some() { "https" } else { "http" };
    tracing::info!(listen = %local, scheme, control_socket = %cfg.control_socket.display(), auth = cfg.auth.enabled, "mcpgw ready");
    // A machine-readable ready line for scripts and tests.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "mcpgw: listening on {scheme}://{local}");
    let _ = stdout.flush();
    drop(stdout);
    crate::notify::ready();

    while let Some(signal) = signal_rx.recv().await {
        match signal {
            Signal::Reload => reload.notify_one(),
            Signal::Shutdown => break,
        }
    }
    crate::notify::stopping();

    tracing::info!(
        grace_s = cfg.shutdown_grace.as_secs(),
        "shutting down: no new connections, draining"
    );
    state.set_ready(false);
    state.close_streams();
    stop.cancel();
    let _ = listener_task.await;
    let _ = control_task.await;
    let _ = health.await;
    let _ = sweeper.await;
    // The accept loops held the only other references; they have returned.
    let graceful = Arc::try_unwrap(graceful)
        .map_err(|_| anyhow::anyhow!("internal error: accept loop still running after shutdown"))?;
    match tokio::time::timeout(cfg.shutdown_grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!(
            grace_s = cfg.shutdown_grace.as_secs(),
            "grace period over; closing the remaining connections"
        ),
    }
    Ok(())
}

/// One worker performs reloads, one at a time. `Notify` keeps at most one pending wake-up,
/// so a burst of SIGHUPs collapses into a reload that sees the latest files.
fn spawn_reloader(
    serving: Option<Arc<ServingCert>>,
    registry: crate::upstream::registry::Registry,
    metrics: Arc<crate::metrics::Metrics>,
) -> Arc<Notify> {
    let notify = Arc::new(Notify::new());
    let wake = notify.clone();
    tokio::spawn(async move {
        loop {
            wake.notified().await;
            let _reloading = crate::notify::reloading();
            // Upstream client certificates rotated on disk are picked up for new connections.
            registry.reload_identities();
            let Some(serving) = serving.clone() else {
                tracing::info!("SIGHUP: plain HTTP listener, no serving certificate to reload");
                continue;
            };
            let trigger = crate::metrics::ReloadTrigger::Sighup;
            let outcome = tokio::task::spawn_blocking(move || serving.reload()).await;
            metrics.certificate_reload(trigger, matches!(outcome, Ok(Ok(_))));
            match outcome {
                Ok(Ok(report)) => http::admin::log_swap(trigger.as_str(), &report),
                Ok(Err(err)) => http::admin::log_refused(trigger.as_str(), &err),
                Err(err) => tracing::error!(error = %err, "certificate reload task failed"),
            }
        }
    });
    notify
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
    // Prove it is writable now rather than failing later on the first registration.
    let probe = dir.join(".mcpgw-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("data directory {shown} is not writable ({DATA_DIR_HINT})"))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
