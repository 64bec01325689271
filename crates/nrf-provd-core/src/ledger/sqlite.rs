//! The embedded ledger: SQLite.
//!
//! Durability: WAL with `synchronous=FULL`, so a transaction is on disk when
//! its commit returns. One connection on a thread of its own ([`owner`]): a
//! station writes a few rows per board, far below what one connection
//! sustains, the async methods never block a runtime thread, and nothing
//! else in the process can hold a commit up. The HTTP API reads through a
//! pool of read-only connections of its own ([`readers`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Artifact, ArtifactKind, Claim, ClaimKind, ClaimOutcome, Counts, DeviceInfo, Ledger,
    LedgerError, LedgerReader, Outcome, Pin, PinOutcome, ReasonCode, RunFilter, RunId, RunRecord,
    RunStart, Step, StepRecord, TokenRecord, VerifiedBy, dbtime,
};
use crate::token::TokenKind;

mod deliveries;
mod handoff;
mod line;
mod owner;
pub mod readers;
pub use deliveries::SqliteDeliveries;
pub use handoff::SqliteHandoff;
pub use line::stored_claim_value;
use owner::{Db, blocking};

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many
/// a database has. Append only: never edit a released migration.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_reason_code.sql"),
    include_str!("migrations/0003_line.sql"),
    include_str!("migrations/0004_health.sql"),
    include_str!("migrations/0005_outbox.sql"),
    include_str!("migrations/0006_handoff.sql"),
    include_str!("migrations/0007_pin_keys.sql"),
    // Issue 22's sinks' outbox: numbered 10 (8 and 9 are taken by work in
    // parallel); renumber at merge.
    include_str!("migrations/0010_deliveries.sql"),
];

/// The schema version this release writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Reason recorded for runs found in flight when the ledger is opened.
const RECOVERED_REASON: &str = "the station stopped before the run finished";

/// How long a write waits for a lock another process holds before it fails
/// (and the station pauses and retries): short, so that ports do not queue
/// behind one another for long. Readers never block this writer (WAL).
const BUSY_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a read-only view waits for a lock.
const READ_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The station's own ledger: one writer per database, across processes.
#[derive(Clone)]
pub struct SqliteLedger {
    db: Arc<Db>,
    /// `<database>.pending/`: records whose commit failed, one file each,
    /// applied on the next open (see [`SqliteLedger::open`]).
    pending_dir: PathBuf,
}

/// A read-only view of a ledger (`nrf-provd results`), safe while a daemon
/// writes it.
#[derive(Clone)]
pub struct SqliteReader {
    db: Arc<Db>,
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLedger")
            .field("path", &self.db.path)
            .field("recovered", &self.db.recovered)
            .finish_non_exhaustive()
    }
}

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> LedgerError {
    move |source| LedgerError::Sqlite { context, source }
}

fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> LedgerError {
    let path = path.to_owned();
    move |source| LedgerError::Io {
        path,
        action,
        source,
    }
}

/// `file` with group/other permission bits cleared.
fn restrict(path: &Path, file: &File) -> Result<(), LedgerError> {
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
fn restrict_side_file(path: &Path) -> Result<(), LedgerError> {
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

/// An exclusive `flock` on `<database><suffix>` (created 0600), held while
/// the returned lock lives; `busy()` when another holder has it.
fn lock_side_file(
    path: &Path,
    suffix: &str,
    busy: impl FnOnce() -> LedgerError,
) -> Result<Flock<std::fs::File>, LedgerError> {
    let lock_path = side_file(path, suffix);
    let lock_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io(&lock_path, "cannot open or create lock file"))?;
    match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, Errno::EWOULDBLOCK)) => Err(busy()),
        Err((_, errno)) => Err(io(&lock_path, "cannot lock")(std::io::Error::from(errno))),
    }
}

fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl SqliteLedger {
    /// Open (creating it with mode 0600 if needed) and migrate the database,
    /// then mark runs left in flight by a crash as interrupted (see
    /// [`SqliteLedger::recovered`]). Only one `open` may hold a database at
    /// a time, across processes ([`LedgerError::InUse`]); the lock is an
    /// exclusive `flock` on `<database>.lock`, released when the ledger
    /// drops or the process dies. Blocking: call it at start-up.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        // Lock first, on a file of its own: a refused opener must not touch
        // the database file, because closing any descriptor of it would drop
        // the POSIX locks SQLite holds on it in this process.
        let lock = lock_side_file(path, ".lock", || LedgerError::InUse {
            path: path.to_owned(),
        })?;

        // Create the database with mode 0600 before SQLite does (SQLite would
        // use 0644 minus the umask). Closing this descriptor is safe: holding
        // the lock, no other writing ledger in this process has the database
        // open (the daemon opens no read-only view next to its own).
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
        check_health(path, &conn)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql("journal_mode=WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::Sqlite {
                context: "journal_mode=WAL",
                source: rusqlite::Error::InvalidParameterName(format!(
                    "the file system refused WAL (journal_mode is {mode})"
                )),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("synchronous=FULL"))?;
        // Foreign keys go on after the migrations: a migration that rebuilds
        // a table needs them off (and checks them itself before commit). The
        // bundled SQLite turns them on by default.
        conn.pragma_update(None, "foreign_keys", "OFF")
            .map_err(sql("foreign_keys=OFF"))?;
        migrate(path, &mut conn)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("foreign_keys=ON"))?;

        // Records a commit could not take earlier, kept beside the database:
        // what really happened, before recovery would call them interrupted.
        let pending_dir = side_file(path, ".pending");
        replay_pending(&pending_dir, &mut conn)?;

        let recovered = conn
            .execute(
                "UPDATE runs SET outcome = 'interrupted',
                     reason_code = COALESCE(reason_code, 'interrupted'),
                     reason = COALESCE(reason, ?1)
                 WHERE outcome = 'in_flight'",
                [RECOVERED_REASON],
            )
            .map_err(sql("recover runs left in flight"))?;

        restrict_side_file(&side_file(path, "-wal"))?;
        restrict_side_file(&side_file(path, "-shm"))?;

        Ok(SqliteLedger {
            db: Arc::new(Db::start("db-writer", conn, Some(lock), path, recovered)?),
            pending_dir,
        })
    }

    /// Open an existing database for reading only (`nrf-provd results`),
    /// also while a daemon has it open. A database an older release made,
    /// with no daemon holding it, is first migrated (as the daemon would on
    /// its next start) so that it reads in today's shape; otherwise nothing
    /// is changed.
    pub fn open_read_only(path: &Path) -> Result<SqliteReader, LedgerError> {
        let (conn, version) = Self::open_read_only_conn(path)?;
        if usize::try_from(version).is_ok_and(|v| v < MIGRATIONS.len()) {
            drop(conn);
            match SqliteLedger::open(path) {
                // Migrated and closed again; fall through to a fresh view.
                Ok(writer) => drop(writer),
                // A daemon holds it (and so has migrated it by now), or this
                // user may only read it: read it in the shape it has.
                Err(LedgerError::InUse { .. } | LedgerError::Io { .. }) => {}
                Err(e) => return Err(e),
            }
            return Self::open_read_only_as_is(path);
        }
        SqliteReader::start(conn, path)
    }

    fn open_read_only_as_is(path: &Path) -> Result<SqliteReader, LedgerError> {
        let (conn, _) = Self::open_read_only_conn(path)?;
        SqliteReader::start(conn, path)
    }

    /// A read-only connection and the schema version it found.
    fn open_read_only_conn(path: &Path) -> Result<(Connection, i64), LedgerError> {
        // SQLite would report "unable to open"; say which file is missing.
        std::fs::metadata(path).map_err(io(path, "cannot open database"))?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("open read-only"))?;
        conn.busy_timeout(READ_BUSY_TIMEOUT)
            .map_err(sql("busy_timeout"))?;
        let version = user_version(&conn)?;
        if version == 0 {
            return Err(LedgerError::NoSchema {
                path: path.to_owned(),
            });
        }
        check_not_newer(path, version)?;
        Ok((conn, version))
    }

    /// Runs found in flight (left by a crash) and marked interrupted by `open`.
    pub fn recovered(&self) -> usize {
        self.db.recovered
    }

    pub fn path(&self) -> &Path {
        &self.db.path
    }
}

