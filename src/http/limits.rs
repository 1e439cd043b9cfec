//! Request bodies are read whole, within a time limit: a client that trickles its body (the
//! slow-body form of slowloris) gets 408 instead of holding a connection and a task forever.
//! Every route reads its whole body anyway (one JSON document of at most 4 MiB).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::AppState;

/// Largest body accepted.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Middleware: buffer the body under the body timeout and the size limit.
pub async fn read_body(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == axum::http::Method::GET || request.method() == axum::http::Method::DELETE
    {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(state.body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => next.run(Request::from_parts(parts, Body::from(collected.to_bytes()))).await,
        Ok(Err(err)) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(serde_json::json!({"error": {"code": "too_large", "message": format!("request body over {MAX_BODY} bytes")}})),
        )
            .into_response(),
        Ok(Err(_)) => StatusCode::BAD_REQUEST.into_response(),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({"error": {"code": "body_timeout", "message": format!(
                "the request body did not arrive within {} s", state.body_timeout.as_secs()
            )}})),
        )
            .into_response(),
    }
}
