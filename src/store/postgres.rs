//! PostgreSQL implementation of [`Store`], for several instances sharing one registry.
//!
//! Client: `tokio-postgres` (async, pure Rust, no libpq), TLS by `sslmode` through
//! `tokio-postgres-rustls` on our rustls ([`tls`]). Why these, and not sqlx or libpq bindings,
//! is in docs/ARCHITECTURE.md.
//!
//! **Bridging the synchronous trait.** [`Store`] is synchronous and its callers run it on the
//! blocking pool (`spawn_blocking`); each method here `block_on`s its query on the gateway's
//! runtime handle. The trait stays as it is for SQLite, whose calls really block, and the
//! connection's own task runs on the runtime like any other socket. Calling a method from an
//! async worker would panic in `block_on`: the trait's contract already forbids it.
//!
//! **Changes reach every instance.** Every configuration write sends
//! `NOTIFY mcpgw_registry, '<name>'` in its own statement's transaction (a data-modifying CTE
//! feeding `pg_notify`), so the notice exists exactly when the change committed. A separate
//! connection LISTENs ([`listen`]) and publishes [`StoreChange`]s; the registry reconciles.
//!
//! **When the database is down** the registry keeps serving what it holds in memory (no query is
//! on the call path); each operation here fails at once with [`StoreError::Unavailable`], and the
//! next one after a short back-off connects again: no restart needed.

mod fleet;
mod listen;
mod tls;
pub mod url;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::migrations::{MIGRATIONS, check_version};
use super::row::{Encoded, RawRow, columns, expect_one, not_found};
use super::sessions::POSTGRES as SESSIONS;
use super::{
    Health, Registration, Store, StoreChange, StoreError, StoredSession, Subscription, valid_name,
};
pub use url::{PgUrl, PgUrlError, SslMode};

/// The channel every configuration write notifies; the payload is the registration's name.
const CHANNEL: &str = "mcpgw_registry";
/// Longest wait for one operation's answer before the database counts as unavailable.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnection back-off after a failed attempt: doubled per failure up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Serialises schema migrations between instances starting together (an arbitrary constant:
/// "mcpgw" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d_63_70_67_77;
/// The `shared_secrets` row of the built-in tokens' signing secret.
const TOKEN_SECRET: &str = "token-signing";

const SELECT_ALL: &str = concat!("SELECT ", columns!(), " FROM registrations ORDER BY name");
const SELECT_ONE: &str = concat!("SELECT ", columns!(), " FROM registrations WHERE name = $1");
const INSERT: &str = concat!(
    "WITH changed AS (INSERT INTO registrations (",
    columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
     RETURNING name) SELECT pg_notify('mcpgw_registry', name) FROM changed"
);
// Deliberately leaves created_at and the health columns alone (see `Store::update`).
const UPDATE: &str = "WITH changed AS (UPDATE registrations SET url = $2, transport = $3, \
                      tls = $4, auth = $5, enabled = $6, updated_at = $7, era = $8, \
                      shared_session = $9, command = $10 WHERE name = $1 RETURNING name) \
                      SELECT pg_notify('mcpgw_registry', name) FROM changed";
// Health is written when its status changes, by the instance holding the upstream's health
// lease; the notice lets the others show what it saw.
const SET_HEALTH: &str = "WITH changed AS (UPDATE registrations SET health_status = $2, \
                          health_since = $3, health_last_success = $4, health_last_error = $5, \
                          health_consecutive_failures = $6 WHERE name = $1 RETURNING name) \
                          SELECT pg_notify('mcpgw_registry', name) FROM changed";
// Take the lease when there is none or it has expired, by the database's clock (instances'
// clocks may differ); a row comes back only to the one instance that took it.
const CLAIM_HEALTH: &str = "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) \
     INSERT INTO health_leases (name, holder, until_ms) SELECT $1, $2, ms + $3 FROM now \
     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms \
     WHERE health_leases.until_ms <= (SELECT ms FROM now) RETURNING name";
const DELETE: &str = "WITH changed AS (DELETE FROM registrations WHERE name = $1 RETURNING name) \
                      SELECT pg_notify('mcpgw_registry', name) FROM changed";
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS mcpgw_schema (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    version BIGINT NOT NULL
)";

