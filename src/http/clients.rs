//! Who the client of each downstream session said it is when it initialized (its capabilities,
//! `clientInfo`, protocol version), kept while the session lives, and the [`Owner`] that a
//! request of that session carries upstream, so that its upstream sessions repeat what the client
//! said and send what they have for it to that session.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::AppState;
use crate::hash::HashMap;
use crate::session::SessionKey;
use crate::upstream::connection::{ClientProfile, MessageSink, Owner};
use crate::upstream::registry::UPSTREAM_TAG;

/// Profiles by session.
#[derive(Default)]
pub struct ClientProfiles {
    by_session: Mutex<HashMap<SessionKey, Entry>>,
}

impl std::fmt::Debug for ClientProfiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientProfiles").finish_non_exhaustive()
    }
}

/// One session's profile, and its delivery sink once a request needed it (made once per
/// session rather than per request). The sink holds the state that holds this table; the
/// entry, and with it the sink, goes when the session ends.
struct Entry {
    profile: Arc<ClientProfile>,
    deliver: Option<MessageSink>,
}

impl ClientProfiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Entry>> {
        self.by_session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client of `session` initialized with `profile` (again, on a connection that
    /// initializes twice: the newest counts).
    pub fn insert(&self, session: SessionKey, profile: ClientProfile) {
        let entry = Entry {
            profile: Arc::new(profile),
            deliver: None,
        };
        self.lock().insert(session, entry);
    }

    /// What the client of `session` said, if it initialized.
    pub fn get(&self, session: &SessionKey) -> Option<Arc<ClientProfile>> {
        self.lock().get(session).map(|e| e.profile.clone())
    }

    /// The profile of `session` and its delivery sink, made by `make` the first time.
    fn with_sink(
        &self,
        session: &SessionKey,
        make: impl FnOnce() -> MessageSink,
    ) -> Option<(Arc<ClientProfile>, MessageSink)> {
        let mut table = self.lock();
        let entry = table.get_mut(session)?;
        let deliver = entry.deliver.get_or_insert_with(make).clone();
        Some((entry.profile.clone(), deliver))
    }

    /// Forget the profile of `session`, which ended.
    pub fn remove(&self, session: &SessionKey) {
        self.lock().remove(session);
    }

    /// Keep only the profiles of sessions `keep` says are open.
    pub fn retain(&self, keep: impl Fn(&SessionKey) -> bool) {
        self.lock().retain(|key, _| keep(key));
    }
}

/// The owner a request of `session` carries upstream; `None` for a request without a session
/// or of a session whose client never initialized (a 2026-07-28 client).
pub fn owner(state: &Arc<AppState>, session: Option<&SessionKey>) -> Option<Owner> {
    let key = session?;
    let (profile, deliver) = state.clients.with_sink(key, || session_sink(state, key))?;
    let listening = match key {
        SessionKey::Sse(_) | SessionKey::Ws(_) => true,
        SessionKey::Streamable(id) => state.sessions.listened(id),
        SessionKey::Listen(_) => false,
    };
    Some(Owner {
        key: key.clone(),
        profile,
        deliver,
        listening,
    })
}

/// A sink that queues what an upstream sends for session `key` on that session, whatever
/// transport it is on (a request of the upstream's under an id of the gateway's own, so the
/// client's answer finds its way back).
pub fn session_sink(state: &Arc<AppState>, key: &SessionKey) -> MessageSink {
    let (state, key) = (state.clone(), key.clone());
    Arc::new(move |msg: Value| {
        let upstream = msg
            .get(UPSTREAM_TAG)
            .and_then(Value::as_str)
            .map(str::to_owned);
        let msg = super::relay::relay_to_client(&state, msg);
        // A resource update, named as this session subscribed to it.
        let named = upstream.and_then(|up| match state.subscribed_as.named_for(&key, &up, &msg) {
            std::borrow::Cow::Owned(named) => Some(named),
            std::borrow::Cow::Borrowed(_) => None,
        });
        super::delivery::notify_session(&state, &key, named.as_ref().unwrap_or(&msg));
    })
}
