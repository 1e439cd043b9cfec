//! Bearer auth for the network listener.
//!
//! Tokens are compared in constant time, and neither a token nor the header is ever logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// Middleware: 401 unless the request carries an accepted bearer token (or auth is off).
pub async fn require_bearer(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if !state.auth.enabled {
        return next.run(request).await;
    }
    match bearer(request.headers()) {
        Some(token) if accepted(&state.auth.tokens, token) => next.run(request).await,
        Some(_) => unauthorized("invalid bearer token"),
        None => unauthorized("missing bearer token (Authorization: Bearer <token>)"),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn accepted(tokens: &[String], presented: &str) -> bool {
    // Compare fixed-size digests with a branch-free fold, and check every token, so the time
    // taken depends neither on where a guess goes wrong nor on which token matched.
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let presented = digest(presented);
    tokens.iter().fold(false, |hit, t| {
        let diff = digest(t)
            .as_ref()
            .iter()
            .zip(presented.as_ref())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        hit | (diff == 0)
    })
}

fn unauthorized(reason: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({"error": {"code": "unauthorized", "message": reason}})),
    )
        .into_response()
}
