//! `mcpgw connect URL`: a stdio MCP server that relays to a remote MCP endpoint over
//! Streamable HTTP. A desktop client runs it as a command; the remote is an mcpgw or any MCP
//! server.
//!
//! What the client says is relayed as it is, in either era: a session-era client's
//! `initialize` opens a session whose id and version go with what follows, and whose standing
//! `GET` stream is opened after `notifications/initialized`; a 2026-07-28 message carries its
//! routing headers (`Mcp-Method`, `Mcp-Name`), made from its body by the gateway's own rule.
//! Every message but the two that open a session is sent concurrently, so that a long call or a
//! `subscriptions/listen` stream holds up nothing else; what a server sends while it answers,
//! or on its standing stream, goes to stdout as it comes ([`out`]). How the relay outlives a
//! server's restart is in [`remote`].

mod out;
mod remote;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{ConnectArgs, LogFormat, UsageError};
use crate::jsonrpc::{self, Kind, code};
use crate::upstream::UpstreamError;
use out::{Incoming, Out};
use remote::{Bearer, Remote, Sending, Settings};

/// Relay stdin to the URL and the answers to stdout until stdin closes; then wait for the
/// answers still due, end the session, and exit.
pub async fn run(args: &ConnectArgs) -> anyhow::Result<()> {
    crate::logging::init(LogFormat::Text);
    let settings = settings(args)?;
    let out = Out::start();
    let remote = Remote::new(settings, out.clone()).context("cannot start the relay")?;
    tracing::info!(url = %origin(&args.url), "relaying stdio to the MCP endpoint");
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || out::read_lines(std::io::stdin().lock(), lines_tx));
    let relay = Relay {
        remote: remote.clone(),
        out: out.clone(),
        inflight: Arc::default(),
        tasks: TaskTracker::new(),
        streams: CancellationToken::new(),
    };
    while let Some(incoming) = lines.recv().await {
        match incoming {
            Incoming::Line(line) => relay.take(&line).await,
            Incoming::TooLong => {
                tracing::warn!(
                    limit = out::MAX_LINE,
                    "a message on stdin is too long; skipped"
                );
                out.send(&jsonrpc::error(
                    Value::Null,
                    code::INVALID_REQUEST,
                    format!("message longer than {} bytes", out::MAX_LINE),
                ));
            }
        }
    }
    // Streams stay open until told; requests are answered first.
    relay.streams.cancel();
    relay.tasks.close();
    relay.tasks.wait().await;
    remote.close().await;
    out.flush().await;
    Ok(())
}

/// The arguments as the relay runs with them.
fn settings(args: &ConnectArgs) -> anyhow::Result<Settings> {
    let headers = args
        .headers
        .iter()
        .map(|line| {
            line.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| UsageError(format!("--header '{line}': expected 'Name: value'")))
        })
        .collect::<Result<_, _>>()?;
    let bearer = match (&args.bearer, &args.bearer_file) {
        (Some(token), _) => Bearer::Given(token.clone()),
        (None, Some(file)) => Bearer::File(file.clone()),
        (None, None) => Bearer::Absent,
    };
    Ok(Settings {
        url: args.url.clone(),
        tls: args.tls.settings()?,
        bearer,
        headers,
        timeout: Duration::from_secs(args.timeout.max(1)),
    })
}

/// A URL's origin, for logs: its path and query may carry a key.
fn origin(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| "an invalid URL".into())
}

/// A request on its way: how to drop it, and whether it is a 2026-07-28 one (whose
/// cancellation is the end of its POST, not a message).
#[derive(Debug)]
struct Inflight {
    cancel: CancellationToken,
    modern: bool,
}

/// The client's side: what it sent, in flight.
struct Relay {
    remote: Arc<Remote>,
    out: Out,
    /// Requests in flight by id (as JSON text).
    inflight: Arc<Mutex<HashMap<String, Inflight>>>,
    tasks: TaskTracker,
    /// Ends the requests whose answer is a stream (`subscriptions/listen`) when stdin closes.
    streams: CancellationToken,
}

