//! Legacy HTTP+SSE, client side: one long GET carries every answer; requests are POSTed to the
//! `endpoint` the stream announces first. Answers are matched to waiting callers by id.
//!
//! Both go through the upstream's pool (`crate::h1::client`), like Streamable HTTP: the same
//! TLS identity, the same connections, no redirects. The stream holds one pooled connection
//! for as long as it is open; the POSTs take others.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::UpstreamError;
use super::answer::{self, MAX_BODY, events};
use super::clients::UpstreamClient;
use super::pending::Pending;
use crate::h1::client::request;
use crate::h1::client::{Answered, Driven};
use crate::h1::fields::Lookup;

type Sink = Arc<dyn Fn(Value) + Send + Sync>;

/// An open SSE session with an upstream.
pub struct SseConn {
    client: UpstreamClient,
    post_url: url::Url,
    /// `post_url`'s path and query, the target of every POST.
    post_target: http::Uri,
    headers: HeaderMap,
    pending: Pending,
    alive: Arc<AtomicBool>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SseConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseConn")
            .field("post_url", &self.post_url.as_str())
            .field("alive", &self.alive.load(Ordering::Relaxed))
            .finish()
    }
}

impl Drop for SseConn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl SseConn {
    /// GET the stream and wait for its `endpoint` event.
    pub async fn open(
        client: UpstreamClient,
        headers: HeaderMap,
        timeout: Duration,
        on_message: Sink,
    ) -> Result<Self, UpstreamError> {
        let (post_url, events) = tokio::time::timeout(timeout, endpoint(&client, &headers))
            .await
            .map_err(|_| UpstreamError::Timeout {
                secs: timeout.as_secs(),
            })??;
        let post_target = super::message::target(&post_url)?;
        let pending = Pending::default();
        let alive = Arc::new(AtomicBool::new(true));
        let reader = tokio::spawn(read_answers(
            events,
            pending.clone(),
            alive.clone(),
            on_message,
        ));
        Ok(Self {
            client,
            post_url,
            post_target,
            headers,
            pending,
            alive,
            reader,
        })
    }

    /// The client it was opened with.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// Whether the stream is still open.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Send an already serialized message; for a request (`expect` is its id), wait for its
    /// answer on the stream.
    pub async fn send_raw(
        &self,
        body: &[u8],
        expect: Option<&Value>,
        timeout: Duration,
    ) -> Result<Option<Value>, UpstreamError> {
        if !self.is_alive() {
            return Err(UpstreamError::Closed);
        }
        let mut waiter = expect.map(|id| self.pending.expect(id));
        let result = super::deadline::within(timeout, async {
            let pool = &self.client.pool;
            let request = request::post_json(
                &self.post_target,
                pool.authority(),
                &self.headers,
                &[],
                body,
            );
            let Answered {
                status,
                headers,
                body,
            } = pool
                .send(&request)
                .await
                .map_err(|e| answer::send_failed(&self.client, &e))?;
            if status == StatusCode::NOT_FOUND {
                body.finish();
                return Err(UpstreamError::SessionExpired);
            }
            if !status.is_success() {
                let body = if status.is_redirection() {
                    body.finish();
                    bytes::Bytes::new()
                } else {
                    answer::read_limited(&self.client, body)
                        .await
                        .unwrap_or_default()
                };
                return Err(answer::refused(status, &headers, &body, &self.post_url));
            }
            // The answer comes on the stream; this body is an acknowledgement ("Accepted").
            body.finish();
            match waiter.as_mut() {
                // The stream ended while the call waited: the upstream had the request.
                Some(waiter) => (&mut waiter.rx)
                    .await
                    .map(Some)
                    .map_err(|_| answer::stream_ended()),
                None => Ok(None),
            }
        })
        .await;
        result.unwrap_or(Err(UpstreamError::Timeout {
            secs: timeout.as_secs(),
        }))
    }
}

/// The events of the legacy stream, each a parsed SSE event or why the stream broke.
type Events = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<eventsource_stream::Event, UpstreamError>> + Send>,
>;