/// Registrations in a PostgreSQL database several instances share.
pub struct PostgresStore {
    url: PgUrl,
    connector: Connector,
    runtime: tokio::runtime::Handle,
    link: tokio::sync::Mutex<Link>,
    /// This instance's id in `health_leases` and `instances` (random, per start).
    holder: String,
    changes: tokio::sync::broadcast::Sender<StoreChange>,
    // Ends the LISTEN task when the store is dropped.
    _listening: tokio_util::sync::DropGuard,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The TLS side of a connection, built once from the URL.
#[derive(Clone)]
pub(super) struct Connector(Option<tokio_postgres_rustls::MakeRustlsConnect>);

/// The query connection and when to try again after it failed.
struct Link {
    client: Option<Arc<Client>>,
    retry_at: Instant,
    delay: Duration,
    last_error: String,
}

impl PostgresStore {
    /// Connect, bring the schema up to [`super::migrations::SCHEMA_VERSION`] and start
    /// listening for changes. [`StoreError::TooNew`] if a newer mcpgw migrated the database.
    /// Must run on the runtime the store will use.
    pub async fn open(url: PgUrl) -> Result<Self, StoreError> {
        let open_err = |detail: String| StoreError::Open {
            path: url.to_string(),
            detail,
        };
        let connector = Connector(tls::connector(&url).map_err(|e| open_err(e.to_string()))?);
        let mut client = connector
            .connect(&url, None)
            .await
            .map_err(|e| open_err(describe(&e)))?;
        migrate(&mut client, &url).await?;
        let holder = instance_id().map_err(open_err)?;
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(listen::run(
            url.clone(),
            connector.clone(),
            changes.clone(),
            stop.clone(),
        ));
        Ok(Self {
            link: tokio::sync::Mutex::new(Link {
                client: Some(Arc::new(client)),
                retry_at: Instant::now(),
                delay: RETRY_MIN,
                last_error: String::new(),
            }),
            url,
            connector,
            holder,
            runtime: tokio::runtime::Handle::current(),
            changes,
            _listening: stop.drop_guard(),
        })
    }

    /// Run one operation on the runtime, from the blocking thread the trait is called on, with
    /// a bound on how long the database may take to answer.
    fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.runtime.block_on(async {
            let client = self.client().await?;
            match tokio::time::timeout(QUERY_TIMEOUT, op(client)).await {
                Ok(Err(StoreError::Unavailable { store, detail })) => {
                    self.lost(&detail).await;
                    Err(StoreError::Unavailable { store, detail })
                }
                Ok(outcome) => outcome,
                Err(_) => {
                    let detail = format!("no answer within {} s", QUERY_TIMEOUT.as_secs());
                    self.lost(&detail).await;
                    Err(self.unavailable(detail))
                }
            }
        })
    }

    /// The live query connection, connecting again when it was lost and the back-off allows.
    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let mut link = self.link.lock().await;
        if let Some(client) = link.client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        if Instant::now() < link.retry_at {
            return Err(self.unavailable(link.last_error.clone()));
        }
        match self.connector.connect(&self.url, None).await {
            Ok(client) => {
                tracing::info!(store = %self.url, "store: connected again");
                let client = Arc::new(client);
                link.client = Some(client.clone());
                link.delay = RETRY_MIN;
                Ok(client)
            }
            Err(err) => {
                let detail = describe(&err);
                link.client = None;
                link.retry_at = Instant::now() + link.delay;
                link.delay = (link.delay * 2).min(RETRY_MAX);
                link.last_error.clone_from(&detail);
                Err(self.unavailable(detail))
            }
        }
    }

    /// Forget a connection that failed mid-operation; the next operation connects again.
    async fn lost(&self, detail: &str) {
        let mut link = self.link.lock().await;
        link.client = None;
        detail.clone_into(&mut link.last_error);
    }

    fn unavailable(&self, detail: String) -> StoreError {
        StoreError::Unavailable {
            store: self.url.to_string(),
            detail,
        }
    }

    /// A failed query as a [`StoreError`]: the server's refusal as [`StoreError::Query`], a lost
    /// connection as [`StoreError::Unavailable`].
    fn failed(&self, err: &tokio_postgres::Error) -> StoreError {
        if err.as_db_error().is_some() {
            StoreError::Query {
                detail: describe(err),
            }
        } else {
            self.unavailable(describe(err))
        }
    }
}

impl Connector {
    /// A new connection to `url`, its protocol task spawned; notifications it receives go to
    /// `notices` (the LISTEN connection) or nowhere.
    pub(super) async fn connect(
        &self,
        url: &PgUrl,
        notices: Option<tokio::sync::broadcast::Sender<StoreChange>>,
    ) -> Result<Client, tokio_postgres::Error> {
        Ok(self.connect_driven(url, notices).await?.0)
    }

