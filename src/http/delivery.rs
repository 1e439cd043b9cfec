//! Server-to-client messages outside a request (resource updates, list changes, listen
//! acknowledgements), delivered to the session a [`SessionKey`] names on whichever transport it
//! lives, and the clean-up of subscriptions whose sessions are gone.

use serde_json::Value;

use super::AppState;
use crate::session::SessionKey;
use crate::upstream::connection::Caller;

/// Queue a server-to-client notification for the session `key` names, on whichever transport
/// it is: `false` when that session is gone.
pub fn notify_session(state: &AppState, key: &SessionKey, msg: &Value) -> bool {
    match key {
        SessionKey::Sse(id) => state.sse.notify(id, msg),
        SessionKey::Ws(n) => state.ws_outlets.notify(*n, msg),
        SessionKey::Streamable(id) => {
            let queued = state.sessions.notify(id, msg);
            if queued && !state.sessions.streaming(id) {
                super::portable::relay_event(state, id, msg);
            }
            queued
        }
        SessionKey::Listen(n) => state.listens.notify(state, *n, msg),
    }
}

/// Whether a notification offered to session `session`'s queue was taken: a full queue (a
/// client not reading) drops this one notification and keeps the session; a closed one means
/// the session is gone.
pub(super) fn offered<T>(
    sent: Result<(), tokio::sync::mpsc::error::TrySendError<T>>,
    session: &dyn std::fmt::Display,
) -> bool {
    match sent {
        Ok(()) => true,
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(%session, "the client is not reading its stream; a notification was dropped");
            true
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Whether the session `key` names is still open, on whichever transport it is.
fn session_open(state: &AppState, key: &SessionKey) -> bool {
    match key {
        SessionKey::Sse(id) => state.sse.contains(id),
        SessionKey::Ws(n) => state.ws_outlets.contains(*n),
        SessionKey::Streamable(id) => state.sessions.contains(id),
        SessionKey::Listen(n) => state.listens.contains(*n),
    }
}

/// Clean up after the session `key` names, which ended (closed or disconnected): as
/// [`sessions_ended`], but its profile and upstream sessions are found by its key rather than by
/// a walk over every session's (a `DELETE` among 10,000 sessions stays cheap).
pub fn session_ended(state: &AppState, key: &SessionKey) {
    state.clients.remove(key);
    for up in state.registry.list() {
        up.end_client_session(key);
    }
    prune_subscriptions(state);
}

/// Clean up after sessions that ended (closed, expired, disconnected): their client profiles
/// go, their own upstream sessions are ended, and their resource subscriptions dropped (an
/// upstream left with no subscriber for a URI is told to unsubscribe), in the background.
pub fn sessions_ended(state: &AppState) {
    state.clients.retain(|key| session_open(state, key));
    for up in state.registry.list() {
        up.end_client_sessions(|key| session_open(state, key));
    }
    prune_subscriptions(state);
}

/// Drop the subscriptions (listen streams, resource subscriptions) of sessions that ended.
fn prune_subscriptions(state: &AppState) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    // Listen streams on connections that ended go first, so that theirs are released too.
    state
        .listens
        .retain_connected(|conn| session_open(state, conn));
    state
        .subscribed_as
        .retain(|session| session_open(state, session));
    for up in state.registry.list() {
        let emptied = up.retain_subscribers(|key| session_open(state, key));
        // A 2026-07-28 upstream's listen stream already follows the table.
        if up.subscribes_by_listening() {
            continue;
        }
        for uri in emptied {
            let up = up.clone();
            runtime.spawn(async move {
                // Someone may have subscribed again meanwhile; one who is subscribing now
                // waits for this change to be done.
                let _change = up.subscription_change().await;
                if !up.subscribers(&uri).is_empty() {
                    return;
                }
                let params = serde_json::json!({ "uri": uri });
                if let Err(err) = up.request(&Caller::default(), "resources/unsubscribe", Some(params)).await {
                    tracing::debug!(upstream = %up.name(), %uri, error = %err, "could not unsubscribe");
                }
            });
        }
    }
}
