//! Streamable HTTP, client side: POST one JSON-RPC message, read the answer as JSON or as an
//! SSE stream that ends with it.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::UpstreamError;
use super::answer::{self, events, read_limited, starts_with_media_type};
use super::clients::UpstreamClient;
use super::message::Routing;
use super::raw::Received;
use crate::h1::client::pool::{self, Answered, Driven};
use crate::h1::client::request;
use crate::h1::fields::{Fields, Lookup};

/// A Streamable HTTP upstream's endpoint, as one connection to it sends: where every message is
/// POSTed, and the connection's headers (auth, then session and version once initialized).
#[derive(Debug)]
pub struct Endpoint {
    /// The path (and query) messages are POSTed to.
    pub target: http::Uri,
    /// The connection's headers.
    pub headers: HeaderMap,
}

/// What a POST brought back.
#[derive(Debug)]
pub struct Answer {
    /// The response to our request, if one was expected and came.
    pub response: Option<Received>,
    /// Response headers (the session id arrives here at initialize).
    pub headers: Fields,
}

/// POST `msg` and wait for the response with `msg`'s id (if it has one). Messages that arrive
/// on an SSE answer before the response are handed to `on_message`.
pub async fn post(
    client: &UpstreamClient,
    target: &http::Uri,
    headers: &HeaderMap,
    msg: &Value,
    timeout: Duration,
    on_message: &(dyn Fn(Value) + Send + Sync),
) -> Result<Answer, UpstreamError> {
    let expect_id = msg
        .get("id")
        .filter(|_| msg.get("method").is_some())
        .cloned();
    let body = Bytes::from(
        serde_json::to_vec(msg).map_err(|e| UpstreamError::Protocol {
            detail: format!("cannot serialize the request ({e})"),
        })?,
    );
    let out = Outgoing {
        headers,
        extra: &[],
        body,
        expect_id,
    };
    post_raw(client, target, out, timeout, on_message).await
}

// Where the fuzz targets and `tests/fuzz_corpus.rs` reach the event-stream pieces.
pub use super::answer::{MAX_BODY, excerpt, without_bom};
pub use crate::h1::client::request::Extra;

/// A message ready to POST.
#[derive(Debug)]
pub struct Outgoing<'a> {
    /// The connection's headers (auth, session, version).
    pub headers: &'a HeaderMap,
    /// Headers of this message only (2026-07-28 routing headers).
    pub extra: &'a [Extra<'a>],
    /// The serialized JSON-RPC message.
    pub body: Bytes,
    /// The id of the answer to wait for; `None` for notifications and responses.
    pub expect_id: Option<Value>,
}

/// POST an already serialized message; see [`post`].
pub async fn post_raw(
    client: &UpstreamClient,
    target: &http::Uri,
    out: Outgoing<'_>,
    timeout: Duration,
    on_message: &(dyn Fn(Value) + Send + Sync),
) -> Result<Answer, UpstreamError> {
    let pool = &client.pool;
    let request = request::post_json(target, pool.authority(), out.headers, out.extra, &out.body);
    let send = async {
        let response = pool
            .send(&request)
            .await
            .map_err(|e| answer::send_failed(client, &e))?;
        read_answer(
            client,
            response,
            out.expect_id.as_ref(),
            on_message,
            out.headers,
        )
        .await
    };
    super::deadline::within(timeout, send)
        .await
        .ok_or(UpstreamError::Timeout {
            secs: timeout.as_secs(),
        })?
}

/// Whether a refusal says the session we named is gone, though not with the 404 the spec asks
/// for: some servers answer 400 naming the session (the official TypeScript SDK's "Bad Request:
/// No valid session ID provided" after a restart). A 400 is a refusal, so the request was not
/// run and may be sent again on a new session.
fn session_refused(status: StatusCode, body: &[u8], sent_headers: &HeaderMap) -> bool {
    status == StatusCode::BAD_REQUEST
        && sent_headers.contains_key(&crate::h1::fields::SESSION_ID)
        && memchr::memmem::find(&body.to_ascii_lowercase(), b"session").is_some()
}

