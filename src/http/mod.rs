//! The HTTP application. One router is built per surface: the network listener (bearer auth on
//! every route but `/health` and the OAuth protected resource metadata) and the control socket
//! (authenticated by file mode and peer uid).

pub mod admin;
pub mod auth;
pub mod clients;
pub mod delivery;
pub mod era;
pub mod events;
pub mod front;
pub mod gateways;
pub mod health;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod origin;
pub mod peers;
pub mod portable;
mod relay;
pub mod sessions;
pub mod sse;
pub mod ui;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};

use tokio_util::sync::CancellationToken;

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
    /// The one reload path (serving certificate and upstream identities), for every trigger.
    pub reload: Arc<crate::reload::Reloader>,
    /// Listener auth.
    pub auth: auth::Verifier,
    /// Upstreams.
    pub registry: crate::upstream::registry::Registry,
    /// Downstream MCP sessions.
    pub sessions: mcp::Sessions,
    /// Per-principal quotas, the batch bound and the connection caps.
    pub quotas: crate::access::quota::Quotas,
    /// Prometheus series (shared with the registry, which counts upstream calls).
    pub metrics: Arc<Metrics>,
    /// Legacy HTTP+SSE sessions.
    pub sse: sse::SseSessions,
    /// WebSocket timing.
    pub ws: ws::WsSettings,
    /// Requests upstreams made of clients (sampling, elicitation), by the id the client saw:
    /// which upstream asked, and its own id for the request.
    pub client_requests:
        std::sync::Mutex<std::collections::HashMap<String, (String, serde_json::Value)>>,
    /// Requests in flight upstream, for `notifications/cancelled`.
    pub inflight: mcp::Inflight,
    /// Source of ids for those requests.
    pub next_client_request: std::sync::atomic::AtomicU64,
    /// How long a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// How long an idle connection stays open once the listener stops (`drain_delay_ms`).
    pub linger: std::time::Duration,
    /// Host/Origin rules of the listener.
    pub origin: origin::OriginPolicy,
    /// Open WebSocket sessions (for the sessions gauge).
    pub ws_open: std::sync::atomic::AtomicUsize,
    /// The outbox of each open WebSocket session, for notifications (resource updates).
    pub ws_outlets: ws::WsOutlets,
    /// Open `subscriptions/listen` streams (2026-07-28 clients).
    pub listens: mcp::listen::Listeners,
    /// Resource subscriptions made through `/mcp`'s `mcpgw://` URIs, whose updates are named so.
    pub subscribed_as: mcp::SubscribedAs,
    /// What each session's client said of itself at `initialize`.
    pub clients: clients::ClientProfiles,
    /// 2026-07-28 calls held while their clients answer an upstream's questions.
    pub held: mcp::held::HeldCalls,
    /// Which upstream runs each task started through `/mcp`.
    pub tasks: mcp::tasks::TaskOwners,
    /// Who may reach which upstream, tool, prompt and resource.
    pub policy: Arc<crate::access::policy::Live>,
    /// The audit log (off unless configured).
    pub audit: Arc<crate::access::audit::Audit>,
    /// The other instances on a shared store.
    pub peers: peers::Peers,
    ready: AtomicBool,
    /// Long-lived streams (SSE, WebSocket) end when this fires: graceful shutdown waits for
    /// responses to finish, and these never would.
    streams: CancellationToken,
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
        listener: ListenerSettings,
    ) -> Self {
        let https = serving.is_some();
        let quotas = crate::access::quota::Quotas::new(listener.quotas, metrics.clone());
        Self {
            started: Instant::now(),
            listen,
            control_socket,
            reload: Arc::new(crate::reload::Reloader::new(
                serving.clone(),
                registry.clone(),
                metrics.clone(),
                listener.policy.clone(),
            )),
            policy: listener.policy.clone(),
            audit: listener.audit.clone(),
            peers: listener.peers.clone(),
            serving,
            auth: auth::Verifier::new(&auth, &default_resource(listen, https)),
            registry,
            sessions: mcp::Sessions::new(listener.sessions, quotas.sessions().clone()),
            quotas,
            metrics,
            sse: sse::SseSessions::from_env(),
            ws: ws::WsSettings::from_env(),
            ws_open: std::sync::atomic::AtomicUsize::new(0),
            ws_outlets: ws::WsOutlets::default(),
            listens: mcp::listen::Listeners::default(),
            subscribed_as: mcp::SubscribedAs::default(),
            clients: clients::ClientProfiles::default(),
            held: mcp::held::HeldCalls::default(),
            tasks: mcp::tasks::TaskOwners::default(),
            client_requests: std::sync::Mutex::default(),
            inflight: mcp::Inflight::default(),
            next_client_request: std::sync::atomic::AtomicU64::new(1),
            body_timeout: listener.body_timeout,
            linger: listener.linger,
            origin: origin::OriginPolicy {
                loopback: listen.ip().is_loopback(),
                allowed_hosts: listener.allowed_hosts,
                allowed_origins: listener.allowed_origins,
            },
            ready: AtomicBool::new(false),
            streams: CancellationToken::new(),
        }
    }

    /// Mark ready (or not, while draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// End every SSE stream and WebSocket; called once shutdown begins.
    pub fn close_streams(&self) {
        self.streams.cancel();
    }

    /// A token that fires when shutdown begins, for long-lived streams.
    pub fn streams_closing(&self) -> CancellationToken {
        self.streams.clone()
    }

    /// Whether shutdown has begun (connections close after their answer).
    pub fn is_stopping(&self) -> bool {
        self.streams.is_cancelled()
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// The resource URI of a listener on `listen` when the configuration names none: its scheme
/// and address, with `localhost` for an address that is every interface's (which names no
/// one host: such a deployment should set `[auth] resource`).
fn default_resource(listen: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if listen.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", listen.port())
    } else {
        format!("{scheme}://{listen}")
    }
}

