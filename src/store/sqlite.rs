//! Embedded SQLite implementation of [`Store`].
//!
//! One file in the data directory holds every registration. It contains upstream bearer tokens
//! and possibly inline private keys, so it is created with mode 0600; SQLite gives its `-wal` and
//! `-shm` siblings the mode of the main file. An acknowledged write is durable: WAL with
//! `synchronous=FULL` syncs the log at every commit, so a registration the operator was told about
//! survives kill -9 and power loss.
//!
//! The schema is versioned with `PRAGMA user_version` and the `MIGRATIONS` list. Health lives in
//! columns of its own so the checker's frequent writes are one small UPDATE that never rewrites
//! (or races with) the configuration an operator edits.
//!
//! Error messages name registrations and columns but never carry stored values: a row holds
//! tokens, header values and PEM keys, and some decoders (serde_json) quote the input they reject.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    CommandSpec, EraChoice, Health, HealthStatus, Registration, Store, StoreError, TlsSettings,
    Transport, UpstreamAuth, valid_name,
};

/// How long a statement waits for another connection's lock (a second mcpgw process, or the CLI
/// reading the file) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations in order: entry `i` takes the database from version `i` to `i + 1`.
/// Append only; a released entry is never edited, since databases in the field already ran it.
const MIGRATIONS: &[&str] = &[
    // 1: registrations. STRICT so a wrongly typed value is refused on write instead of being
    // discovered on read; the CHECKs mirror the enums in `super`.
    "CREATE TABLE registrations (
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
    // 2: per-upstream protocol era and whether one upstream session is shared (issue 19).
    "ALTER TABLE registrations ADD COLUMN era TEXT NOT NULL DEFAULT 'auto'
        CHECK (era IN ('auto', '2025-11-25', '2026-07-28'));
     ALTER TABLE registrations ADD COLUMN shared_session INTEGER NOT NULL DEFAULT 0
        CHECK (shared_session IN (0, 1));",
    // 3: stdio upstreams (issue 21): 'stdio' joins the transports, and `command` holds the
    // program to run (JSON of `CommandSpec`, NULL for HTTP upstreams). SQLite cannot change a
    // CHECK in place, so the table is built again and the rows copied.
    "CREATE TABLE registrations_v3 (
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
];

/// Newest schema version this build understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The column list shared by every SELECT and the INSERT, in [`RawRow::read`]'s order.
macro_rules! columns {
    () => {
        "name, url, transport, tls, auth, enabled, created_at, updated_at, health_status, \
         health_since, health_last_success, health_last_error, health_consecutive_failures, era, \
         shared_session, command"
    };
}

const SELECT_ALL: &str = concat!("SELECT ", columns!(), " FROM registrations ORDER BY name");
const SELECT_ONE: &str = concat!("SELECT ", columns!(), " FROM registrations WHERE name = ?1");
const INSERT: &str = concat!(
    "INSERT INTO registrations (",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
);
// Deliberately leaves created_at and the health columns alone (see `Store::update`).
const UPDATE: &str = "UPDATE registrations SET url = ?2, transport = ?3, tls = ?4, auth = ?5, \
                      enabled = ?6, updated_at = ?7, era = ?8, shared_session = ?9, command = ?10 \
                      WHERE name = ?1";
const SET_HEALTH: &str = "UPDATE registrations SET health_status = ?2, health_since = ?3, \
                          health_last_success = ?4, health_last_error = ?5, \
                          health_consecutive_failures = ?6 WHERE name = ?1";
const DELETE: &str = "DELETE FROM registrations WHERE name = ?1";