/// Read the answer to a POST: the response with `expect_id` (JSON, or the event of an SSE
/// stream that carries it, the events before it going to `on_message`), none for a
/// notification or response, or why there is none. `sent_headers` are the request's (a 404 on
/// a session id is the session's end).
pub async fn read_answer(
    client: &UpstreamClient,
    response: Answered,
    expect_id: Option<&Value>,
    on_message: &(dyn Fn(Value) + Send + Sync),
    sent_headers: &HeaderMap,
) -> Result<Answer, UpstreamError> {
    let Answered {
        status,
        headers,
        body,
    } = response;
    if status == StatusCode::NOT_FOUND && sent_headers.contains_key(&crate::h1::fields::SESSION_ID)
    {
        body.finish();
        return Err(UpstreamError::SessionExpired);
    }
    if status.is_redirection() {
        body.finish();
        return Err(answer::refused(status, &headers, b"", &client.url));
    }
    if !status.is_success() {
        let body = read_limited(client, body).await.unwrap_or_default();
        if session_refused(status, &body, sent_headers) {
            return Err(UpstreamError::SessionExpired);
        }
        // A JSON-RPC error body on a 4xx is still an answer (e.g. -32022 on HTTP 400).
        if let Ok(value) = serde_json::from_slice::<Value>(&body)
            && value.get("error").is_some()
            && value.get("jsonrpc").is_some()
        {
            return Ok(Answer {
                response: Some(Received::Value(value)),
                headers,
            });
        }
        return Err(answer::refused(status, &headers, &body, &client.url));
    }
    let content_type = headers.value(&CONTENT_TYPE).unwrap_or_default();
    let is = |media_type| starts_with_media_type(content_type, media_type);
    if expect_id.is_none() {
        // A notification or response we sent: 202 with no body is the norm.
        body.finish();
        return Ok(Answer {
            response: None,
            headers,
        });
    }
    if is("application/json") {
        // Parsed by whoever needs it, as a tree or (forwarded calls) only at its top level.
        let body = read_limited(client, body).await?;
        return Ok(Answer {
            response: Some(Received::Json(body)),
            headers,
        });
    }
    if is("text/event-stream") {
        let mut events = events(body);
        while let Some(event) = events.next().await {
            let event = event?;
            if event.data.is_empty() {
                continue;
            }
            if event.data.len() > MAX_BODY {
                return Err(UpstreamError::Protocol {
                    detail: "an event exceeds the size limit".into(),
                });
            }
            let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                return Err(UpstreamError::Protocol {
                    detail: "an event's data is not JSON".into(),
                });
            };
            let is_answer = value.get("method").is_none()
                && (value.get("result").is_some() || value.get("error").is_some());
            if is_answer && value.get("id") == expect_id {
                // The stream normally ends right after the answer; its connection is reused
                // once it has.
                pool::finish_events(Box::pin(events));
                return Ok(Answer {
                    response: Some(Received::Value(value)),
                    headers,
                });
            }
            on_message(value);
        }
        return Err(answer::stream_ended());
    }
    let shown = String::from_utf8_lossy(content_type);
    Err(UpstreamError::Protocol {
        detail: format!(
            "expected application/json or text/event-stream, got '{}'",
            if content_type.is_empty() {
                "no content type"
            } else {
                &shown
            }
        ),
    })
}

/// How one `GET` stream of [`listen`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Listened {
    /// The upstream offers no such stream (405, or not an event stream): nothing to retry.
    Unsupported,
    /// Refused with this 4xx status.
    Refused(StatusCode),
    /// The stream ended or broke: open it again.
    Ended,
}

