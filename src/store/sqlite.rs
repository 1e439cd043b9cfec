//! Embedded SQLite implementation of [`Store`].
//!
//! One file in the data directory holds every registration. It contains upstream bearer tokens
//! and possibly inline private keys, so it is created with mode 0600; SQLite gives its `-wal` and
//! `-shm` siblings the mode of the main file. An acknowledged write is durable: WAL with
//! `synchronous=FULL` syncs the log at every commit, so a registration the operator was told about
//! survives kill -9 and power loss.
//!
//! The schema is versioned with `PRAGMA user_version` and the shared migration list
//! ([`super::migrations`]). Health lives in
//! columns of its own so the checker's frequent writes are one small UPDATE that never rewrites
//! (or races with) the configuration an operator edits.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::migrations::{MIGRATIONS, check_version};
use super::row::{Encoded, RawRow, columns, expect_one, not_found};
use super::sessions::SQLITE as SESSIONS;
use super::{Health, Registration, Store, StoreError, StoredSession, Subscription, valid_name};

/// How long a statement waits for another connection's lock (a second mcpgw process, or the CLI
/// reading the file) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
        check_version(&path.display().to_string(), found)?;
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
        let Encoded { tls, auth, command } = Encoded::of(r)?;
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
        let Encoded { tls, auth, command } = Encoded::of(r)?;
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
        expect_one(changed as u64, &r.name)
    }

    fn remove(&self, name: &str) -> Result<(), StoreError> {
        let changed = self.conn().execute(DELETE, [name]).map_err(query_err)?;
        expect_one(changed as u64, name)
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
        expect_one(changed as u64, name)
    }

    fn save_session(&self, s: &StoredSession) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(SESSIONS.save)
            .and_then(|mut stmt| {
                stmt.execute(params![
                    s.id_hash,
                    s.owner,
                    s.profile,
                    s.created_at,
                    s.seen_at
                ])
            })
            .map_err(query_err)?;
        Ok(())
    }

    fn load_session(&self, id_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        let conn = self.conn();
        let found = conn
            .prepare_cached(SESSIONS.load)
            .and_then(|mut stmt| {
                stmt.query_row([id_hash], |row| {
                    Ok(StoredSession {
                        id_hash: row.get(0)?,
                        owner: row.get(1)?,
                        profile: row.get(2)?,
                        created_at: row.get(3)?,
                        seen_at: row.get(4)?,
                        subscriptions: Vec::new(),
                    })
                })
                .optional()
            })
            .map_err(query_err)?;
        let Some(mut session) = found else {
            return Ok(None);
        };
        let mut stmt = conn
            .prepare_cached(SESSIONS.load_subscriptions)
            .map_err(query_err)?;
        session.subscriptions = stmt
            .query_map([id_hash], |row| {
                Ok(Subscription {
                    endpoint: row.get(0)?,
                    uri: row.get(1)?,
                })
            })
            .map_err(query_err)?
            .collect::<Result<_, _>>()
            .map_err(query_err)?;
        Ok(Some(session))
    }

    fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(SESSIONS.end, [id_hash])
            .map_err(query_err)?;
        Ok(())
    }

    fn set_subscription(
        &self,
        id_hash: &str,
        sub: &Subscription,
        subscribed: bool,
    ) -> Result<(), StoreError> {
        let sql = if subscribed {
            SESSIONS.subscribe
        } else {
            SESSIONS.unsubscribe
        };
        self.conn()
            .execute(sql, params![id_hash, sub.endpoint, sub.uri])
            .map_err(query_err)?;
        Ok(())
    }

    fn touch_sessions(
        &self,
        id_hashes: &[String],
        seen_at: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(query_err)?;
        let mut gone = Vec::new();
        {
            let mut stmt = tx.prepare_cached(SESSIONS.touch).map_err(query_err)?;
            for hash in id_hashes {
                let held = stmt
                    .query_row(params![hash, seen_at], |_| Ok(()))
                    .optional()
                    .map_err(query_err)?;
                if held.is_none() {
                    gone.push(hash.clone());
                }
            }
        }
        tx.commit().map_err(query_err)?;
        Ok(gone)
    }

    fn expire_sessions(&self, seen_before: i64) -> Result<u64, StoreError> {
        let gone = self
            .conn()
            .execute(SESSIONS.expire, [seen_before])
            .map_err(query_err)?;
        Ok(gone as u64)
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
    for (index, step) in MIGRATIONS.iter().enumerate() {
        let target = index as i64 + 1;
        // IMMEDIATE takes the write lock before the version is read, so two processes opening a
        // fresh file together cannot both apply the same step.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| migrate_err(target, e))?;
        let current = user_version(&tx).map_err(|e| migrate_err(target, e))?;
        check_version(&path.display().to_string(), current)?;
        if current >= target {
            continue; // Dropping `tx` ends it; nothing was written.
        }
        // user_version lives in the file header and is part of the transaction, so the step and
        // its version number commit (or vanish) together.
        tx.execute_batch(step.sqlite)
            .and_then(|()| tx.pragma_update(None, "user_version", target))
            .and_then(|()| tx.commit())
            .map_err(|e| migrate_err(target, e))?;
    }
    Ok(())
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
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
}

fn query_err(e: rusqlite::Error) -> StoreError {
    // SQLite's messages name tables, columns and constraints, never bound parameter values.
    StoreError::Query {
        detail: e.to_string(),
    }
}

fn is_primary_key_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_extended_error_code() == Some(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

#[cfg(test)]
mod tests;
