//! The downstream sinks' outbox in the station's SQLite (`sinks`,
//! `deliveries`): what each sink is still owed, its retry state and its
//! dead letters. On a connection of its own, so that deliveries never wait
//! in line with the station's commits. The rows are written by a trigger in
//! the transaction that finishes a run (see the migration).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use time::OffsetDateTime;

use super::{
    Db, SqliteLedger, blocking, dbtime, grouped, parse_time, read_runs, restrict_side_file,
    side_file, sql,
};
use crate::ledger::deliveries::{Backlog, DeliveryRow, Due, SinkId};
use crate::ledger::{LedgerError, RunFilter, RunId, RunRecord};

/// A delivery's write waits this long for the station's write lock: the
/// station's transactions are short, and a delivery is in no hurry.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The sinks' outbox of one database.
#[derive(Clone)]
pub struct SqliteDeliveries {
    pub(super) db: Arc<Db>,
    /// `backlog` and `list` also show the hand-off's sinks (never
    /// `active`: see [`SqliteDeliveries::showing_handoff`]).
    handoff: bool,
}

impl std::fmt::Debug for SqliteDeliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDeliveries")
            .field("path", &self.db.path)
            .finish_non_exhaustive()
    }
}

impl SqliteLedger {
    /// Open the sinks' outbox of the database at `path` (the daemon's
    /// delivery tasks, `nrf-provd deliveries`). Works while a daemon
    /// records into the database; `read_only` writes nothing. A database
    /// of an older release is migrated first when no daemon holds it.
    pub fn open_deliveries(path: &Path, read_only: bool) -> Result<SqliteDeliveries, LedgerError> {
        // Migrates an older database when it can, refuses a missing or foreign one.
        drop(SqliteLedger::open_read_only(path)?);
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sql("open for deliveries"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("busy_timeout"))?;
        let has_table: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql("look for the deliveries table"))?;
        if has_table.is_none() {
            return Err(LedgerError::NoDeliveries {
                path: path.to_owned(),
            });
        }
        if !read_only {
            // NORMAL, not the station's FULL: in WAL mode a commit then
            // waits for no fsync, and what a power cut can lose is an
            // acknowledgement, i.e. a redelivery, which the receivers'
            // idempotency key makes harmless. The owed rows themselves are
            // written by the station's FULL commit.
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(sql("synchronous=NORMAL"))?;
            restrict_side_file(&side_file(path, "-wal"))?;
            restrict_side_file(&side_file(path, "-shm"))?;
        }
        Ok(SqliteDeliveries {
            db: Arc::new(Db::start("db-deliveries", conn, None, None, path, 0)?),
            handoff: false,
        })
    }

    /// This database's outbox, on a connection of its own (the line's
    /// forwarder).
    pub fn outbox(&self) -> Result<SqliteDeliveries, LedgerError> {
        SqliteLedger::open_deliveries(self.path(), false)
    }
}

fn owed_in(conn: &Connection, sink: SinkId) -> Result<u64, LedgerError> {
    conn.prepare_cached("SELECT COUNT(*) FROM deliveries WHERE sink_id = ?1")
        .and_then(|mut stmt| stmt.query_row([sink.0], |r| r.get::<_, i64>(0)))
        .map(count)
        .map_err(sql("count owed deliveries"))
}

fn acknowledge_in(conn: &Connection, sink: SinkId, run: RunId) -> Result<(), LedgerError> {
    conn.prepare_cached("DELETE FROM deliveries WHERE sink_id = ?1 AND run_id = ?2")
        .and_then(|mut delete| delete.execute(params![sink.0, run]))
        .map(drop)
        .map_err(sql("acknowledge delivery"))
}

