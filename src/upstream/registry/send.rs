//! How one request goes upstream: on the upstream's own connection or on the caller's own
//! upstream session ([`super::own`]), sent once more on a new session when the upstream says
//! the old one is gone (it was not run), and, for a session-era client of a 2026-07-28
//! upstream, with the upstream's questions (`input_required`) put to the client as requests
//! and the request sent again with the answers (era bridging).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::super::UpstreamError;
use super::super::connection::{Caller, Connection, Era};
use super::super::raw::{RawParams, Received};
use super::{Upstream, own};

use crate::session::SessionKey;

/// Rounds of questions one request may take before the gateway gives up on it.
const MAX_ROUNDS: usize = 8;

/// Ids of the questions the gateway puts to clients for their upstreams.
static NEXT_QUESTION: AtomicU64 = AtomicU64::new(1);

/// What a request carries: params as a tree, or (forwarded calls) copied as they came.
pub(super) enum Payload<'p, 'a> {
    Tree(&'p mut Option<Value>),
    Raw(&'p RawParams<'a>),
}

/// Send one request on `conn` for `caller`.
pub(super) async fn send_on(
    conn: &Connection,
    method: &str,
    payload: &mut Payload<'_, '_>,
    timeout: Duration,
    caller: &Caller,
) -> Result<Received, UpstreamError> {
    match payload {
        Payload::Tree(params) => conn
            .request_with(method, params, timeout, caller)
            .await
            .map(Received::Value),
        Payload::Raw(params) => conn.request_raw(method, params, timeout, caller).await,
    }
}

impl Upstream {
    /// Send on the upstream's own connection: reconnected and sent once more if the upstream
    /// says the session is gone (the request was not run).
    pub(super) async fn send_shared(
        self: &Arc<Self>,
        caller: &Caller,
        method: &str,
        payload: &mut Payload<'_, '_>,
        timeout: Duration,
    ) -> Result<Received, UpstreamError> {
        let conn = self.connection().await?;
        match self
            .send_bridged(&conn, method, payload, timeout, caller)
            .await
        {
            Err(error @ (UpstreamError::SessionExpired | UpstreamError::Closed)) => {
                if matches!(error, UpstreamError::SessionExpired) {
                    self.session_lost(None);
                }
                self.invalidate();
                let conn = self.connection().await?;
                self.send_bridged(&conn, method, payload, timeout, caller)
                    .await
            }
            Err(
                error @ (UpstreamError::Connect { .. }
                | UpstreamError::ClosedDuringCall { .. }
                | UpstreamError::Exited { .. }),
            ) => {
                // The transport failed (or the upstream died on the call, which it may have
                // run: not sent again): the next call reconnects, through the backoff, instead
                // of every call dialling a dead upstream.
                self.invalidate();
                Err(error)
            }
            other => other,
        }
    }

    /// Send on the caller's own upstream session (in `slot`), opened if needed; once more on a
    /// new session if the upstream says the session is gone (a restarted upstream).
    pub(super) async fn send_own(
        self: &Arc<Self>,
        slot: &Arc<own::Slot>,
        caller: &Caller,
        method: &str,
        payload: &mut Payload<'_, '_>,
        timeout: Duration,
    ) -> Result<Received, UpstreamError> {
        let Some(owner) = caller.owner.as_ref() else {
            return self.send_shared(caller, method, payload, timeout).await;
        };
        let Some(conn) = self.own_connection(slot, owner).await? else {
            return self.send_shared(caller, method, payload, timeout).await;
        };
        match self
            .send_bridged(&conn, method, payload, timeout, caller)
            .await
        {
            Err(UpstreamError::SessionExpired | UpstreamError::Closed) => {
                self.session_lost(Some(&owner.key));
                slot.invalidate();
                match self.own_connection(slot, owner).await? {
                    Some(conn) => {
                        self.send_bridged(&conn, method, payload, timeout, caller)
                            .await
                    }
                    None => self.send_shared(caller, method, payload, timeout).await,
                }
            }
            Err(
                error @ (UpstreamError::Connect { .. }
                | UpstreamError::ClosedDuringCall { .. }
                | UpstreamError::Exited { .. }),
            ) => {
                slot.invalidate();
                Err(error)
            }
            other => other,
        }
    }

    /// The upstream said a session is gone (it restarted, or expired the session): logged and
    /// counted; the caller opens a new one and sends the request again, which was not run.
    fn session_lost(&self, session: Option<&SessionKey>) {
        let name = self.name();
        match session {
            Some(session) => {
                tracing::info!(upstream = %name, %session, "the upstream lost a client's session (restarted?); initializing a new one")
            }
            None => {
                tracing::info!(upstream = %name, "the upstream lost the gateway's session (restarted?); initializing a new one")
            }
        }
        if let Some(registry) = self.registry.upgrade() {
            registry.metrics.upstream_session_lost(&name);
        }
    }