impl SqliteReader {
    fn start(conn: Connection, path: &Path) -> Result<SqliteReader, LedgerError> {
        Ok(SqliteReader {
            db: Arc::new(Db::start("db-reader", conn, None, path, 0)?),
        })
    }

    /// A database opened read-only when it was older than this version has
    /// not been migrated: read it as the shape it has.
    fn version(conn: &Connection) -> Result<i64, LedgerError> {
        user_version(conn)
    }
}

#[async_trait]
impl Ledger for SqliteLedger {
    async fn begin_run(&self, start: &RunStart) -> Result<RunId, LedgerError> {
        let start = start.clone();
        blocking(&self.db, move |conn| {
            conn.execute(
                "INSERT INTO runs (uid, station_id, port, started_at, outcome)
                 VALUES (?1, ?2, ?3, ?4, 'in_flight')",
                params![
                    uuid_text(start.uid),
                    start.station_id,
                    start.port,
                    dbtime::format(start.started_at)
                ],
            )
            .map_err(sql("begin run"))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    async fn claim(&self, run: RunId, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        if claim.value.is_empty() {
            return Err(LedgerError::InvalidRecord(format!(
                "a {} claim needs a value",
                claim.kind.describe()
            )));
        }
        let kind = claim.kind.as_str();
        let value = match claim.kind {
            ClaimKind::JwtJti => claim.value.clone(),
            ClaimKind::AttestNonce | ClaimKind::KeygenNonce => claim.value.to_ascii_lowercase(),
        };
        let at = dbtime::format(claim.at);
        blocking(&self.db, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("claim nonce"))?;
            let inserted = tx
                .execute(
                    "INSERT INTO nonces (kind, value, run_id, claimed_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (kind, value) DO NOTHING",
                    params![kind, value, run, at],
                )
                .map_err(|e| match e.sqlite_error_code() {
                    Some(rusqlite::ErrorCode::ConstraintViolation) => LedgerError::UnknownRun(run),
                    _ => sql("claim nonce")(e),
                })?;
            let outcome = if inserted == 1 {
                ClaimOutcome::Fresh
            } else {
                let first_run = tx
                    .query_row(
                        "SELECT run_id FROM nonces WHERE kind = ?1 AND value = ?2",
                        params![kind, value],
                        |row| row.get(0),
                    )
                    .map_err(sql("look up claimed nonce"))?;
                ClaimOutcome::Replay { first_run }
            };
            tx.commit().map_err(sql("claim nonce"))?;
            Ok(outcome)
        })
        .await
    }

    async fn finish_run(&self, record: &RunRecord) -> Result<(), LedgerError> {
        if record.outcome == Outcome::InFlight {
            return Err(LedgerError::InvalidRecord(format!(
                "run {} is finished with outcome in_flight; use passed, failed or interrupted",
                record.id
            )));
        }
        let record = record.clone();
        let pending_dir = self.pending_dir.clone();
        blocking(&self.db, move |conn| {
            match finish(conn, &record) {
                Ok(()) => {
                    // Committed at last: the kept copy has done its job.
                    let _ = std::fs::remove_file(pending_file(&pending_dir, &record));
                    Ok(())
                }
                Err(e) if e.is_transient() => {
                    // Keep what happened, in case the station stops before
                    // the database takes it (best effort: a full disk may
                    // refuse this too, and the station still holds it).
                    let kept = record.uncommitted(&e.to_string());
                    if let Err(keep) = keep_pending(&pending_dir, &kept) {
                        tracing::warn!(run = record.id, error = %keep, "could not keep the uncommitted record beside the database");
                    }
                    Err(e)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn probe(&self) -> Result<(), LedgerError> {
        let at = dbtime::format(OffsetDateTime::now_utc());
        blocking(&self.db, move |conn| {
            conn.execute(
                "INSERT INTO health (id, probed_at) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
                [at],
            )
            .map_err(sql("probe"))?;
            Ok(())
        })
        .await
    }

    async fn pin(&self, pin: &Pin) -> Result<PinOutcome, LedgerError> {
        let pin = pin.clone();
        blocking(&self.db, move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("pin"))?;
            let read = |row: &rusqlite::Row<'_>| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                ))
            };
            let key = base64_key(&pin.public_key);
            let first = tx
                .query_row(
                    "SELECT device_uuid, public_key, pinned_at, station_id, port, run_uid FROM pins
                     WHERE device_uuid = ?1",
                    [uuid_text(pin.device_uuid)],
                    read,
                )
                .optional()
                .map_err(sql("look up pin"))?;
            // The same key pinned first for another device.
            let other = tx
                .query_row(
                    "SELECT device_uuid, public_key, pinned_at, station_id, port, run_uid FROM pins
                     WHERE public_key = ?1 AND device_uuid <> ?2 ORDER BY pinned_at LIMIT 1",
                    params![key, uuid_text(pin.device_uuid)],
                    read,
                )
                .optional()
                .map_err(sql("look up pinned key"))?;
            let stored = |(uuid, key, at, station_id, port, run_uid): (String, String, String, String, String, String)| -> Result<Pin, LedgerError> {
                Ok(Pin {
                    device_uuid: parse_uuid(Some(uuid), "pinned device")?.unwrap_or_default(),
                    public_key: unbase64_key(&key)?,
                    at: parse_time(at, "pin time")?,
                    station_id,
                    port,
                    run_uid: parse_uuid(Some(run_uid), "pin run")?.unwrap_or_default(),
                })
            };
            let first = first.map(stored).transpose()?;
            let other = other.map(stored).transpose()?;
            let outcome = PinOutcome::decide(&pin.public_key, first, other);
            if outcome == PinOutcome::Pinned {
                tx.execute(
                    "INSERT INTO pins (device_uuid, public_key, pinned_at, station_id, port, run_uid)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        uuid_text(pin.device_uuid),
                        key,
                        dbtime::format(pin.at),
                        pin.station_id,
                        pin.port,
                        uuid_text(pin.run_uid),
                    ],
                )
                .map_err(sql("pin"))?;
            }
            tx.commit().map_err(sql("pin"))?;
            Ok(outcome)
        })
        .await
    }

    async fn check_device(
        &self,
        check: &super::DeviceCheck,
    ) -> Result<super::DeviceHistory, LedgerError> {
        line::check_device(&self.db, check).await
    }
}

fn base64_key(der: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(der)
}

fn unbase64_key(text: &str) -> Result<Vec<u8>, LedgerError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| LedgerError::Corrupt {
            what: "pinned key",
            value: text.to_string(),
        })
}