    /// As [`Self::connect`], with the task that drives the connection (it ends when the
    /// connection does).
    pub(super) async fn connect_driven(
        &self,
        url: &PgUrl,
        notices: Option<tokio::sync::broadcast::Sender<StoreChange>>,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        match &self.0 {
            None => {
                let (client, conn) = url.config.connect(NoTls).await?;
                Ok((client, tokio::spawn(listen::drive(conn, notices))))
            }
            Some(tls) => {
                let (client, conn) = url.config.connect(tls.clone()).await?;
                Ok((client, tokio::spawn(listen::drive(conn, notices))))
            }
        }
    }
}

/// A random name for this instance's health leases.
fn instance_id() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness available for the instance id".to_owned())?;
    Ok(hex::encode(bytes))
}

/// Apply the pending migrations in one transaction, under an advisory lock so that instances
/// starting together take turns; the version is read under the lock, before anything changes.
async fn migrate(client: &mut Client, url: &PgUrl) -> Result<(), StoreError> {
    let shown = url.to_string();
    let migrate_err = |e: tokio_postgres::Error| StoreError::Open {
        path: shown.clone(),
        detail: format!("schema migration failed: {}", describe(&e)),
    };
    let tx = client.transaction().await.map_err(migrate_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(migrate_err)?;
    tx.batch_execute(SCHEMA).await.map_err(migrate_err)?;
    let current: i64 = tx
        .query_opt("SELECT version FROM mcpgw_schema", &[])
        .await
        .map_err(migrate_err)?
        .map_or(0, |row| row.get(0));
    check_version(&shown, current)?;
    for (index, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let target = index as i64 + 1;
        tx.batch_execute(step.postgres)
            .await
            .map_err(|e| StoreError::Open {
                path: shown.clone(),
                detail: format!(
                    "migration to schema version {target} failed: {}",
                    describe(&e)
                ),
            })?;
        tx.execute(
            "INSERT INTO mcpgw_schema (version) VALUES ($1) \
             ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
            &[&target],
        )
        .await
        .map_err(migrate_err)?;
    }
    tx.commit().await.map_err(migrate_err)
}

/// A client error in words that carry no stored value: for a server error its severity,
/// message and code (never its DETAIL, which can quote a row's values); otherwise
/// tokio-postgres's description with its causes (connection, TLS and I/O errors name no value,
/// and the password is never part of one).
fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        return format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
    }
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl Store for PostgresStore {
    fn list(&self) -> Result<Vec<Registration>, StoreError> {
        let rows = self
            .run(|c| async move { c.query(SELECT_ALL, &[]).await.map_err(|e| self.failed(&e)) })?;
        rows.iter()
            .map(|row| RawRow::from_pg(row)?.decode())
            .collect()
    }

    fn get(&self, name: &str) -> Result<Registration, StoreError> {
        let row = self.run(|c| async move {
            c.query_opt(SELECT_ONE, &[&name])
                .await
                .map_err(|e| self.failed(&e))
        })?;
        RawRow::from_pg(&row.ok_or_else(|| not_found(name))?)?.decode()
    }

    fn insert(&self, r: &Registration) -> Result<(), StoreError> {
        if !valid_name(&r.name) {
            return Err(StoreError::InvalidName {
                name: r.name.clone(),
            });
        }
        let Encoded { tls, auth, command } = Encoded::of(r)?;
        let h = &r.health;
        let failures = i64::from(h.consecutive_failures);
        self.run(|c| async move {
            c.query(
                INSERT,
                &[
                    &r.name,
                    &r.url,
                    &r.transport.as_str(),
                    &tls,
                    &auth,
                    &r.enabled,
                    &r.created_at,
                    &r.updated_at,
                    &h.status.as_str(),
                    &h.since,
                    &h.last_success,
                    &h.last_error,
                    &failures,
                    &r.era.as_str(),
                    &r.shared_session,
                    &command,
                ],
            )
            .await
            .map_err(|e| {
                // The primary key finds a duplicate, not a prior SELECT another instance could
                // overtake.
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    StoreError::Exists {
                        name: r.name.clone(),
                    }
                } else {
                    self.failed(&e)
                }
            })
            .map(drop)
        })
    }

    fn update(&self, r: &Registration) -> Result<(), StoreError> {
        let Encoded { tls, auth, command } = Encoded::of(r)?;
        let rows = self.run(|c| async move {
            c.query(
                UPDATE,
                &[
                    &r.name,
                    &r.url,
                    &r.transport.as_str(),
                    &tls,
                    &auth,
                    &r.enabled,
                    &r.updated_at,
                    &r.era.as_str(),
                    &r.shared_session,
                    &command,
                ],
            )
            .await
            .map_err(|e| self.failed(&e))
        })?;
        expect_one(rows.len() as u64, &r.name)
    }

    fn remove(&self, name: &str) -> Result<(), StoreError> {
        let rows = self
            .run(|c| async move { c.query(DELETE, &[&name]).await.map_err(|e| self.failed(&e)) })?;
        expect_one(rows.len() as u64, name)
    }

    fn set_health(&self, name: &str, h: &Health) -> Result<(), StoreError> {
        let failures = i64::from(h.consecutive_failures);
        let rows = self.run(|c| async move {
            c.query(
                SET_HEALTH,
                &[
                    &name,
                    &h.status.as_str(),
                    &h.since,
                    &h.last_success,
                    &h.last_error,
                    &failures,
                ],
            )
            .await
            .map_err(|e| self.failed(&e))
        })?;
        expect_one(rows.len() as u64, name)
    }

    fn claim_health_check(&self, name: &str, lease: Duration) -> Result<bool, StoreError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let holder = &self.holder;
        let rows = self.run(|c| async move {
            c.query(CLAIM_HEALTH, &[&name, holder, &lease_ms])
                .await
                .map_err(|e| self.failed(&e))
        })?;
        Ok(!rows.is_empty())
    }

    fn shared_secret(&self, proposed: &[u8]) -> Result<Vec<u8>, StoreError> {
        // Insert-if-absent then read: whichever instance comes first stores its secret, and
        // every instance, the first included, signs with what the table holds.
        self.run(|c| async move {
            c.execute(
                "INSERT INTO shared_secrets (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
                &[&TOKEN_SECRET, &proposed],
            )
            .await
            .map_err(|e| self.failed(&e))?;
            let row = c
                .query_one(
                    "SELECT value FROM shared_secrets WHERE name = $1",
                    &[&TOKEN_SECRET],
                )
                .await
                .map_err(|e| self.failed(&e))?;
            Ok(row.get::<_, Vec<u8>>(0))
        })
    }

    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<StoreChange>> {
        Some(self.changes.subscribe())
    }

    fn fleet(&self) -> Option<&dyn super::fleet::Fleet> {
        Some(self)
    }

    fn save_session(&self, s: &StoredSession) -> Result<(), StoreError> {
        self.run(|c| async move {
            c.execute(
                SESSIONS.save,
                &[&s.id_hash, &s.owner, &s.profile, &s.created_at, &s.seen_at],
            )
            .await
            .map_err(|e| self.failed(&e))
        })?;
        Ok(())
    }

    fn load_session(&self, id_hash: &str) -> Result<Option<StoredSession>, StoreError> {
        self.run(|c| async move {
            let Some(row) = c
                .query_opt(SESSIONS.load, &[&id_hash])
                .await
                .map_err(|e| self.failed(&e))?
            else {
                return Ok(None);
            };
            let subscriptions = c
                .query(SESSIONS.load_subscriptions, &[&id_hash])
                .await
                .map_err(|e| self.failed(&e))?
                .iter()
                .map(|sub| Subscription {
                    endpoint: sub.get(0),
                    uri: sub.get(1),
                })
                .collect();
            Ok(Some(StoredSession {
                id_hash: row.get(0),
                owner: row.get(1),
                profile: row.get(2),
                created_at: row.get(3),
                seen_at: row.get(4),
                subscriptions,
            }))
        })
    }

    fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.run(|c| async move {
            c.query(SESSIONS.end, &[&id_hash])
                .await
                .map_err(|e| self.failed(&e))
        })?;
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
        self.run(|c| async move {
            c.execute(sql, &[&id_hash, &sub.endpoint, &sub.uri])
                .await
                .map_err(|e| self.failed(&e))
        })?;
        Ok(())
    }

    fn touch_sessions(
        &self,
        id_hashes: &[String],
        seen_at: i64,
    ) -> Result<Vec<String>, StoreError> {
        let held: std::collections::HashSet<String> = self
            .run(|c| async move {
                c.query(SESSIONS.touch, &[&id_hashes, &seen_at])
                    .await
                    .map_err(|e| self.failed(&e))
            })?
            .iter()
            .map(|row| row.get(0))
            .collect();
        Ok(id_hashes
            .iter()
            .filter(|hash| !held.contains(*hash))
            .cloned()
            .collect())
    }

    fn publish_session_event(&self, id_hash: &str, message: &str) -> Result<(), StoreError> {
        if message.len() > super::sessions::MAX_EVENT {
            // Kept in a row, which the notice names, in the one statement.
            let prefix = format!("{}{id_hash}:", super::sessions::STORED_EVENT_NOTICE);
            return self.run(|c| async move {
                c.execute(
                    "WITH kept AS (INSERT INTO session_events (id_hash, message, created_ms) \
                     VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT) \
                     RETURNING id) \
                     SELECT pg_notify('mcpgw_registry', $3 || kept.id::TEXT) FROM kept",
                    &[&id_hash, &message, &prefix],
                )
                .await
                .map(drop)
                .map_err(|e| self.failed(&e))
            });
        }
        let payload = format!("{}{id_hash}:{message}", super::sessions::EVENT_NOTICE);
        self.run(|c| async move {
            c.execute("SELECT pg_notify('mcpgw_registry', $1)", &[&payload])
                .await
                .map_err(|e| self.failed(&e))
        })?;
        Ok(())
    }

    fn save_task_owner(
        &self,
        id_hash: &str,
        task_id: &str,
        instance: &str,
    ) -> Result<(), StoreError> {
        self.run(|c| async move {
            c.execute(
                "INSERT INTO task_owners (id_hash, task_id, instance) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM sessions WHERE id_hash = $1) \
                 ON CONFLICT (id_hash, task_id) DO UPDATE SET instance = EXCLUDED.instance",
                &[&id_hash, &task_id, &instance],
            )
            .await
            .map(drop)
            .map_err(|e| self.failed(&e))
        })
    }

    fn load_task_owner(&self, id_hash: &str, task_id: &str) -> Result<Option<String>, StoreError> {
        self.run(|c| async move {
            let row = c
                .query_opt(
                    "SELECT instance FROM task_owners WHERE id_hash = $1 AND task_id = $2",
                    &[&id_hash, &task_id],
                )
                .await
                .map_err(|e| self.failed(&e))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn load_task_instances(&self, id_hash: &str) -> Result<Vec<String>, StoreError> {
        self.run(|c| async move {
            let rows = c
                .query(
                    "SELECT DISTINCT instance FROM task_owners WHERE id_hash = $1",
                    &[&id_hash],
                )
                .await
                .map_err(|e| self.failed(&e))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn load_session_event(&self, id: i64) -> Result<Option<String>, StoreError> {
        self.run(|c| async move {
            let row = c
                .query_opt("SELECT message FROM session_events WHERE id = $1", &[&id])
                .await
                .map_err(|e| self.failed(&e))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn expire_sessions(&self, seen_before: i64) -> Result<u64, StoreError> {
        // Each expired session is announced like a `DELETE`d one, so instances let it go; and
        // the stored messages every instance has had time to read go.
        let keep = super::sessions::STORED_EVENT_KEEP_MS;
        self.run(|c| async move {
            c.execute(
                "DELETE FROM session_events WHERE created_ms < \
                 (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT - $1",
                &[&keep],
            )
            .await
            .map_err(|e| self.failed(&e))?;
            let rows = c
                .query(SESSIONS.expire, &[&seen_before])
                .await
                .map_err(|e| self.failed(&e))?;
            Ok(rows.len() as u64)
        })
    }
}

impl RawRow {
    /// Read the columns of [`columns!`], in order.
    fn from_pg(row: &tokio_postgres::Row) -> Result<Self, StoreError> {
        let read = || -> Result<Self, tokio_postgres::Error> {
            Ok(Self {
                name: row.try_get(0)?,
                url: row.try_get(1)?,
                transport: row.try_get(2)?,
                tls: row.try_get(3)?,
                auth: row.try_get(4)?,
                enabled: row.try_get(5)?,
                created_at: row.try_get(6)?,
                updated_at: row.try_get(7)?,
                health_status: row.try_get(8)?,
                health_since: row.try_get(9)?,
                health_last_success: row.try_get(10)?,
                health_last_error: row.try_get(11)?,
                health_consecutive_failures: row.try_get(12)?,
                era: row.try_get(13)?,
                shared_session: row.try_get(14)?,
                command: row.try_get(15)?,
            })
        };
        read().map_err(|e| StoreError::Query {
            detail: describe(&e),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_write_notifies_the_channel_it_listens_on() {
        for sql in [
            super::INSERT,
            super::UPDATE,
            super::DELETE,
            super::SET_HEALTH,
        ] {
            assert!(
                sql.contains(&format!("pg_notify('{}'", super::CHANNEL)),
                "{sql}"
            );
        }
    }
}
