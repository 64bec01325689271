//! Retention (`[retention] keep_full`): a run finished longer ago than
//! `keep_full` loses its payload (steps, tokens, artifacts: the bulk) once
//! nothing downstream still needs it. Its row — outcome, device,
//! traceability — and its claims (nonces, `jti`s: the replay defence) stay
//! forever; `runs.compacted_at` says when the payload went.
//!
//! A run is kept in full while a sink still owes it a delivery (any
//! `deliveries` row, dead letters included). The line sink's rows count
//! only when the station is on a line: a station alone keeps them for a
//! line it may join, but not its payloads (a run joins the line as what is
//! left of it then). A device's
//! latest passed run, and a run the hand-off to nRF Cloud may still send,
//! is *trimmed* instead: its payload keeps only what exports and the
//! hand-off read (the identity token, the device certificate, the attest
//! and install steps without detail; `Payload::for_exports`). A factory
//! provisions most devices once, so without the trim nearly every passed
//! run would stay in full forever.
//!
//! Batches of [`BATCH`] runs, each its own transaction, so the station's
//! commits never wait long; the pages freed are then returned to the file
//! by `PRAGMA incremental_vacuum` in bounded steps (the database is
//! `auto_vacuum = INCREMENTAL`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use time::OffsetDateTime;

use super::{Db, SqliteLedger, blocking, dbtime, payload, sql};
use crate::ledger::LedgerError;

/// Runs compacted per transaction.
pub const BATCH: usize = 1000;
/// Pages returned to the file per `incremental_vacuum` step.
const VACUUM_STEP: i64 = 1000;
/// How often the daemon compacts.
pub const EVERY: Duration = Duration::from_secs(3600);
/// A compaction's write waits this long for the station's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What retention keeps in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// How long a finished run keeps its payload.
    pub keep_full: Duration,
    /// The station forwards to a line: a run waits until it is forwarded.
    pub on_line: bool,
}

/// Runs and their payloads' bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub runs: u64,
    pub bytes: u64,
}

/// What a compaction would do now (`results --prune --dry-run`): the old
/// runs it would compact, and those it keeps, each under its first reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrunePlan {
    pub compact: Count,
    /// Latest passes and runs the hand-off may send, not yet trimmed (their
    /// bytes now; a trim keeps a fraction).
    pub trim: Count,
    pub owed_to_sink: Count,
    pub not_forwarded: Count,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Runs whose payload went.
    pub runs: u64,
    /// Runs trimmed to what exports and the hand-off read.
    pub trimmed: u64,
    /// The payloads' bytes dropped (by compaction and trim).
    pub bytes: u64,
    /// Pages `incremental_vacuum` returned to the file system.
    pub pages_freed: u64,
}

/// The old runs that still have a payload, each with why it is kept
/// ('compact' when nothing keeps it, 'trim' when only exports and the
/// hand-off need it and it is not trimmed yet, 'trimmed' when it is).
/// ?1 cutoff, ?2 on a line. Each reason is a lookup of the run's own
/// device (`runs_by_device`), not a pass over the history: a batch costs
/// what it returns. (`+n.outcome`: without statistics SQLite would take
/// `runs_by_outcome` and walk every passed run for each candidate.)
const CLASSIFIED: &str = "
SELECT r.id AS id, length(p.body) AS bytes,
       CASE
         -- Owed to a sink; the line's (sink 0) only on a line; the
         -- hand-off's (sinks -1, -2) below.
         WHEN EXISTS (SELECT 1 FROM deliveries d WHERE d.run_id = r.id AND d.sink_id > 0) THEN 'sink'
         WHEN ?2 AND EXISTS (SELECT 1 FROM deliveries d WHERE d.run_id = r.id AND d.sink_id = 0)
           THEN 'line'
         -- The latest passed run of its device (the exports read it).
         WHEN (r.outcome = 'passed' AND r.device_uuid IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM runs n
                  WHERE n.device_uuid = r.device_uuid AND +n.outcome = 'passed' AND n.id > r.id))
           -- What the hand-off may still send: owed to its sinks.
           OR EXISTS (SELECT 1 FROM deliveries d WHERE d.run_id = r.id AND d.sink_id < 0)
           THEN CASE WHEN r.compacted_at IS NULL THEN 'trim' ELSE 'trimmed' END
         ELSE 'compact'
       END AS why
  FROM runs r JOIN run_payloads p ON p.run_id = r.id
 WHERE r.outcome <> 'in_flight' AND r.finished_at IS NOT NULL AND r.finished_at < ?1";

/// Retention's connection to one database (the daemon's task, `results --prune`).
#[derive(Clone)]
pub struct SqliteRetention {
    db: Arc<Db>,
}

