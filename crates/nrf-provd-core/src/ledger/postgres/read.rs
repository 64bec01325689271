//! Reading the line: every station's runs as [`RunRecord`]s, with the
//! conflicts found on them applied as the stations apply them.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::{PostgresLedger, pg_error};
use crate::ledger::outbox::Conflict;
use crate::ledger::summary::{Summary, SummaryRow};
use crate::ledger::{
    Artifact, ArtifactKind, Counts, DeviceInfo, LedgerError, LedgerReader, Outcome, ReasonCode,
    RunFilter, RunRecord, Sighting, StepRecord, TokenRecord, Traceability, VerifiedBy,
};
use crate::token::TokenKind;

const FILTER: &str = "($1::uuid IS NULL OR device_uuid = $1)
      AND ($2::timestamptz IS NULL OR started_at >= $2)
      AND ($3::text IS NULL OR station_id = $3)
      AND ($4::text IS NULL OR work_order = $4)";

fn corrupt(what: &'static str, value: String) -> LedgerError {
    LedgerError::Corrupt { what, value }
}

#[async_trait]
impl LedgerReader for PostgresLedger {
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, LedgerError> {
        let error = pg_error("read runs");
        let client = self.client().await?;
        let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
        let rows = client
            .query(
                &format!(
                    "SELECT uid, local_id, station_id, port, started_at, finished_at, outcome,
                            failed_step, reason_code, reason, verified_by, device_uuid, imei, model,
                            firmware, firmware_uuid, hw_version, work_order, lot, operator,
                            product, fixture
                     FROM runs WHERE {FILTER}
                     ORDER BY started_at DESC, uid DESC LIMIT $5"
                ),
                &[
                    &filter.device_uuid,
                    &filter.since,
                    &filter.station_id,
                    &filter.work_order,
                    &limit,
                ],
            )
            .await
            .map_err(&error)?;
        let mut runs = Vec::with_capacity(rows.len());
        for row in rows.iter().rev() {
            let outcome: String = row.get(6);
            let failed_step: Option<String> = row.get(7);
            let reason_code: Option<String> = row.get(8);
            let verified_by: Option<String> = row.get(10);
            runs.push(RunRecord {
                uid: row.get(0),
                id: row.get(1),
                station_id: row.get(2),
                port: row.get(3),
                started_at: row.get(4),
                finished_at: row.get(5),
                outcome: Outcome::parse(&outcome).ok_or(corrupt("run outcome", outcome))?,
                failed_step: failed_step.as_deref().and_then(|s| s.parse().ok()),
                reason_code: reason_code.as_deref().map(ReasonCode::parse),
                reason: row.get(9),
                verified_by: verified_by.as_deref().and_then(VerifiedBy::parse),
                device: DeviceInfo {
                    device_uuid: row.get(11),
                    imei: row.get(12),
                    model: row.get(13),
                    firmware: row.get(14),
                    firmware_uuid: row.get(15),
                    hw_version: row.get(16),
                },
                steps: Vec::new(),
                tokens: Vec::new(),
                artifacts: Vec::new(),
                trace: Traceability {
                    work_order: row.get(17),
                    lot: row.get(18),
                    operator: row.get(19),
                    product: row.get(20),
                    fixture: row.get(21),
                },
                compacted_at: None,
            });
        }
        let uids: Vec<Uuid> = runs.iter().map(|r| r.uid).collect();
        let index: HashMap<Uuid, usize> = uids.iter().enumerate().map(|(i, u)| (*u, i)).collect();

        for row in client
            .query(
                "SELECT run_uid, name, started_at, duration_us, passed, attempts, detail
                 FROM steps WHERE run_uid = ANY($1) ORDER BY run_uid, seq",
                &[&uids],
            )
            .await
            .map_err(&error)?
        {
            let Some(&i) = index.get(&row.get::<_, Uuid>(0)) else {
                continue;
            };
            let name: String = row.get(1);
            let micros: i64 = row.get(3);
            let attempts: i32 = row.get(5);
            runs[i].steps.push(StepRecord {
                name: name.parse().map_err(|_| corrupt("step name", name))?,
                started_at: row.get(2),
                duration: Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
                passed: row.get(4),
                attempts: u32::try_from(attempts).unwrap_or(0),
                detail: row.get(6),
            });
        }
        for row in client
            .query(
                "SELECT run_uid, kind, text, authentic, checks_json
                 FROM tokens WHERE run_uid = ANY($1) ORDER BY run_uid, seq",
                &[&uids],
            )
            .await
            .map_err(&error)?
        {
            let Some(&i) = index.get(&row.get::<_, Uuid>(0)) else {
                continue;
            };
            let kind: String = row.get(1);
            runs[i].tokens.push(TokenRecord {
                kind: TokenKind::parse(&kind).ok_or(corrupt("token kind", kind))?,
                text: row.get(2),
                authentic: row.get(3),
                checks_json: row.get(4),
            });
        }
        for row in client
            .query(
                "SELECT run_uid, kind, sec_tag, content
                 FROM artifacts WHERE run_uid = ANY($1) ORDER BY run_uid, seq",
                &[&uids],
            )
            .await
            .map_err(&error)?
        {
            let Some(&i) = index.get(&row.get::<_, Uuid>(0)) else {
                continue;
            };
            let kind: String = row.get(1);
            let sec_tag: Option<i64> = row.get(2);
            runs[i].artifacts.push(Artifact {
                kind: ArtifactKind::parse(&kind).ok_or(corrupt("artifact kind", kind))?,
                sec_tag: sec_tag.and_then(|t| u32::try_from(t).ok()),
                content: row.get(3),
            });
        }
        // The first conflict found on a run amends it, as its station does.
        for row in client
            .query(
                "SELECT DISTINCT ON (run_uid) run_uid, kind, value, other_run_uid, other_station,
                        other_port, other_at, found_at
                 FROM conflicts WHERE run_uid = ANY($1) ORDER BY run_uid, id",
                &[&uids],
            )
            .await
            .map_err(&error)?
        {
            let run_uid: Uuid = row.get(0);
            let Some(&i) = index.get(&run_uid) else {
                continue;
            };
            let conflict = Conflict {
                run_uid,
                kind: row.get(1),
                value: row.get(2),
                other: Sighting {
                    run_uid: row.get(3),
                    station_id: row.get(4),
                    port: row.get(5),
                    at: row.get(6),
                },
                found_at: row.get(7),
            };
            conflict.amend(&mut runs[i]);
        }
        Ok(runs)
    }

