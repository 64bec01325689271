//! Counts and the summary at the cost of their answer: from the tallies
//! triggers keep (schema version 9: `run_tally`, `device_tally`) when the
//! whole history or one station is asked for, else a GROUP BY over the runs
//! the filter selects through its index. An older database read as it is
//! (read-only, not migrated) is summarised from its runs.

use rusqlite::Connection;

use super::{SqliteReader, filter_sql, read_runs, sql, where_clause};
use crate::ledger::summary::{Summary, SummaryRow};
use crate::ledger::{Counts, LedgerError, Outcome, RunFilter};

/// The schema version that has the tallies.
const TALLIES: i64 = 9;

/// Runs by outcome, every station.
pub(super) fn counts(conn: &mut Connection) -> Result<Counts, LedgerError> {
    let query = if SqliteReader::version(conn)? >= TALLIES {
        "SELECT outcome, SUM(runs) FROM run_tally GROUP BY outcome"
    } else {
        "SELECT outcome, COUNT(*) FROM runs GROUP BY outcome"
    };
    let mut stmt = conn.prepare_cached(query).map_err(sql("count runs"))?;
    let rows = stmt
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(sql("count runs"))?;
    let mut counts = Counts::default();
    for row in rows {
        let (outcome, n) = row.map_err(sql("count runs"))?;
        let n = u64::try_from(n).unwrap_or(0);
        match Outcome::parse(&outcome) {
            Some(outcome) => counts.add(outcome, n),
            None => {
                return Err(LedgerError::Corrupt {
                    what: "run outcome",
                    value: outcome,
                });
            }
        }
    }
    Ok(counts)
}

/// `results --summary` of the runs `filter` selects (its limit ignored).
pub(super) fn summary(conn: &mut Connection, filter: &RunFilter) -> Result<Summary, LedgerError> {
    if SqliteReader::version(conn)? < TALLIES {
        let all = RunFilter {
            limit: None,
            ..filter.clone()
        };
        return Ok(Summary::of(&read_runs(conn, &all, None)?));
    }
    if filter.device_uuid.is_none() && filter.since.is_none() && filter.work_order.is_none() {
        return from_tallies(conn, filter.station_id.as_deref());
    }
    grouped(conn, filter)
}

