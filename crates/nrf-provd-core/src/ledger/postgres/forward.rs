//! One forwarding batch in one transaction: the runs (each once, by uid),
//! their steps, tokens and artifacts, their claims and every identity
//! authority's bindings under the line's UNIQUE constraints, the device
//! registry, and the conflicts found. A few statements over arrays
//! (`unnest`) and binary COPY, whatever the batch size.

use std::collections::{BTreeMap, HashMap, HashSet};

use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{PostgresLedger, pg_error, value_lock};
use crate::ledger::outbox::{BindingClash, ForwardBatch};
use crate::ledger::{Binding, LedgerError, Outcome, ReasonCode, RunRecord, VerifiedBy};

/// Longer than any run: a station's run deadline (`timeouts.run`) is minutes.
const LONGEST_RUN: std::time::Duration = std::time::Duration::from_secs(86_400);

/// What a batch did on the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Runs stored now (the others were stored by an earlier attempt).
    pub stored: usize,
    /// Conflicts found (one per run concerned).
    pub conflicts: usize,
}

/// PostgreSQL text cannot hold NUL; anything else a Rust string holds it can.
fn text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn opt_text(s: &Option<String>) -> Option<String> {
    s.as_deref().map(text)
}

/// One side of a conflict row.
struct Side {
    run_uid: Uuid,
    station_id: String,
    port: String,
    at: OffsetDateTime,
}

#[derive(Default)]
struct ConflictRows {
    run_uid: Vec<Uuid>,
    station_id: Vec<String>,
    kind: Vec<String>,
    value: Vec<String>,
    other_run_uid: Vec<Uuid>,
    other_station: Vec<String>,
    other_port: Vec<String>,
    other_at: Vec<OffsetDateTime>,
}

impl ConflictRows {
    /// Both runs get a row naming the other.
    fn add(&mut self, kind: &str, value: &str, a: &Side, b: &Side) {
        for (this, other) in [(a, b), (b, a)] {
            self.run_uid.push(this.run_uid);
            self.station_id.push(this.station_id.clone());
            self.kind.push(kind.to_string());
            self.value.push(value.to_string());
            self.other_run_uid.push(other.run_uid);
            self.other_station.push(other.station_id.clone());
            self.other_port.push(other.port.clone());
            self.other_at.push(other.at);
        }
    }
}

/// What the device registry learns from a batch, per device.
struct DeviceRow {
    imei: Option<String>,
    first: (OffsetDateTime, String, String),
    last: (OffsetDateTime, String, String, Uuid, String),
    runs: i64,
    provisioned: i64,
    last_passed: Option<(OffsetDateTime, String, String, Uuid)>,
}