/// Write a finished run in one transaction: the run row, its steps, tokens
/// and artifacts, and the device.
fn finish(conn: &mut Connection, record: &RunRecord) -> Result<(), LedgerError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("finish run"))?;
    finish_in(&tx, record)?;
    tx.commit().map_err(sql("commit run"))
}

/// [`finish`] inside the caller's transaction.
fn finish_in(tx: &Connection, record: &RunRecord) -> Result<(), LedgerError> {
    let device = &record.device;
    let updated = tx
        .execute(
            "UPDATE runs SET station_id = ?2, port = ?3, started_at = ?4, finished_at = ?5,
                 outcome = ?6, failed_step = ?7, reason = ?8, device_uuid = ?9, imei = ?10,
                 model = ?11, firmware = ?12, firmware_uuid = ?13, hw_version = ?14,
                 reason_code = ?15, verified_by = ?16
             WHERE id = ?1 AND outcome = 'in_flight'",
            params![
                record.id,
                record.station_id,
                record.port,
                dbtime::format(record.started_at),
                record.finished_at.map(dbtime::format),
                record.outcome.as_str(),
                record.failed_step.map(Step::as_str),
                record.reason,
                device.device_uuid.map(uuid_text),
                device.imei,
                device.model,
                device.firmware,
                device.firmware_uuid.map(uuid_text),
                device.hw_version,
                record.reason_code.map(ReasonCode::as_str),
                record.verified_by.map(VerifiedBy::as_str),
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
            Some(outcome) => LedgerError::AlreadyFinished {
                id: record.id,
                outcome,
            },
            None => LedgerError::UnknownRun(record.id),
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
                    step.name.as_str(),
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
                    artifact.kind.as_str(),
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
    Ok(())
}

#[async_trait]
impl LedgerReader for SqliteLedger {
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, LedgerError> {
        let filter = filter.clone();
        blocking(&self.db, move |conn| read_runs(conn, &filter, None)).await
    }

    async fn run(&self, id: RunId) -> Result<Option<RunRecord>, LedgerError> {
        let runs = blocking(&self.db, move |conn| {
            read_runs(conn, &RunFilter::default(), Some(id))
        })
        .await?;
        Ok(runs.into_iter().next())
    }

    async fn counts(&self) -> Result<Counts, LedgerError> {
        blocking(&self.db, count_runs).await
    }
}

#[async_trait]
impl LedgerReader for SqliteReader {
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, LedgerError> {
        let filter = filter.clone();
        blocking(&self.db, move |conn| read_runs(conn, &filter, None)).await
    }

    async fn run(&self, id: RunId) -> Result<Option<RunRecord>, LedgerError> {
        let runs = blocking(&self.db, move |conn| {
            read_runs(conn, &RunFilter::default(), Some(id))
        })
        .await?;
        Ok(runs.into_iter().next())
    }

    async fn counts(&self) -> Result<Counts, LedgerError> {
        blocking(&self.db, count_runs).await
    }
}

/// The runs matching `filter`, oldest first, with their steps, tokens and
/// artifacts: four queries however many runs there are.
/// With `id`, only that run.
fn read_runs(
    conn: &mut Connection,
    filter: &RunFilter,
    id: Option<RunId>,
) -> Result<Vec<RunRecord>, LedgerError> {
    let limit = filter
        .limit
        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let filter_params = params![
        filter.device_uuid.map(uuid_text),
        filter.since.map(dbtime::format),
        limit,
        id,
        filter.station_id,
    ];
    // One selection, used by all four queries.
    const SELECTED: &str = "SELECT id FROM runs
         WHERE (?1 IS NULL OR device_uuid = ?1) AND (?2 IS NULL OR started_at >= ?2)
               AND (?4 IS NULL OR id = ?4) AND (?5 IS NULL OR station_id = ?5)
         ORDER BY id DESC LIMIT ?3";
    read_selected(conn, SELECTED, filter_params)
}

/// The runs whose ids `selected` (SQL, with `filter_params`) returns,
/// oldest first, with their steps, tokens and artifacts.
fn read_selected(
    conn: &Connection,
    selected: &str,
    filter_params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<RunRecord>, LedgerError> {
    // A read-only view of an older database (one a daemon holds but has
    // not yet migrated, or one this user may not write) lacks newer columns.
    let version = SqliteReader::version(conn)?;
    let reason_code = if version >= 2 { "reason_code" } else { "NULL" };
    let (uid, verified_by) = if version >= 3 {
        ("uid", "verified_by")
    } else {
        ("NULL", "NULL")
    };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT id, station_id, port, started_at, finished_at, outcome, failed_step, reason,
                    device_uuid, imei, model, firmware, firmware_uuid, hw_version, {reason_code},
                    {uid}, {verified_by}
             FROM runs WHERE id IN ({selected}) ORDER BY id"
        ))
        .map_err(sql("query runs"))?;
    let raws = stmt
        .query_map(filter_params, RawRun::from_row)
        .map_err(sql("query runs"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("read runs"))?;

    let mut steps: HashMap<RunId, Vec<StepRecord>> = HashMap::new();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT run_id, name, started_at, duration_us, passed, attempts, detail
             FROM steps WHERE run_id IN ({selected}) ORDER BY run_id, seq"
        ))
        .map_err(sql("query steps"))?;
    let rows = stmt
        .query_map(filter_params, |row| {
            Ok((
                row.get::<_, RunId>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, bool>(4)?,
                row.get::<_, u32>(5)?,
                row.get::<_, String>(6)?,
            ))
        })
        .map_err(sql("query steps"))?;
    for row in rows {
        let (run, name, started_at, micros, passed, attempts, detail) =
            row.map_err(sql("read step"))?;
        let name = name.parse::<Step>().map_err(|_| LedgerError::Corrupt {
            what: "step name",
            value: name,
        })?;
        steps.entry(run).or_default().push(StepRecord {
            name,
            started_at: parse_time(started_at, "step start time")?,
            duration: Duration::from_micros(u64::try_from(micros).unwrap_or(0)),
            passed,
            attempts,
            detail,
        });
    }

    let mut tokens: HashMap<RunId, Vec<TokenRecord>> = HashMap::new();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT run_id, kind, text, authentic, checks_json
             FROM tokens WHERE run_id IN ({selected}) ORDER BY run_id, seq"
        ))
        .map_err(sql("query tokens"))?;
    let rows = stmt
        .query_map(filter_params, |row| {
            Ok((
                row.get::<_, RunId>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, bool>(3)?,
                row.get::<_, String>(4)?,
            ))
        })
        .map_err(sql("query tokens"))?;
    for row in rows {
        let (run, kind, text, authentic, checks_json) = row.map_err(sql("read token"))?;
        let kind = TokenKind::parse(&kind).ok_or(LedgerError::Corrupt {
            what: "token kind",
            value: kind,
        })?;
        tokens.entry(run).or_default().push(TokenRecord {
            kind,
            text,
            authentic,
            checks_json,
        });
    }

    let mut artifacts: HashMap<RunId, Vec<Artifact>> = HashMap::new();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT run_id, kind, sec_tag, content
             FROM artifacts WHERE run_id IN ({selected}) ORDER BY run_id, seq"
        ))
        .map_err(sql("query artifacts"))?;
    let rows = stmt
        .query_map(filter_params, |row| {
            Ok((
                row.get::<_, RunId>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<u32>>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .map_err(sql("query artifacts"))?;
    for row in rows {
        let (run, kind, sec_tag, content) = row.map_err(sql("read artifact"))?;
        let kind = ArtifactKind::parse(&kind).ok_or(LedgerError::Corrupt {
            what: "artifact kind",
            value: kind,
        })?;
        artifacts.entry(run).or_default().push(Artifact {
            kind,
            sec_tag,
            content,
        });
    }

    raws.into_iter()
        .map(|raw| {
            let id = raw.id;
            raw.into_record(
                steps.remove(&id).unwrap_or_default(),
                tokens.remove(&id).unwrap_or_default(),
                artifacts.remove(&id).unwrap_or_default(),
            )
        })
        .collect()
}

fn count_runs(conn: &mut Connection) -> Result<Counts, LedgerError> {
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

/// Refuse a damaged database: recording into it would lose what is there
/// and what comes.
fn check_health(path: &Path, conn: &Connection) -> Result<(), LedgerError> {
    let damaged = |detail: String| LedgerError::Damaged {
        path: path.to_owned(),
        detail,
    };
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .map_err(|e| damaged(e.to_string()))?;
    let problems: Vec<String> = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| damaged(e.to_string()))?;
    match problems.as_slice() {
        [ok] if ok == "ok" => Ok(()),
        _ => Err(damaged(problems.join("; "))),
    }
}

fn pending_file(dir: &Path, record: &RunRecord) -> PathBuf {
    dir.join(format!("{}.json", record.uid.hyphenated()))
}

/// Write `record` into `dir` (0700) as JSON, durably.
fn keep_pending(dir: &Path, record: &RunRecord) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = pending_file(dir, record);
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec(record).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()
}

/// Apply the records `keep_pending` left (each commits as it would have),
/// then remove them. A file that does not parse is left in place and named.
fn replay_pending(dir: &Path, conn: &mut Connection) -> Result<(), LedgerError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir, "cannot read pending records")(e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let record: RunRecord = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "a kept record does not read; leaving it in place");
                continue;
            }
        };
        match finish(conn, &record) {
            Ok(()) | Err(LedgerError::AlreadyFinished { .. }) => {
                tracing::info!(run = record.id, "recorded a run whose commit had failed");
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn user_version(conn: &Connection) -> Result<i64, LedgerError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql("read user_version"))
}

