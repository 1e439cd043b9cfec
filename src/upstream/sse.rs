//! Legacy HTTP+SSE, client side: one long GET carries every answer; requests are POSTed to the
//! `endpoint` the stream announces first. Answers are matched to waiting callers by id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;
use tokio::sync::oneshot;

use super::UpstreamError;
use super::clients::UpstreamClient;
use super::diagnose::diagnose;
use super::streamable::{MAX_BODY, excerpt, without_bom};

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;
type Sink = Arc<dyn Fn(Value) + Send + Sync>;

/// An open SSE session with an upstream.
pub struct SseConn {
    client: UpstreamClient,
    post_url: url::Url,
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

fn key(id: &Value) -> String {
    id.to_string()
}

impl SseConn {
    /// GET the stream and wait for its `endpoint` event.
    pub async fn open(
        client: UpstreamClient,
        headers: HeaderMap,
        timeout: Duration,
        on_message: Sink,
    ) -> Result<Self, UpstreamError> {
        let url = client.url.clone();
        let open = async {
            let response = client
                .http
                .get(url.clone())
                .headers(headers.clone())
                .header(ACCEPT, HeaderValue::from_static("text/event-stream"))
                .send()
                .await
                .map_err(|e| UpstreamError::Connect {
                    diagnosis: diagnose(&e, e.is_timeout(), &client),
                })?;
            let status = response.status();
            if !status.is_success() {
                let body = response.bytes().await.unwrap_or_default();
                return Err(UpstreamError::Status {
                    status: status.as_u16(),
                    detail: excerpt(&body),
                });
            }
            let ct = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if !ct.starts_with("text/event-stream") {
                return Err(UpstreamError::Protocol {
                    detail: format!("GET {url} answered '{ct}', not an event stream"),
                });
            }
            let mut events = without_bom(super::bounded::Bounded::new(
                response.bytes_stream(),
                MAX_BODY,
            ))
            .eventsource();
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| UpstreamError::Protocol {
                    detail: format!("broken event stream ({e})"),
                })?;
                if event.event == "endpoint" {
                    let post_url =
                        url.join(event.data.trim())
                            .map_err(|e| UpstreamError::Protocol {
                                detail: format!("bad endpoint event ({e})"),
                            })?;
                    return Ok((post_url, events));
                }
            }
            Err(UpstreamError::Protocol {
                detail: "the event stream ended before an `endpoint` event".into(),
            })
        };
        let (post_url, mut events) =
            tokio::time::timeout(timeout, open)
                .await
                .map_err(|_| UpstreamError::Timeout {
                    secs: timeout.as_secs(),
                })??;
        if post_url.origin() != url.origin() {
            return Err(UpstreamError::Protocol {
                detail: format!("the endpoint event points to another origin ({post_url})"),
            });
        }

        let pending: Pending = Arc::default();
        let alive = Arc::new(AtomicBool::new(true));
        let reader = {
            let (pending, alive) = (pending.clone(), alive.clone());
            tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    let Ok(event) = event else { break };
                    if event.data.is_empty() || event.data.len() > MAX_BODY {
                        continue;
                    }
                    let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                        continue;
                    };
                    let is_answer = value.get("method").is_none()
                        && (value.get("result").is_some() || value.get("error").is_some());
                    if is_answer {
                        let waiter = value
                            .get("id")
                            .and_then(|id| pending.lock().ok()?.remove(&key(id)));
                        if let Some(tx) = waiter {
                            let _ = tx.send(value);
                        }
                    } else {
                        on_message(value);
                    }
                }
                alive.store(false, Ordering::Release);
                // Wake every waiter: their answers can no longer arrive.
                if let Ok(mut p) = pending.lock() {
                    p.clear();
                }
            })
        };
        Ok(Self {
            client,
            post_url,
            headers,
            pending,
            alive,
            reader,
        })
    }

    /// Whether the stream is still open.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Send a message; for a request, wait for its answer on the stream.
    pub async fn send(
        &self,
        msg: &Value,
        timeout: Duration,
    ) -> Result<Option<Value>, UpstreamError> {
        if !self.is_alive() {
            return Err(UpstreamError::Closed);
        }
        let expect = msg
            .get("id")
            .filter(|_| msg.get("method").is_some())
            .map(key);
        let rx = expect.as_ref().map(|k| {
            let (tx, rx) = oneshot::channel();
            if let Ok(mut p) = self.pending.lock() {
                p.insert(k.clone(), tx);
            }
            rx
        });
        let result = tokio::time::timeout(timeout, async {
            let response = self
                .client
                .http
                .post(self.post_url.clone())
                .headers(self.headers.clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .json(msg)
                .send()
                .await
                .map_err(|e| UpstreamError::Connect {
                    diagnosis: diagnose(&e, e.is_timeout(), &self.client),
                })?;
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return Err(UpstreamError::SessionExpired);
            }
            if !status.is_success() {
                let body = response.bytes().await.unwrap_or_default();
                return Err(UpstreamError::Status {
                    status: status.as_u16(),
                    detail: excerpt(&body),
                });
            }
            match rx {
                Some(rx) => rx.await.map(Some).map_err(|_| UpstreamError::Closed),
                None => Ok(None),
            }
        })
        .await;
        let outcome = match result {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout {
                secs: timeout.as_secs(),
            }),
        };
        if outcome.is_err()
            && let (Some(k), Ok(mut p)) = (expect, self.pending.lock())
        {
            p.remove(&k);
        }
        outcome
    }
}
