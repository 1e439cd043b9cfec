//! Era bridging for 2026-07-28 clients of session-era upstreams: a session-era server asks its
//! client things in the middle of a call (`sampling/createMessage`, `elicitation/create`,
//! `roots/list`), which a 2026-07-28 client cannot answer, since its era has no server-to-client
//! requests. It gets what it understands instead: an `input_required` result naming the
//! questions, with a `requestState` that names the call, which the gateway holds open upstream.
//! When the client sends the request again with its `inputResponses` and that `requestState`,
//! the answers go to the upstream as answers to its requests, and the held call goes on (to its
//! result, or to the next round of questions).
//!
//! A call is only held once a question comes: until then it runs inline, as every call does.
//! A held call keeps running upstream under its own deadline; one whose client never comes back
//! is dropped after [`KEEP`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use super::Reply;
use crate::h1::fields::{self as names, Lookup};
use crate::hash::HashMap;
use crate::jsonrpc::{self, code};
use crate::upstream::connection::{MODERN_VERSION, MessageSink};
use crate::upstream::registry::UPSTREAM_TAG;

/// How long a held call waits for its client to come back.
const KEEP: Duration = Duration::from_secs(600);
/// Questions that come this close together go out in one round.
const GATHER: Duration = Duration::from_millis(25);
/// The prefix of every `requestState` the gateway issues.
const STATE_PREFIX: &str = "mcpgw-held.";

/// Calls held for their clients, by `requestState`.
#[derive(Default)]
pub struct HeldCalls {
    calls: Mutex<HashMap<String, Held>>,
}

impl std::fmt::Debug for HeldCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldCalls").finish_non_exhaustive()
    }
}

/// One call waiting for its client's answers.
struct Held {
    /// The call's reply, from the task that drives it.
    reply: oneshot::Receiver<Reply>,
    /// Questions the upstream asks, in order.
    asks: mpsc::UnboundedReceiver<Value>,
    /// Where the call's notifications go: the stream of the client's request waiting on it now.
    client: Arc<Mutex<Option<MessageSink>>>,
    /// Questions asked and not answered yet: the key the client sees -> (upstream, its id).
    pending: HashMap<String, (String, Value)>,
    /// When it was last handed to its client.
    parked: Instant,
}

impl HeldCalls {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn park(&self, token: String, held: Held) {
        let mut calls = self.lock();
        calls.retain(|_, h| h.parked.elapsed() < KEEP);
        calls.insert(token, held);
    }

    fn take(&self, token: &str) -> Option<Held> {
        self.lock().remove(token)
    }

    /// Whether the call `token` names is held here.
    fn holds(&self, token: &str) -> bool {
        self.lock().contains_key(token)
    }

    /// How many calls are held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no call is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a request with these headers is a 2026-07-28 call whose upstream may ask its client
/// something: one of the methods a server may ask during, without a session.
pub(super) fn candidate(headers: &impl Lookup) -> bool {
    headers.text(&names::SESSION_ID).is_none()
        && headers.text(&names::PROTOCOL_VERSION) == Some(MODERN_VERSION)
        && matches!(
            headers.text(&names::METHOD),
            Some("tools/call" | "prompts/get" | "resources/read" | "completion/complete")
        )
}

/// Serve a 2026-07-28 call: `make` runs it with the sink its upstream's messages go to. A call
/// whose upstream asks a question is held and answered with `input_required`; a request whose
/// `requestState` names a held call resumes it. `client` is where notifications go (the
/// request's event stream).
pub(super) async fn serve<W>(
    state: Arc<super::AppState>,
    client: MessageSink,
    body: Bytes,
    make: impl FnOnce(MessageSink) -> W,
) -> Reply
where
    W: std::future::Future<Output = Reply> + Send + 'static,
{
    if memchr::memmem::find(&body, STATE_PREFIX.as_bytes()).is_some()
        && let Some(resume) = Resume::of(&body)
    {
        return resume.run(state, client).await;
    }
    let (asks_tx, mut asks) = mpsc::unbounded_channel();
    let client = Arc::new(Mutex::new(Some(client)));
    let to_client = client.clone();
    let sink: MessageSink = Arc::new(move |msg: Value| {
        if msg.get(UPSTREAM_TAG).is_some() && jsonrpc::kind(&msg) == jsonrpc::Kind::Request {
            let _ = asks_tx.send(msg);
        } else if let Some(client) = to_client.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            client(msg);
        }
    });
    let mut work = Box::pin(make(sink));
    // Inline until the first question (most calls never ask one).
    let first = std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(reply) = work.as_mut().poll(cx) {
            return std::task::Poll::Ready(Ok(reply));
        }
        asks.poll_recv(cx).map(Err)
    })
    .await;
    let ask = match first {
        Ok(reply) => return reply,
        Err(Some(ask)) => ask,
        // The sink is gone, so the work is done.
        Err(None) => return work.await,
    };
    let (reply_tx, reply) = oneshot::channel();
    tokio::spawn(async move {
        let _ = reply_tx.send(work.await);
    });
    let held = Held {
        reply,
        asks,
        client,
        pending: HashMap::default(),
        parked: Instant::now(),
    };
    let id = request_id(&body);
    ask_client(&state, held, id, ask).await
}

