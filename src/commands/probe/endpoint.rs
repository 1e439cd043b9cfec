//! The HTTP exchange of phase 4: the one request an MCP endpoint of the target's transport must
//! answer, sent on the probe's own connection (plain or TLS), and the check that the answer looks
//! like MCP. Kept apart from the connection phases because it is the same for both.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};

use super::report::Report;
use super::{Cause, ProbeFailed, Target};
use crate::store::Transport;
use crate::upstream::connection::{
    META_CLIENT_CAPABILITIES, META_PROTOCOL_VERSION, MODERN_VERSION,
};

/// The first HTTP answer of the probe connection.
pub(super) struct Answer {
    status: u16,
    content_type: Option<String>,
    version: &'static str,
    /// The body, when it is JSON (at most 64 KiB); event streams are not read.
    json_body: Option<Value>,
    /// What an error page said (`: ` and its first printable characters).
    excerpt: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ExchangeError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("no HTTP answer in time")]
    Timeout,
}

/// Send the request an MCP endpoint of this transport must answer, on `io`.
pub(super) async fn exchange<S>(target: &Target, io: S, h2: bool) -> Result<Answer, ExchangeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let fut = async {
        let request = build_request(target, h2);
        let io = TokioIo::new(io);
        let (response, driver) = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            let driver = tokio::spawn(conn);
            (sender.send_request(request).await?, driver)
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            let driver = tokio::spawn(conn);
            (sender.send_request(request).await?, driver)
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase());
        let json = content_type.as_deref() == Some("application/json");
        // A JSON answer is read to check it; an error page (a status that is not 2xx, not an
        // event stream) for what it says, shown to the admin running the probe.
        let error_page =
            !(200..300).contains(&status) && content_type.as_deref() != Some("text/event-stream");
        let body = if json || error_page {
            let body = Limited::new(response.into_body(), 64 * 1024);
            body.collect().await.ok().map(|b| b.to_bytes())
        } else {
            None
        };
        let json_body = body
            .as_ref()
            .filter(|_| json)
            .and_then(|b| serde_json::from_slice(b).ok());
        let excerpt = body
            .filter(|_| error_page)
            .map(|b| crate::upstream::answer::excerpt(&b))
            .filter(|e| !e.is_empty());
        // An event stream stays open; the probe has what it needs.
        driver.abort();
        Ok(Answer {
            status,
            content_type,
            version: if h2 { "HTTP/2" } else { "HTTP/1.1" },
            json_body,
            excerpt,
        })
    };
    tokio::time::timeout(target.timeout, fut)
        .await
        .unwrap_or(Err(ExchangeError::Timeout))
}

fn build_request(target: &Target, h2: bool) -> http::Request<Full<Bytes>> {
    let path = match target.url.query() {
        Some(q) => format!("{}?{q}", target.url.path()),
        None => target.url.path().to_owned(),
    };
    let authority = match target.settings.server_name.as_deref() {
        Some(name) => format!("{name}:{}", target.port),
        None => target
            .url
            .host_str()
            .map(|h| format!("{h}:{}", target.port))
            .unwrap_or_default(),
    };
    let scheme = if target.tls { "https" } else { "http" };
    let uri = if h2 {
        format!("{scheme}://{authority}{path}")
    } else {
        path
    };
    let builder = http::Request::builder().uri(uri).header(
        http::header::USER_AGENT,
        concat!("mcpgw-probe/", env!("CARGO_PKG_VERSION")),
    );
    let builder = if h2 {
        builder
    } else {
        builder.header(http::header::HOST, authority)
    };
    let request = match target.transport {
        // The stateless revision's probe: a modern server answers it, a session-era one refuses it
        // with a JSON-RPC error; either way an MCP endpoint answers JSON-RPC.
        Transport::StreamableHttp => {
            let body = json!({
                "jsonrpc": "2.0",
                "id": 0,
                "method": "server/discover",
                "params": {"_meta": {
                    META_PROTOCOL_VERSION: MODERN_VERSION,
                    META_CLIENT_CAPABILITIES: {},
                }},
            });
            builder
                .method(http::Method::POST)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::ACCEPT, "application/json, text/event-stream")
                .header("mcp-protocol-version", MODERN_VERSION)
                .header("mcp-method", "server/discover")
                .body(Full::new(Bytes::from(body.to_string())))
        }
        // `probe --transport` cannot name stdio (clap skips it): a URL is HTTP.
        Transport::Sse | Transport::Stdio => builder
            .method(http::Method::GET)
            .header(http::header::ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::new())),
    };
    let mut request = request.unwrap_or_else(|_| http::Request::new(Full::new(Bytes::new())));
    for (name, value) in &target.headers {
        request.headers_mut().append(name, value.clone());
    }
    request
}

pub(super) fn exchange_failure(target: &Target, err: &ExchangeError) -> (Cause, String) {
    match err {
        ExchangeError::Timeout => (
            Cause::Timeout,
            format!(
                "no HTTP answer from {} within {} s",
                target.url,
                target.timeout.as_secs()
            ),
        ),
        ExchangeError::Http(e) => (
            Cause::NotMcp,
            format!("no usable HTTP answer from {}: {e}", target.url),
        ),
    }
}

/// Phase 4: the endpoint's answer must look like MCP for its transport.
pub(super) fn check_http(
    target: &Target,
    answer: Answer,
    started: Instant,
    report: &mut Report,
) -> Result<(), ProbeFailed> {
    let ct = answer.content_type.as_deref().unwrap_or("");
    let success = (200..300).contains(&answer.status);
    let jsonrpc = answer
        .json_body
        .as_ref()
        .is_some_and(|b| b.get("jsonrpc").is_some());
    let (method, expected, looks_mcp) = match target.transport {
        Transport::StreamableHttp => (
            "POST",
            "a JSON-RPC answer as application/json or text/event-stream",
            (success && (ct == "application/json" || ct == "text/event-stream"))
                || ((400..500).contains(&answer.status) && jsonrpc),
        ),
        Transport::Sse | Transport::Stdio => (
            "GET",
            "200 with text/event-stream",
            success && ct == "text/event-stream",
        ),
    };
    let shown_ct = if ct.is_empty() {
        "without a content type".to_owned()
    } else {
        ct.to_owned()
    };
    let summary = format!("{} {} {shown_ct}", answer.version, answer.status);
    if !looks_mcp {
        let mut diagnosis = format!(
            "not an MCP endpoint: {method} {} answered HTTP {} {shown_ct} (expected {expected})",
            target.url.path(),
            answer.status
        );
        if matches!(answer.status, 401 | 403) {
            diagnosis.push_str(if target.headers.is_empty() {
                "; the endpoint wants credentials, which probe does not send"
            } else {
                "; the endpoint refused the credentials registered for it"
            });
        }
        if let Some(excerpt) = &answer.excerpt {
            diagnosis.push_str("; its body");
            diagnosis.push_str(excerpt);
        }
        return Err(report.fail("http", started, Cause::NotMcp, diagnosis, vec![summary]));
    }
    report.ok_with(
        "http",
        started,
        summary,
        vec![],
        json!({"status": answer.status, "content_type": answer.content_type}),
    );
    Ok(())
}
