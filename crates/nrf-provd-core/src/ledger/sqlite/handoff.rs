//! The hand-off state in the station's SQLite (`handoff`, schema version 6:
//! what each device was given) and its queues (the `deliveries` rows of the
//! sinks `cloud-claim` and `cloud-onboard`, schema version 16), on a
//! connection of its own: a hand-off never waits in line with the
//! station's commits (and the daemon's runs never wait for a hand-off
//! beyond SQLite's own write lock, held for one short transaction).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, Row, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use super::payload::Payload;
use super::{
    Db, MIGRATIONS, SqliteLedger, blocking, dbtime, lock_side_file, parse_time, parse_uuid,
    restrict_side_file, side_file, sql, user_version, uuid_text,
};
use crate::ledger::deliveries::SinkId;
use crate::ledger::handoff::{
    ClaimCandidate, DeviceHandoff, DeviceResult, HandoffLedger, HandoffResult, HandoffStep,
    OnboardCandidate, PendingOnboard, QueueFilter,
};
use crate::ledger::{LedgerError, Outcome, RunId};

/// The schema version that has the `handoff` table.
const HANDOFF_VERSION: i64 = 6;
/// How long a hand-off write waits for the station's write lock: the
/// station's transactions are short, and a hand-off is in no hurry.
const HANDOFF_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The hand-off state of one database (see [`crate::ledger::handoff`]).
#[derive(Clone)]
pub struct SqliteHandoff {
    db: Arc<Db>,
}

impl std::fmt::Debug for SqliteHandoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteHandoff")
            .field("path", &self.db.path)
            .finish_non_exhaustive()
    }
}

impl SqliteLedger {
    /// Open the hand-off state of the database at `path` to hand off: one
    /// hand-off per database at a time, across processes (an exclusive
    /// `flock` on `<database>.handoff.lock`, [`LedgerError::HandoffBusy`]
    /// otherwise). Works while a daemon records into the database. A
    /// database of an older release is migrated first when no daemon holds
    /// it. Blocking: call it at start-up.
    pub fn open_handoff(path: &Path) -> Result<SqliteHandoff, LedgerError> {
        let lock = lock_side_file(path, ".handoff.lock", || LedgerError::HandoffBusy {
            path: path.to_owned(),
        })?;
        let conn = open_current(path, false)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("foreign_keys=ON"))?;
        restrict_side_file(&side_file(path, "-wal"))?;
        restrict_side_file(&side_file(path, "-shm"))?;
        Ok(SqliteHandoff {
            db: Arc::new(Db::start("db-handoff", conn, Some(lock), None, path, 0)?),
        })
    }

    /// The hand-off state for reading only (`cloud status`, `--dry-run`):
    /// no lock, safe while a daemon or a hand-off writes.
    pub fn open_handoff_read_only(path: &Path) -> Result<SqliteHandoff, LedgerError> {
        let conn = open_current(path, true)?;
        Ok(SqliteHandoff {
            db: Arc::new(Db::start("db-handoff", conn, None, None, path, 0)?),
        })
    }
}

/// A connection to a database that has the hand-off table: migrated first
/// (as `open_read_only` does) when it is older and no daemon holds it.
fn open_current(path: &Path, read_only: bool) -> Result<Connection, LedgerError> {
    // Migrates an older database when it can, refuses a missing or foreign one.
    drop(SqliteLedger::open_read_only(path)?);
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sql("open for hand-off"))?;
    conn.busy_timeout(HANDOFF_BUSY_TIMEOUT)
        .map_err(sql("busy_timeout"))?;
    let version = user_version(&conn)?;
    if version < HANDOFF_VERSION {
        return Err(LedgerError::OldSchema {
            path: path.to_owned(),
            found: version,
            needed: HANDOFF_VERSION,
        });
    }
    if usize::try_from(version).map_or(true, |v| v > MIGRATIONS.len()) {
        return Err(LedgerError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: MIGRATIONS.len(),
        });
    }
    Ok(conn)
}

impl SqliteHandoff {
    pub fn path(&self) -> &PathBuf {
        &self.db.path
    }
}

fn outcome_of(text: String) -> Result<Outcome, LedgerError> {
    Outcome::parse(&text).ok_or(LedgerError::Corrupt {
        what: "run outcome",
        value: text,
    })
}

