//! What the station's SQLite keeps for a line: the batches the forwarder
//! reads from the line sink's rows of the outbox (`deliveries`, filled by a
//! trigger in the transaction that finishes a run), the conflicts the
//! shared ledger found later, and the local device history the line-wide
//! rules consult.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    Db, SqliteDeliveries, blocking, dbtime, finish_in, grouped_deferred, parse_time, parse_uuid,
    read_selected, sql, unbase64_key, uuid_text,
};
use crate::ledger::outbox::{Conflict, ForwardBatch};
use crate::ledger::{
    Binding, Claim, ClaimKind, DeviceCheck, DeviceHistory, LedgerError, Outcome, RunId, RunRecord,
    Sighting, SqliteLedger,
};

/// The line's side of the one outbox: its rows in `deliveries` are read a
/// batch at a time, with what the shared ledger checks. Acknowledgements,
/// dead letters and failures go through the outbox's own methods
/// (`ledger::sqlite::deliveries`), as for every sink.
impl SqliteDeliveries {
    /// The oldest `limit` runs the line is owed after run `after`, dead
    /// letters aside, with the claims and every authority's bindings the
    /// shared ledger checks (none: `None`).
    pub async fn forward_batch(
        &self,
        after: RunId,
        limit: usize,
    ) -> Result<Option<ForwardBatch>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        blocking(&self.db, move |conn| {
            // One read transaction: the runs, claims and bindings of the same ids.
            let tx = conn.transaction().map_err(sql("read outbox"))?;
            // The line's rows (sink 0, `SinkId::LINE`) through the primary key.
            const SELECTED: &str = "SELECT run_id FROM deliveries
                 WHERE sink_id = 0 AND dead_at IS NULL AND run_id > ?2 ORDER BY run_id LIMIT ?1";
            let runs = read_selected(&tx, SELECTED, params![limit, after])?;
            if runs.is_empty() {
                return Ok(None);
            }
            let mut claims = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT run_id, kind, value, claimed_at FROM nonces
                         WHERE run_id IN ({SELECTED}) ORDER BY run_id"
                    ))
                    .map_err(sql("read outbox claims"))?;
                let rows = stmt
                    .query_map(params![limit, after], |row| {
                        Ok((
                            row.get::<_, RunId>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                        ))
                    })
                    .map_err(sql("read outbox claims"))?;
                for row in rows {
                    let (run, kind, value, at) = row.map_err(sql("read outbox claims"))?;
                    claims.push((run, kind, value, parse_time(at, "claim time")?));
                }
            }
            let mut bindings = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT b.authority, b.subject, b.value, b.bound_at, b.station_id, b.port,
                             b.run_uid
                         FROM authority_bindings b JOIN runs r ON r.uid = b.run_uid
                         WHERE r.id IN ({SELECTED})"
                    ))
                    .map_err(sql("read outbox bindings"))?;
                let rows = stmt
                    .query_map(params![limit, after], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, String>(4)?,
                            row.get::<_, String>(5)?,
                            row.get::<_, String>(6)?,
                        ))
                    })
                    .map_err(sql("read outbox bindings"))?;
                for row in rows {
                    let (authority, subject, value, at, station_id, port, run_uid) =
                        row.map_err(sql("read outbox bindings"))?;
                    bindings.push(Binding {
                        authority,
                        subject: parse_uuid(Some(subject), "bound subject")?.unwrap_or_default(),
                        value: unbase64_key(&value)?,
                        at: parse_time(at, "binding time")?,
                        station_id,
                        port,
                        run_uid: parse_uuid(Some(run_uid), "binding run")?.unwrap_or_default(),
                    });
                }
            }
            Ok(Some(ForwardBatch {
                runs,
                claims,
                bindings,
            }))
        })
        .await
    }
}

impl SqliteLedger {
    /// Conflicts recorded on this station's runs.
    pub async fn conflict_count(&self) -> Result<u64, LedgerError> {
        blocking(&self.db, |conn| {
            count(conn, "SELECT COUNT(*) FROM conflicts")
        })
        .await
    }