/// Registrations in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    // One connection behind a mutex: writes are rare and small, and a single connection keeps
    // every operation serialised without SQLITE_BUSY between our own threads.
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating with mode 0600 if missing) the database at `path` and bring its schema up
    /// to [`SCHEMA_VERSION`]. [`StoreError::TooNew`] if a newer mcpgw wrote it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |detail: String| StoreError::Open {
            path: path.display().to_string(),
            detail,
        };
        create_private(path).map_err(|e| open_err(format!("cannot create the file: {e}")))?;
        // No SQLITE_OPEN_CREATE: the file exists now with the mode we chose. No SQLITE_OPEN_URI
        // either, so a data directory named `file:...` is taken literally. NOFOLLOW: a link
        // planted at the database's name is refused, not written through; SQLite refuses a link
        // anywhere in the path with it, so the directory's own (a data directory reached through
        // a link) are resolved first.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let real = in_real_dir(path).map_err(|e| open_err(format!("cannot resolve: {e}")))?;
        let mut conn =
            Connection::open_with_flags(&real, flags).map_err(|e| open_err(e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| open_err(e.to_string()))?;
        // Refuse a newer file before changing anything in it (journal_mode=WAL is persistent).
        // This read is also the first one, so a file that is not a database fails here.
        let found = user_version(&conn).map_err(|e| open_err(e.to_string()))?;
        check_version(path, found)?;
        configure(&conn).map_err(|e| open_err(e.to_string()))?;
        migrate(&mut conn, path)?;
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Schema version recorded in the file.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        user_version(&self.conn()).map_err(query_err)
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-applied write behind: SQLite rolls
        // back an unfinished transaction when it is dropped. The connection stays usable.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for SqliteStore {
    fn list(&self) -> Result<Vec<Registration>, StoreError> {
        let raws = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(SELECT_ALL).map_err(query_err)?;
            stmt.query_map([], RawRow::read)
                .map_err(query_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err)?
        };
        raws.into_iter().map(RawRow::decode).collect()
    }

    fn get(&self, name: &str) -> Result<Registration, StoreError> {
        let raw = self
            .conn()
            .prepare_cached(SELECT_ONE)
            .and_then(|mut stmt| stmt.query_row([name], RawRow::read).optional())
            .map_err(query_err)?;
        raw.ok_or_else(|| not_found(name))?.decode()
    }

    fn insert(&self, r: &Registration) -> Result<(), StoreError> {
        if !valid_name(&r.name) {
            return Err(StoreError::InvalidName {
                name: r.name.clone(),
            });
        }
        let tls = to_json(&r.name, "tls", &r.tls)?;
        let auth = to_json(&r.name, "auth", &r.auth)?;
        let command = command_json(r)?;
        let h = &r.health;
        // Duplicates are found by the primary key itself, not by a prior SELECT that another
        // writer could overtake.
        self.conn()
            .execute(
                INSERT,
                params![
                    r.name,
                    r.url,
                    r.transport.as_str(),
                    tls,
                    auth,
                    r.enabled,
                    r.created_at,
                    r.updated_at,
                    h.status.as_str(),
                    h.since,
                    h.last_success,
                    h.last_error,
                    h.consecutive_failures,
                    r.era.as_str(),
                    r.shared_session,
                    command,
                ],
            )
            .map_err(|e| {
                if is_primary_key_violation(&e) {
                    StoreError::Exists {
                        name: r.name.clone(),
                    }
                } else {
                    query_err(e)
                }
            })?;
        Ok(())
    }

    fn update(&self, r: &Registration) -> Result<(), StoreError> {
        let tls = to_json(&r.name, "tls", &r.tls)?;
        let auth = to_json(&r.name, "auth", &r.auth)?;
        let command = command_json(r)?;
        let changed = self
            .conn()
            .execute(
                UPDATE,
                params![
                    r.name,
                    r.url,
                    r.transport.as_str(),
                    tls,
                    auth,
                    r.enabled,
                    r.updated_at,
                    r.era.as_str(),
                    r.shared_session,
                    command,
                ],
            )
            .map_err(query_err)?;
        expect_one(changed, &r.name)
    }

    fn remove(&self, name: &str) -> Result<(), StoreError> {
        let changed = self.conn().execute(DELETE, [name]).map_err(query_err)?;
        expect_one(changed, name)
    }

    fn set_health(&self, name: &str, h: &Health) -> Result<(), StoreError> {
        let changed = self
            .conn()
            .execute(
                SET_HEALTH,
                params![
                    name,
                    h.status.as_str(),
                    h.since,
                    h.last_success,
                    h.last_error,
                    h.consecutive_failures,
                ],
            )
            .map_err(query_err)?;
        expect_one(changed, name)
    }
}

/// Create `path` with mode 0600 if it does not exist; an existing file is left as it is, and a
/// symbolic link at its name is refused.
fn create_private(path: &Path) -> std::io::Result<()> {
    crate::files::own_file(0o600)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
}

/// `path` with its directory's symbolic links resolved, its own name kept as it is.
fn in_real_dir(path: &Path) -> std::io::Result<PathBuf> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    Ok(std::fs::canonicalize(dir)?.join(name))
}

/// Per-connection settings (journal_mode is persistent in the file, the others are not).
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Some file systems (network mounts) cannot do WAL; the rollback journal with
        // synchronous=FULL is just as durable, only slower, so carry on.
        tracing::warn!(journal_mode = %mode, "store: WAL unavailable, using the rollback journal");
    }
    // FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss, and an
    // acknowledged registration must not disappear.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Apply the pending [`MIGRATIONS`], one transaction per step.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let migrate_err = |target: i64, e: rusqlite::Error| StoreError::Open {
        path: path.display().to_string(),
        detail: format!("migration to schema version {target} failed: {e}"),
    };
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let target = index as i64 + 1;
        // IMMEDIATE takes the write lock before the version is read, so two processes opening a
        // fresh file together cannot both apply the same step.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| migrate_err(target, e))?;
        let current = user_version(&tx).map_err(|e| migrate_err(target, e))?;
        check_version(path, current)?;
        if current >= target {
            continue; // Dropping `tx` ends it; nothing was written.
        }
        // user_version lives in the file header and is part of the transaction, so the step and
        // its version number commit (or vanish) together.
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", target))
            .and_then(|()| tx.commit())
            .map_err(|e| migrate_err(target, e))?;
    }
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