/// Limits and rules of the HTTP surfaces, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct ListenerSettings {
    /// Session bounds per transport.
    pub sessions: mcp::SessionLimits,
    /// Per-principal quotas, the batch bound and the connection caps.
    pub quotas: crate::config::QuotaLimits,
    /// How long a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Extra accepted `Host`/`Origin` names.
    pub allowed_hosts: Vec<String>,
    /// Exact accepted origins.
    pub allowed_origins: Vec<String>,
    /// The policy, and where it is read again on reload.
    pub policy: Arc<crate::access::policy::Live>,
    /// The audit log.
    pub audit: Arc<crate::access::audit::Audit>,
    /// The other instances on a shared store (none by default).
    pub peers: peers::Peers,
    /// `drain_delay_ms`: how long an idle connection stays open once the listener stops, for
    /// a balancer that may still send on it (its request is answered with `connection: close`).
    pub linger: std::time::Duration,
}

/// Which door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// The TCP listener: bearer auth applies.
    Listener,
    /// The Unix control socket: the peer was already checked.
    Control,
}

/// What serves one surface: its router, and on the listener the state that the listener's
/// own HTTP/1.1 loop needs for `POST /mcp` (`crate::h1::server`).
#[derive(Clone, Debug)]
pub struct App {
    router: Router,
    listener: Option<Arc<AppState>>,
    /// The connection it serves, once [`App::on`] named it; every request carries it.
    connection: Arc<crate::access::Connection>,
}

impl App {
    /// The app of one surface.
    pub fn new(state: Arc<AppState>, surface: Surface) -> Self {
        Self {
            router: router(state.clone(), surface),
            listener: (surface == Surface::Listener).then_some(state),
            connection: Arc::default(),
        }
    }

    /// The app for one accepted connection.
    #[must_use]
    pub fn on(&self, connection: crate::access::Connection) -> Self {
        Self {
            connection: Arc::new(connection),
            ..self.clone()
        }
    }

    /// The connection it serves.
    pub fn connection(&self) -> &Arc<crate::access::Connection> {
        &self.connection
    }

    /// The state, on the listener (whose HTTP/1.1 loop serves `POST /mcp` itself).
    pub fn listener(&self) -> Option<&Arc<AppState>> {
        self.listener.as_ref()
    }
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for App {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = tower::util::Oneshot<Router, hyper::Request<hyper::body::Incoming>>;

    fn call(&self, mut request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.connection.clone());
        tower::ServiceExt::oneshot(self.router.clone(), request)
    }
}

/// Build the router for one surface.
pub fn router(state: Arc<AppState>, surface: Surface) -> Router {
    // Served without a token on the listener: see `front::unprotected`.
    let metadata = auth::metadata::routes().fold(Router::new(), |router, route| {
        router.route(&route, get(auth::metadata::document))
    });
    let router = metadata
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::scrape))
        .route("/admin/status", get(admin::status))
        .route("/admin/cert/reload", post(admin::reload))
        .route("/admin/cert/install", post(admin::install))
        .route("/admin/cert/rotate-all", post(admin::rotate_all))
        .route("/gateways", get(gateways::list).post(gateways::create))
        .route(
            "/gateways/{name}",
            get(gateways::show)
                .put(gateways::replace)
                .delete(gateways::remove),
        )
        .route(
            "/mcp",
            post(mcp::post_all).get(events::stream).delete(mcp::delete),
        )
        .route(
            "/mcp/http",
            post(mcp::post_all).get(events::stream).delete(mcp::delete),
        )
        .route(
            "/servers/{name}/mcp",
            post(mcp::post_one)
                .get(events::stream_one)
                .delete(mcp::delete),
        )
        // Legacy HTTP+SSE: the scope chosen at GET is kept in the session, so one POST route.
        .route("/sse", get(sse::stream_all))
        .route("/servers/{name}/sse", get(sse::stream_one))
        .route("/message", post(sse::post_message))
        .route("/ws", get(ws::upgrade))
        // The operator console (an administrator's, as every route not listed for clients).
        .merge(ui::routes())
        // Bodies: a certificate chain and key, or one JSON-RPC message/batch.
        .layer(axum::extract::DefaultBodyLimit::max(4 * 1024 * 1024));
    match surface {
        // Metrics, Host/Origin, body limits and bearer auth, in one layer (see `front`).
        // `Router::layer` wraps each route (and the fallback), where `MatchedPath` is already
        // known. The control socket is the CLI's channel, not traffic: none of it applies.
        Surface::Listener => router.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            front::gate,
        )),
        // The CLI's channel: its peer is the gateway's own user, an administrator.
        Surface::Control => router
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                front::audit_control,
            ))
            .layer(axum::Extension(crate::access::Principal::control())),
    }
    .with_state(state)
}