    /// Record conflicts the shared ledger found on this station's runs:
    /// each once (a repeat changes nothing), the run amended to failed with
    /// `conflict` unless an earlier conflict already did. Conflicts naming
    /// a run this database does not hold are skipped. Returns the new ones
    /// with the local id of their run.
    pub async fn record_conflicts(
        &self,
        conflicts: Vec<Conflict>,
    ) -> Result<Vec<(RunId, Conflict)>, LedgerError> {
        blocking(&self.db, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("record conflict"))?;
            let mut new = Vec::new();
            for conflict in conflicts {
                let run = tx
                    .query_row(
                        "SELECT id, outcome, failed_step, reason_code, reason FROM runs WHERE uid = ?1",
                        [uuid_text(conflict.run_uid)],
                        |row| {
                            Ok((
                                row.get::<_, RunId>(0)?,
                                row.get::<_, String>(1)?,
                                row.get::<_, Option<String>>(2)?,
                                row.get::<_, Option<String>>(3)?,
                                row.get::<_, Option<String>>(4)?,
                            ))
                        },
                    )
                    .optional()
                    .map_err(sql("look up conflicting run"))?;
                let Some((id, outcome, failed_step, reason_code, reason)) = run else {
                    continue;
                };
                let inserted = tx
                    .execute(
                        "INSERT INTO conflicts (run_id, kind, value, other_station, other_port,
                             other_run_uid, other_at, found_at, prior_outcome, prior_failed_step,
                             prior_reason_code, prior_reason)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                         ON CONFLICT (run_id, kind, value) DO NOTHING",
                        params![
                            id,
                            conflict.kind,
                            conflict.value,
                            conflict.other.station_id,
                            conflict.other.port,
                            uuid_text(conflict.other.run_uid),
                            dbtime::format(conflict.other.at),
                            dbtime::format(conflict.found_at),
                            outcome,
                            failed_step,
                            reason_code,
                            reason,
                        ],
                    )
                    .map_err(sql("record conflict"))?;
                if inserted == 0 {
                    continue;
                }
                if reason_code.as_deref() != Some("conflict") {
                    // The first conflict amends the run; later ones are kept only here.
                    let prior =
                        Conflict::prior(&outcome, reason_code.as_deref(), reason.as_deref());
                    tx.execute(
                        "UPDATE runs SET outcome = 'failed', failed_step = ?2,
                             reason_code = 'conflict', reason = ?3
                         WHERE id = ?1",
                        params![
                            id,
                            conflict.step().map(crate::record::Step::as_str),
                            conflict.reason(&prior)
                        ],
                    )
                    .map_err(sql("amend conflicting run"))?;
                }
                new.push((id, conflict));
            }
            tx.commit().map_err(sql("record conflict"))?;
            Ok(new)
        })
        .await
    }

    /// Record finished runs made elsewhere with their claims, all in one
    /// transaction: the quick way to give a bench or test a backlog of
    /// thousands of runs. Each record's `id` is replaced by the new one.
    pub async fn record_finished(
        &self,
        runs: Vec<(RunRecord, Vec<Claim>)>,
    ) -> Result<Vec<RunId>, LedgerError> {
        blocking(&self.db, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("record runs"))?;
            let mut ids = Vec::with_capacity(runs.len());
            for (mut record, claims) in runs {
                if record.outcome == Outcome::InFlight {
                    return Err(LedgerError::InvalidRecord(format!(
                        "run {} is in flight, not finished",
                        record.uid
                    )));
                }
                tx.execute(
                    "INSERT INTO runs (uid, station_id, port, started_at, outcome)
                     VALUES (?1, ?2, ?3, ?4, 'in_flight')",
                    params![
                        uuid_text(record.uid),
                        record.station_id,
                        record.port,
                        dbtime::format(record.started_at)
                    ],
                )
                .map_err(sql("record run"))?;
                record.id = tx.last_insert_rowid();
                for claim in &claims {
                    tx.execute(
                        "INSERT INTO nonces (kind, value, run_id, claimed_at) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            claim.kind.as_str(),
                            stored_claim_value(claim),
                            record.id,
                            dbtime::format(claim.at)
                        ],
                    )
                    .map_err(sql("record claim"))?;
                }
                finish_in(&tx, &record)?;
                ids.push(record.id);
            }
            tx.commit().map_err(sql("record runs"))?;
            Ok(ids)
        })
        .await
    }
}

/// A claim's value as the ledger stores it: hex nonces lowercase, a `jti`
/// exactly as given.
pub fn stored_claim_value(claim: &Claim) -> String {
    match claim.kind {
        ClaimKind::JwtJti => claim.value.clone(),
        ClaimKind::AttestNonce | ClaimKind::KeygenNonce => claim.value.to_ascii_lowercase(),
    }
}