/// The instance holding the call a request resumes, when it is another one (the balancer
/// brought the client's answers here) and the request was not passed on already.
pub(super) fn elsewhere(
    state: &super::AppState,
    body: &[u8],
    headers: &impl Lookup,
) -> Option<url::Url> {
    memchr::memmem::find(body, STATE_PREFIX.as_bytes())?;
    if crate::http::peers::was_forwarded(headers) {
        return None;
    }
    let resume = Resume::of(body)?;
    if state.held.holds(&resume.token) {
        return None;
    }
    state
        .peers
        .owner_of(resume.token.strip_prefix(STATE_PREFIX)?)
}

/// A request that resumes a held call.
struct Resume {
    id: Value,
    token: String,
    responses: Map<String, Value>,
}

impl Resume {
    fn of(body: &[u8]) -> Option<Self> {
        let msg: Value = serde_json::from_slice(body).ok()?;
        let params = msg.get("params")?;
        let token = params.get("requestState")?.as_str()?;
        token.starts_with(STATE_PREFIX).then(|| Self {
            id: msg.get("id").cloned().unwrap_or(Value::Null),
            token: token.to_owned(),
            responses: params
                .get("inputResponses")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }

    async fn run(self, state: Arc<super::AppState>, client: MessageSink) -> Reply {
        let Some(mut held) = state.held.take(&self.token) else {
            let message = "unknown or expired requestState: the held call ended; send the request again without it";
            return answer(jsonrpc::error(self.id, code::INVALID_PARAMS, message));
        };
        *held.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client);
        for (key, response) in self.responses {
            let Some((upstream, their_id)) = held.pending.remove(&key) else {
                continue;
            };
            let Some(up) = state.registry.get(&upstream) else {
                continue;
            };
            let message = json!({"jsonrpc": "2.0", "id": their_id, "result": response});
            if let Err(err) = up.respond(None, &message).await {
                tracing::warn!(%upstream, error = %err, "could not deliver a client's input upstream");
            }
        }
        tokio::select! {
            reply = &mut held.reply => match reply {
                Ok(reply) => with_id(reply, self.id),
                Err(_) => answer(jsonrpc::error(self.id, code::INTERNAL_ERROR, "the held call ended without an answer")),
            },
            Some(ask) = held.asks.recv() => ask_client(&state, held, self.id, ask).await,
        }
    }
}

/// Gather the upstream's questions (the first is `first`), hold the call, and answer `id` with
/// `input_required`.
async fn ask_client(state: &super::AppState, mut held: Held, id: Value, first: Value) -> Reply {
    let mut asks = vec![first];
    while let Ok(Some(more)) = tokio::time::timeout(GATHER, held.asks.recv()).await {
        asks.push(more);
    }
    let mut requests = Map::new();
    for mut ask in asks {
        let Some(obj) = ask.as_object_mut() else {
            continue;
        };
        let upstream = obj
            .remove(UPSTREAM_TAG)
            .and_then(|u| u.as_str().map(str::to_owned))
            .unwrap_or_default();
        let their_id = obj.remove("id").unwrap_or(Value::Null);
        let key = format!("q{}", held.pending.len() + requests.len() + 1);
        let method = obj.remove("method").unwrap_or(Value::Null);
        let params = obj.remove("params").unwrap_or_else(|| json!({}));
        requests.insert(key.clone(), json!({"method": method, "params": params}));
        held.pending.insert(key, (upstream, their_id));
    }
    *held.client.lock().unwrap_or_else(|p| p.into_inner()) = None;
    held.parked = Instant::now();
    // On a shared store the state also names this instance, for another one the client's
    // next request reaches to pass it back here ([`elsewhere`]).
    let token = format!("{STATE_PREFIX}{}", state.peers.mint(random_hex()));
    state.held.park(token.clone(), held);
    answer(jsonrpc::result(
        id,
        json!({"resultType": "input_required", "inputRequests": requests, "requestState": token}),
    ))
}

fn answer(msg: Value) -> Reply {
    Reply::Answer {
        json: serde_json::to_vec(&msg).unwrap_or_default(),
        sse_only: false,
    }
}

/// The final reply of a resumed call, under the id of the request that resumed it.
fn with_id(reply: Reply, id: Value) -> Reply {
    match reply {
        Reply::Answer { json, sse_only } => match serde_json::from_slice::<Value>(&json) {
            Ok(mut msg) => {
                msg["id"] = id;
                Reply::Answer {
                    json: serde_json::to_vec(&msg).unwrap_or_default(),
                    sse_only,
                }
            }
            Err(_) => Reply::Answer { json, sse_only },
        },
        other => other,
    }
}

fn request_id(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|m| m.get("id").cloned())
        .unwrap_or(Value::Null)
}

/// 128 random bits, as hex: a `requestState` cannot be guessed.
fn random_hex() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    hex::encode(bytes)
}
