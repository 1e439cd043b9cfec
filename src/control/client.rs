//! Client side of the control socket: HTTP/1.1 over a Unix stream, as the Docker CLI does.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The gateway did not answer on its control socket (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach the gateway on control socket {socket}: {detail} (is `mcpgw serve` running with this --data-dir/--control-socket?)"
)]
pub struct Unreachable {
    /// Socket path.
    pub socket: String,
    /// What went wrong.
    pub detail: String,
}

/// An error answer from the gateway.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Machine-readable code.
    pub code: String,
    /// Human-readable reason.
    pub message: String,
}

/// A control-socket client.
#[derive(Debug, Clone)]
pub struct ControlClient {
    socket: PathBuf,
}

impl ControlClient {
    /// A client for the socket at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET path`, JSON answer.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.request("GET", path, None).await
    }

    /// `POST path` with an optional JSON body, JSON answer.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.request("POST", path, body).await
    }

    /// Send one request; a non-2xx answer becomes an [`ApiError`].
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let unreachable = |detail: String| Unreachable {
            socket: self.socket.display().to_string(),
            detail,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let bytes = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "mcpgw")
            .header("content-type", "application/json")
            .body(Full::new(bytes))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let value: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
        };
        if status.is_success() {
            return Ok(value);
        }
        let error = value.get("error");
        Err(ApiError {
            status: status.as_u16(),
            code: error
                .and_then(|e| e.get("code"))
                .and_then(Value::as_str)
                .unwrap_or("error")
                .to_owned(),
            message: error
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("the gateway answered {status}: {value}")),
        }
        .into())
    }
}