/// The whole history (or one station's) from the tallies: a few rows.
fn from_tallies(conn: &Connection, station: Option<&str>) -> Result<Summary, LedgerError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT station_id, work_order, outcome, reason_code, runs FROM run_tally
             WHERE runs > 0 AND (?1 IS NULL OR station_id = ?1)",
        )
        .map_err(sql("summarise runs"))?;
    let rows = stmt
        .query_map([station], |row| {
            Ok(SummaryRow {
                station_id: row.get(0)?,
                work_order: Some(row.get::<_, String>(1)?).filter(|w| !w.is_empty()),
                outcome: row.get(2)?,
                reason_code: Some(row.get::<_, String>(3)?).filter(|c| !c.is_empty()),
                runs: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
            })
        })
        .map_err(sql("summarise runs"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("summarise runs"))?;
    let mut stmt = conn
        .prepare_cached("SELECT scope, devices FROM device_tally")
        .map_err(sql("count devices"))?;
    let tallies = stmt
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(sql("count devices"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("count devices"))?;
    let mut devices = Vec::new();
    for (scope, n) in tallies {
        let n = u64::try_from(n).unwrap_or(0);
        match scope.strip_prefix("station:") {
            Some(id) if station.is_none_or(|s| s == id) => {
                // One station asked for: its devices are all there are.
                if station.is_some() {
                    devices.push((None, n));
                }
                devices.push((Some(id.to_string()), n));
            }
            Some(_) => {}
            None if scope == "all" && station.is_none() => devices.push((None, n)),
            None => {}
        }
    }
    Summary::from_groups(&rows, &devices)
}

/// The runs `filter` selects, grouped in SQL through the filter's index.
fn grouped(conn: &Connection, filter: &RunFilter) -> Result<Summary, LedgerError> {
    let (conditions, values) = filter_sql(filter);
    let selection = where_clause(&conditions);
    let params = rusqlite::params_from_iter(values.iter());
    let mut stmt = conn
        .prepare(&format!(
            "SELECT station_id, work_order, outcome, reason_code, COUNT(*) FROM runs{selection}
             GROUP BY station_id, work_order, outcome, reason_code"
        ))
        .map_err(sql("summarise runs"))?;
    let rows = stmt
        .query_map(params, |row| {
            Ok(SummaryRow {
                station_id: row.get(0)?,
                work_order: row.get(1)?,
                outcome: row.get(2)?,
                reason_code: row.get(3)?,
                runs: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
            })
        })
        .map_err(sql("summarise runs"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("summarise runs"))?;
    let mut stmt = conn
        .prepare(&format!(
            "SELECT station_id, COUNT(DISTINCT device_uuid) FROM runs{selection} GROUP BY station_id
             UNION ALL
             SELECT NULL, COUNT(DISTINCT device_uuid) FROM runs{selection}"
        ))
        .map_err(sql("count devices"))?;
    let twice: Vec<&rusqlite::types::Value> = values.iter().chain(values.iter()).collect();
    let devices = stmt
        .query_map(rusqlite::params_from_iter(twice), |row| {
            Ok((
                row.get::<_, Option<String>>(0)?,
                u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })
        .map_err(sql("count devices"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("count devices"))?;
    Summary::from_groups(&rows, &devices)
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;
    use uuid::Uuid;

    use super::*;
    use crate::ledger::sqlite::{finish_in, migrate, uuid_text};
    use crate::ledger::{DeviceInfo, ReasonCode, RunRecord};

    fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(std::path::Path::new(":memory:"), &mut conn).unwrap();
        conn
    }

    /// A finished run of `device` at `station`.
    fn record(
        conn: &Connection,
        station: &str,
        device: Uuid,
        outcome: Outcome,
        reason: Option<ReasonCode>,
    ) {
        let uid = Uuid::from_u128(rand::random());
        conn.execute(
            "INSERT INTO runs (uid, station_id, port, started_at, outcome)
             VALUES (?1, ?2, 'p', '2026-01-01T00:00:00.000000Z', 'in_flight')",
            [uuid_text(uid), station.to_string()],
        )
        .unwrap();
        let record = RunRecord {
            id: conn.last_insert_rowid(),
            uid,
            station_id: station.into(),
            port: "p".into(),
            started_at: OffsetDateTime::now_utc(),
            finished_at: Some(OffsetDateTime::now_utc()),
            outcome,
            failed_step: None,
            reason_code: reason,
            reason: reason.map(|_| "why".into()),
            verified_by: None,
            device: DeviceInfo {
                device_uuid: Some(device),
                ..DeviceInfo::default()
            },
            steps: Vec::new(),
            tokens: Vec::new(),
            artifacts: Vec::new(),
            // Station A's runs under a work order, the others without:
            // the yield per work order comes from the tallies too.
            trace: crate::record::Traceability {
                work_order: (station == "A").then(|| "WO-1".to_string()),
                ..Default::default()
            },
            compacted_at: None,
        };
        finish_in(conn, &record).unwrap();
    }

    #[test]
    fn the_tallies_give_the_summary_the_runs_give() {
        let mut conn = migrated();
        let (a, b, c) = (
            Uuid::from_u128(rand::random()),
            Uuid::from_u128(rand::random()),
            Uuid::from_u128(rand::random()),
        );
        record(&conn, "s1", a, Outcome::Failed, Some(ReasonCode::Timeout));
        record(&conn, "s1", a, Outcome::Passed, None);
        record(&conn, "s1", b, Outcome::Passed, None);
        record(&conn, "s2", b, Outcome::Failed, Some(ReasonCode::Signature));
        record(
            &conn,
            "s2",
            c,
            Outcome::Interrupted,
            Some(ReasonCode::Interrupted),
        );
        // A run amended later (a conflict found by the line) moves in the tally.
        conn.execute(
            "UPDATE runs SET outcome = 'failed', reason_code = 'conflict' WHERE id = 3",
            [],
        )
        .unwrap();
        // And one still in flight.
        conn.execute(
            "INSERT INTO runs (uid, station_id, port, started_at, outcome)
             VALUES ('6d7b1c43-58a1-4c55-9e4f-0d5c1a2b3c4d', 's2', 'p', '2026-01-01T00:00:00.000000Z', 'in_flight')",
            [],
        )
        .unwrap();
        let runs = read_runs(&mut conn, &RunFilter::default(), None).unwrap();
        for station in [None, Some("s1"), Some("s2")] {
            let filter = RunFilter {
                station_id: station.map(str::to_string),
                ..RunFilter::default()
            };
            let selected: Vec<RunRecord> = runs
                .iter()
                .filter(|r| station.is_none_or(|s| r.station_id == s))
                .cloned()
                .collect();
            assert_eq!(
                summary(&mut conn, &filter).unwrap(),
                Summary::of(&selected),
                "{station:?}"
            );
        }
        let device = RunFilter {
            device_uuid: Some(b),
            ..RunFilter::default()
        };
        let of_b: Vec<RunRecord> = runs
            .iter()
            .filter(|r| r.device.device_uuid == Some(b))
            .cloned()
            .collect();
        assert_eq!(summary(&mut conn, &device).unwrap(), Summary::of(&of_b));
        let counts = counts(&mut conn).unwrap();
        assert_eq!(counts, Summary::of(&runs).total.counts);
        assert_eq!((counts.seen, counts.in_flight, counts.failed), (6, 1, 3));
    }

    /// The plan SQLite picks for `sql`, one line per step.
    fn plan(conn: &Connection, sql: &str, values: &[rusqlite::types::Value]) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        stmt.query_map(rusqlite::params_from_iter(values.iter()), |row| {
            row.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .join("\n")
    }

    #[test]
    fn each_filter_reads_runs_through_its_index() {
        let conn = migrated();
        // Statistics as a long history has them, so that the planner
        // weighs the indexes as it would there.
        conn.execute_batch(
            "ANALYZE;
             DELETE FROM sqlite_stat1;
             INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
                 ('runs', 'runs_by_device', '1000000 2'),
                 ('runs', 'runs_by_start', '1000000 1'),
                 ('runs', 'runs_by_station', '1000000 100000'),
                 ('runs', 'runs_by_outcome', '1000000 250000'),
                 ('runs', 'runs_by_reason', '1000000 50000'),
                 ('runs', 'runs_by_work_order', '1000000 2000');
             ANALYZE sqlite_schema;",
        )
        .unwrap();
        let since = OffsetDateTime::now_utc() - time::Duration::days(1);
        for (filter, index) in [
            (
                RunFilter {
                    device_uuid: Some(Uuid::from_u128(rand::random())),
                    ..RunFilter::default()
                },
                "runs_by_device",
            ),
            (
                RunFilter {
                    since: Some(since),
                    ..RunFilter::default()
                },
                "runs_by_start",
            ),
            (
                RunFilter {
                    station_id: Some("s1".into()),
                    ..RunFilter::default()
                },
                "runs_by_station",
            ),
            (
                RunFilter {
                    work_order: Some("WO-00042".into()),
                    ..RunFilter::default()
                },
                "runs_by_work_order",
            ),
        ] {
            let (conditions, values) = filter_sql(&filter);
            let selection = where_clause(&conditions);
            for sql in [
                // As read_runs selects without a limit (with one, the
                // newest rows by id come first and the scan stops early).
                format!("SELECT id FROM runs{selection}"),
                format!(
                    "SELECT station_id, outcome, reason_code, COUNT(*) FROM runs{selection}
                     GROUP BY station_id, outcome, reason_code"
                ),
            ] {
                let steps = plan(&conn, &sql, &values);
                assert!(steps.contains(index), "{filter:?}: {sql}\n{steps}");
            }
        }
        // No filter, a limit: the newest rows by id, never a sort of all.
        let steps = plan(&conn, "SELECT id FROM runs ORDER BY id DESC LIMIT 100", &[]);
        assert!(!steps.contains("TEMP B-TREE"), "{steps}");
        // The whole summary reads the tallies, not the runs.
        let plan_text = plan(
            &conn,
            "SELECT station_id, work_order, outcome, reason_code, runs FROM run_tally
             WHERE runs > 0 AND (?1 IS NULL OR station_id = ?1)",
            &[rusqlite::types::Value::Null],
        );
        assert!(
            !plan_text.contains("runs_by") && plan_text.contains("run_tally"),
            "{plan_text}"
        );
    }
}
