//! The HTTP application. One router is built per surface: the network listener (bearer auth on
//! every route but `/health`) and the control socket (authenticated by file mode and peer uid).

pub mod admin;
pub mod auth;
pub mod era;
pub mod gateways;
pub mod health;
pub mod mcp;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};

use crate::config::AuthConfig;
use crate::metrics::Metrics;
use crate::tls::serving::ServingCert;

/// State shared by every handler.
#[derive(Debug)]
pub struct AppState {
    /// When the process started serving.
    pub started: Instant,
    /// The address the listener is bound to.
    pub listen: SocketAddr,
    /// The control socket path.
    pub control_socket: std::path::PathBuf,
    /// The serving certificate, when the listener is HTTPS.
    pub serving: Option<Arc<ServingCert>>,
    /// Listener auth.
    pub auth: AuthConfig,
    /// Upstreams.
    pub registry: crate::upstream::registry::Registry,
    /// Downstream MCP sessions.
    pub sessions: mcp::Sessions,
    /// Prometheus series (shared with the registry, which counts upstream calls).
    pub metrics: Arc<Metrics>,
    ready: AtomicBool,
}

impl AppState {
    /// New state; not ready until [`AppState::set_ready`].
    pub fn new(
        listen: SocketAddr,
        control_socket: std::path::PathBuf,
        serving: Option<Arc<ServingCert>>,
        auth: AuthConfig,
        registry: crate::upstream::registry::Registry,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            started: Instant::now(),
            listen,
            control_socket,
            serving,
            auth,
            registry,
            sessions: mcp::Sessions::default(),
            metrics,
            ready: AtomicBool::new(false),
        }
    }

    /// Mark ready (or not, while draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// Which door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The TCP listener: bearer auth applies.
    Listener,
    /// The Unix control socket: the peer was already checked.
    Control,
}

/// Build the router for one surface.
pub fn router(state: Arc<AppState>, surface: Surface) -> Router {
    let protected = Router::new()
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::scrape))
        .route("/admin/status", get(admin::status))
        .route("/admin/cert/reload", post(admin::reload))
        .route("/admin/cert/install", post(admin::install))
        .route("/gateways", get(gateways::list).post(gateways::create))
        .route(
            "/gateways/{name}",
            get(gateways::show)
                .put(gateways::replace)
                .delete(gateways::remove),
        )
        .route("/mcp", post(mcp::post_all).delete(mcp::delete))
        .route("/mcp/http", post(mcp::post_all).delete(mcp::delete))
        .route(
            "/servers/{name}/mcp",
            post(mcp::post_one).delete(mcp::delete),
        );
    let protected = match surface {
        Surface::Listener => protected.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_bearer,
        )),
        Surface::Control => protected,
    };
    let router = Router::new()
        .route("/health", get(health::health))
        .merge(protected)
        // Bodies: a certificate chain and key, or one JSON-RPC message/batch.
        .layer(axum::extract::DefaultBodyLimit::max(4 * 1024 * 1024));
    match surface {
        // Outermost, so refusals by auth and the body limit are counted too. `Router::layer`
        // wraps each route (and the fallback), where `MatchedPath` is already known. The control
        // socket is the CLI's channel, not traffic: it is not counted.
        Surface::Listener => router.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        )),
        Surface::Control => router,
    }
    .with_state(state)
}
