//! The console's JSON under `/ui/api/`: what its pages show, put together from what the other
//! routes answer (the registry's view, `/admin/status`, the `/metrics` gauges) plus what only
//! a page needs (the last minutes of traffic, TLS identities, reload history, sessions by
//! principal). Nothing here holds a key, a token or a certificate body.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::AppState;
use crate::http::gateways::{api_error, store_error};
use crate::store::{StoreError, Transport};
use crate::tls::x509;
use crate::upstream::registry::{Entry, Upstream};

/// How long the console's probe may take per phase at most (the upstream's request timeout
/// when shorter): the operator is waiting at the page.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /ui/api/overview`.
pub async fn overview(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(overview_of(&state))
}

/// Every upstream with its health, era, certificate expiry and last 15 minutes of traffic;
/// the status and the sessions. What the live stream sends ([`super::live`]).
pub fn overview_of(state: &AppState) -> Value {
    let snapshot = crate::http::metrics::snapshot(state);
    let settings = state.registry.settings();
    let mut upstreams = state.registry.list();
    upstreams.sort_by_key(|up| up.name());
    let upstreams: Vec<Value> = upstreams
        .iter()
        .map(|up| {
            let name = up.name();
            let mut view = up.view();
            view["client_not_after"] = json!(
                snapshot
                    .upstreams
                    .iter()
                    .find(|s| s.name == name)
                    .and_then(|s| s.client_not_after)
            );
            view["traffic"] = json!(state.metrics.upstream_recent(&name));
            view
        })
        .collect();
    json!({
        "now": time::OffsetDateTime::now_utc().unix_timestamp(),
        "status": crate::http::admin::status_of(state),
        "health_check": {
            "interval_s": settings.health_interval.as_secs_f64(),
            "threshold": settings.health_threshold,
        },
        "serving_not_after": snapshot.serving_not_after,
        "upstreams": upstreams,
        "sessions": sessions_of(state),
    })
}

/// `GET /ui/api/upstreams/{name}`: the view, TLS identity, whole catalog and recent errors.
pub async fn upstream(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let Some(up) = state.registry.get(&name) else {
        return store_error(&StoreError::NotFound { name });
    };
    let tls = identity_of(&state, &up).await;
    let catalog = up.catalog();
    Json(json!({
        "view": up.view(),
        "tls": tls,
        "instructions": up.instructions(),
        "catalog": {
            "tools": Entry::values(&catalog.tools),
            "prompts": Entry::values(&catalog.prompts),
            "resources": Entry::values(&catalog.resources),
            "resource_templates": Entry::values(&catalog.resource_templates),
        },
        "errors": up.recent_errors().into_iter().map(|(at, error)| json!({"at": at, "error": error})).collect::<Vec<_>>(),
        "traffic": state.metrics.upstream_recent(&up.name()),
    }))
    .into_response()
}

/// An upstream's TLS identity as the gateway loads it (the same cache every connection uses):
/// the CAs it trusts, the client chain it presents, the name it verifies; never the key.
async fn identity_of(state: &AppState, up: &Upstream) -> Value {
    let reg = up.registration();
    if reg.transport == Transport::Stdio {
        return json!({"used": false, "reason": "a stdio upstream is reached through a pipe, not TLS"});
    }
    if !reg.url.starts_with("https://") {
        return json!({"used": false, "reason": "plain http:// URL"});
    }
    let clients = state.registry.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        clients
            .clients()
            .client_for(&reg.url, &reg.tls)
            .map(|client| client.identity)
    })
    .await;
    let identity = match loaded {
        Ok(Ok(identity)) => identity,
        Ok(Err(err)) => return json!({"used": true, "error": err.to_string()}),
        Err(join) => return json!({"used": true, "error": join.to_string()}),
    };
    let infos = |what: &str, chain: &[rustls::pki_types::CertificateDer<'_>]| -> Vec<Value> {
        chain
            .iter()
            .map(|der| match x509::info(what, der) {
                Ok(info) => json!(info),
                Err(err) => json!({"error": err.to_string()}),
            })
            .collect()
    };
    json!({
        "used": true,
        "ca": identity.ca.as_deref().map(|ca| infos("CA certificate", ca)),
        "ca_source": identity.ca_source,
        "client": identity.client.as_ref().map(|(chain, _)| infos("client certificate", chain)),
        "server_name": identity.server_name,
    })
}

