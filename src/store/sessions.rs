//! What the store keeps of a Streamable-HTTP session so that any instance on it can serve the
//! session (issue 22's portable sessions): its owner, what its client said at `initialize`, when
//! it was last used, and its resource subscriptions. Sessions are found by the SHA-256 of their
//! id ([`id_hash`]): the id lets whoever holds it use the session, and the store never holds it.

/// One session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// [`id_hash`] of the session id.
    pub id_hash: String,
    /// The principal that opened it (the only one it is open to).
    pub owner: String,
    /// What its client said at `initialize`, as JSON (`protocolVersion`, `capabilities`,
    /// `clientInfo`).
    pub profile: String,
    /// When it was opened, Unix seconds.
    pub created_at: i64,
    /// When an instance last saw it used, Unix seconds (written in batches, not per request).
    pub seen_at: i64,
    /// Its resource subscriptions.
    pub subscriptions: Vec<Subscription>,
}

/// One resource subscription of a session, as its client asked for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subscription {
    /// The upstream endpoint it was made on: an upstream's name (`/servers/{name}/mcp`), or
    /// [`ALL_UPSTREAMS`] for `/mcp`.
    pub endpoint: String,
    /// The URI as the client gave it.
    pub uri: String,
}

/// [`Subscription::endpoint`] of a subscription made on `/mcp` (no upstream name has a `*`).
pub const ALL_UPSTREAMS: &str = "*";

/// How the store names a session id.
pub fn id_hash(id: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, id.as_bytes()))
}

/// The statements of each dialect, in the same order.
pub(super) struct Sql {
    pub save: &'static str,
    pub load: &'static str,
    pub load_subscriptions: &'static str,
    pub end: &'static str,
    pub subscribe: &'static str,
    pub unsubscribe: &'static str,
    pub touch: &'static str,
    pub expire: &'static str,
}

pub(super) const SQLITE: Sql = Sql {
    save: "INSERT INTO sessions (id_hash, owner, profile, created_at, seen_at) \
           VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id_hash) DO UPDATE SET \
           owner = excluded.owner, profile = excluded.profile, seen_at = excluded.seen_at",
    load: "SELECT id_hash, owner, profile, created_at, seen_at FROM sessions WHERE id_hash = ?1",
    load_subscriptions: "SELECT upstream, uri FROM session_subscriptions WHERE id_hash = ?1 \
                         ORDER BY upstream, uri",
    end: "DELETE FROM sessions WHERE id_hash = ?1",
    subscribe: "INSERT INTO session_subscriptions (id_hash, upstream, uri) \
                SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM sessions WHERE id_hash = ?1) \
                ON CONFLICT DO NOTHING",
    unsubscribe: "DELETE FROM session_subscriptions WHERE id_hash = ?1 AND upstream = ?2 \
                  AND uri = ?3",
    touch: "UPDATE sessions SET seen_at = max(seen_at, ?2) WHERE id_hash = ?1 RETURNING id_hash",
    expire: "DELETE FROM sessions WHERE seen_at < ?1",
};

pub(super) const POSTGRES: Sql = Sql {
    save: "INSERT INTO sessions (id_hash, owner, profile, created_at, seen_at) \
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id_hash) DO UPDATE SET \
           owner = EXCLUDED.owner, profile = EXCLUDED.profile, seen_at = EXCLUDED.seen_at",
    load: "SELECT id_hash, owner, profile, created_at, seen_at FROM sessions WHERE id_hash = $1",
    load_subscriptions: "SELECT upstream, uri FROM session_subscriptions WHERE id_hash = $1 \
                         ORDER BY upstream, uri",
    // The instances holding the session in memory hear of its end on the registry channel
    // (a payload no upstream name can be: names have no ':').
    end: "WITH ended AS (DELETE FROM sessions WHERE id_hash = $1 RETURNING id_hash) \
          SELECT pg_notify('mcpgw_registry', 'session-ended:' || id_hash) FROM ended",
    subscribe: "INSERT INTO session_subscriptions (id_hash, upstream, uri) \
                SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM sessions WHERE id_hash = $1) \
                ON CONFLICT DO NOTHING",
    unsubscribe: "DELETE FROM session_subscriptions WHERE id_hash = $1 AND upstream = $2 \
                  AND uri = $3",
    touch: "UPDATE sessions SET seen_at = GREATEST(seen_at, $2) WHERE id_hash = ANY($1) \
            RETURNING id_hash",
    expire: "WITH ended AS (DELETE FROM sessions WHERE seen_at < $1 RETURNING id_hash) \
             SELECT pg_notify('mcpgw_registry', 'session-ended:' || id_hash) FROM ended",
};

/// The prefix of a registry-channel notice that a session ended.
pub const ENDED_NOTICE: &str = "session-ended:";

/// The prefix of a registry-channel notice carrying a message for a session:
/// `session-event:<hash>:<message>`.
pub const EVENT_NOTICE: &str = "session-event:";

/// The largest message a notice carries (PostgreSQL's limit is 8000 bytes, less the prefix and
/// hash); a longer one is kept in a table and the notice names its row ([`STORED_EVENT_NOTICE`]).
pub const MAX_EVENT: usize = 7_800;

/// The prefix of a registry-channel notice naming a stored message for a session:
/// `session-event-row:<hash>:<row id>`.
pub const STORED_EVENT_NOTICE: &str = "session-event-row:";

/// How long a stored message is kept for the instances to read (milliseconds): they read it as
/// soon as its notice comes, so this only bounds what one that fell behind can still send.
pub const STORED_EVENT_KEEP_MS: i64 = 60_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_names_a_session_by_a_digest_that_does_not_show_the_id() {
        let id = "0123456789abcdef0123456789abcdef";
        let hash = id_hash(id);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(id));
        assert_eq!(hash, id_hash(id));
        assert_ne!(hash, id_hash("another"));
        // The short form logs use is the start of the same digest.
        assert!(hash.starts_with(&crate::session::fingerprint(id)));
    }
}
