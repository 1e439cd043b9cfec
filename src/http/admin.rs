//! Admin API: status and certificate reload/install. Served on the control socket (for the CLI)
//! and on the listener behind bearer auth.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use crate::metrics::ReloadTrigger;
use crate::reload::fleet::{self, FleetError};
use crate::reload::{Action, NewPair, Refused, ReloadError, ReloadReport};
use crate::tls::serving::{CertError, ReloadCounts};
use crate::tls::x509::CertInfo;

/// `GET /admin/status` body.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// mcpgw version.
    pub version: String,
    /// Listener address.
    pub listen: String,
    /// `https` or `http`.
    pub scheme: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Process id.
    pub pid: u32,
    /// Control socket path.
    pub control_socket: String,
    /// The served certificate, when HTTPS.
    pub certificate: Option<CertInfo>,
    /// Certificate file paths, when HTTPS.
    pub certificate_files: Option<CertFiles>,
    /// Reload outcomes so far.
    pub reloads: Option<ReloadCountsView>,
    /// Whether the store is shared with other instances (PostgreSQL), so that
    /// `cert rotate --all` reaches more than this one.
    #[serde(default)]
    pub shared_store: bool,
}

/// Paths of the served material.
#[derive(Debug, Serialize, Deserialize)]
pub struct CertFiles {
    /// Certificate chain.
    pub cert: String,
    /// Key.
    pub key: String,
    /// Issuing CA, if configured.
    pub ca: Option<String>,
}

/// Reload counters as sent over the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReloadCountsView {
    /// Successful.
    pub ok: u64,
    /// Refused.
    pub failed: u64,
}

impl From<ReloadCounts> for ReloadCountsView {
    fn from(c: ReloadCounts) -> Self {
        Self {
            ok: c.ok,
            failed: c.failed,
        }
    }
}

/// `POST /admin/cert/install` body: a new pair, PEM.
#[derive(Deserialize)]
pub struct InstallRequest {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
    /// What to call the certificate in errors (e.g. the caller's file name).
    #[serde(default)]
    pub cert_source: Option<String>,
    /// What to call the key in errors.
    #[serde(default)]
    pub key_source: Option<String>,
}

impl From<InstallRequest> for NewPair {
    fn from(request: InstallRequest) -> Self {
        Self {
            cert_source: request
                .cert_source
                .unwrap_or_else(|| "the submitted certificate".to_owned()),
            cert_pem: request.cert_pem.into_bytes(),
            key_source: request
                .key_source
                .unwrap_or_else(|| "the submitted key".to_owned()),
            key_pem: request.key_pem.into_bytes(),
        }
    }
}

/// `POST /admin/cert/rotate-all` body: a new pair, and how long to wait for the instances.
#[derive(Debug, Deserialize)]
pub struct RotateAllRequest {
    /// The pair.
    #[serde(flatten)]
    pub pair: InstallRequest,
    /// Seconds to wait for every live instance's outcome ([`fleet::DEFAULT_WAIT`] if absent).
    #[serde(default)]
    pub wait_s: Option<f64>,
}

impl std::fmt::Debug for InstallRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret; the certificate is just noise in a log.
        f.write_str("InstallRequest { .. }")
    }
}

/// `GET /admin/status`.
pub async fn status(State(state): State<Arc<AppState>>) -> Json<Status> {
    Json(status_of(&state))
}

/// What `GET /admin/status` answers (also the console's status).
pub fn status_of(state: &AppState) -> Status {
    let serving = state.serving.as_ref();
    Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        listen: state.listen.to_string(),
        scheme: if serving.is_some() { "https" } else { "http" }.to_owned(),
        uptime_s: state.started.elapsed().as_secs(),
        pid: std::process::id(),
        control_socket: state.control_socket.display().to_string(),
        certificate: serving.map(|s| s.current().info.clone()),
        certificate_files: serving.map(|s| {
            let files = s.files();
            CertFiles {
                cert: files.cert.display().to_string(),
                key: files.key.display().to_string(),
                ca: files.ca.as_ref().map(|p| p.display().to_string()),
            }
        }),
        reloads: serving.map(|s| s.counts().into()),
        shared_store: state.registry.store().fleet().is_some(),
    }
}

/// `POST /admin/cert/reload`: re-read the served files and every upstream TLS identity.
pub async fn reload(State(state): State<Arc<AppState>>) -> Response {
    answer(
        state
            .reload
            .reload(ReloadTrigger::Control, Action::Reread)
            .await,
    )
}

/// `POST /admin/cert/install`: validate, write over the served files, swap; then re-read every
/// upstream TLS identity, as any reload does.
pub async fn install(
    State(state): State<Arc<AppState>>,
    Json(request): Json<InstallRequest>,
) -> Response {
    let pair = NewPair::from(request);
    answer(
        state
            .reload
            .reload(ReloadTrigger::Install, Action::Install(pair))
            .await,
    )
}

/// `POST /admin/cert/rotate-all`: check the pair here, publish it for every instance on the
/// shared store, and answer each one's outcome (`cert rotate --all`).
pub async fn rotate_all(
    State(state): State<Arc<AppState>>,
    Json(request): Json<RotateAllRequest>,
) -> Response {
    let wait = request
        .wait_s
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(fleet::DEFAULT_WAIT, |s| {
            std::time::Duration::from_secs_f64(s.min(fleet::MAX_WAIT.as_secs_f64()))
        });
    let error = match state.reload.rotate_all(request.pair.into(), wait).await {
        Ok(report) => return Json(report).into_response(),
        Err(error) => error,
    };
    let (status, code) = match &error {
        FleetError::NotShared => (StatusCode::CONFLICT, "not_shared"),
        FleetError::Refused(ReloadError::Certificate(err)) => cert_status(err),
        FleetError::NotText { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "certificate_rejected"),
        FleetError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let body = json!({"error": {"code": code, "message": error.to_string()}});
    (status, Json(body)).into_response()
}

/// The reload's report, or why the certificate was refused and what was still done to the
/// upstreams (the reload logged and counted it).
fn answer(outcome: Result<ReloadReport, Refused>) -> Response {
    let Refused { error, upstreams } = match outcome {
        Ok(report) => return Json(report).into_response(),
        Err(refused) => refused,
    };
    let (status, code) = match &error {
        ReloadError::Certificate(err) => cert_status(err),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let body = json!({
        "error": {"code": code, "message": error.to_string()},
        "upstreams": upstreams,
    });
    (status, Json(body)).into_response()
}

fn cert_status(err: &CertError) -> (StatusCode, &'static str) {
    match err {
        CertError::NoTls => (StatusCode::CONFLICT, "no_tls"),
        CertError::Write { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "write_failed"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "certificate_rejected"),
    }
}