/// See [`SqliteDeliveries::next`].
fn next_in(conn: &Connection, sink: SinkId) -> Result<Option<Due>, LedgerError> {
    let row = conn
        .prepare_cached(
            "SELECT run_id, attempts, next_attempt_at, queued_at FROM deliveries
             WHERE sink_id = ?1 AND dead_at IS NULL ORDER BY run_id LIMIT 1",
        )
        .and_then(|mut stmt| {
            stmt.query_row([sink.0], |r| {
                Ok((
                    r.get::<_, RunId>(0)?,
                    r.get::<_, u32>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .optional()
        })
        .map_err(sql("next delivery"))?;
    let Some((run_id, attempts, next_attempt_at, queued_at)) = row else {
        return Ok(None);
    };
    let not_before = next_attempt_at
        .map(|t| parse_time(t, "next attempt time"))
        .transpose()?;
    Ok(Some(Due {
        run: run_id,
        queued_at: parse_time(queued_at, "delivery queued time")?,
        attempts,
        not_before,
    }))
}

fn now_text() -> String {
    dbtime::format(OffsetDateTime::now_utc())
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl SqliteDeliveries {
    /// Whether `backlog` and `list` show the hand-off to nRF Cloud's sinks
    /// (`cloud-claim`, `cloud-onboard`) beside the configured ones:
    /// `nrf-provd deliveries` does when the config has `[cloud]`. The
    /// daemon's watcher does not: the hand-off sends at its own pace
    /// (`hand_off_every`, by hand), so an owed device is no stuck sink.
    /// They have no dead letters (a refusal is sent again by the next
    /// pass) and no `retry_now`.
    pub fn showing_handoff(mut self, show: bool) -> Self {
        self.handoff = show;
        self
    }

    /// Make `names` the configured sinks (in this order): a new one owes
    /// the runs finished from now on; one no longer named owes nothing more
    /// (its rows are kept, and it resumes where it was if named again).
    /// The line is not one of them: see [`SqliteDeliveries::configure_line`].
    pub async fn configure(&self, names: Vec<String>) -> Result<Vec<SinkId>, LedgerError> {
        blocking(&self.db, move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql("configure sinks"))?;
            tx.execute(
                "UPDATE sinks SET active = 0 WHERE id <> ?1",
                [SinkId::LINE.0],
            )
            .map_err(sql("configure sinks"))?;
            let now = now_text();
            let mut ids = Vec::with_capacity(names.len());
            for name in &names {
                tx.execute(
                    "INSERT INTO sinks (name, added_at, active) VALUES (?1, ?2, 1)
                     ON CONFLICT (name) DO UPDATE SET active = 1",
                    params![name, now],
                )
                .map_err(sql("configure sinks"))?;
                let id: i64 = tx
                    .query_row("SELECT id FROM sinks WHERE name = ?1", [name], |r| r.get(0))
                    .map_err(sql("configure sinks"))?;
                ids.push(SinkId(id));
            }
            tx.commit().map_err(sql("configure sinks"))?;
            Ok(ids)
        })
        .await
    }

    /// Whether the station is on a line (`[ledger]`). The line is owed
    /// every run either way; configured, it is shown beside the other sinks
    /// (`backlog`, `list`) and its dead letters may be retried.
    pub async fn configure_line(&self, on_line: bool) -> Result<(), LedgerError> {
        blocking(&self.db, move |conn| {
            conn.execute(
                "UPDATE sinks SET active = ?2 WHERE id = ?1",
                params![SinkId::LINE.0, on_line],
            )
            .map(drop)
            .map_err(sql("configure the line sink"))
        })
        .await
    }

    /// Runs kept for a line the station is not on (yet): `None` when the
    /// line is configured (then it is in [`SqliteDeliveries::backlog`]).
    pub async fn kept_for_line(&self) -> Result<Option<u64>, LedgerError> {
        blocking(&self.db, move |conn| {
            conn.query_row(
                "SELECT COUNT(d.run_id) FROM sinks s LEFT JOIN deliveries d ON d.sink_id = s.id
                 WHERE s.id = ?1 AND NOT s.active GROUP BY s.id",
                [SinkId::LINE.0],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|n| n.map(count))
            .map_err(sql("runs kept for the line"))
        })
        .await
    }

    /// The oldest run `sink` is owed that is not a dead letter, with its
    /// delivery state; `None` when it is owed nothing.
    pub async fn next(&self, sink: SinkId) -> Result<Option<Due>, LedgerError> {
        blocking(&self.db, move |conn| next_in(conn, sink)).await
    }

    /// Run `run` as recorded, to deliver it.
    pub async fn run(&self, run: RunId) -> Result<RunRecord, LedgerError> {
        blocking(&self.db, move |conn| {
            read_runs(conn, &RunFilter::default(), Some(run))?
                .pop()
                .ok_or(LedgerError::UnknownRun(run))
        })
        .await
    }

    /// `sink` has the run: it leaves the sink's outbox.
    pub async fn acknowledge(&self, sink: SinkId, run: RunId) -> Result<(), LedgerError> {
        // Grouped: every sink acknowledges the same new run at about the
        // same moment, and one transaction then serves them all.
        grouped(&self.db, move |conn| acknowledge_in(conn, sink, run)).await
    }

    /// [`acknowledge`](Self::acknowledge), and what `sink` is owed next,
    /// read in the same job: one trip to the outbox's thread, not two.
    pub async fn acknowledge_then_next(
        &self,
        sink: SinkId,
        run: RunId,
    ) -> Result<Option<Due>, LedgerError> {
        grouped(&self.db, move |conn| {
            acknowledge_in(conn, sink, run)?;
            next_in(conn, sink)
        })
        .await
    }

    /// `sink` has all of `runs` (a batch): they leave its outbox, in one
    /// transaction. Returns what it is still owed (dead letters included).
    pub async fn acknowledge_all(
        &self,
        sink: SinkId,
        runs: Vec<RunId>,
    ) -> Result<u64, LedgerError> {
        blocking(&self.db, move |conn| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql("acknowledge deliveries"))?;
            {
                let mut delete = tx
                    .prepare_cached("DELETE FROM deliveries WHERE sink_id = ?1 AND run_id = ?2")
                    .map_err(sql("acknowledge deliveries"))?;
                for run in runs {
                    delete
                        .execute(params![sink.0, run])
                        .map_err(sql("acknowledge deliveries"))?;
                }
            }
            let left = owed_in(&tx, sink)?;
            tx.commit().map_err(sql("acknowledge deliveries"))?;
            Ok(left)
        })
        .await
    }

    /// What `sink` is owed (dead letters included).
    pub async fn owed(&self, sink: SinkId) -> Result<u64, LedgerError> {
        blocking(&self.db, move |conn| owed_in(conn, sink)).await
    }

    /// An attempt at the `limit` oldest runs `sink` is owed (a batch, or the
    /// connection before it) failed with `error` and will be made again:
    /// noted on them, so `deliveries` says why they wait.
    pub async fn note_failure(
        &self,
        sink: SinkId,
        limit: usize,
        error: String,
    ) -> Result<(), LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        blocking(&self.db, move |conn| {
            conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?3
                 WHERE sink_id = ?1 AND run_id IN (
                     SELECT run_id FROM deliveries WHERE sink_id = ?1 AND dead_at IS NULL
                      ORDER BY run_id LIMIT ?2)",
                params![sink.0, limit, error],
            )
            .map(drop)
            .map_err(sql("record a failed delivery"))
        })
        .await
    }

    /// An attempt failed and may succeed later: try again at `at`.
    pub async fn retry_at(
        &self,
        sink: SinkId,
        run: RunId,
        at: OffsetDateTime,
        error: String,
    ) -> Result<(), LedgerError> {
        blocking(&self.db, move |conn| {
            conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = ?3, last_error = ?4
                 WHERE sink_id = ?1 AND run_id = ?2",
                params![sink.0, run, dbtime::format(at), error],
            )
            .map_err(sql("record a failed delivery"))?;
            Ok(())
        })
        .await
    }

    /// The sink refused the run for good: a dead letter, with its answer,
    /// until someone retries it (`deliveries --retry`).
    pub async fn dead_letter(
        &self,
        sink: SinkId,
        run: RunId,
        answer: String,
    ) -> Result<(), LedgerError> {
        blocking(&self.db, move |conn| {
            conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, dead_at = ?3, last_error = ?4,
                     next_attempt_at = NULL
                 WHERE sink_id = ?1 AND run_id = ?2",
                params![sink.0, run, now_text(), answer],
            )
            .map_err(sql("record a dead letter"))?;
            Ok(())
        })
        .await
    }

    /// Per configured sink: what it is owed, how old the oldest is, how
    /// many are retrying and how many are dead letters.
    pub async fn backlog(&self) -> Result<Vec<Backlog>, LedgerError> {
        let handoff = self.handoff;
        blocking(&self.db, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT s.name,
                            COUNT(d.run_id),
                            MIN(d.queued_at),
                            COUNT(CASE WHEN d.dead_at IS NULL AND d.attempts > 0 THEN 1 END),
                            COUNT(d.dead_at)
                     FROM sinks s LEFT JOIN deliveries d ON d.sink_id = s.id
                     WHERE s.active OR (?1 AND s.id < 0) GROUP BY s.id ORDER BY s.id < 0, abs(s.id)",
                )
                .map_err(sql("sink backlog"))?;
            let rows = stmt
                .query_map([handoff], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .map_err(sql("sink backlog"))?;
            let mut out = Vec::new();
            for row in rows {
                let (sink, owed, oldest, retrying, dead) = row.map_err(sql("sink backlog"))?;
                out.push(Backlog {
                    sink,
                    owed: count(owed),
                    oldest_queued_at: oldest
                        .map(|t| parse_time(t, "delivery queue time"))
                        .transpose()?,
                    retrying: count(retrying),
                    dead: count(dead),
                });
            }
            Ok(out)
        })
        .await
    }

    /// The deliveries still owed, oldest first: every configured sink's, or
    /// the one named `sink`; only dead letters with `dead_only`.
    pub async fn list(
        &self,
        sink: Option<String>,
        dead_only: bool,
    ) -> Result<Vec<DeliveryRow>, LedgerError> {
        let handoff = self.handoff;
        blocking(&self.db, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT s.name, d.run_id, r.uid, d.queued_at, d.attempts, d.next_attempt_at,
                            d.last_error, d.dead_at
                     FROM deliveries d JOIN sinks s ON s.id = d.sink_id JOIN runs r ON r.id = d.run_id
                     WHERE (s.active OR (?3 AND s.id < 0)) AND (?1 IS NULL OR s.name = ?1)
                           AND (NOT ?2 OR d.dead_at IS NOT NULL)
                     ORDER BY s.id < 0, abs(s.id), d.run_id",
                )
                .map_err(sql("list deliveries"))?;
            let rows = stmt
                .query_map(params![sink, dead_only, handoff], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, RunId>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, u32>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                })
                .map_err(sql("list deliveries"))?;
            let mut out = Vec::new();
            for row in rows {
                let (sink, run_id, uid, queued, attempts, next, last_error, dead) =
                    row.map_err(sql("list deliveries"))?;
                out.push(DeliveryRow {
                    sink,
                    run_id,
                    run_uid: super::parse_uuid(uid, "run uid")?.unwrap_or_default(),
                    queued_at: parse_time(queued, "delivery queue time")?,
                    attempts,
                    next_attempt_at: next
                        .map(|t| parse_time(t, "next attempt time"))
                        .transpose()?,
                    last_error,
                    dead_at: dead.map(|t| parse_time(t, "dead letter time")).transpose()?,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Send dead letters and waiting retries again now: run `run` only, or
    /// all; every configured sink's, or the one named `sink`. The number of
    /// deliveries requeued.
    pub async fn retry_now(
        &self,
        sink: Option<String>,
        run: Option<RunId>,
    ) -> Result<usize, LedgerError> {
        blocking(&self.db, move |conn| {
            conn.execute(
                "UPDATE deliveries SET dead_at = NULL, next_attempt_at = NULL
                 WHERE (?2 IS NULL OR run_id = ?2)
                   AND sink_id IN (SELECT id FROM sinks WHERE active AND (?1 IS NULL OR name = ?1))",
                params![sink, run],
            )
            .map_err(sql("retry deliveries"))
        })
        .await
    }

    /// Whether every configured sink has acknowledged run `run` (retention
    /// may compact it only then). A run finished before any sink was
    /// configured owes nothing.
    pub async fn acknowledged_by_all(&self, run: RunId) -> Result<bool, LedgerError> {
        blocking(&self.db, move |conn| {
            let owed: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM deliveries d JOIN sinks s ON s.id = d.sink_id
                     WHERE d.run_id = ?1 AND s.active",
                    [run],
                    |r| r.get(0),
                )
                .map_err(sql("is the run delivered"))?;
            Ok(owed == 0)
        })
        .await
    }
}