/// GET the event stream and read it up to its `endpoint` event: the URL to POST to (on the
/// stream's own origin), and the rest of the stream.
async fn endpoint(
    client: &UpstreamClient,
    headers: &HeaderMap,
) -> Result<(url::Url, Events), UpstreamError> {
    let url = &client.url;
    let body = open_stream(client, headers).await?;
    let mut events: Events = Box::pin(events(body));
    while let Some(event) = events.next().await {
        let event = event?;
        if event.event == "endpoint" {
            let post_url = url
                .join(event.data.trim())
                .map_err(|e| UpstreamError::Protocol {
                    detail: format!("bad endpoint event ({e})"),
                })?;
            if post_url.origin() != url.origin() {
                return Err(UpstreamError::Protocol {
                    detail: format!("the endpoint event points to another origin ({post_url})"),
                });
            }
            return Ok((post_url, events));
        }
    }
    Err(UpstreamError::Protocol {
        detail: "the event stream ended before an `endpoint` event".into(),
    })
}

/// Send the stream's `GET`; its body, once the answer says it is an event stream.
async fn open_stream(
    client: &UpstreamClient,
    headers: &HeaderMap,
) -> Result<Driven, UpstreamError> {
    let url = &client.url;
    let target = super::message::target(url)?;
    let request = request::get_events(&target, client.pool.authority(), headers, &[]);
    let Answered {
        status,
        headers: fields,
        body,
    } = client
        .pool
        .send(&request)
        .await
        .map_err(|e| answer::send_failed(client, &e))?;
    if !status.is_success() {
        let body = if status.is_redirection() {
            body.finish();
            bytes::Bytes::new()
        } else {
            answer::read_limited(client, body).await.unwrap_or_default()
        };
        return Err(answer::refused(status, &fields, &body, url));
    }
    let content_type = fields.value(&CONTENT_TYPE).unwrap_or_default();
    if !answer::starts_with_media_type(content_type, "text/event-stream") {
        return Err(UpstreamError::Protocol {
            detail: format!(
                "GET {url} answered '{}', not an event stream",
                String::from_utf8_lossy(content_type)
            ),
        });
    }
    Ok(body)
}

/// Read the stream to its end: answers go to the callers waiting for them, anything else to
/// `on_message`. When it ends, the connection is no longer alive and every waiter is let go.
async fn read_answers(
    mut events: Events,
    pending: Pending,
    alive: Arc<AtomicBool>,
    on_message: Sink,
) {
    while let Some(event) = events.next().await {
        let Ok(event) = event else { break };
        if event.data.is_empty() || event.data.len() > MAX_BODY {
            continue;
        }
        let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        if let Some(other) = pending.deliver(value) {
            on_message(other);
        }
    }
    alive.store(false, Ordering::Release);
    pending.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::clients::ClientCache;
    use crate::upstream::identity::PathPolicy;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on 127.0.0.1 that answers every request on every connection with `answer`.
    async fn answering(answer: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while sock.read(&mut buf).await.unwrap_or(0) > 0 {
                        if sock.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}/sse")
    }

    /// What opening an event stream at `url` fails with.
    async fn open_error(url: &str) -> String {
        let client = ClientCache::new(PathPolicy::default())
            .client_for(url, &crate::store::TlsSettings::default())
            .unwrap();
        SseConn::open(
            client,
            HeaderMap::new(),
            Duration::from_secs(5),
            Arc::new(|_| {}),
        )
        .await
        .unwrap_err()
        .to_string()
    }

    #[tokio::test]
    async fn a_redirected_event_stream_is_refused_naming_only_the_origin() {
        let url = answering(
            b"HTTP/1.1 302 Found\r\nlocation: https://elsewhere.example:8443/sse?token=secret\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        let err = open_error(&url).await;
        assert_eq!(
            err,
            "the upstream answered HTTP 302: a redirect to https://elsewhere.example:8443, which mcpgw does not follow"
        );
    }

    #[tokio::test]
    async fn an_answer_that_is_not_an_event_stream_says_what_it_was() {
        let url =
            answering(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 2\r\n\r\nhi")
                .await;
        let err = open_error(&url).await;
        assert!(
            err.ends_with("answered 'text/html', not an event stream"),
            "{err}"
        );
    }
}