fn device_of(text: String) -> Result<Uuid, LedgerError> {
    parse_uuid(Some(text), "device UUID")?.ok_or(LedgerError::Corrupt {
        what: "device UUID",
        value: String::new(),
    })
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The cutoff for `retry_refused_after`: refusals at or after it are left out.
fn cutoff(filter: &QueueFilter) -> Option<String> {
    filter
        .retry_refused_after
        .map(|age| dbtime::format(OffsetDateTime::now_utc() - age))
}

/// Claims: the device rows owed to the sink `cloud-claim` (migration 0016:
/// of each device not claimed yet, its latest claimable passed run, and its
/// latest claimable collected run when newer), a device's collected row
/// only when asked, then winning over its passed row. ?1 'collected' or
/// 'passed', ?2 since, ?3 after, ?4 limit, ?5 refusal cutoff, ?6 the sink.
/// It reads the owed rows by sink id: a page costs what it returns, not the
/// history. The newer-row check walks the device's own runs
/// (`runs_by_device`; `CROSS JOIN` and `+n.id`, `+n.outcome` keep SQLite,
/// which has no statistics here, from walking every owed row after this
/// one for each row instead: 28 s a page at 10^5 runs).
const CLAIM_QUEUE: &str = "
SELECT r.id, r.device_uuid, r.outcome, p.format, p.body
  FROM deliveries d JOIN runs r ON r.id = d.run_id JOIN run_payloads p ON p.run_id = r.id
  LEFT JOIN handoff h ON h.device_uuid = r.device_uuid
 WHERE d.sink_id = ?6 AND d.run_id > ?3
   AND r.outcome IN ('passed', ?1)
   AND NOT EXISTS (SELECT 1 FROM runs n CROSS JOIN deliveries dn ON dn.sink_id = ?6 AND dn.run_id = n.id
                    WHERE n.device_uuid = r.device_uuid AND +n.id > r.id AND +n.outcome = ?1)
   AND h.claimed_at IS NULL
   AND (?5 IS NULL OR h.last_error IS NULL OR h.error_step <> 'claim' OR h.error_at < ?5)
   AND (?2 IS NULL OR r.started_at >= ?2)
 ORDER BY d.run_id LIMIT ?4";

/// Onboarding: the device rows owed to the sink `cloud-onboard`: a passed
/// run that installed a device certificate, or a collected one (newer, so
/// it wins) once the device is claimed (nRF Cloud vouched for it then);
/// not onboarded, not waiting on a bulk operation. Parameters as
/// [`CLAIM_QUEUE`] (?1 unused).
const ONBOARD_QUEUE: &str = "
SELECT r.id, r.device_uuid, r.outcome, p.format, p.body
  FROM deliveries d JOIN runs r ON r.id = d.run_id JOIN run_payloads p ON p.run_id = r.id
  LEFT JOIN handoff h ON h.device_uuid = r.device_uuid
 WHERE d.sink_id = ?6 AND d.run_id > ?3
   AND (r.outcome = 'passed' OR (r.outcome = 'collected' AND h.claimed_at IS NOT NULL))
   AND NOT (h.claimed_at IS NOT NULL AND EXISTS (
            SELECT 1 FROM runs n CROSS JOIN deliveries dn ON dn.sink_id = ?6 AND dn.run_id = n.id
             WHERE n.device_uuid = r.device_uuid AND +n.id > r.id AND +n.outcome = 'collected'))
   AND h.onboarded_at IS NULL
   AND COALESCE(h.onboard_pending, 0) = 0
   AND (?5 IS NULL OR h.last_error IS NULL OR h.error_step <> 'onboard' OR h.error_at < ?5)
   AND ?1 IS NOT NULL
   AND (?2 IS NULL OR r.started_at >= ?2)
 ORDER BY d.run_id LIMIT ?4";

type QueueRow = (RunId, String, String, Payload);

fn queue_rows(
    conn: &Connection,
    query: &str,
    sink: SinkId,
    filter: &QueueFilter,
) -> Result<Vec<QueueRow>, LedgerError> {
    let collected = if filter.include_collected {
        "collected"
    } else {
        "passed"
    };
    let mut stmt = conn
        .prepare_cached(query)
        .map_err(sql("read hand-off queue"))?;
    let rows = stmt
        .query_map(
            params![
                collected,
                filter.since.map(dbtime::format),
                filter.after_run,
                limit_of(filter.limit),
                cutoff(filter),
                sink.0,
            ],
            |row| {
                Ok((
                    row.get::<_, RunId>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Vec<u8>>(4)?,
                ))
            },
        )
        .map_err(sql("read hand-off queue"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("read hand-off queue"))?;
    rows.into_iter()
        .map(|(run, uuid, outcome, format, body)| {
            Ok((run, uuid, outcome, Payload::unpack(format, &body)?))
        })
        .collect()
}

const COLUMNS: &str = "h.device_uuid, h.run_id, h.claimed_at, h.onboarded_at, h.bulk_op_id,
     h.bulk_op_row, h.onboard_pending, h.last_error, h.error_step, h.error_at, h.attempts,
     h.updated_at";

type RawHandoff = (
    String,
    RunId,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<u32>,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    u32,
    String,
);

fn raw_handoff(row: &Row<'_>) -> rusqlite::Result<RawHandoff> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
        row.get(11)?,
    ))
}

