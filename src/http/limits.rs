//! Request bodies are read whole, within a time limit: a client that trickles its body (the
//! slow-body form of slowloris) gets 408 instead of holding a connection and a task forever.
//! Every route reads its whole body anyway (one JSON document of at most 4 MiB).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

/// Largest body accepted.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Buffer the body under `timeout` and the size limit; GET and DELETE pass as they are.
/// `Err` is the refusal (413, 400 or 408).
pub async fn buffer(timeout: Duration, request: Request) -> Result<Request, Response> {
    if request.method() == axum::http::Method::GET || request.method() == axum::http::Method::DELETE
    {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let body = collect(timeout, body).await?;
    Ok(Request::from_parts(parts, Body::from(body)))
}

/// The whole body, under `timeout` and the size limit; `Err` is the refusal (413, 400 or 408).
pub async fn collect(timeout: Duration, body: Body) -> Result<Bytes, Response> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(serde_json::json!({"error": {"code": "too_large", "message": format!("request body over {MAX_BODY} bytes")}})),
        )
            .into_response()),
        Ok(Err(_)) => Err(StatusCode::BAD_REQUEST.into_response()),
        Err(_) => Err(too_slow(timeout)),
    }
}

/// The refusal of a body that did not arrive within `timeout` (408).
pub fn too_slow(timeout: Duration) -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        axum::Json(
            serde_json::json!({"error": {"code": "body_timeout", "message": format!(
                "the request body did not arrive within {} s", timeout.as_secs()
            )}}),
        ),
    )
        .into_response()
}
