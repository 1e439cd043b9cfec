//! Answers matched to their requests by id, for the carriers where every answer arrives on one
//! stream of incoming messages (legacy SSE, a stdio child's stdout): the caller registers its
//! request's id before sending, the stream's reader hands each message here, and what is not an
//! answer anyone waits for goes on to the connection's sink.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::oneshot;

/// `msg` serialized, and the id of its answer when it is a request (an answer or a
/// notification has none to wait for).
pub fn outgoing(msg: &Value) -> Result<(Vec<u8>, Option<&Value>), super::UpstreamError> {
    let expect = msg.get("id").filter(|_| msg.get("method").is_some());
    let body = serde_json::to_vec(msg).map_err(|e| super::UpstreamError::Protocol {
        detail: format!("cannot serialize the message ({e})"),
    })?;
    Ok((body, expect))
}

/// The requests waiting for their answers on one stream.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
}

/// A request's wait for its answer; taken back out of the table when dropped unanswered (a
/// timeout, a caller that went away).
#[derive(Debug)]
pub struct Waiter {
    pending: Pending,
    key: String,
    /// The answer, or an error once the stream ended.
    pub rx: oneshot::Receiver<Value>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.key);
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Value>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for the answer to the request `id`.
    pub fn expect(&self, id: &Value) -> Waiter {
        let key = id.to_string();
        let (tx, rx) = oneshot::channel();
        self.lock().insert(key.clone(), tx);
        Waiter {
            pending: self.clone(),
            key,
            rx,
        }
    }

    /// Hand `message` to the request it answers; `Some(message)` when it answers none (a
    /// notification, a request of the upstream's, or an answer nobody waits for any more that
    /// is dropped here: `None`).
    pub fn deliver(&self, message: Value) -> Option<Value> {
        let is_answer = message.get("method").is_none()
            && (message.get("result").is_some() || message.get("error").is_some());
        if !is_answer {
            return Some(message);
        }
        let waiter = message
            .get("id")
            .and_then(|id| self.lock().remove(&id.to_string()));
        if let Some(tx) = waiter {
            let _ = tx.send(message);
        }
        None
    }

    /// The stream ended: every waiter is let go (its answer can no longer arrive).
    pub fn close(&self) {
        self.lock().clear();
    }
}