fn opt_time(
    text: Option<String>,
    what: &'static str,
) -> Result<Option<OffsetDateTime>, LedgerError> {
    text.map(|t| parse_time(t, what)).transpose()
}

fn into_handoff(raw: RawHandoff) -> Result<DeviceHandoff, LedgerError> {
    let (
        uuid,
        run_id,
        claimed_at,
        onboarded_at,
        bulk_op_id,
        bulk_op_row,
        onboard_pending,
        last_error,
        error_step,
        error_at,
        attempts,
        updated_at,
    ) = raw;
    Ok(DeviceHandoff {
        device_uuid: device_of(uuid)?,
        run_id,
        claimed_at: opt_time(claimed_at, "claim time")?,
        onboarded_at: opt_time(onboarded_at, "onboarding time")?,
        bulk_op_id,
        bulk_op_row,
        onboard_pending,
        last_error,
        error_step: error_step.as_deref().and_then(HandoffStep::parse),
        error_at: opt_time(error_at, "hand-off error time")?,
        attempts,
        updated_at: parse_time(updated_at, "hand-off time")?,
    })
}

const CLAIM_DONE: &str = "
INSERT INTO handoff (device_uuid, run_id, claimed_at, attempts, updated_at)
VALUES (?1, ?2, ?3, 1, ?3)
ON CONFLICT (device_uuid) DO UPDATE SET
    run_id = excluded.run_id,
    claimed_at = COALESCE(claimed_at, excluded.claimed_at),
    attempts = attempts + 1,
    last_error = CASE WHEN error_step = 'claim' THEN NULL ELSE last_error END,
    error_at = CASE WHEN error_step = 'claim' THEN NULL ELSE error_at END,
    error_step = CASE WHEN error_step = 'claim' THEN NULL ELSE error_step END,
    updated_at = excluded.updated_at";

const CLAIM_REFUSED: &str = "
INSERT INTO handoff (device_uuid, run_id, last_error, error_step, error_at, attempts, updated_at)
VALUES (?1, ?2, ?4, 'claim', ?3, 1, ?3)
ON CONFLICT (device_uuid) DO UPDATE SET
    run_id = excluded.run_id,
    attempts = attempts + 1,
    last_error = excluded.last_error,
    error_step = 'claim',
    error_at = excluded.error_at,
    updated_at = excluded.updated_at";

// Onboarding attempts were counted when the rows were sent.
const ONBOARD_DONE: &str = "
INSERT INTO handoff (device_uuid, run_id, onboarded_at, updated_at)
VALUES (?1, ?2, ?3, ?3)
ON CONFLICT (device_uuid) DO UPDATE SET
    run_id = excluded.run_id,
    onboarded_at = COALESCE(onboarded_at, excluded.onboarded_at),
    onboard_pending = 0,
    last_error = CASE WHEN error_step = 'onboard' THEN NULL ELSE last_error END,
    error_at = CASE WHEN error_step = 'onboard' THEN NULL ELSE error_at END,
    error_step = CASE WHEN error_step = 'onboard' THEN NULL ELSE error_step END,
    updated_at = excluded.updated_at";

const ONBOARD_REFUSED: &str = "
INSERT INTO handoff (device_uuid, run_id, last_error, error_step, error_at, updated_at)
VALUES (?1, ?2, ?4, 'onboard', ?3, ?3)
ON CONFLICT (device_uuid) DO UPDATE SET
    run_id = excluded.run_id,
    onboard_pending = 0,
    last_error = excluded.last_error,
    error_step = 'onboard',
    error_at = excluded.error_at,
    updated_at = excluded.updated_at";