/// The standing `GET` stream of a session-era upstream: what it sends outside any request
/// (resource updates, list changes) goes to `on_message`, until `stop`. A stream that ends or
/// breaks is opened again, after a pause that grows with each failure in a row (1 s to 30 s).
/// An upstream that offers none (405, or any 4xx before a stream was ever opened: some
/// servers answer a `GET` they do not serve with 400 or 404) is not asked again; a 404 after
/// a stream was open means the session is gone, and the sink is told ([`SESSION_GONE`]) so
/// that its owner reconnects.
///
/// [`SESSION_GONE`]: super::message::SESSION_GONE
pub async fn listen(
    client: UpstreamClient,
    target: http::Uri,
    headers: HeaderMap,
    on_message: super::message::MessageSink,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut failures = 0u32;
    let mut opened = false;
    // The id of the last event that came, sent back on a reconnect so that a server that keeps
    // its events replays those sent meanwhile.
    let mut last_id: Option<String> = None;
    loop {
        let resume: Vec<Extra<'_>> = (last_id.iter())
            .map(|id| {
                (
                    &crate::h1::fields::LAST_EVENT_ID,
                    Cow::Borrowed(id.as_str()),
                )
            })
            .collect();
        let authority = client.pool.authority();
        let request = request::get_events(&target, authority, &headers, &resume);
        let stream = listen_once(&client, &request, &*on_message, &mut opened, &mut last_id);
        let listened = tokio::select! {
            () = stop.cancelled() => return,
            listened = stream => listened,
        };
        match listened {
            Ok(Listened::Unsupported) => {
                tracing::debug!(url = %client.url, "the upstream offers no GET stream");
                return;
            }
            Ok(Listened::Refused(status)) if !opened => {
                tracing::debug!(url = %client.url, %status, "the upstream offers no GET stream");
                return;
            }
            Ok(Listened::Refused(StatusCode::NOT_FOUND)) => {
                on_message(
                    serde_json::json!({"jsonrpc": "2.0", "method": super::message::SESSION_GONE}),
                );
                return;
            }
            Ok(Listened::Ended) => failures = 0,
            Ok(Listened::Refused(status)) => {
                failures = failures.saturating_add(1);
                tracing::debug!(url = %client.url, %status, "the upstream refused its GET stream");
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                tracing::debug!(url = %client.url, error = %err, "the upstream's GET stream broke");
            }
        }
        let pause = backoff(failures);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Send the request of a standing stream: its body when the answer is an event stream, else
/// why there is none (405 or not an event stream: not offered; another 4xx: refused).
async fn open_stream(
    client: &UpstreamClient,
    request: &[u8],
) -> Result<Result<Driven, Listened>, UpstreamError> {
    let response = client
        .pool
        .send(request)
        .await
        .map_err(|e| answer::send_failed(client, &e))?;
    let Answered {
        status,
        headers,
        body,
    } = response;
    match status {
        StatusCode::METHOD_NOT_ALLOWED => return Ok(Err(Listened::Unsupported)),
        status if status.is_client_error() => return Ok(Err(Listened::Refused(status))),
        status if !status.is_success() => {
            return Err(answer::refused(status, &headers, b"", &client.url));
        }
        _ => {}
    }
    let event_stream = headers
        .text(&CONTENT_TYPE)
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/event-stream"));
    // A JSON answer (an error, or an immediate end) is not a stream.
    Ok(if event_stream {
        Ok(body)
    } else {
        Err(Listened::Unsupported)
    })
}

/// One `GET` stream, read to its end; `opened` is set once a stream was open, `last_id` to
/// each event's id as it comes.
async fn listen_once(
    client: &UpstreamClient,
    request: &[u8],
    on_message: &(dyn Fn(Value) + Send + Sync),
    opened: &mut bool,
    last_id: &mut Option<String>,
) -> Result<Listened, UpstreamError> {
    let body = match open_stream(client, request).await? {
        Ok(body) => body,
        Err(refused) => return Ok(refused),
    };
    *opened = true;
    // Bounded per event, not in all: the stream is meant to stay open.
    let mut events = events(body);
    while let Some(event) = events.next().await {
        let event = event?;
        if !event.id.is_empty() && crate::h1::fields::can_carry(&event.id) {
            *last_id = Some(event.id);
        }
        if event.data.is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&event.data) {
            Ok(message) => on_message(message),
            Err(_) => {
                tracing::debug!(url = %client.url, "an event's data on the GET stream is not JSON")
            }
        }
    }
    Ok(Listened::Ended)
}

/// What a 2026-07-28 `subscriptions/listen` to an upstream asks for, but for the URIs.
#[derive(Debug)]
pub struct ListenAsk {
    /// The list-change flags of the filter (what the upstream announced).
    pub notifications: serde_json::Map<String, Value>,
    /// The request's `_meta` envelope.
    pub meta: Value,
    /// Its routing headers.
    pub extra: Routing<'static>,
}

/// The `subscriptions/listen` stream of a 2026-07-28 upstream: what it sends on it (list
/// changes, updates of the URIs in `uris`) goes to `on_message` without the stream's
/// `_meta` stamp, until `stop`. When `uris` change, a stream asking for the new set is opened,
/// and the one it replaces is closed only once the new one is acknowledged (or fails), so that
/// no update falls between the two. A stream that ends or breaks is opened again with a
/// backoff (1 s doubling to 30 s); one refused before it was ever acknowledged (the upstream
/// does not serve it after all) is asked again only when the URIs change.
pub async fn listen_modern(
    client: UpstreamClient,
    target: http::Uri,
    headers: HeaderMap,
    ask: ListenAsk,
    mut uris: tokio::sync::watch::Receiver<Vec<String>>,
    on_message: super::message::MessageSink,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut failures = 0u32;
    let mut n = 0u64;
    // The stream being replaced, kept until its successor is acknowledged.
    let mut previous: Option<tokio_util::sync::CancellationToken> = None;
    let mut ever_acknowledged = false;
    loop {
        n += 1;
        let wanted = uris.borrow_and_update().clone();
        let request = listen_request(&client, &target, &headers, &ask, n, wanted);
        let this = stop.child_token();
        let (acked_tx, mut acked) = tokio::sync::oneshot::channel();
        let mut stream = tokio::spawn({
            let (client, on_message, this) = (client.clone(), on_message.clone(), this.clone());
            async move {
                tokio::select! {
                    () = this.cancelled() => Ok(Listened::Ended),
                    listened = listen_modern_once(&client, &request, &*on_message, acked_tx) => listened,
                }
            }
        });
        // Whether the acknowledgement came; whether its channel is settled (it came, or the
        // stream ended without it).
        let (mut acknowledged, mut settled) = (false, false);
        let next = loop {
            tokio::select! {
                () = stop.cancelled() => return,
                ack = &mut acked, if !settled => {
                    settled = true;
                    if ack.is_ok() {
                        acknowledged = true;
                        failures = 0;
                        ever_acknowledged = true;
                        if let Some(old) = previous.take() {
                            old.cancel();
                        }
                    }
                }
                changed = uris.changed() => {
                    if changed.is_err() {
                        // The connection is gone.
                        this.cancel();
                        return;
                    }
                    // An unacknowledged stream is no use to keep; an acknowledged one is kept
                    // until the next is.
                    if acknowledged {
                        if let Some(old) = previous.replace(this) {
                            old.cancel();
                        }
                    } else {
                        this.cancel();
                    }
                    break Next::Now;
                }
                listened = &mut stream => {
                    if let Some(old) = previous.take() {
                        old.cancel();
                    }
                    match listened {
                        Ok(Ok(Listened::Ended)) if acknowledged => failures = 0,
                        Ok(Ok(refused @ (Listened::Unsupported | Listened::Refused(_))))
                            if !ever_acknowledged =>
                        {
                            tracing::debug!(url = %client.url, outcome = ?refused, "the upstream does not serve subscriptions/listen");
                            break Next::OnChange;
                        }
                        Ok(Ok(other)) => {
                            failures = failures.saturating_add(1);
                            tracing::debug!(url = %client.url, outcome = ?other, "the upstream's listen stream ended");
                        }
                        Ok(Err(err)) => {
                            failures = failures.saturating_add(1);
                            tracing::debug!(url = %client.url, error = %err, "the upstream's listen stream broke");
                        }
                        Err(_) => return,
                    }
                    break Next::After(backoff(failures));
                }
            }
        };
        match next {
            Next::Now => {}
            Next::After(pause) => tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            },
            Next::OnChange => tokio::select! {
                () = stop.cancelled() => return,
                changed = uris.changed() => if changed.is_err() { return },
            },
        }
    }
}