fn count(conn: &Connection, query: &str) -> Result<u64, LedgerError> {
    conn.query_row(query, [], |row| row.get::<_, i64>(0))
        .map(|n| u64::try_from(n).unwrap_or(0))
        .map_err(sql("count"))
}

// A device's runs, through its index: without statistics SQLite would
// rather walk `runs_by_outcome`, every passed run of the history, for each
// board (seconds a board at a million runs).
const DEVICE_RUNNING: &str = "SELECT station_id, port, uid, started_at
     FROM runs INDEXED BY runs_by_device
     WHERE device_uuid = ?1 AND outcome = 'in_flight' AND id <> ?2 ORDER BY id LIMIT 1";
const DEVICE_PASSED: &str = "SELECT COUNT(*) FROM runs INDEXED BY runs_by_device
     WHERE device_uuid = ?1 AND outcome = 'passed'";
const DEVICE_LAST_PASSED: &str = "SELECT station_id, port, uid, COALESCE(finished_at, started_at)
     FROM runs INDEXED BY runs_by_device
     WHERE device_uuid = ?1 AND outcome = 'passed' ORDER BY id DESC LIMIT 1";

/// The local side of [`crate::ledger::Ledger::check_device`]: the run now
/// carries its device (so another port of this station sees it in flight),
/// and what this station's own runs say of the device.
pub(super) async fn check_device(
    db: &Arc<Db>,
    check: &DeviceCheck,
) -> Result<DeviceHistory, LedgerError> {
    let check = check.clone();
    // In the writer's group, deferred as the run's other writes before its
    // finish (see the writer's "One fsync a run").
    grouped_deferred(db, move |tx| check_device_in(tx, &check)).await
}

/// [`check_device`] inside the writer's transaction.
pub(super) fn check_device_in(
    tx: &Connection,
    check: &DeviceCheck,
) -> Result<DeviceHistory, LedgerError> {
    let device = uuid_text(check.device_uuid);
    // Every run asks: its statements stay prepared.
    let updated = tx
        .prepare_cached(
            "UPDATE runs SET device_uuid = ?2, imei = COALESCE(?3, imei)
             WHERE id = ?1 AND outcome = 'in_flight'",
        )
        .and_then(|mut update| update.execute(params![check.run, device, check.imei]))
        .map_err(sql("check device"))?;
    if updated == 0 {
        return Err(LedgerError::UnknownRun(check.run));
    }
    let sighting = |row: &rusqlite::Row<'_>| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
        ))
    };
    let running = tx
        .prepare_cached(DEVICE_RUNNING)
        .and_then(|mut query| query.query_row(params![device, check.run], sighting))
        .optional()
        .map_err(sql("check device"))?;
    let passed: i64 = tx
        .prepare_cached(DEVICE_PASSED)
        .and_then(|mut query| query.query_row([&device], |row| row.get(0)))
        .map_err(sql("check device"))?;
    let last_passed = tx
        .prepare_cached(DEVICE_LAST_PASSED)
        .and_then(|mut query| query.query_row([&device], sighting))
        .optional()
        .map_err(sql("check device"))?;
    let to_sighting = |(station_id, port, uid, at): (String, String, String, String)| {
        Ok::<_, LedgerError>(Sighting {
            station_id,
            port,
            run_uid: parse_uuid(Some(uid), "run uid")?.unwrap_or_default(),
            at: parse_time(at, "run time")?,
        })
    };
    Ok(DeviceHistory {
        running: running.map(to_sighting).transpose()?,
        passed: u64::try_from(passed).unwrap_or(0),
        last_passed: last_passed.map(to_sighting).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_check_reads_the_device_s_runs_not_the_history() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrate(std::path::Path::new(":memory:"), &mut conn).unwrap();
        for query in [DEVICE_RUNNING, DEVICE_PASSED, DEVICE_LAST_PASSED] {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .unwrap();
            let values: Vec<rusqlite::types::Value> = vec!["d".to_string().into(), 1i64.into()];
            let bound = &values[..stmt.parameter_count()];
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(bound), |row| row.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("\n");
            assert!(plan.contains("runs_by_device"), "{query}\n{plan}");
        }
    }
}