const ONBOARD_SENT: &str = "
INSERT INTO handoff (device_uuid, run_id, bulk_op_id, bulk_op_row, onboard_pending, attempts, updated_at)
VALUES (?1, ?2, ?3, ?4, 1, 1, ?5)
ON CONFLICT (device_uuid) DO UPDATE SET
    run_id = excluded.run_id,
    bulk_op_id = excluded.bulk_op_id,
    bulk_op_row = excluded.bulk_op_row,
    onboard_pending = 1,
    attempts = attempts + 1,
    updated_at = excluded.updated_at";

/// nRF Cloud has the device: the sink owes it nothing more (?1 device,
/// ?2 sink).
const DELIVERED: &str = "
DELETE FROM deliveries WHERE sink_id = ?2
   AND run_id IN (SELECT id FROM runs WHERE device_uuid = ?1)";

/// nRF Cloud refused the device: still owed, the refusal noted where
/// `nrf-provd deliveries` shows it (?3 nRF Cloud's words).
const REFUSED: &str = "
UPDATE deliveries SET attempts = attempts + 1, last_error = ?3
 WHERE sink_id = ?2 AND run_id IN (SELECT id FROM runs WHERE device_uuid = ?1)";

#[async_trait]
impl HandoffLedger for SqliteHandoff {
    async fn claim_queue(&self, filter: &QueueFilter) -> Result<Vec<ClaimCandidate>, LedgerError> {
        let filter = filter.clone();
        blocking(&self.db, move |conn| {
            queue_rows(conn, CLAIM_QUEUE, SinkId::CLOUD_CLAIM, &filter)?
                .into_iter()
                .map(|(run_id, uuid, outcome, payload)| {
                    Ok(ClaimCandidate {
                        device_uuid: device_of(uuid)?,
                        run_id,
                        outcome: outcome_of(outcome)?,
                        token: payload.identity_token().unwrap_or_default().to_string(),
                    })
                })
                .collect()
        })
        .await
    }

    async fn onboard_queue(
        &self,
        filter: &QueueFilter,
    ) -> Result<Vec<OnboardCandidate>, LedgerError> {
        let filter = filter.clone();
        blocking(&self.db, move |conn| {
            queue_rows(conn, ONBOARD_QUEUE, SinkId::CLOUD_ONBOARD, &filter)?
                .into_iter()
                .map(|(run_id, uuid, outcome, payload)| {
                    Ok(OnboardCandidate {
                        device_uuid: device_of(uuid)?,
                        run_id,
                        outcome: outcome_of(outcome)?,
                        certificate_pem: payload
                            .device_certificate()
                            .unwrap_or_default()
                            .to_string(),
                    })
                })
                .collect()
        })
        .await
    }

