//! [`Fleet`] on PostgreSQL: the `instances`, `cert_rotations` and `cert_rotation_results`
//! tables (schema version 4). Every time is the database's clock, so instances whose clocks
//! differ still agree on who is alive. A publication notifies the registry's channel with
//! [`crate::store::fleet::ROTATION_NOTICE`] and the rotation's id, in the statement that stores it.

use super::{PostgresStore, StoreError};
use crate::store::fleet::{
    Fleet, HEARTBEAT, KEY_KEPT, LIVE, PendingRotation, Published, RotationOutcome,
};

/// Milliseconds since the epoch by the database's clock, as SQL.
macro_rules! now_ms {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    };
}

const HEARTBEAT_SQL: &str = concat!(
    "INSERT INTO instances (id, started_ms, heartbeat_ms) VALUES ($1, ",
    now_ms!(),
    ", ",
    now_ms!(),
    ") ON CONFLICT (id) DO UPDATE SET heartbeat_ms = EXCLUDED.heartbeat_ms"
);
// $1: how long a key is kept.
const FORGET_KEYS_SQL: &str = concat!(
    "UPDATE cert_rotations SET key_pem = NULL WHERE key_pem IS NOT NULL AND requested_ms < ",
    now_ms!(),
    " - $1"
);
// $1: how long a silent instance's mark and a rotation's outcomes are kept.
const FORGET_INSTANCES_SQL: &str = concat!(
    "DELETE FROM instances WHERE heartbeat_ms < ",
    now_ms!(),
    " - $1"
);
const FORGET_ROTATIONS_SQL: &str = concat!(
    "DELETE FROM cert_rotations WHERE requested_ms < ",
    now_ms!(),
    " - $1"
);
const PUBLISH_SQL: &str = concat!(
    "WITH stored AS (INSERT INTO cert_rotations (cert_pem, key_pem, fingerprint, requested_ms, \
     requested_by) VALUES ($1, $2, $3, ",
    now_ms!(),
    ", $4) RETURNING id) SELECT id, pg_notify('mcpgw_registry', 'cert-rotation:' || id) FROM stored"
);
// $1: the live window.
const LIVE_SQL: &str = concat!(
    "SELECT id FROM instances WHERE heartbeat_ms >= ",
    now_ms!(),
    " - $1 ORDER BY id"
);
const PENDING_SQL: &str = "SELECT r.id, r.cert_pem, r.key_pem FROM cert_rotations r \
     WHERE r.key_pem IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cert_rotation_results o \
     WHERE o.rotation = r.id AND o.instance = $1) ORDER BY r.id";
const REPORT_SQL: &str = concat!(
    "INSERT INTO cert_rotation_results (rotation, instance, listen, ok, error, served, \
     reported_ms) VALUES ($1, $2, $3, $4, $5, $6, ",
    now_ms!(),
    ") ON CONFLICT (rotation, instance) DO UPDATE SET listen = EXCLUDED.listen, \
     ok = EXCLUDED.ok, error = EXCLUDED.error, served = EXCLUDED.served, \
     reported_ms = EXCLUDED.reported_ms"
);
// $1: the rotation; $2: the live window. The key goes once no live instance is still to report.
const FORGET_KEY_WHEN_ALL_REPORTED: &str = concat!(
    "UPDATE cert_rotations SET key_pem = NULL WHERE id = $1 AND key_pem IS NOT NULL \
     AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.heartbeat_ms >= ",
    now_ms!(),
    " - $2 AND NOT EXISTS (SELECT 1 FROM cert_rotation_results o \
     WHERE o.rotation = $1 AND o.instance = i.id))"
);
const OUTCOMES_SQL: &str = "SELECT rotation, instance, listen, ok, error, served \
     FROM cert_rotation_results WHERE rotation = $1 ORDER BY instance";
const CLOSE_SQL: &str = "UPDATE cert_rotations SET key_pem = NULL WHERE id = $1";