    async fn counts(&self) -> Result<Counts, LedgerError> {
        let summary = self.summary(&RunFilter::default()).await?;
        Ok(summary.total.counts)
    }

    async fn summary(&self, filter: &RunFilter) -> Result<Summary, LedgerError> {
        let error = pg_error("summarise runs");
        let client = self.client().await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
            &filter.device_uuid,
            &filter.since,
            &filter.station_id,
            &filter.work_order,
        ];
        // A run with a conflict counts as failed with `conflict`, as read.
        let rows = client
            .query(
                &format!(
                    "SELECT r.station_id, r.work_order,
                            CASE WHEN c.run_uid IS NULL THEN r.outcome ELSE 'failed' END,
                            CASE WHEN c.run_uid IS NULL THEN r.reason_code ELSE 'conflict' END,
                            count(*)
                     FROM (SELECT * FROM runs WHERE {FILTER}) r
                     LEFT JOIN (SELECT DISTINCT run_uid FROM conflicts) c ON c.run_uid = r.uid
                     GROUP BY 1, 2, 3, 4"
                ),
                &params,
            )
            .await
            .map_err(&error)?;
        let groups = rows
            .iter()
            .map(|row| SummaryRow {
                station_id: row.get(0),
                work_order: row.get(1),
                outcome: row.get(2),
                reason_code: row.get(3),
                runs: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
            })
            .collect::<Vec<_>>();
        let devices = client
            .query(
                &format!(
                    "SELECT station_id, count(DISTINCT device_uuid) FROM runs WHERE {FILTER}
                     GROUP BY ROLLUP (station_id)"
                ),
                &params,
            )
            .await
            .map_err(&error)?
            .iter()
            .map(|row| {
                (
                    row.get::<_, Option<String>>(0),
                    u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
                )
            })
            .collect::<Vec<_>>();
        Summary::from_groups(&groups, &devices)
    }
}