/// The bytes of `subscriptions/listen` request number `n`: `ask`'s list changes, and updates
/// of `wanted`.
fn listen_request(
    client: &UpstreamClient,
    target: &http::Uri,
    headers: &HeaderMap,
    ask: &ListenAsk,
    n: u64,
    wanted: Vec<String>,
) -> Vec<u8> {
    let mut filter = ask.notifications.clone();
    if !wanted.is_empty() {
        filter.insert("resourceSubscriptions".into(), serde_json::json!(wanted));
    }
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": format!("mcpgw-listen-{n}"), "method": "subscriptions/listen",
        "params": {"notifications": filter, "_meta": ask.meta},
    })
    .to_string();
    request::post_json(
        target,
        client.pool.authority(),
        headers,
        &ask.extra.extras(),
        body.as_bytes(),
    )
}

/// The pause before a standing stream is opened again after `failures` failures in a row:
/// 1 s doubling to 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1)
        .saturating_mul(1 << failures.min(5))
        .min(Duration::from_secs(30))
}

/// When [`listen_modern`] opens its next stream.
enum Next {
    Now,
    After(Duration),
    OnChange,
}

/// One `subscriptions/listen` stream, read to its end: its acknowledgement goes to `acked`,
/// the rest to `on_message`.
async fn listen_modern_once(
    client: &UpstreamClient,
    request: &[u8],
    on_message: &(dyn Fn(Value) + Send + Sync),
    acked: tokio::sync::oneshot::Sender<()>,
) -> Result<Listened, UpstreamError> {
    let body = match open_stream(client, request).await? {
        Ok(body) => body,
        Err(refused) => return Ok(refused),
    };
    let mut acked = Some(acked);
    let mut events = events(body);
    while let Some(event) = events.next().await {
        let event = event?;
        if event.data.is_empty() {
            continue;
        }
        let Ok(mut message) = serde_json::from_str::<Value>(&event.data) else {
            tracing::debug!(url = %client.url, "an event's data on the listen stream is not JSON");
            continue;
        };
        match crate::jsonrpc::method(&message) {
            Some("notifications/subscriptions/acknowledged") => {
                if let Some(acked) = acked.take() {
                    let _ = acked.send(());
                }
            }
            Some(_) => {
                if let Some(params) = message.get_mut("params") {
                    super::message::strip_envelope(params);
                }
                on_message(message);
            }
            // The request's answer: the stream's end (a result), or its refusal.
            None => break,
        }
    }
    Ok(Listened::Ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::clients::ClientCache;
    use crate::upstream::identity::PathPolicy;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_redirect_is_not_followed_and_names_only_the_origin() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock
                    .write_all(b"HTTP/1.1 307 Temporary Redirect\r\nlocation: /other?key=secret\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let url = format!("http://{addr}/mcp");
        let client = ClientCache::new(PathPolicy::default())
            .client_for(&url, &crate::store::TlsSettings::default())
            .unwrap();
        let target = super::super::message::target(&client.url).unwrap();
        let msg = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
        let err = post(
            &client,
            &target,
            &HeaderMap::new(),
            &msg,
            Duration::from_secs(5),
            &|_| {},
        )
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "the upstream answered HTTP 307: a redirect to http://{addr}, which mcpgw does not follow"
            )
        );
    }
}