    async fn pending_onboards(&self) -> Result<Vec<PendingOnboard>, LedgerError> {
        blocking(&self.db, |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT device_uuid, run_id, bulk_op_id, bulk_op_row FROM handoff
                     WHERE onboard_pending = 1 ORDER BY bulk_op_id, bulk_op_row",
                )
                .map_err(sql("read pending onboardings"))?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, RunId>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, Option<u32>>(3)?,
                    ))
                })
                .map_err(sql("read pending onboardings"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql("read pending onboardings"))?;
            rows.into_iter()
                .map(|(uuid, run_id, op, row)| {
                    let (Some(op), Some(row)) = (op, row) else {
                        return Err(LedgerError::Corrupt {
                            what: "pending onboarding without its bulk operation, of device",
                            value: uuid,
                        });
                    };
                    Ok(PendingOnboard {
                        device_uuid: device_of(uuid)?,
                        run_id,
                        bulk_op_id: op,
                        row,
                    })
                })
                .collect()
        })
        .await
    }

    async fn record(
        &self,
        step: HandoffStep,
        results: &[HandoffResult],
        at: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        let results = results.to_vec();
        let at = dbtime::format(at);
        blocking(&self.db, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("record hand-off"))?;
            {
                let (done, refused, sink) = match step {
                    HandoffStep::Claim => (CLAIM_DONE, CLAIM_REFUSED, SinkId::CLOUD_CLAIM),
                    HandoffStep::Onboard => (ONBOARD_DONE, ONBOARD_REFUSED, SinkId::CLOUD_ONBOARD),
                };
                let mut done = tx.prepare_cached(done).map_err(sql("record hand-off"))?;
                let mut refused = tx.prepare_cached(refused).map_err(sql("record hand-off"))?;
                let mut delivered = tx
                    .prepare_cached(DELIVERED)
                    .map_err(sql("record hand-off"))?;
                let mut noted = tx.prepare_cached(REFUSED).map_err(sql("record hand-off"))?;
                for r in &results {
                    let uuid = uuid_text(r.device_uuid);
                    match &r.result {
                        DeviceResult::Done => done
                            .execute(params![uuid, r.run_id, at])
                            .and_then(|_| delivered.execute(params![uuid, sink.0])),
                        DeviceResult::Refused(why) => refused
                            .execute(params![uuid, r.run_id, at, why])
                            .and_then(|_| noted.execute(params![uuid, sink.0, why])),
                    }
                    .map_err(sql("record hand-off"))?;
                }
            }
            tx.commit().map_err(sql("commit hand-off"))
        })
        .await
    }

    async fn onboard_sent(
        &self,
        op: &str,
        devices: &[(Uuid, RunId)],
        at: OffsetDateTime,
    ) -> Result<(), LedgerError> {
        let devices = devices.to_vec();
        let op = op.to_string();
        let at = dbtime::format(at);
        blocking(&self.db, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("record onboarding sent"))?;
            {
                let mut stmt = tx
                    .prepare_cached(ONBOARD_SENT)
                    .map_err(sql("record onboarding sent"))?;
                for (row, (uuid, run)) in devices.iter().enumerate() {
                    stmt.execute(params![uuid_text(*uuid), run, op, row, at])
                        .map_err(sql("record onboarding sent"))?;
                }
            }
            tx.commit().map_err(sql("commit onboarding sent"))
        })
        .await
    }

    async fn handoffs(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<DeviceHandoff>, LedgerError> {
        let since = since.map(dbtime::format);
        blocking(&self.db, move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM handoff h JOIN runs r ON r.id = h.run_id
                     WHERE (?1 IS NULL OR r.started_at >= ?1) ORDER BY h.device_uuid"
                ))
                .map_err(sql("read hand-off state"))?;
            let rows = stmt
                .query_map([since], raw_handoff)
                .map_err(sql("read hand-off state"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql("read hand-off state"))?;
            rows.into_iter().map(into_handoff).collect()
        })
        .await
    }

    async fn not_handed_off(
        &self,
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<(Uuid, RunId, Outcome)>, LedgerError> {
        let since = since.map(dbtime::format);
        blocking(&self.db, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "WITH latest AS (
                         SELECT MAX(id) AS id FROM runs
                          WHERE device_uuid IS NOT NULL AND outcome IN ('passed', 'collected')
                          GROUP BY device_uuid)
                     SELECT r.device_uuid, r.id, r.outcome FROM runs r JOIN latest l ON l.id = r.id
                      WHERE NOT EXISTS (SELECT 1 FROM handoff h WHERE h.device_uuid = r.device_uuid)
                        AND (?1 IS NULL OR r.started_at >= ?1)
                      ORDER BY r.device_uuid",
                )
                .map_err(sql("read devices not handed off"))?;
            let rows = stmt
                .query_map([since], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, RunId>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .map_err(sql("read devices not handed off"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql("read devices not handed off"))?;
            rows.into_iter()
                .map(|(uuid, run, outcome)| Ok((device_of(uuid)?, run, outcome_of(outcome)?)))
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{CLAIM_QUEUE, ONBOARD_QUEUE};
    use crate::ledger::sqlite::migrate;

    /// A page of a queue reads the sink's owed rows and, for each, its own
    /// device's runs: never a walk of the history or of every owed row
    /// after it (that plan took 28 s a page at 10^5 runs).
    #[test]
    fn a_queue_page_reads_owed_rows_and_each_rows_device_only() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(std::path::Path::new(":memory:"), &mut conn).unwrap();
        for query in [CLAIM_QUEUE, ONBOARD_QUEUE] {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .unwrap();
            let plan = stmt
                .query_map(
                    rusqlite::params!["passed", None::<String>, 0, 1000, None::<String>, -1],
                    |row| row.get::<_, String>(3),
                )
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
                .join("\n");
            assert!(!plan.contains("SCAN"), "{plan}");
            assert!(
                plan.contains("SEARCH d USING PRIMARY KEY (sink_id=? AND run_id>?)"),
                "{plan}"
            );
            assert!(
                plan.contains("SEARCH n USING INDEX runs_by_device (device_uuid=?)"),
                "{plan}"
            );
            assert!(!plan.contains("SEARCH dn USING PRIMARY KEY"), "{plan}");
        }
    }
}
