//! SQLite implementation of the results store.
//!
//! Durability: WAL with `synchronous=FULL`, so a transaction is on disk when
//! its commit returns. One connection behind a mutex: a station writes a few
//! rows per board, far below what one connection sustains.

use std::fs::{File, OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Artifact, Counts, DeviceInfo, NonceClaim, Outcome, RunFilter, RunId, RunRecord, RunStart,
    StepRecord, StoreError, TokenRecord, dbtime,
};

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many
/// a database has. Append only: never edit a released migration.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_initial.sql")];

/// Reason recorded for runs found in flight when the store is opened.
const RECOVERED_REASON: &str = "interrupted: the station stopped before the run finished";

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Store {
    // Fields drop in declaration order: the connection closes before the
    // lock is released.
    conn: Mutex<Connection>,
    path: PathBuf,
    recovered: usize,
    _lock: Option<Flock<File>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("recovered", &self.recovered)
            .finish_non_exhaustive()
    }
}

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { context, source }
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        path,
        action,
        source,
    }
}

/// `file` with group/other permission bits cleared.
fn restrict(path: &Path, file: &File) -> Result<(), StoreError> {
    let meta = file.metadata().map_err(io(path, "cannot stat"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(io(path, "cannot set mode 0600"))?;
    }
    Ok(())
}

/// Same for SQLite's side files, which exist only at times. By path, never
/// by opening them: closing any descriptor of a file drops the process's
/// POSIX locks on it, including SQLite's lock on `-shm`.
fn restrict_side_file(path: &Path) -> Result<(), StoreError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path, "cannot stat")(e)),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, Permissions::from_mode(0o600))
            .map_err(io(path, "cannot set mode 0600"))?;
    }
    Ok(())
}

fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl Store {
    /// Open (creating it with mode 0600 if needed) and migrate the database,
    /// then mark runs left in flight by a crash as interrupted (see
    /// [`Store::recovered`]). Only one `Store::open` may hold a database at a
    /// time, across processes ([`StoreError::InUse`]); the lock is an
    /// exclusive `flock` on `<database>.lock`, released when the store drops
    /// or the process dies.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        // Lock first, on a file of its own: a refused opener must not touch
        // the database file, because closing any descriptor of it would drop
        // the POSIX locks SQLite holds on it in this process.
        let lock_path = side_file(path, ".lock");
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io(&lock_path, "cannot open or create lock file"))?;
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(StoreError::InUse {
                    path: path.to_owned(),
                });
            }
            Err((_, errno)) => {
                return Err(io(&lock_path, "cannot lock")(std::io::Error::from(errno)));
            }
        };

        // Create the database with mode 0600 before SQLite does (SQLite would
        // use 0644 minus the umask). Closing this descriptor is safe: holding
        // the lock, no other writing store in this process has the database
        // open (the daemon opens no read-only store next to its own).
        {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                // Never truncate: this may be an existing database.
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(io(path, "cannot open or create database"))?;
            restrict(path, &file)?;
        }

        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("busy_timeout"))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql("journal_mode=WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Sqlite {
                context: "journal_mode=WAL",
                source: rusqlite::Error::InvalidParameterName(format!(
                    "the file system refused WAL (journal_mode is {mode})"
                )),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("foreign_keys=ON"))?;
        migrate(path, &mut conn)?;

        let recovered = conn
            .execute(
                "UPDATE runs SET outcome = 'interrupted', reason = COALESCE(reason, ?1)
                 WHERE outcome = 'in_flight'",
                [RECOVERED_REASON],
            )
            .map_err(sql("recover runs left in flight"))?;

        restrict_side_file(&side_file(path, "-wal"))?;
        restrict_side_file(&side_file(path, "-shm"))?;

        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            recovered,
            _lock: Some(lock),
        })
    }

    /// Open an existing database for reading only (`nrf-provd results`),
    /// also while a daemon has it open. Changes nothing, recovers nothing.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        // SQLite would report "unable to open"; say which file is missing.
        std::fs::metadata(path).map_err(io(path, "cannot open database"))?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("open read-only"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("busy_timeout"))?;
        let version = user_version(&conn)?;
        if version == 0 {
            return Err(StoreError::NoSchema {
                path: path.to_owned(),
            });
        }
        check_not_newer(path, version)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_owned(),
            recovered: 0,
            _lock: None,
        })
    }

    /// Runs found in flight (left by a crash) and marked interrupted by `open`.
    pub fn recovered(&self) -> usize {
        self.recovered
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped its transaction (rollback);
        // the connection itself is still sound.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record that a run started; committed before it returns, so a crash
    /// later leaves a run that the next `open` marks interrupted.
    pub fn begin_run(&self, start: &RunStart) -> Result<RunId, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO runs (station_id, port, started_at, outcome) VALUES (?1, ?2, ?3, 'in_flight')",
            params![start.station_id, start.port, dbtime::format(start.started_at)],
        )
        .map_err(sql("begin run"))?;
        Ok(conn.last_insert_rowid())
    }

    /// Claim a nonce (or JWT `jti`) for `run`, durably. The same `kind` and
    /// `value` can be claimed once per database; a second claim is a replay.
    /// Hex values of kinds other than `jwt_jti` are compared case-insensitively.
    pub fn claim_nonce(
        &self,
        run: RunId,
        kind: &str,
        value: &str,
    ) -> Result<NonceClaim, StoreError> {
        if kind.is_empty() || value.is_empty() {
            return Err(StoreError::InvalidRecord(
                "a nonce needs a kind and a value".into(),
            ));
        }
        let value = if kind == "jwt_jti" {
            value.to_owned()
        } else {
            value.to_ascii_lowercase()
        };
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("claim nonce"))?;
        let inserted = tx
            .execute(
                "INSERT INTO nonces (kind, value, run_id, claimed_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, value) DO NOTHING",
                params![kind, value, run, dbtime::format(OffsetDateTime::now_utc())],
            )
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::UnknownRun(run),
                _ => sql("claim nonce")(e),
            })?;
        let claim = if inserted == 1 {
            NonceClaim::Fresh
        } else {
            let first_run = tx
                .query_row(
                    "SELECT run_id FROM nonces WHERE kind = ?1 AND value = ?2",
                    params![kind, value],
                    |row| row.get(0),
                )
                .map_err(sql("look up claimed nonce"))?;
            NonceClaim::Replay { first_run }
        };
        tx.commit().map_err(sql("claim nonce"))?;
        Ok(claim)
    }

    /// Record the end of a run in one transaction: the run row, its steps,
    /// tokens and artifacts, and the device. Durable when it returns.
    pub fn finish_run(&self, record: &RunRecord) -> Result<(), StoreError> {
        if record.outcome == Outcome::InFlight {
            return Err(StoreError::InvalidRecord(format!(
                "run {} is finished with outcome in_flight; use passed, failed or interrupted",
                record.id
            )));
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("finish run"))?;
        let device = &record.device;
        let updated = tx
            .execute(
                "UPDATE runs SET station_id = ?2, port = ?3, started_at = ?4, finished_at = ?5,
                     outcome = ?6, failed_step = ?7, reason = ?8, device_uuid = ?9, imei = ?10,
                     model = ?11, firmware = ?12, firmware_uuid = ?13, hw_version = ?14
                 WHERE id = ?1 AND outcome = 'in_flight'",
                params![
                    record.id,
                    record.station_id,
                    record.port,
                    dbtime::format(record.started_at),
                    record.finished_at.map(dbtime::format),
                    record.outcome.as_str(),
                    record.failed_step,
                    record.reason,
                    device.device_uuid.map(uuid_text),
                    device.imei,
                    device.model,
                    device.firmware,
                    device.firmware_uuid.map(uuid_text),
                    device.hw_version,
                ],
            )
            .map_err(sql("update run"))?;
        if updated == 0 {
            let outcome: Option<String> = tx
                .query_row(
                    "SELECT outcome FROM runs WHERE id = ?1",
                    [record.id],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sql("look up run"))?;
            return Err(match outcome {
                Some(outcome) => StoreError::AlreadyFinished {
                    id: record.id,
                    outcome,
                },
                None => StoreError::UnknownRun(record.id),
            });
        }

        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO steps (run_id, seq, name, started_at, duration_us, passed, attempts, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(sql("insert step"))?;
            for (seq, step) in record.steps.iter().enumerate() {
                insert
                    .execute(params![
                        record.id,
                        seq,
                        step.name,
                        dbtime::format(step.started_at),
                        i64::try_from(step.duration.as_micros()).unwrap_or(i64::MAX),
                        step.passed,
                        step.attempts,
                        step.detail,
                    ])
                    .map_err(sql("insert step"))?;
            }
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO tokens (run_id, seq, kind, text, authentic, checks_json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql("insert token"))?;
            for (seq, token) in record.tokens.iter().enumerate() {
                insert
                    .execute(params![
                        record.id,
                        seq,
                        token.kind.as_str(),
                        token.text,
                        token.authentic,
                        token.checks_json,
                    ])
                    .map_err(sql("insert token"))?;
            }
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO artifacts (run_id, seq, kind, sec_tag, content)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sql("insert artifact"))?;
            for (seq, artifact) in record.artifacts.iter().enumerate() {
                insert
                    .execute(params![
                        record.id,
                        seq,
                        artifact.kind,
                        artifact.sec_tag,
                        artifact.content,
                    ])
                    .map_err(sql("insert artifact"))?;
            }
        }

        if let Some(uuid) = device.device_uuid {
            let seen = dbtime::format(record.finished_at.unwrap_or(record.started_at));
            // Keep what earlier runs learned when this run learned less.
            tx.execute(
                "INSERT INTO devices (device_uuid, imei, model, firmware, firmware_uuid, hw_version,
                                      first_seen, last_seen, last_run, last_outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8, ?9)
                 ON CONFLICT (device_uuid) DO UPDATE SET
                     imei = COALESCE(excluded.imei, imei),
                     model = COALESCE(excluded.model, model),
                     firmware = COALESCE(excluded.firmware, firmware),
                     firmware_uuid = COALESCE(excluded.firmware_uuid, firmware_uuid),
                     hw_version = COALESCE(excluded.hw_version, hw_version),
                     last_seen = excluded.last_seen,
                     last_run = excluded.last_run,
                     last_outcome = excluded.last_outcome",
                params![
                    uuid_text(uuid),
                    device.imei,
                    device.model,
                    device.firmware,
                    device.firmware_uuid.map(uuid_text),
                    device.hw_version,
                    seen,
                    record.id,
                    record.outcome.as_str(),
                ],
            )
            .map_err(sql("record device"))?;
        }
        tx.commit().map_err(sql("commit run"))
    }

    /// Recorded runs matching `filter`, oldest first.
    pub fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let conn = self.conn();
        let limit = filter
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, station_id, port, started_at, finished_at, outcome, failed_step, reason,
                        device_uuid, imei, model, firmware, firmware_uuid, hw_version
                 FROM runs
                 WHERE (?1 IS NULL OR device_uuid = ?1) AND (?2 IS NULL OR started_at >= ?2)
                 ORDER BY id DESC LIMIT ?3",
            )
            .map_err(sql("query runs"))?;
        let rows = stmt
            .query_map(
                params![
                    filter.device_uuid.map(uuid_text),
                    filter.since.map(dbtime::format),
                    limit
                ],
                RawRun::from_row,
            )
            .map_err(sql("query runs"))?;
        let mut raws = rows
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read runs"))?;
        raws.reverse();
        raws.into_iter().map(|raw| load_run(&conn, raw)).collect()
    }

    pub fn counts(&self) -> Result<Counts, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT outcome, COUNT(*) FROM runs GROUP BY outcome")
            .map_err(sql("count runs"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(sql("count runs"))?;
        let mut counts = Counts::default();
        for row in rows {
            let (outcome, n) = row.map_err(sql("count runs"))?;
            let n = u64::try_from(n).unwrap_or(0);
            counts.seen += n;
            match Outcome::parse(&outcome) {
                Some(Outcome::Passed) => counts.passed += n,
                Some(Outcome::Failed) => counts.failed += n,
                Some(Outcome::Interrupted) => counts.interrupted += n,
                Some(Outcome::InFlight) => counts.in_flight += n,
                None => {
                    return Err(StoreError::Corrupt {
                        what: "run outcome",
                        value: outcome,
                    });
                }
            }
        }
        Ok(counts)
    }
}

fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql("read user_version"))
}

fn check_not_newer(path: &Path, version: i64) -> Result<(), StoreError> {
    if usize::try_from(version).map_or(true, |v| v > MIGRATIONS.len()) {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: MIGRATIONS.len(),
        });
    }
    Ok(())
}

/// Apply the migrations a database lacks, each in its own transaction
/// together with its `user_version` bump.
fn migrate(path: &Path, conn: &mut Connection) -> Result<(), StoreError> {
    let version = user_version(conn)?;
    check_not_newer(path, version)?;
    let applied = usize::try_from(version).unwrap_or(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(sql("begin migration"))?;
        tx.execute_batch(migration)
            .map_err(sql("apply migration"))?;
        tx.pragma_update(None, "user_version", index + 1)
            .map_err(sql("set user_version"))?;
        tx.commit().map_err(sql("commit migration"))?;
    }
    Ok(())
}

fn uuid_text(uuid: Uuid) -> String {
    uuid.hyphenated().to_string()
}

fn parse_uuid(text: Option<String>, what: &'static str) -> Result<Option<Uuid>, StoreError> {
    text.map(|t| Uuid::parse_str(&t).map_err(|_| StoreError::Corrupt { what, value: t }))
        .transpose()
}

fn parse_time(text: String, what: &'static str) -> Result<OffsetDateTime, StoreError> {
    dbtime::parse(&text).ok_or(StoreError::Corrupt { what, value: text })
}