impl PostgresLedger {
    /// Store `batch` (idempotently: a run already stored is skipped with
    /// everything that came with it).
    pub async fn forward(&self, batch: &ForwardBatch) -> Result<Forwarded, LedgerError> {
        let error = pg_error("forward runs");
        let clock = std::time::Instant::now();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(&error)?;
        let runs = &batch.runs;

        // The runs themselves; the uids stored now.
        let uid: Vec<Uuid> = runs.iter().map(|r| r.uid).collect();
        let station: Vec<String> = runs.iter().map(|r| text(&r.station_id)).collect();
        let local_id: Vec<i64> = runs.iter().map(|r| r.id).collect();
        let port: Vec<String> = runs.iter().map(|r| text(&r.port)).collect();
        let started: Vec<OffsetDateTime> = runs.iter().map(|r| r.started_at).collect();
        let finished: Vec<Option<OffsetDateTime>> = runs.iter().map(|r| r.finished_at).collect();
        let outcome: Vec<&str> = runs.iter().map(|r| r.outcome.as_str()).collect();
        let failed_step: Vec<Option<&str>> = runs
            .iter()
            .map(|r| r.failed_step.map(|s| s.as_str()))
            .collect();
        let reason_code: Vec<Option<&str>> = runs
            .iter()
            .map(|r| r.reason_code.map(ReasonCode::as_str))
            .collect();
        let reason: Vec<Option<String>> = runs.iter().map(|r| opt_text(&r.reason)).collect();
        let verified_by: Vec<Option<&str>> = runs
            .iter()
            .map(|r| r.verified_by.map(VerifiedBy::as_str))
            .collect();
        let device: Vec<Option<Uuid>> = runs.iter().map(|r| r.device.device_uuid).collect();
        let imei: Vec<Option<String>> = runs.iter().map(|r| opt_text(&r.device.imei)).collect();
        let model: Vec<Option<String>> = runs.iter().map(|r| opt_text(&r.device.model)).collect();
        let firmware: Vec<Option<String>> =
            runs.iter().map(|r| opt_text(&r.device.firmware)).collect();
        let firmware_uuid: Vec<Option<Uuid>> =
            runs.iter().map(|r| r.device.firmware_uuid).collect();
        let hw_version: Vec<Option<String>> = runs
            .iter()
            .map(|r| opt_text(&r.device.hw_version))
            .collect();
        let trace = |field: fn(&RunRecord) -> &Option<String>| -> Vec<Option<String>> {
            runs.iter().map(|r| opt_text(field(r))).collect()
        };
        let work_order = trace(|r| &r.trace.work_order);
        let lot = trace(|r| &r.trace.lot);
        let operator = trace(|r| &r.trace.operator);
        let product = trace(|r| &r.trace.product);
        let fixture = trace(|r| &r.trace.fixture);
        let params: [&(dyn ToSql + Sync); 22] = [
            &uid,
            &station,
            &local_id,
            &port,
            &started,
            &finished,
            &outcome,
            &failed_step,
            &reason_code,
            &reason,
            &verified_by,
            &device,
            &imei,
            &model,
            &firmware,
            &firmware_uuid,
            &hw_version,
            &work_order,
            &lot,
            &operator,
            &product,
            &fixture,
        ];
        let stored_rows = tx
            .query(
                "INSERT INTO runs (uid, station_id, local_id, port, started_at, finished_at,
                     outcome, failed_step, reason_code, reason, verified_by, device_uuid, imei,
                     model, firmware, firmware_uuid, hw_version, work_order, lot, operator,
                     product, fixture)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::text[],
                     $5::timestamptz[], $6::timestamptz[], $7::text[], $8::text[], $9::text[],
                     $10::text[], $11::text[], $12::uuid[], $13::text[], $14::text[], $15::text[],
                     $16::uuid[], $17::text[], $18::text[], $19::text[], $20::text[],
                     $21::text[], $22::text[])
                 ON CONFLICT (uid) DO NOTHING RETURNING uid",
                &params,
            )
            .await
            .map_err(&error)?;
        let stored: HashSet<Uuid> = stored_rows.iter().map(|row| row.get(0)).collect();
        let new: Vec<&RunRecord> = runs.iter().filter(|r| stored.contains(&r.uid)).collect();
        if new.is_empty() {
            tx.commit().await.map_err(&error)?;
            return Ok(Forwarded::default());
        }
        let runs_done = clock.elapsed();
        insert_children(&tx, &new).await?;
        let children_done = clock.elapsed();

        let by_local: HashMap<i64, &RunRecord> = new.iter().map(|r| (r.id, *r)).collect();
        let mut conflicts = ConflictRows::default();
        claims(&tx, batch, &by_local, &mut conflicts).await?;
        bindings(&tx, batch, &stored, &mut conflicts).await?;
        devices_at_once(&tx, &new, &mut conflicts).await?;

        let found = if conflicts.run_uid.is_empty() {
            0
        } else {
            let c = &conflicts;
            tx.query(
                "INSERT INTO conflicts (run_uid, station_id, kind, value, other_run_uid,
                     other_station, other_port, other_at)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                     $5::uuid[], $6::text[], $7::text[], $8::timestamptz[])
                 ON CONFLICT (run_uid, kind, value) DO NOTHING RETURNING id",
                &[
                    &c.run_uid,
                    &c.station_id,
                    &c.kind,
                    &c.value,
                    &c.other_run_uid,
                    &c.other_station,
                    &c.other_port,
                    &c.other_at,
                ],
            )
            .await
            .map_err(&error)?
            .len()
        };
        registry(&tx, &new).await?;
        let new_uids: Vec<Uuid> = new.iter().map(|r| r.uid).collect();
        tx.execute(
            "DELETE FROM live_devices WHERE run_uid = ANY($1)",
            &[&new_uids],
        )
        .await
        .map_err(&error)?;
        let checks_done = clock.elapsed();
        tx.commit().await.map_err(&error)?;
        tracing::debug!(
            runs = new.len(),
            runs_ms = runs_done.as_millis() as u64,
            children_ms = (children_done - runs_done).as_millis() as u64,
            checks_ms = (checks_done - children_done).as_millis() as u64,
            commit_ms = (clock.elapsed() - checks_done).as_millis() as u64,
            "batch stored"
        );
        Ok(Forwarded {
            stored: new.len(),
            conflicts: found,
        })
    }
}