fn check_not_newer(path: &Path, version: i64) -> Result<(), LedgerError> {
    if usize::try_from(version).map_or(true, |v| v > MIGRATIONS.len()) {
        return Err(LedgerError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: MIGRATIONS.len(),
        });
    }
    Ok(())
}

/// Apply the migrations a database lacks, each in its own transaction
/// together with its `user_version` bump. Foreign keys are off (the caller
/// turns them on after); each migration's result is checked for dangling
/// references before it commits.
fn migrate(path: &Path, conn: &mut Connection) -> Result<(), LedgerError> {
    let version = user_version(conn)?;
    check_not_newer(path, version)?;
    let applied = usize::try_from(version).unwrap_or(0);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(sql("begin migration"))?;
        tx.execute_batch(migration)
            .map_err(sql("apply migration"))?;
        let dangling: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
            .optional()
            .map_err(sql("check foreign keys after migration"))?;
        if let Some(table) = dangling {
            return Err(LedgerError::Corrupt {
                what: "reference after migration, in table",
                value: table,
            });
        }
        tx.pragma_update(None, "user_version", index + 1)
            .map_err(sql("set user_version"))?;
        tx.commit().map_err(sql("commit migration"))?;
    }
    Ok(())
}

fn uuid_text(uuid: Uuid) -> String {
    uuid.hyphenated().to_string()
}