/// `POST /ui/api/upstreams/{name}/probe`: `mcpgw probe` against the upstream's URL with its
/// TLS settings and credentials, every phase reported as `mcpgw probe --json` prints it.
pub async fn probe(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let Some(up) = state.registry.get(&name) else {
        return store_error(&StoreError::NotFound { name });
    };
    let reg = up.registration();
    if reg.transport == Transport::Stdio {
        return api_error(
            StatusCode::CONFLICT,
            "not_probeable",
            format!(
                "'{name}' is a stdio upstream: there is no network path to probe; its health check starts the program"
            ),
        );
    }
    let timeout = state.registry.settings().request_timeout.min(PROBE_TIMEOUT);
    // With the credentials the gateway's own requests carry: without them an upstream that
    // wants a bearer looks broken to the probe while the gateway reaches it fine.
    let headers = match crate::upstream::headers::auth_headers(&reg.auth) {
        Ok(headers) => headers,
        Err(err) => {
            return api_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_settings",
                err.to_string(),
            );
        }
    };
    match crate::commands::probe::examine(
        &reg.url,
        reg.transport,
        reg.tls.clone(),
        headers,
        state.registry.clients().path_policy(),
        timeout,
    )
    .await
    {
        Ok(report) => Json(report).into_response(),
        Err(err) => api_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_settings", err.0),
    }
}

/// `POST /ui/api/upstreams/{name}/enabled` body.
#[derive(Debug, Deserialize)]
pub struct EnabledBody {
    /// Whether calls are routed to it.
    pub enabled: bool,
}

/// `POST /ui/api/upstreams/{name}/enabled`: enable or disable; answers the registry's view.
pub async fn set_enabled(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Json(body): Json<EnabledBody>,
) -> Response {
    match state.registry.set_enabled(&name, body.enabled).await {
        Ok(up) => Json(up.view()).into_response(),
        Err(err) => store_error(&err),
    }
}

/// `GET /ui/api/certificates`: the serving certificate, the reload history, and the client
/// certificate each upstream presents.
pub async fn certificates(State(state): State<Arc<AppState>>) -> Json<Value> {
    let status = crate::http::admin::status_of(&state);
    let mut upstreams = state.registry.list();
    upstreams.sort_by_key(|up| up.name());
    let clients: Vec<Value> = upstreams
        .iter()
        .filter_map(|up| {
            let not_after = up.client_certificate_not_after()?;
            let view = up.view();
            Some(json!({
                "upstream": up.name(),
                "subject": view["tls"]["client_subject"],
                "not_after_unix": not_after,
            }))
        })
        .collect();
    Json(json!({
        "now": time::OffsetDateTime::now_utc().unix_timestamp(),
        "serving": status.certificate,
        "files": status.certificate_files,
        "reloads": status.reloads,
        "history": state.reload.history(),
        "upstream_clients": clients,
    }))
}

/// `GET /ui/api/sessions`.
pub async fn sessions(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(sessions_of(&state))
}

/// Open sessions by transport (the `/metrics` gauge's numbers) and by principal.
fn sessions_of(state: &AppState) -> Value {
    let transports: Vec<Value> = crate::http::metrics::open_sessions(state)
        .iter()
        .map(|(transport, open)| json!({"transport": transport, "open": open}))
        .collect();
    let mut upstreams = state.registry.list();
    upstreams.sort_by_key(|up| up.name());
    json!({
        "transports": transports,
        "by_principal": state.quotas.sessions().holders(),
        "streamable_http": state.sessions.by_owner(),
        "sse": state.sse.by_owner(),
        "websocket": state.ws_outlets.by_owner(),
        "listen": state.listens.by_owner(),
        "listen_streams": state.listens.len(),
        "upstream_sessions": upstreams.iter().map(|up| {
            let (open, opened) = up.client_sessions();
            json!({"upstream": up.name(), "open": open, "opened": opened})
        }).collect::<Vec<_>>(),
    })
}
