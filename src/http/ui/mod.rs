//! The operator console: `GET /ui`, a page of hand-written HTML, CSS and JavaScript embedded in
//! the binary ([`assets`]), the JSON it reads under `/ui/api/` ([`api`]) and its live updates
//! over SSE ([`live`]).
//!
//! Every route here is an administrator's: `access::required_role` gives any route not listed
//! as a client's to admins, and the listener's gate applies it before these handlers run. The
//! page sends the same bearer token as any client (typed once and kept in `sessionStorage`, or
//! set on every request by the browser's owner), so there is no login step of its own.
//!
//! The data is what the JSON routes already give, built by the same functions: the registry's
//! view (`/gateways`), the status (`/admin/status`), the gauges (`/metrics`). Removing an
//! upstream goes through `DELETE /gateways/{name}` itself. What an upstream supplies (names,
//! descriptions, errors) is untrusted: the page sets it with `textContent` only, and the
//! Content-Security-Policy on every response here forbids inline script besides.

pub mod api;
pub mod assets;
pub mod live;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};

use super::AppState;

/// The console's Content-Security-Policy: its own files only, no inline script or style, no
/// framing, no form posting elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's routes, to merge into the router of a surface.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ui", get(assets::index))
        .route("/ui/", get(assets::index))
        .route("/ui/{asset}", get(assets::asset))
        .route("/ui/api/overview", get(api::overview))
        .route("/ui/api/upstreams/{name}", get(api::upstream))
        .route("/ui/api/upstreams/{name}/probe", post(api::probe))
        .route("/ui/api/upstreams/{name}/enabled", post(api::set_enabled))
        .route("/ui/api/certificates", get(api::certificates))
        .route("/ui/api/sessions", get(api::sessions))
        .route("/ui/api/events", get(live::events))
        .layer(axum::middleware::map_response(secure))
}

/// The headers every console response carries, its JSON and errors included.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