/// Steps, tokens and artifacts of the new runs: binary COPY, the fastest
/// way into PostgreSQL (most of a batch's bytes are here).
async fn insert_children(
    tx: &deadpool_postgres::Transaction<'_>,
    new: &[&RunRecord],
) -> Result<(), LedgerError> {
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    let error = pg_error("forward steps, tokens and artifacts");
    let seq = |i: usize| i32::try_from(i).unwrap_or(i32::MAX);

    let sink = tx
        .copy_in::<_, bytes::Bytes>(
            "COPY steps (run_uid, seq, name, started_at, duration_us, passed, attempts, detail)
             FROM STDIN BINARY",
        )
        .await
        .map_err(&error)?;
    let types = [
        Type::UUID,
        Type::INT4,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::BOOL,
        Type::INT4,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for run in new {
        for (i, step) in run.steps.iter().enumerate() {
            let micros = i64::try_from(step.duration.as_micros()).unwrap_or(i64::MAX);
            let attempts = i32::try_from(step.attempts).unwrap_or(i32::MAX);
            writer
                .as_mut()
                .write(&[
                    &run.uid,
                    &seq(i),
                    &step.name.as_str(),
                    &step.started_at,
                    &micros,
                    &step.passed,
                    &attempts,
                    &text(&step.detail),
                ])
                .await
                .map_err(&error)?;
        }
    }
    writer.finish().await.map_err(&error)?;

    let sink = tx
        .copy_in::<_, bytes::Bytes>(
            "COPY tokens (run_uid, seq, kind, text, authentic, checks_json) FROM STDIN BINARY",
        )
        .await
        .map_err(&error)?;
    let types = [
        Type::UUID,
        Type::INT4,
        Type::TEXT,
        Type::TEXT,
        Type::BOOL,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for run in new {
        for (i, token) in run.tokens.iter().enumerate() {
            writer
                .as_mut()
                .write(&[
                    &run.uid,
                    &seq(i),
                    &token.kind.as_str(),
                    &text(&token.text),
                    &token.authentic,
                    &text(&token.checks_json),
                ])
                .await
                .map_err(&error)?;
        }
    }
    writer.finish().await.map_err(&error)?;

    let sink = tx
        .copy_in::<_, bytes::Bytes>(
            "COPY artifacts (run_uid, seq, kind, sec_tag, content) FROM STDIN BINARY",
        )
        .await
        .map_err(&error)?;
    let types = [Type::UUID, Type::INT4, Type::TEXT, Type::INT8, Type::TEXT];
    let writer = BinaryCopyInWriter::new(sink, &types);
    futures::pin_mut!(writer);
    for run in new {
        for (i, artifact) in run.artifacts.iter().enumerate() {
            let sec_tag = artifact.sec_tag.map(i64::from);
            writer
                .as_mut()
                .write(&[
                    &run.uid,
                    &seq(i),
                    &artifact.kind.as_str(),
                    &sec_tag,
                    &text(&artifact.content),
                ])
                .await
                .map_err(&error)?;
        }
    }
    writer.finish().await.map_err(&error)?;
    Ok(())
}

/// The new runs' claims under the line's constraint; a value another run
/// claimed first is a conflict on both.
async fn claims(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &ForwardBatch,
    by_local: &HashMap<i64, &RunRecord>,
    conflicts: &mut ConflictRows,
) -> Result<(), LedgerError> {
    let error = pg_error("forward claims");
    // Sorted, so that two stations' batches take the same locks in the same
    // order (no deadlock between them).
    let mut rows: Vec<(&str, String, &RunRecord, OffsetDateTime)> = batch
        .claims
        .iter()
        .filter_map(|(run, kind, value, at)| {
            Some((kind.as_str(), text(value), *by_local.get(run)?, *at))
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let kind: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let value: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let uid: Vec<Uuid> = rows.iter().map(|r| r.2.uid).collect();
    let station: Vec<String> = rows.iter().map(|r| text(&r.2.station_id)).collect();
    let port: Vec<String> = rows.iter().map(|r| text(&r.2.port)).collect();
    let at: Vec<OffsetDateTime> = rows.iter().map(|r| r.3).collect();
    tx.execute(
        "INSERT INTO claims (kind, value, run_uid, station_id, port, claimed_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[],
             $6::timestamptz[])
         ON CONFLICT (kind, value) DO NOTHING",
        &[&kind, &value, &uid, &station, &port, &at],
    )
    .await
    .map_err(&error)?;
    let clashes = tx
        .query(
            "SELECT b.n, c.run_uid, c.station_id, c.port, c.claimed_at
             FROM unnest($1::text[], $2::text[], $3::uuid[]) WITH ORDINALITY AS b(kind, value, run_uid, n)
             JOIN claims c ON c.kind = b.kind AND c.value = b.value
             WHERE c.run_uid <> b.run_uid",
            &[&kind, &value, &uid],
        )
        .await
        .map_err(&error)?;
    for row in clashes {
        let n: i64 = row.get(0);
        let Some((kind, value, run, at)) = usize::try_from(n - 1).ok().and_then(|i| rows.get(i))
        else {
            continue;
        };
        let this = Side {
            run_uid: run.uid,
            station_id: run.station_id.clone(),
            port: run.port.clone(),
            at: *at,
        };
        let other = Side {
            run_uid: row.get(1),
            station_id: row.get(2),
            port: row.get(3),
            at: row.get(4),
        };
        conflicts.add(kind, value, &this, &other);
    }
    Ok(())
}

/// The new runs' bindings, line-wide, each under its own authority:
/// another value bound first for the same subject, or the same value bound
/// to another subject of the same authority, is a conflict on both runs.
async fn bindings(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &ForwardBatch,
    stored: &HashSet<Uuid>,
    conflicts: &mut ConflictRows,
) -> Result<(), LedgerError> {
    let error = pg_error("forward bindings");
    let mut bindings: Vec<&Binding> = batch
        .bindings
        .iter()
        .filter(|b| stored.contains(&b.run_uid))
        .collect();
    if bindings.is_empty() {
        return Ok(());
    }
    // Sorted, so that two stations' batches take the same locks in the same
    // order (no deadlock between them).
    bindings.sort_by(|a, b| (&a.authority, a.subject).cmp(&(&b.authority, b.subject)));
    bindings.dedup_by(|a, b| (&a.authority, a.subject) == (&b.authority, b.subject));
    let authority: Vec<String> = bindings.iter().map(|b| text(&b.authority)).collect();
    let subject: Vec<Uuid> = bindings.iter().map(|b| b.subject).collect();
    let value: Vec<&[u8]> = bindings.iter().map(|b| b.value.as_slice()).collect();
    let at: Vec<OffsetDateTime> = bindings.iter().map(|b| b.at).collect();
    let station: Vec<String> = bindings.iter().map(|b| text(&b.station_id)).collect();
    let port: Vec<String> = bindings.iter().map(|b| text(&b.port)).collect();
    let uid: Vec<Uuid> = bindings.iter().map(|b| b.run_uid).collect();
    // Each value's lock, as `bind` takes it: a value bound to another
    // subject by a transaction still open (another station's batch, a
    // `required` station's bind) is committed, and seen below, before this
    // batch looks. Sorted, so that no two batches wait for each other.
    let mut locks: Vec<i64> = bindings
        .iter()
        .map(|b| value_lock(&b.authority, &b.value))
        .collect();
    locks.sort_unstable();
    locks.dedup();
    tx.execute(
        "SELECT pg_advisory_xact_lock(k) FROM unnest($1::int8[]) AS k",
        &[&locks],
    )
    .await
    .map_err(&error)?;
    tx.execute(
        "INSERT INTO authority_bindings (authority, subject, value, bound_at, station_id, port,
             run_uid)
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::bytea[], $4::timestamptz[],
             $5::text[], $6::text[], $7::uuid[])
         ON CONFLICT (authority, subject) DO NOTHING",
        &[&authority, &subject, &value, &at, &station, &port, &uid],
    )
    .await
    .map_err(&error)?;
    // Another value bound first for the subject.
    let mismatched = tx
        .query(
            "SELECT b.n, a.run_uid, a.station_id, a.port, a.bound_at
             FROM unnest($1::text[], $2::uuid[], $3::bytea[])
                 WITH ORDINALITY AS b(authority, subject, value, n)
             JOIN authority_bindings a ON a.authority = b.authority AND a.subject = b.subject
             WHERE a.value <> b.value",
            &[&authority, &subject, &value],
        )
        .await
        .map_err(&error)?;
    add_clashes(&mismatched, &bindings, BindingClash::Subject, conflicts);
    // The same value bound to another subject (at another station, or
    // before): one value never belongs to two devices.
    let reused = tx
        .query(
            "SELECT DISTINCT ON (b.n) b.n, a.run_uid, a.station_id, a.port, a.bound_at
             FROM unnest($1::text[], $2::uuid[], $3::bytea[])
                 WITH ORDINALITY AS b(authority, subject, value, n)
             JOIN authority_bindings a ON a.authority = b.authority AND a.value = b.value
                 AND a.subject <> b.subject
             ORDER BY b.n, a.bound_at",
            &[&authority, &subject, &value],
        )
        .await
        .map_err(&error)?;
    add_clashes(&reused, &bindings, BindingClash::Value, conflicts);
    Ok(())
}

/// A conflict for each row (the batch's binding `n`, 1-based, and the
/// other run's binding), under the binding's authority.
fn add_clashes(
    rows: &[tokio_postgres::Row],
    bindings: &[&Binding],
    clash: BindingClash,
    conflicts: &mut ConflictRows,
) {
    for row in rows {
        let n: i64 = row.get(0);
        let Some(binding) = usize::try_from(n - 1).ok().and_then(|i| bindings.get(i)) else {
            continue;
        };
        let this = Side {
            run_uid: binding.run_uid,
            station_id: binding.station_id.clone(),
            port: binding.port.clone(),
            at: binding.at,
        };
        let other = Side {
            run_uid: row.get(1),
            station_id: row.get(2),
            port: row.get(3),
            at: row.get(4),
        };
        let kind = clash.kind(&binding.authority);
        conflicts.add(&kind, &clash.shown(binding), &this, &other);
    }
}

/// The same proven device in two runs at once at different places (found
/// after the fact: `deferred` mode, or a station that could not ask during
/// the run). Runs already failed as `duplicate_identity` were caught then.
/// A run lasts less than [`LONGEST_RUN`]: that bounds the index range
/// scanned per run, however often a device was run before.
async fn devices_at_once(
    tx: &deadpool_postgres::Transaction<'_>,
    new: &[&RunRecord],
    conflicts: &mut ConflictRows,
) -> Result<(), LedgerError> {
    let uids: Vec<Uuid> = new
        .iter()
        .filter(|r| r.device.device_uuid.is_some() && r.verified_by.is_some())
        .filter(|r| r.reason_code != Some(ReasonCode::DuplicateIdentity))
        .map(|r| r.uid)
        .collect();
    if uids.is_empty() {
        return Ok(());
    }
    let rows = tx
        .query(
            "SELECT n.uid, n.station_id, n.port, n.started_at, n.device_uuid,
                    o.uid, o.station_id, o.port, o.started_at
             FROM runs n
             JOIN runs o ON o.device_uuid = n.device_uuid AND o.uid <> n.uid
                 AND (o.station_id <> n.station_id OR o.port <> n.port)
                 AND o.started_at < COALESCE(n.finished_at, n.started_at)
                 AND o.started_at > n.started_at - make_interval(secs => $2)
                 AND n.started_at < COALESCE(o.finished_at, o.started_at)
             WHERE n.uid = ANY($1) AND o.verified_by IS NOT NULL
               AND o.reason_code IS DISTINCT FROM 'duplicate_identity'",
            &[&uids, &LONGEST_RUN.as_secs_f64()],
        )
        .await
        .map_err(pg_error("look for devices at two places at once"))?;
    for row in rows {
        let device: Uuid = row.get(4);
        let this = Side {
            run_uid: row.get(0),
            station_id: row.get(1),
            port: row.get(2),
            at: row.get(3),
        };
        let other = Side {
            run_uid: row.get(5),
            station_id: row.get(6),
            port: row.get(7),
            at: row.get(8),
        };
        conflicts.add("device", &device.to_string(), &this, &other);
    }
    Ok(())
}

/// The device registry: where each device of the batch was first and last,
/// how many runs it had and how many passed.
async fn registry(
    tx: &deadpool_postgres::Transaction<'_>,
    new: &[&RunRecord],
) -> Result<(), LedgerError> {
    let mut devices: BTreeMap<Uuid, DeviceRow> = BTreeMap::new();
    for run in new {
        let Some(device) = run.device.device_uuid else {
            continue;
        };
        let at = run.finished_at.unwrap_or(run.started_at);
        let here = || (text(&run.station_id), text(&run.port));
        let (station, port) = here();
        let row = devices.entry(device).or_insert_with(|| DeviceRow {
            imei: None,
            first: (run.started_at, station.clone(), port.clone()),
            last: (at, station.clone(), port.clone(), run.uid, String::new()),
            runs: 0,
            provisioned: 0,
            last_passed: None,
        });
        if run.device.imei.is_some() {
            row.imei = opt_text(&run.device.imei);
        }
        if run.started_at < row.first.0 {
            row.first = (run.started_at, station.clone(), port.clone());
        }
        if at >= row.last.0 {
            row.last = (
                at,
                station.clone(),
                port.clone(),
                run.uid,
                run.outcome.as_str().to_string(),
            );
        }
        row.runs += 1;
        if run.outcome == Outcome::Passed {
            row.provisioned += 1;
            if row.last_passed.as_ref().is_none_or(|p| at >= p.0) {
                row.last_passed = Some((at, station, port, run.uid));
            }
        }
    }
    if devices.is_empty() {
        return Ok(());
    }
    let rows: Vec<(&Uuid, &DeviceRow)> = devices.iter().collect();
    let device: Vec<Uuid> = rows.iter().map(|(u, _)| **u).collect();
    let imei: Vec<Option<&str>> = rows.iter().map(|(_, d)| d.imei.as_deref()).collect();
    let first_seen: Vec<OffsetDateTime> = rows.iter().map(|(_, d)| d.first.0).collect();
    let first_station: Vec<&str> = rows.iter().map(|(_, d)| d.first.1.as_str()).collect();
    let first_port: Vec<&str> = rows.iter().map(|(_, d)| d.first.2.as_str()).collect();
    let last_seen: Vec<OffsetDateTime> = rows.iter().map(|(_, d)| d.last.0).collect();
    let last_station: Vec<&str> = rows.iter().map(|(_, d)| d.last.1.as_str()).collect();
    let last_port: Vec<&str> = rows.iter().map(|(_, d)| d.last.2.as_str()).collect();
    let last_run: Vec<Uuid> = rows.iter().map(|(_, d)| d.last.3).collect();
    let last_outcome: Vec<&str> = rows.iter().map(|(_, d)| d.last.4.as_str()).collect();
    let runs: Vec<i64> = rows.iter().map(|(_, d)| d.runs).collect();
    let provisioned: Vec<i64> = rows.iter().map(|(_, d)| d.provisioned).collect();
    let passed_at: Vec<Option<OffsetDateTime>> = rows
        .iter()
        .map(|(_, d)| d.last_passed.as_ref().map(|p| p.0))
        .collect();
    let passed_station: Vec<Option<&str>> = rows
        .iter()
        .map(|(_, d)| d.last_passed.as_ref().map(|p| p.1.as_str()))
        .collect();
    let passed_port: Vec<Option<&str>> = rows
        .iter()
        .map(|(_, d)| d.last_passed.as_ref().map(|p| p.2.as_str()))
        .collect();
    let passed_run: Vec<Option<Uuid>> = rows
        .iter()
        .map(|(_, d)| d.last_passed.as_ref().map(|p| p.3))
        .collect();
    tx.execute(
        "INSERT INTO devices AS d (device_uuid, imei, first_seen, first_station, first_port,
             last_seen, last_station, last_port, last_run_uid, last_outcome, runs, provisioned,
             last_passed_at, last_passed_station, last_passed_port, last_passed_run_uid)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[],
             $6::timestamptz[], $7::text[], $8::text[], $9::uuid[], $10::text[], $11::int8[],
             $12::int8[], $13::timestamptz[], $14::text[], $15::text[], $16::uuid[])
         ON CONFLICT (device_uuid) DO UPDATE SET
             imei = COALESCE(excluded.imei, d.imei),
             first_station = CASE WHEN excluded.first_seen < d.first_seen
                 THEN excluded.first_station ELSE d.first_station END,
             first_port = CASE WHEN excluded.first_seen < d.first_seen
                 THEN excluded.first_port ELSE d.first_port END,
             first_seen = LEAST(d.first_seen, excluded.first_seen),
             last_station = CASE WHEN excluded.last_seen >= d.last_seen
                 THEN excluded.last_station ELSE d.last_station END,
             last_port = CASE WHEN excluded.last_seen >= d.last_seen
                 THEN excluded.last_port ELSE d.last_port END,
             last_run_uid = CASE WHEN excluded.last_seen >= d.last_seen
                 THEN excluded.last_run_uid ELSE d.last_run_uid END,
             last_outcome = CASE WHEN excluded.last_seen >= d.last_seen
                 THEN excluded.last_outcome ELSE d.last_outcome END,
             last_seen = GREATEST(d.last_seen, excluded.last_seen),
             runs = d.runs + excluded.runs,
             provisioned = d.provisioned + excluded.provisioned,
             last_passed_station = CASE WHEN excluded.last_passed_at IS NOT NULL
                 AND (d.last_passed_at IS NULL OR excluded.last_passed_at >= d.last_passed_at)
                 THEN excluded.last_passed_station ELSE d.last_passed_station END,
             last_passed_port = CASE WHEN excluded.last_passed_at IS NOT NULL
                 AND (d.last_passed_at IS NULL OR excluded.last_passed_at >= d.last_passed_at)
                 THEN excluded.last_passed_port ELSE d.last_passed_port END,
             last_passed_run_uid = CASE WHEN excluded.last_passed_at IS NOT NULL
                 AND (d.last_passed_at IS NULL OR excluded.last_passed_at >= d.last_passed_at)
                 THEN excluded.last_passed_run_uid ELSE d.last_passed_run_uid END,
             last_passed_at = GREATEST(d.last_passed_at, excluded.last_passed_at)",
        &[
            &device,
            &imei,
            &first_seen,
            &first_station,
            &first_port,
            &last_seen,
            &last_station,
            &last_port,
            &last_run,
            &last_outcome,
            &runs,
            &provisioned,
            &passed_at,
            &passed_station,
            &passed_port,
            &passed_run,
        ],
    )
    .await
    .map_err(pg_error("update the device registry"))?;
    Ok(())
}