impl std::fmt::Debug for SqliteRetention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRetention")
            .field("path", &self.db.path)
            .finish_non_exhaustive()
    }
}

impl SqliteLedger {
    /// Open retention's connection to the database at `path`: one of its
    /// own, so a compaction never waits in line with the station's commits.
    /// Works while a daemon records into the database.
    pub fn open_retention(path: &Path) -> Result<SqliteRetention, LedgerError> {
        // Migrates an older database when it can, refuses a missing or foreign one.
        drop(SqliteLedger::open_read_only(path)?);
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("open for retention"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("busy_timeout"))?;
        Ok(SqliteRetention {
            db: Arc::new(Db::start("db-retention", conn, None, None, path, 0)?),
        })
    }
}

fn cutoff(policy: Retention, now: OffsetDateTime) -> String {
    dbtime::format(now - policy.keep_full)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl SqliteRetention {
    /// What [`SqliteRetention::compact`] would do at `now`.
    pub async fn plan(
        &self,
        policy: Retention,
        now: OffsetDateTime,
    ) -> Result<PrunePlan, LedgerError> {
        let cutoff = cutoff(policy, now);
        blocking(&self.db, move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT why, COUNT(*), SUM(bytes) FROM ({}) AS c GROUP BY why",
                    CLASSIFIED
                ))
                .map_err(sql("plan retention"))?;
            let rows = stmt
                .query_map(params![cutoff, policy.on_line], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                })
                .map_err(sql("plan retention"))?;
            let mut plan = PrunePlan::default();
            for row in rows {
                let (why, runs, bytes) = row.map_err(sql("plan retention"))?;
                let slot = match why.as_str() {
                    "sink" => &mut plan.owed_to_sink,
                    "line" => &mut plan.not_forwarded,
                    "trim" => &mut plan.trim,
                    "compact" => &mut plan.compact,
                    _ => continue, // trimmed already: nothing more to do
                };
                *slot = Count {
                    runs: count(runs),
                    bytes: count(bytes.unwrap_or(0)),
                };
            }
            Ok(plan)
        })
        .await
    }

    /// Compact every run retention lets go at `now`, [`BATCH`] a
    /// transaction, then return the freed pages to the file.
    pub async fn compact(
        &self,
        policy: Retention,
        now: OffsetDateTime,
    ) -> Result<Compacted, LedgerError> {
        let cutoff = cutoff(policy, now);
        let at = dbtime::format(now);
        let mut done = Compacted::default();
        let mut after = 0;
        loop {
            let (cutoff, at) = (cutoff.clone(), at.clone());
            let (batch, last) = blocking(&self.db, move |conn| {
                compact_batch(conn, &cutoff, policy, &at, after)
            })
            .await?;
            done.runs += batch.runs;
            done.trimmed += batch.trimmed;
            done.bytes += batch.bytes;
            match last {
                Some(last) => after = last,
                None => break,
            }
        }
        done.pages_freed = self.vacuum().await?;
        Ok(done)
    }

    /// The daemon's task: compact now (after READY), then every `every`,
    /// until dropped (aborted). A failure is logged and tried again at the
    /// next turn: retention is never in the station's way.
    pub async fn serve(self, policy: Retention, every: Duration) {
        loop {
            match self.compact(policy, OffsetDateTime::now_utc()).await {
                Ok(done) if done.runs > 0 || done.trimmed > 0 || done.pages_freed > 0 => {
                    tracing::info!(
                        runs = done.runs,
                        trimmed = done.trimmed,
                        bytes = done.bytes,
                        pages_freed = done.pages_freed,
                        "retention compacted runs"
                    )
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%err, "retention failed; trying again later"),
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Return free pages to the file system, [`VACUUM_STEP`] at a time.
    /// Frees nothing in a database made before `auto_vacuum = INCREMENTAL`
    /// (a full `VACUUM` would convert it; not done behind the station's back).
    pub async fn vacuum(&self) -> Result<u64, LedgerError> {
        let mut freed = 0;
        loop {
            let step = blocking(&self.db, |conn| {
                let before: i64 = conn
                    .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                    .map_err(sql("freelist_count"))?;
                conn.query_row(
                    &format!("PRAGMA incremental_vacuum({VACUUM_STEP})"),
                    [],
                    |_| Ok(()),
                )
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(()),
                    e => Err(e),
                })
                .map_err(sql("incremental_vacuum"))?;
                let after: i64 = conn
                    .query_row("PRAGMA freelist_count", [], |r| r.get(0))
                    .map_err(sql("freelist_count"))?;
                Ok(count(before - after))
            })
            .await?;
            freed += step;
            if step == 0 {
                return Ok(freed);
            }
        }
    }
}

