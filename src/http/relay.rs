//! Messages that cross the gateway while a request is being worked on upstream: what the
//! upstream sends the client meanwhile (progress, logging, and requests such as sampling, whose
//! ids are replaced by the gateway's own), and the client's answers to those requests, routed
//! back to the upstream that asked.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::task::AtomicWaker;
use serde_json::Value;

use super::AppState;
use crate::jsonrpc::{self, Kind};

/// Prepare a message an upstream sent during a request for the client: a request (sampling,
/// elicitation) gets an id of the gateway's own, remembered with the upstream and its id, so
/// that the client's answer can be routed back and never collides with another client's.
pub(super) fn relay_to_client(state: &AppState, mut msg: Value) -> Value {
    use std::sync::atomic::Ordering;
    let Some(obj) = msg.as_object_mut() else {
        return msg;
    };
    let upstream = obj.remove(crate::upstream::registry::UPSTREAM_TAG);
    if let (Some(Value::String(upstream)), Some(id)) = (upstream, obj.get("id").cloned()) {
        // On a shared store the id also says which instance asked, so that an answer the
        // balancer takes to another instance is passed back here ([`super::peers`]).
        let ours = state.peers.mint(format!(
            "mcpgw-{}",
            state.next_client_request.fetch_add(1, Ordering::Relaxed)
        ));
        state
            .client_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ours.clone(), (upstream, id));
        obj.insert("id".into(), Value::String(ours));
    }
    msg
}

/// A client's answer to a request an upstream made: back to that upstream with its own id, on
/// the upstream session of `session` (the client's) that asked. `None` when the message is
/// not such an answer.
pub(super) async fn relay_to_upstream(
    state: &AppState,
    session: Option<&crate::session::SessionKey>,
    msg: &Value,
) -> Option<Response> {
    if jsonrpc::kind(msg) != Kind::Response {
        return None;
    }
    let ours = msg.get("id")?.as_str()?;
    let (upstream, their_id) = state
        .client_requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(ours)?;
    let Some(up) = state.registry.get(&upstream) else {
        return Some(StatusCode::ACCEPTED.into_response());
    };
    let mut answer = msg.clone();
    answer["id"] = their_id;
    if let Err(err) = up.respond(session, &answer).await {
        tracing::warn!(upstream = %upstream, error = %err, "could not deliver a client's answer upstream");
    }
    Some(StatusCode::ACCEPTED.into_response())
}

/// The instance that asked the question `msg` answers, when it is another one (the balancer
/// brought the client's answer here) and the answer was not passed on already.
pub(super) fn answer_for_peer(
    state: &AppState,
    msg: &Value,
    headers: &impl crate::h1::fields::Lookup,
) -> Option<url::Url> {
    if jsonrpc::kind(msg) != Kind::Response {
        return None;
    }
    if super::peers::was_forwarded(headers) {
        return None;
    }
    state.peers.owner_of(msg.get("id")?.as_str()?)
}

/// Run `work` (given the sink for what its upstream sends meanwhile) and answer the way
/// Streamable HTTP allows: `Ok` with the work's output when the upstream just answered, or,
/// when a notification came first, `Err` with an SSE response that relays every notification
/// and then the answer (`into_value` of the output).
///
/// Most upstreams just answer, so the work is polled right here: no task, no channel. Only
/// when a notification arrives first does the answer become a stream; the work then moves to
/// a task of its own, so that it finishes (and leaves no request in flight upstream) even if
/// the client goes away mid-stream.
pub(super) async fn answer_or_stream<A, W>(
    state: Arc<AppState>,
    work: impl FnOnce(crate::upstream::connection::MessageSink) -> W,
    into_value: fn(A) -> Option<Value>,
) -> Result<A, Response>
where
    A: Send + 'static,
    W: std::future::Future<Output = A> + Send + 'static,
{
    use axum::response::sse::{Event, Sse};
    let relay = Arc::new(Relay::new(state));
    let sink_relay = relay.clone();
    let sink: crate::upstream::connection::MessageSink =
        Arc::new(move |m: Value| sink_relay.notice(m));
    // Boxed, so that it can move to a task mid-way.
    let mut work: std::pin::Pin<Box<dyn std::future::Future<Output = A> + Send>> =
        Box::pin(work(sink));
    // `Some(output)` when the work finished, `None` when a notification came first.
    let ended = std::future::poll_fn(|cx| {
        if let Poll::Ready(answer) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(answer));
        }
        relay.register(cx.waker());
        if relay.has_notices() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await;
    match ended {
        Some(answer) if !relay.has_notices() => return Ok(answer),
        // Notifications and the answer came together.
        Some(answer) => relay.finish(into_value(answer)),
        None => {
            let relay = relay.clone();
            tokio::spawn(async move { relay.finish(into_value(work.await)) });
        }
    }
    let events = futures_util::stream::poll_fn(move |cx| relay.poll_next(cx));
    let events = futures_util::StreamExt::map(events, |v| {
        Ok::<_, std::convert::Infallible>(Event::default().event("message").data(v.to_string()))
    });
    Err(Sse::new(events).into_response())
}

/// Notifications an upstream sent while working on one request, relayed to the client that
/// made it, then the answer. Filled by the request's sink (possibly from another task, e.g. an
/// upstream's SSE reader) and drained by whoever waits for the answer.
pub(super) struct Relay {
    state: Arc<AppState>,
    queue: Mutex<RelayQueue>,
    /// The task waiting: the handler until the first notification, then the SSE body.
    waker: AtomicWaker,
}

#[derive(Default)]
struct RelayQueue {
    items: VecDeque<Value>,
    /// The answer (if any) is queued: nothing follows.
    done: bool,
}

impl Relay {
    pub(super) fn new(state: Arc<AppState>) -> Self {
        Self {
            state,
            queue: Mutex::default(),
            waker: AtomicWaker::new(),
        }
    }

    /// Wake `waker` when a message is queued (the handler polls the work itself until then).
    pub(super) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, RelayQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sink: one message the upstream sent while working.
    pub(super) fn notice(&self, msg: Value) {
        let msg = relay_to_client(&self.state, msg);
        self.queue().items.push_back(msg);
        self.waker.wake();
    }

    pub(super) fn has_notices(&self) -> bool {
        !self.queue().items.is_empty()
    }

    /// The work is over: queue its answer last.
    pub(super) fn finish(&self, answer: Option<Value>) {
        let mut queue = self.queue();
        queue.items.extend(answer);
        queue.done = true;
        drop(queue);
        self.waker.wake();
    }

    /// The next message for the SSE stream; `None` once the answer went out.
    pub(super) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        // Register before looking, so a message queued in between still wakes us.
        self.waker.register(cx.waker());
        let mut queue = self.queue();
        match queue.items.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if queue.done => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}