/// A `runs` row as stored, before its text fields are parsed.
struct RawRun {
    id: RunId,
    station_id: String,
    port: String,
    started_at: String,
    finished_at: Option<String>,
    outcome: String,
    failed_step: Option<String>,
    reason: Option<String>,
    device_uuid: Option<String>,
    imei: Option<String>,
    model: Option<String>,
    firmware: Option<String>,
    firmware_uuid: Option<String>,
    hw_version: Option<String>,
}

impl RawRun {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawRun {
            id: row.get(0)?,
            station_id: row.get(1)?,
            port: row.get(2)?,
            started_at: row.get(3)?,
            finished_at: row.get(4)?,
            outcome: row.get(5)?,
            failed_step: row.get(6)?,
            reason: row.get(7)?,
            device_uuid: row.get(8)?,
            imei: row.get(9)?,
            model: row.get(10)?,
            firmware: row.get(11)?,
            firmware_uuid: row.get(12)?,
            hw_version: row.get(13)?,
        })
    }
}

fn load_run(conn: &Connection, raw: RawRun) -> Result<RunRecord, StoreError> {
    let outcome = Outcome::parse(&raw.outcome).ok_or_else(|| StoreError::Corrupt {
        what: "run outcome",
        value: raw.outcome.clone(),
    })?;

    let mut stmt = conn
        .prepare_cached(
            "SELECT name, started_at, duration_us, passed, attempts, detail
             FROM steps WHERE run_id = ?1 ORDER BY seq",
        )
        .map_err(sql("query steps"))?;
    let steps = stmt
        .query_map([raw.id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, bool>(3)?,
                row.get::<_, u32>(4)?,
                row.get::<_, String>(5)?,
            ))
        })
        .map_err(sql("query steps"))?
        .map(|row| {
            let (name, started_at, micros, passed, attempts, detail) =
                row.map_err(sql("read step"))?;
            Ok(StepRecord {
                name,
                started_at: parse_time(started_at, "step start time")?,
                duration: Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
                passed,
                attempts,
                detail,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

    let mut stmt = conn
        .prepare_cached(
            "SELECT kind, text, authentic, checks_json FROM tokens WHERE run_id = ?1 ORDER BY seq",
        )
        .map_err(sql("query tokens"))?;
    let tokens = stmt
        .query_map([raw.id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
            ))
        })
        .map_err(sql("query tokens"))?
        .map(|row| {
            let (kind, text, authentic, checks_json) = row.map_err(sql("read token"))?;
            Ok(TokenRecord {
                kind: crate::token::TokenKind::parse(&kind).ok_or(StoreError::Corrupt {
                    what: "token kind",
                    value: kind,
                })?,
                text,
                authentic,
                checks_json,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

    let mut stmt = conn
        .prepare_cached(
            "SELECT kind, sec_tag, content FROM artifacts WHERE run_id = ?1 ORDER BY seq",
        )
        .map_err(sql("query artifacts"))?;
    let artifacts = stmt
        .query_map([raw.id], |row| {
            Ok(Artifact {
                kind: row.get(0)?,
                sec_tag: row.get(1)?,
                content: row.get(2)?,
            })
        })
        .map_err(sql("query artifacts"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("read artifact"))?;

    Ok(RunRecord {
        id: raw.id,
        station_id: raw.station_id,
        port: raw.port,
        started_at: parse_time(raw.started_at, "run start time")?,
        finished_at: raw
            .finished_at
            .map(|t| parse_time(t, "run finish time"))
            .transpose()?,
        outcome,
        failed_step: raw.failed_step,
        reason: raw.reason,
        device: DeviceInfo {
            device_uuid: parse_uuid(raw.device_uuid, "device UUID")?,
            imei: raw.imei,
            model: raw.model,
            firmware: raw.firmware,
            firmware_uuid: parse_uuid(raw.firmware_uuid, "firmware UUID")?,
            hw_version: raw.hw_version,
        },
        steps,
        tokens,
        artifacts,
    })
}