/// Compact the next [`BATCH`] compactable runs after run `after`; gives
/// what it did and the last run it looked at (`None`: none were left).
///
/// The choice is a read (in WAL it never blocks the station's commits,
/// however long the history); only the deletions hold the write lock, and
/// they check again what a run can gain meanwhile (a delivery owed: the
/// line's counts on a line only, the hand-off's unless the run is
/// trimmed), an indexed lookup.
fn compact_batch(
    conn: &mut Connection,
    cutoff: &str,
    policy: Retention,
    at: &str,
    after: i64,
) -> Result<(Compacted, Option<i64>), LedgerError> {
    let chosen: Vec<(i64, i64, bool)> = {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT id, bytes, why = 'trim' FROM ({CLASSIFIED}) AS c
                  WHERE why IN ('compact', 'trim') AND id > ?3 ORDER BY id LIMIT {BATCH}"
            ))
            .map_err(sql("choose runs to compact"))?;
        stmt.query_map(params![cutoff, policy.on_line, after], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(sql("choose runs to compact"))?
        .collect::<Result<_, _>>()
        .map_err(sql("choose runs to compact"))?
    };
    let Some(&(last, _, _)) = chosen.last() else {
        return Ok((Compacted::default(), None));
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("begin compaction"))?;
    let mut done = Compacted::default();
    {
        // The hand-off's rows (sinks < 0) keep a run trimmed, not whole.
        let mut still_free = tx
            .prepare(
                "SELECT NOT EXISTS (SELECT 1 FROM deliveries
                                     WHERE run_id = ?1
                                       AND (sink_id > 0 OR (sink_id = 0 AND ?2)
                                            OR (sink_id < 0 AND NOT ?3)))",
            )
            .map_err(sql("compact run"))?;
        let mut drop_payload = tx
            .prepare("DELETE FROM run_payloads WHERE run_id = ?1")
            .map_err(sql("compact run"))?;
        let mut mark = tx
            .prepare("UPDATE runs SET compacted_at = ?2 WHERE id = ?1")
            .map_err(sql("compact run"))?;
        // Every chosen payload is deleted first and the trimmed ones
        // written again after: rewritten in place, a smaller row leaves
        // its page as full of gaps as before and the file never shrinks;
        // the batch's (mostly adjacent) rows deleted empty whole pages,
        // and the trimmed rows are packed into fewer.
        let mut trims = Vec::new();
        for (id, bytes, trim) in chosen {
            let free: bool = still_free
                .query_row(params![id, policy.on_line, trim], |row| row.get(0))
                .map_err(sql("compact run"))?;
            if !free {
                continue;
            }
            if trim {
                let Some((trimmed, before)) = payload::trimmed(&tx, id)? else {
                    continue;
                };
                trims.push((id, trimmed, before));
            } else {
                done.runs += 1;
                done.bytes += count(bytes);
            }
            drop_payload.execute([id]).map_err(sql("compact run"))?;
            mark.execute(params![id, at]).map_err(sql("compact run"))?;
        }
        for (id, trimmed, before) in trims {
            let after = payload::insert(&tx, id, &trimmed)?;
            done.trimmed += 1;
            done.bytes += count(before).saturating_sub(after as u64);
        }
    }
    tx.commit().map_err(sql("commit compaction"))?;
    Ok((done, Some(last)))
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::CLASSIFIED;
    use crate::ledger::sqlite::migrate;

    /// Each candidate's reasons are lookups by its device, never a walk of
    /// every passed run: at 10^5 runs that walk made a dry run take 13
    /// minutes instead of half a second.
    #[test]
    fn a_run_is_classified_through_its_device_not_the_history() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(std::path::Path::new(":memory:"), &mut conn).unwrap();
        // No statistics: a station's database has none (no ANALYZE), and
        // without them SQLite prefers `runs_by_outcome` for
        // `device_uuid = ? AND outcome = ?`.
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {CLASSIFIED}"))
            .unwrap();
        let plan = stmt
            .query_map(rusqlite::params!["2026-01-01T00:00:00Z", true], |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
            .join("\n");
        assert!(!plan.contains("runs_by_outcome"), "{plan}");
        assert_eq!(
            plan.matches("USING INDEX runs_by_device").count(),
            1,
            "the lookup of newer passes of the device: {plan}"
        );
        assert!(
            !plan.contains("SCAN d") && !plan.contains("SCAN deliveries"),
            "the owed rows are looked up by run: {plan}"
        );
    }
}