fn check_version(path: &Path, found: i64) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// A row as stored, before the text columns are parsed.
struct RawRow {
    name: String,
    url: String,
    transport: String,
    tls: String,
    auth: String,
    enabled: bool,
    created_at: i64,
    updated_at: i64,
    health_status: String,
    health_since: i64,
    health_last_success: Option<i64>,
    health_last_error: Option<String>,
    health_consecutive_failures: i64,
    era: String,
    shared_session: bool,
    command: Option<String>,
}

impl RawRow {
    /// Read the columns of [`columns!`], in order.
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: row.get(0)?,
            url: row.get(1)?,
            transport: row.get(2)?,
            tls: row.get(3)?,
            auth: row.get(4)?,
            enabled: row.get(5)?,
            created_at: row.get(6)?,
            updated_at: row.get(7)?,
            health_status: row.get(8)?,
            health_since: row.get(9)?,
            health_last_success: row.get(10)?,
            health_last_error: row.get(11)?,
            health_consecutive_failures: row.get(12)?,
            era: row.get(13)?,
            shared_session: row.get(14)?,
            command: row.get(15)?,
        })
    }

    fn decode(self) -> Result<Registration, StoreError> {
        let name = self.name;
        let transport = match self.transport.as_str() {
            "sse" => Transport::Sse,
            "streamable-http" => Transport::StreamableHttp,
            "stdio" => Transport::Stdio,
            _ => return Err(corrupt(&name, "transport", "holds an unknown transport")),
        };
        let status = match self.health_status.as_str() {
            "unknown" => HealthStatus::Unknown,
            "online" => HealthStatus::Online,
            "offline" => HealthStatus::Offline,
            _ => return Err(corrupt(&name, "health_status", "holds an unknown status")),
        };
        let consecutive_failures = u32::try_from(self.health_consecutive_failures)
            .map_err(|_| corrupt(&name, "health_consecutive_failures", "is out of range"))?;
        let era = EraChoice::parse(&self.era)
            .ok_or_else(|| corrupt(&name, "era", "holds an unknown protocol era"))?;
        let tls: TlsSettings = from_json(&name, "tls", &self.tls)?;
        let auth: UpstreamAuth = from_json(&name, "auth", &self.auth)?;
        let command: Option<CommandSpec> = match &self.command {
            Some(text) => Some(from_json(&name, "command", text)?),
            None => None,
        };
        if (transport == Transport::Stdio) != command.is_some() {
            return Err(corrupt(&name, "command", "does not match the transport"));
        }
        Ok(Registration {
            url: self.url,
            transport,
            tls,
            auth,
            enabled: self.enabled,
            era,
            shared_session: self.shared_session,
            command,
            created_at: self.created_at,
            updated_at: self.updated_at,
            health: Health {
                status,
                since: self.health_since,
                last_success: self.health_last_success,
                last_error: self.health_last_error,
                consecutive_failures,
            },
            name,
        })
    }
}

/// The `command` column of `r`: its program as JSON for a stdio upstream, NULL otherwise.
fn command_json(r: &Registration) -> Result<Option<String>, StoreError> {
    r.command
        .as_ref()
        .map(|c| to_json(&r.name, "command", c))
        .transpose()
}

fn to_json<T: Serialize>(name: &str, column: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Query {
        // Serialising these plain structs cannot really fail; the category is enough.
        detail: format!(
            "registration '{name}': cannot encode column {column} ({:?} error)",
            e.classify()
        ),
    })
}

fn from_json<T: DeserializeOwned>(name: &str, column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        // serde_json's own message quotes the offending value (`invalid type: string "..."`),
        // which may be a token or a key; report only the kind of damage and where it is.
        let kind = match e.classify() {
            serde_json::error::Category::Syntax => "malformed JSON",
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Io => "unreadable JSON",
        };
        corrupt(
            name,
            column,
            &format!("holds {kind} (line {}, column {})", e.line(), e.column()),
        )
    })
}

fn corrupt(name: &str, column: &str, what: &str) -> StoreError {
    StoreError::Query {
        detail: format!("registration '{name}': column {column} {what}"),
    }
}

fn query_err(e: rusqlite::Error) -> StoreError {
    // SQLite's messages name tables, columns and constraints, never bound parameter values.
    StoreError::Query {
        detail: e.to_string(),
    }
}

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound {
        name: name.to_owned(),
    }
}

/// `changed` rows from a statement keyed by the primary key: 0 means the name is absent.
fn expect_one(changed: usize, name: &str) -> Result<(), StoreError> {
    if changed == 0 {
        Err(not_found(name))
    } else {
        Ok(())
    }
}

fn is_primary_key_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_extended_error_code() == Some(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

#[cfg(test)]
mod tests;