/// Rotation outcomes and instance marks are kept this long, then forgotten.
const HISTORY_MS: i64 = 24 * 60 * 60 * 1000;

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Fleet for PostgresStore {
    fn instance(&self) -> &str {
        &self.holder
    }

    fn heartbeat(&self) -> Result<(), StoreError> {
        let (kept, history) = (millis(KEY_KEPT), HISTORY_MS);
        debug_assert!(HEARTBEAT < LIVE);
        self.run(|c| async move {
            c.execute(HEARTBEAT_SQL, &[&self.holder])
                .await
                .map_err(|e| self.failed(&e))?;
            c.execute(FORGET_KEYS_SQL, &[&kept])
                .await
                .map_err(|e| self.failed(&e))?;
            for forget in [FORGET_INSTANCES_SQL, FORGET_ROTATIONS_SQL] {
                c.execute(forget, &[&history])
                    .await
                    .map_err(|e| self.failed(&e))?;
            }
            Ok(())
        })
    }

    fn leave(&self) -> Result<(), StoreError> {
        self.run(|c| async move {
            c.execute("DELETE FROM instances WHERE id = $1", &[&self.holder])
                .await
                .map_err(|e| self.failed(&e))
                .map(drop)
        })
    }

    fn publish_rotation(
        &self,
        cert_pem: &str,
        key_pem: &str,
        fingerprint: &str,
    ) -> Result<Published, StoreError> {
        let live_ms = millis(LIVE);
        self.run(|c| async move {
            let row = c
                .query_one(
                    PUBLISH_SQL,
                    &[&cert_pem, &key_pem, &fingerprint, &self.holder],
                )
                .await
                .map_err(|e| self.failed(&e))?;
            let live = c
                .query(LIVE_SQL, &[&live_ms])
                .await
                .map_err(|e| self.failed(&e))?;
            Ok(Published {
                id: row.get(0),
                live: live.iter().map(|r| r.get(0)).collect(),
            })
        })
    }

    fn pending_rotations(&self) -> Result<Vec<PendingRotation>, StoreError> {
        let rows = self.run(|c| async move {
            c.query(PENDING_SQL, &[&self.holder])
                .await
                .map_err(|e| self.failed(&e))
        })?;
        Ok(rows
            .iter()
            .map(|r| PendingRotation {
                id: r.get(0),
                cert_pem: r.get(1),
                key_pem: r.get(2),
            })
            .collect())
    }

    fn report_rotation(&self, o: &RotationOutcome) -> Result<(), StoreError> {
        let live_ms = millis(LIVE);
        self.run(|c| async move {
            c.execute(
                REPORT_SQL,
                &[
                    &o.rotation,
                    &o.instance,
                    &o.listen,
                    &o.ok,
                    &o.error,
                    &o.served,
                ],
            )
            .await
            .map_err(|e| self.failed(&e))?;
            c.execute(FORGET_KEY_WHEN_ALL_REPORTED, &[&o.rotation, &live_ms])
                .await
                .map_err(|e| self.failed(&e))
                .map(drop)
        })
    }

    fn rotation_outcomes(&self, id: i64) -> Result<Vec<RotationOutcome>, StoreError> {
        let rows = self.run(|c| async move {
            c.query(OUTCOMES_SQL, &[&id])
                .await
                .map_err(|e| self.failed(&e))
        })?;
        Ok(rows
            .iter()
            .map(|r| RotationOutcome {
                rotation: r.get(0),
                instance: r.get(1),
                listen: r.get(2),
                ok: r.get(3),
                error: r.get(4),
                served: r.get(5),
            })
            .collect())
    }

    fn close_rotation(&self, id: i64) -> Result<(), StoreError> {
        self.run(|c| async move {
            c.execute(CLOSE_SQL, &[&id])
                .await
                .map_err(|e| self.failed(&e))
                .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_publication_notifies_the_channel_the_instances_listen_on() {
        let notice = format!(
            "pg_notify('{}', '{}' || id)",
            super::super::CHANNEL,
            crate::store::fleet::ROTATION_NOTICE
        );
        assert!(
            super::PUBLISH_SQL.contains(&notice),
            "{}",
            super::PUBLISH_SQL
        );
    }
}