fn parse_uuid(text: Option<String>, what: &'static str) -> Result<Option<Uuid>, LedgerError> {
    text.map(|t| Uuid::parse_str(&t).map_err(|_| LedgerError::Corrupt { what, value: t }))
        .transpose()
}

fn parse_time(text: String, what: &'static str) -> Result<OffsetDateTime, LedgerError> {
    dbtime::parse(&text).ok_or(LedgerError::Corrupt { what, value: text })
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
    reason_code: Option<String>,
    uid: Option<String>,
    verified_by: Option<String>,
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
            reason_code: row.get(14)?,
            uid: row.get(15)?,
            verified_by: row.get(16)?,
        })
    }

    fn into_record(
        self,
        steps: Vec<StepRecord>,
        tokens: Vec<TokenRecord>,
        artifacts: Vec<Artifact>,
    ) -> Result<RunRecord, LedgerError> {
        let outcome = Outcome::parse(&self.outcome).ok_or_else(|| LedgerError::Corrupt {
            what: "run outcome",
            value: self.outcome.clone(),
        })?;
        // A step this version does not know (or version 1's "record") is
        // no step at all, not a reason to refuse the run.
        let failed_step = self.failed_step.as_deref().and_then(|s| s.parse().ok());
        Ok(RunRecord {
            id: self.id,
            // A database older than version 3 read as it is: no uid yet.
            uid: parse_uuid(self.uid, "run uid")?.unwrap_or_default(),
            station_id: self.station_id,
            port: self.port,
            started_at: parse_time(self.started_at, "run start time")?,
            finished_at: self
                .finished_at
                .map(|t| parse_time(t, "run finish time"))
                .transpose()?,
            outcome,
            failed_step,
            reason_code: self.reason_code.as_deref().map(ReasonCode::parse),
            reason: self.reason,
            verified_by: self.verified_by.as_deref().and_then(VerifiedBy::parse),
            device: DeviceInfo {
                device_uuid: parse_uuid(self.device_uuid, "device UUID")?,
                imei: self.imei,
                model: self.model,
                firmware: self.firmware,
                firmware_uuid: parse_uuid(self.firmware_uuid, "firmware UUID")?,
                hw_version: self.hw_version,
            },
            steps,
            tokens,
            artifacts,
        })
    }
}
