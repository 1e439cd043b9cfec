//! The schema versions every backend shares: entry `i` takes a database from version `i` to
//! `i + 1`, written once per SQL dialect, so a version number means the same tables whichever
//! backend holds them, and one rule ([`check_version`]) refuses a store a newer mcpgw wrote.
//!
//! Append only; a released entry is never edited, since databases in the field already ran it.

use super::StoreError;

/// One schema step in each dialect.
pub(super) struct Migration {
    /// SQLite's statements.
    pub sqlite: &'static str,
    /// PostgreSQL's statements.
    pub postgres: &'static str,
}

pub(super) const MIGRATIONS: &[Migration] = &[
    // 1: registrations. SQLite's table is STRICT so a wrongly typed value is refused on write
    // instead of being discovered on read; the CHECKs mirror the enums in `super`. PostgreSQL
    // also gets the table of values the instances sharing it must agree on (the signing secret
    // of built-in tokens): SQLite has one instance, which keeps its secret in the data directory.
    // And the leases that let one instance at a time check an upstream's health.
    Migration {
        sqlite: "CREATE TABLE registrations (
            name TEXT PRIMARY KEY NOT NULL,
            url TEXT NOT NULL,
            transport TEXT NOT NULL CHECK (transport IN ('sse', 'streamable-http')),
            tls TEXT NOT NULL,
            auth TEXT NOT NULL,
            enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            health_status TEXT NOT NULL CHECK (health_status IN ('unknown', 'online', 'offline')),
            health_since INTEGER NOT NULL,
            health_last_success INTEGER,
            health_last_error TEXT,
            health_consecutive_failures INTEGER NOT NULL CHECK (health_consecutive_failures >= 0)
        ) STRICT;",
        postgres: "CREATE TABLE registrations (
            name TEXT PRIMARY KEY NOT NULL,
            url TEXT NOT NULL,
            transport TEXT NOT NULL CHECK (transport IN ('sse', 'streamable-http')),
            tls TEXT NOT NULL,
            auth TEXT NOT NULL,
            enabled BOOLEAN NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            health_status TEXT NOT NULL CHECK (health_status IN ('unknown', 'online', 'offline')),
            health_since BIGINT NOT NULL,
            health_last_success BIGINT,
            health_last_error TEXT,
            health_consecutive_failures BIGINT NOT NULL CHECK (health_consecutive_failures >= 0)
        );
        CREATE TABLE shared_secrets (
            name TEXT PRIMARY KEY NOT NULL,
            value BYTEA NOT NULL
        );
        CREATE TABLE health_leases (
            name TEXT PRIMARY KEY NOT NULL,
            holder TEXT NOT NULL,
            until_ms BIGINT NOT NULL
        );",
    },
    // 2: per-upstream protocol era and whether one upstream session is shared (issue 19).
    Migration {
        sqlite: "ALTER TABLE registrations ADD COLUMN era TEXT NOT NULL DEFAULT 'auto'
            CHECK (era IN ('auto', '2025-11-25', '2026-07-28'));
         ALTER TABLE registrations ADD COLUMN shared_session INTEGER NOT NULL DEFAULT 0
            CHECK (shared_session IN (0, 1));",
        postgres: "ALTER TABLE registrations ADD COLUMN era TEXT NOT NULL DEFAULT 'auto'
            CHECK (era IN ('auto', '2025-11-25', '2026-07-28'));
         ALTER TABLE registrations ADD COLUMN shared_session BOOLEAN NOT NULL DEFAULT FALSE;",
    },
    // 3: stdio upstreams (issue 21): 'stdio' joins the transports, and `command` holds the
    // program to run (JSON of `CommandSpec`, NULL for HTTP upstreams). SQLite cannot change a
    // CHECK in place, so its table is built again and the rows copied.
    Migration {
        sqlite: "CREATE TABLE registrations_v3 (
            name TEXT PRIMARY KEY NOT NULL,
            url TEXT NOT NULL,
            transport TEXT NOT NULL CHECK (transport IN ('sse', 'streamable-http', 'stdio')),
            tls TEXT NOT NULL,
            auth TEXT NOT NULL,
            enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            health_status TEXT NOT NULL CHECK (health_status IN ('unknown', 'online', 'offline')),
            health_since INTEGER NOT NULL,
            health_last_success INTEGER,
            health_last_error TEXT,
            health_consecutive_failures INTEGER NOT NULL CHECK (health_consecutive_failures >= 0),
            era TEXT NOT NULL DEFAULT 'auto' CHECK (era IN ('auto', '2025-11-25', '2026-07-28')),
            shared_session INTEGER NOT NULL DEFAULT 0 CHECK (shared_session IN (0, 1)),
            command TEXT,
            CHECK ((transport = 'stdio') = (command IS NOT NULL))
        ) STRICT;
         INSERT INTO registrations_v3 SELECT name, url, transport, tls, auth, enabled, created_at,
            updated_at, health_status, health_since, health_last_success, health_last_error,
            health_consecutive_failures, era, shared_session, NULL FROM registrations;
         DROP TABLE registrations;
         ALTER TABLE registrations_v3 RENAME TO registrations;",
        postgres: "ALTER TABLE registrations DROP CONSTRAINT registrations_transport_check;
         ALTER TABLE registrations ADD CONSTRAINT registrations_transport_check
            CHECK (transport IN ('sse', 'streamable-http', 'stdio'));
         ALTER TABLE registrations ADD COLUMN command TEXT;
         ALTER TABLE registrations ADD CONSTRAINT registrations_command_check
            CHECK ((transport = 'stdio') = (command IS NOT NULL));",
    },
    // 4: portable sessions (issue 22). A Streamable-HTTP session any instance can serve: keyed
    // by the SHA-256 of its id (the id is a bearer secret; the table never holds it), with its
    // owner, what its client said at `initialize`, and when an instance last saw it used. Its
    // resource subscriptions are rows of their own, so that instances adding and dropping them
    // at once never overwrite each other's.
    Migration {
        sqlite: "CREATE TABLE sessions (
            id_hash TEXT PRIMARY KEY NOT NULL,
            owner TEXT NOT NULL,
            profile TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            seen_at INTEGER NOT NULL
        ) STRICT;
         CREATE INDEX sessions_seen_at ON sessions (seen_at);
         CREATE TABLE session_subscriptions (
            id_hash TEXT NOT NULL REFERENCES sessions (id_hash) ON DELETE CASCADE,
            upstream TEXT NOT NULL,
            uri TEXT NOT NULL,
            PRIMARY KEY (id_hash, upstream, uri)
        ) STRICT;",
        postgres: "CREATE TABLE sessions (
            id_hash TEXT PRIMARY KEY NOT NULL,
            owner TEXT NOT NULL,
            profile TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            seen_at BIGINT NOT NULL
        );
         CREATE INDEX sessions_seen_at ON sessions (seen_at);
         CREATE TABLE session_subscriptions (
            id_hash TEXT NOT NULL REFERENCES sessions (id_hash) ON DELETE CASCADE,
            upstream TEXT NOT NULL,
            uri TEXT NOT NULL,
            PRIMARY KEY (id_hash, upstream, uri)
        );",
    },
    // 5: `cert rotate --all` (issue 22 item 5): the instances on a shared store with their
    // liveness mark, the rotations published for them (the key is a secret, set to NULL once
    // every live instance reported, see `super::fleet`), and each instance's outcome. Times
    // are the database's clock in milliseconds. SQLite has one instance, whose `--all` is the
    // local rotate: nothing to keep there.
    Migration {
        sqlite: "",
        postgres: "CREATE TABLE instances (
            id TEXT PRIMARY KEY NOT NULL,
            started_ms BIGINT NOT NULL,
            heartbeat_ms BIGINT NOT NULL
        );
        CREATE TABLE cert_rotations (
            id BIGSERIAL PRIMARY KEY,
            cert_pem TEXT NOT NULL,
            key_pem TEXT,
            fingerprint TEXT NOT NULL,
            requested_ms BIGINT NOT NULL,
            requested_by TEXT NOT NULL
        );
        CREATE TABLE cert_rotation_results (
            rotation BIGINT NOT NULL REFERENCES cert_rotations (id) ON DELETE CASCADE,
            instance TEXT NOT NULL,
            listen TEXT NOT NULL,
            ok BOOLEAN NOT NULL,
            error TEXT,
            served TEXT,
            reported_ms BIGINT NOT NULL,
            PRIMARY KEY (rotation, instance)
        );",
    },
    // 6: server-to-client messages for a session passed between instances that are too long
    // for a notice (see `super::sessions::STORED_EVENT_NOTICE`), kept a minute; and which
    // instance holds each task a session started (its upstream session there keeps it), going
    // with the session. SQLite has one instance, which passes nothing on.
    Migration {
        sqlite: "",
        postgres: "CREATE TABLE session_events (
            id BIGSERIAL PRIMARY KEY,
            id_hash TEXT NOT NULL,
            message TEXT NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE INDEX session_events_created_ms ON session_events (created_ms);
        CREATE TABLE task_owners (
            id_hash TEXT NOT NULL REFERENCES sessions (id_hash) ON DELETE CASCADE,
            task_id TEXT NOT NULL,
            instance TEXT NOT NULL,
            PRIMARY KEY (id_hash, task_id)
        );",
    },
];

/// Newest schema version this build understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Refuse a store whose schema is newer than this build knows: it may hold what this build
/// would misread or drop. `store` names the file or the (password-free) URL.
pub(super) fn check_version(store: &str, found: i64) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: store.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}