impl Relay {
    /// One line from stdin: a message, or a batch of them (2025-03-26 allowed batches; each
    /// goes on its own).
    async fn take(&self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(Value::Array(batch)) => {
                for msg in batch {
                    self.take_one(msg).await;
                }
            }
            Ok(msg) => self.take_one(msg).await,
            Err(err) => {
                tracing::warn!(error = %err, "a line on stdin is not JSON");
                self.out.send(&jsonrpc::error(
                    Value::Null,
                    code::PARSE_ERROR,
                    format!("not JSON: {err}"),
                ));
            }
        }
    }

    async fn take_one(&self, msg: Value) {
        let method = jsonrpc::method(&msg).map(str::to_owned);
        match (jsonrpc::kind(&msg), method.as_deref()) {
            // The two messages that open a session are relayed in order, before anything that
            // follows them.
            (Kind::Request, Some("initialize")) => {
                let answer = self.remote.initialize(&msg).await;
                self.answer(&msg, answer);
            }
            (Kind::Notification, Some("notifications/initialized")) => {
                if let Err(err) = self.remote.initialized(&msg).await {
                    tracing::warn!(error = %self.remote.describe(&err), "notifications/initialized was not delivered");
                }
            }
            (Kind::Request, Some(method)) => {
                self.request(msg.clone(), method == "subscriptions/listen")
            }
            (Kind::Notification | Kind::Response, _) => {
                let (cancel, forward) = match method.as_deref() {
                    Some("notifications/cancelled") => self.cancelled(&msg),
                    _ => (None, true),
                };
                let remote = self.remote.clone();
                self.tasks.spawn(async move {
                    if forward && let Err(err) = remote.send(&msg, CLIENT_MESSAGE).await {
                        tracing::warn!(method = jsonrpc::method(&msg).unwrap_or("a response"), error = %remote.describe(&err), "not delivered");
                    }
                    // Only now: a server that saw the request's connection close first might
                    // not look for the cancellation.
                    if let Some(cancel) = cancel {
                        cancel.cancel();
                    }
                });
            }
            _ => {
                tracing::warn!("a message on stdin is not JSON-RPC 2.0");
                if let Some(id) = msg.get("id").filter(|id| id.is_string() || id.is_number()) {
                    self.out.send(&jsonrpc::error(
                        id.clone(),
                        code::INVALID_REQUEST,
                        "not a JSON-RPC 2.0 request",
                    ));
                }
            }
        }
    }

    /// A client's `notifications/cancelled`: how to drop the request it names, if it is in
    /// flight (the client ignores any answer to it now), and whether the notification goes
    /// on. A 2026-07-28 request is cancelled by closing its stream, and that era has no such
    /// notification over HTTP; a session-era one needs the notification.
    fn cancelled(&self, msg: &Value) -> (Option<CancellationToken>, bool) {
        let Some(id) = msg.pointer("/params/requestId") else {
            return (None, true);
        };
        let inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        match inflight.get(&id.to_string()) {
            Some(request) => (Some(request.cancel.clone()), !request.modern),
            None => (None, true),
        }
    }

    /// Send a request on its own task and write its answer (or why there is none).
    fn request(&self, msg: Value, endless: bool) {
        let key = msg.get("id").map(Value::to_string).unwrap_or_default();
        let cancel = if endless {
            self.streams.child_token()
        } else {
            CancellationToken::new()
        };
        let modern = remote::modern_version(&msg).is_some();
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.clone(),
                Inflight {
                    cancel: cancel.clone(),
                    modern,
                },
            );
        let (remote, out, inflight) =
            (self.remote.clone(), self.out.clone(), self.inflight.clone());
        let how = Sending {
            endless,
            ..CLIENT_MESSAGE
        };
        self.tasks.spawn(async move {
            let answer = tokio::select! {
                () = cancel.cancelled() => None,
                answer = remote.send(&msg, how) => Some(answer),
            };
            inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            if let Some(answer) = answer {
                Relay::write_answer(&remote, &out, &msg, answer);
            }
        });
    }

    fn answer(&self, msg: &Value, answer: Result<Option<Value>, UpstreamError>) {
        Self::write_answer(&self.remote, &self.out, msg, answer);
    }

    /// Write the answer to request `msg`, or a JSON-RPC error for its id that says why there
    /// is none (also on stderr).
    fn write_answer(
        remote: &Remote,
        out: &Out,
        msg: &Value,
        answer: Result<Option<Value>, UpstreamError>,
    ) {
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let method = jsonrpc::method(msg).unwrap_or_default();
        match answer {
            Ok(Some(answer)) => out.send(&answer),
            Ok(None) => {
                tracing::warn!(method, "the server sent no answer");
                out.send(&jsonrpc::error(
                    id,
                    code::UPSTREAM_UNAVAILABLE,
                    "the server sent no answer",
                ));
            }
            Err(err) => {
                let why = remote.describe(&err);
                tracing::warn!(method, error = %why, "no answer");
                let code = match err {
                    UpstreamError::Timeout { .. } => code::UPSTREAM_TIMEOUT,
                    _ => code::UPSTREAM_UNAVAILABLE,
                };
                out.send(&jsonrpc::error(id, code, why));
            }
        }
    }
}

/// How a client's message (but `initialize` and `notifications/initialized`) is sent: in the
/// session, renewing it if the server forgot it.
const CLIENT_MESSAGE: Sending = Sending {
    in_session: true,
    renew: true,
    endless: false,
};