    /// [`send_on`], and then, while a 2026-07-28 upstream answers a session-era client with
    /// `input_required`, ask the client each question (as the server would have asked it in
    /// the session era) and send the request again with `inputResponses` and the upstream's
    /// `requestState`.
    async fn send_bridged(
        self: &Arc<Self>,
        conn: &Connection,
        method: &str,
        payload: &mut Payload<'_, '_>,
        timeout: Duration,
        caller: &Caller,
    ) -> Result<Received, UpstreamError> {
        let received = send_on(conn, method, payload, timeout, caller).await?;
        if !caller.asks_as_requests
            || caller.sink.is_none()
            || !matches!(conn.era, Era::Stateless { .. })
        {
            return Ok(received);
        }
        // Boxed: the rounds are rare, and their state would otherwise enlarge every request's
        // future (docs/PERFORMANCE.md, issue 19).
        Box::pin(self.bridge(conn, method, payload, timeout, caller, received)).await
    }

    /// The rounds of [`Self::send_bridged`], from the upstream's first answer `received`.
    async fn bridge(
        self: &Arc<Self>,
        conn: &Connection,
        method: &str,
        payload: &mut Payload<'_, '_>,
        timeout: Duration,
        caller: &Caller,
        mut received: Received,
    ) -> Result<Received, UpstreamError> {
        for _ in 0..MAX_ROUNDS {
            if let Received::Json(body) = &received
                && memchr::memmem::find(body, b"input_required").is_none()
            {
                return Ok(received);
            }
            let answer = received.into_value()?;
            let Some(result) = answer
                .get("result")
                .filter(|r| r.get("resultType").and_then(Value::as_str) == Some("input_required"))
            else {
                return Ok(Received::Value(answer));
            };
            let mut responses = Map::new();
            let requests = result.get("inputRequests").and_then(Value::as_object);
            for (key, request) in requests.into_iter().flatten() {
                let asked = request
                    .get("method")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let params = request.get("params").cloned().unwrap_or_else(|| json!({}));
                responses.insert(
                    key.clone(),
                    self.ask_client(caller, asked, params, timeout).await?,
                );
            }
            let mut params = payload_tree(payload)?;
            if let Some(obj) = params.as_mut().and_then(Value::as_object_mut) {
                obj.insert("inputResponses".into(), Value::Object(responses));
                match result.get("requestState") {
                    Some(state) => obj.insert("requestState".into(), state.clone()),
                    None => obj.remove("requestState"),
                };
            }
            let mut next = Payload::Tree(&mut params);
            received = send_on(conn, method, &mut next, timeout, caller).await?;
        }
        Err(UpstreamError::Protocol {
            detail: format!("{method} still needed input after {MAX_ROUNDS} rounds of questions"),
        })
    }

    /// Put a question of this upstream's to the caller's client as a request, and wait for its
    /// answer (routed back through [`Upstream::respond`]).
    async fn ask_client(
        &self,
        caller: &Caller,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        let Some(sink) = &caller.sink else {
            return Err(UpstreamError::Protocol {
                detail: format!(
                    "the upstream asked {method}, and the client has no stream to ask it on"
                ),
            });
        };
        let id = format!("mcpgw-q{}", NEXT_QUESTION.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.questions().insert(id.clone(), tx);
        sink(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let answer = tokio::time::timeout(timeout, rx).await;
        self.questions().remove(&id);
        let answer = match answer {
            Ok(Ok(answer)) => answer,
            _ => {
                return Err(UpstreamError::Timeout {
                    secs: timeout.as_secs(),
                });
            }
        };
        match (answer.get("result"), answer.get("error")) {
            (Some(result), _) => Ok(result.clone()),
            (None, error) => Err(UpstreamError::Protocol {
                detail: format!(
                    "the client refused the upstream's {method}: {}",
                    error.cloned().unwrap_or(Value::Null)
                ),
            }),
        }
    }

    /// Whether `msg` answers a question the gateway put to a client for this upstream; if so it
    /// is taken (see [`Upstream::respond`]).
    pub(super) fn answers_question(&self, msg: &Value) -> bool {
        let Some(id) = msg.get("id").and_then(Value::as_str) else {
            return false;
        };
        match self.questions().remove(id) {
            Some(waiting) => {
                let _ = waiting.send(msg.clone());
                true
            }
            None => false,
        }
    }
}

/// A request's params as a tree, to send it again with more in them.
fn payload_tree(payload: &Payload<'_, '_>) -> Result<Option<Value>, UpstreamError> {
    match payload {
        Payload::Tree(params) => Ok((**params).clone()),
        Payload::Raw(params) => raw_tree(params).map(Some),
    }
}

fn raw_tree(params: &RawParams<'_>) -> Result<Value, UpstreamError> {
    let mut text = Vec::new();
    params.write(&mut text, None);
    serde_json::from_slice(&text).map_err(|e| UpstreamError::Protocol {
        detail: format!("cannot send the request again ({e})"),
    })
}
