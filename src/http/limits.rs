//! Request bodies are read whole, within a time limit: a client that trickles its body (the
//! slow-body form of slowloris) gets 408 instead of holding a connection and a task forever.
//! Every route reads its whole body anyway (one JSON document of at most 4 MiB).
//!
//! A body over the limit is read to its end (and dropped, up to [`DISCARD_LIMIT`]) before the
//! 413 goes out. Most clients send their whole body before they read an answer: over HTTP/1.1
//! a connection closed on the rest of their body resets and takes the 413 with it, and over
//! HTTP/2 hyper resets the stream of a body left unread (curl: exit 92). Every transport's body
//! comes through here (the listener's own HTTP/1.1 loop hands a body over the limit to hyper),
//! so this is the one place the limit answers. How a quota's refusal answers over HTTP is
//! here too ([`over_quota`]).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::access::quota::Exceeded;

/// Largest body accepted.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Most bytes of a body over the limit read and dropped so that its 413 reaches the client;
/// past this (or the body timeout) the 413 goes out at once and the connection or stream may
/// be reset under it.
pub const DISCARD_LIMIT: usize = 64 * 1024 * 1024;

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
pub async fn collect(timeout: Duration, mut body: Body) -> Result<Bytes, Response> {
    let deadline = tokio::time::Instant::now() + timeout;
    let limited = http_body_util::Limited::new(&mut body, MAX_BODY);
    match tokio::time::timeout_at(deadline, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err))
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            // Within the same body timeout: a refusal is no reason to wait longer.
            let _ = tokio::time::timeout_at(deadline, discard(&mut body)).await;
            Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(serde_json::json!({"error": {"code": "too_large", "message": format!("request body over {MAX_BODY} bytes")}})),
            )
                .into_response())
        }
        Ok(Err(_)) => Err(StatusCode::BAD_REQUEST.into_response()),
        Err(_) => Err(too_slow(timeout)),
    }
}

/// Read and drop the rest of a body over the limit, at most [`DISCARD_LIMIT`] bytes of it.
async fn discard(body: &mut Body) {
    let mut left = DISCARD_LIMIT;
    while let Some(Ok(frame)) = body.frame().await {
        let Some(n) = frame.data_ref().map(Bytes::len) else {
            continue;
        };
        match left.checked_sub(n) {
            Some(rest) => left = rest,
            None => return,
        }
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

/// The answer to a request a quota refuses (`crate::access::quota`): 429 for a rate, 400 for a
/// batch, 503 for the rest, with `Retry-After` where waiting helps; the body is a JSON-RPC
/// error naming the quota and its setting.
pub fn over_quota(exceeded: &Exceeded) -> Response {
    let status = match exceeded {
        Exceeded::Rate { .. } => StatusCode::TOO_MANY_REQUESTS,
        Exceeded::Batch { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = exceeded.rpc_error(serde_json::Value::Null);
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(wait) = exceeded.retry_after() {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(wait.as_secs()));
    }
    response
}
