//! The embedded ledger: SQLite.
//!
//! Durability: WAL with `synchronous=FULL`, so a transaction is on disk when
//! its commit returns. One connection on a thread of its own ([`owner`]): a
//! station writes a few rows per board, far below what one connection
//! sustains, the async methods never block a runtime thread, and nothing
//! else in the process can hold a commit up. The HTTP API reads through a
//! pool of read-only connections of its own ([`readers`]).

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
    Artifact, Binding, BindingOutcome, Claim, ClaimKind, ClaimOutcome, Counts, DeviceInfo, Ledger,
    LedgerError, LedgerReader, Outcome, ReasonCode, RunFilter, RunId, RunRecord, RunStart, Shift,
    ShiftChange, Step, StepRecord, TokenRecord, Traceability, VerifiedBy, dbtime,
};

mod deliveries;
mod handoff;
pub mod integrity;
mod line;
mod owner;
mod payload;
pub mod readers;
pub mod retention;
mod tally;
pub mod work;
pub use deliveries::SqliteDeliveries;
pub use handoff::SqliteHandoff;
pub use line::stored_claim_value;
use owner::{Db, blocking, grouped, grouped_deferred, grouped_then};
pub use retention::SqliteRetention;

/// One schema migration: SQL, or SQL and then a Rust step in the same
/// transaction (data SQL cannot convert).
enum Migration {
    Sql(&'static str),
    SqlThen(
        &'static str,
        fn(&Connection, &Path) -> Result<(), LedgerError>,
    ),
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many
/// a database has. Append only: never edit a released migration.
const MIGRATIONS: &[Migration] = &[
    Migration::Sql(include_str!("migrations/0001_initial.sql")),
    Migration::Sql(include_str!("migrations/0002_reason_code.sql")),
    Migration::Sql(include_str!("migrations/0003_line.sql")),
    Migration::Sql(include_str!("migrations/0004_health.sql")),
    Migration::Sql(include_str!("migrations/0005_outbox.sql")),
    Migration::Sql(include_str!("migrations/0006_handoff.sql")),
    Migration::Sql(include_str!("migrations/0007_pin_keys.sql")),
    Migration::Sql(include_str!("migrations/0008_traceability.sql")),
    Migration::Sql(include_str!("migrations/0009_history.sql")),
    Migration::SqlThen(
        include_str!("migrations/0010_payloads.sql"),
        payload::move_into_payloads,
    ),
    Migration::Sql(include_str!("migrations/0011_deliveries.sql")),
    Migration::Sql(include_str!("migrations/0012_retention.sql")),
    Migration::Sql(include_str!("migrations/0013_amended_runs.sql")),
    Migration::Sql(include_str!("migrations/0014_line_sink.sql")),
    Migration::Sql(include_str!("migrations/0015_authority_bindings.sql")),
    Migration::Sql(include_str!("migrations/0016_handoff_sinks.sql")),
];

/// The first schema version whose runs keep steps, tokens and artifacts in
/// `run_payloads`.
const PAYLOADS: i64 = 10;

/// The first schema version with `runs.compacted_at` (retention).
const RETENTION: i64 = 12;

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
        let bytes = std::fs::metadata(path)
            .map_err(io(path, "cannot stat"))?
            .len();
        let check = integrity::Check::for_open(bytes, integrity::closed_cleanly(&lock));

        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("open"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("busy_timeout"))?;
        match check {
            integrity::Check::AtOpen => integrity::quick_check(path, &conn)?,
            integrity::Check::InBackground | integrity::Check::SchemaOnly => {
                integrity::schema_check(path, &conn)?
            }
        }
        integrity::mark_open(path, &lock)?;
        // A new database reuses and can give back the pages retention
        // frees without a full VACUUM; this is only possible before its
        // first page is written, WAL's header included (an older database
        // keeps reusing its free pages).
        if user_version(&conn)? == 0 {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(sql("auto_vacuum=INCREMENTAL"))?;
        }
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

        // Every statement of a run's commits stays prepared (rusqlite keeps
        // 16 by default; the writer runs more distinct ones than that).
        conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
        // A group commit runs each job in a savepoint, which keeps the pages
        // it changes in a sub-journal. Past 64 KiB SQLite moves that journal
        // to a temporary file and, for the rest of the transaction, writes
        // every job's pages to it: boards finishing together spent about a
        // quarter of their finish in those writes (issue 25). Kept in memory,
        // a job's sub-journal is emptied when its savepoint is released.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(sql("temp_store=MEMORY"))?;
        // Checkpoints happen on a thread of their own (see `owner`).
        conn.pragma_update(None, "wal_autocheckpoint", owner::WRITER_AUTOCHECKPOINT)
            .map_err(sql("wal_autocheckpoint"))?;
        let checkpoints = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql("open for checkpoints"))?;
        checkpoints
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("busy_timeout"))?;
        let checkpointer = owner::Checkpointer::start(checkpoints, path)?;
        let db = Db::start(
            "db-writer",
            conn,
            Some(lock),
            Some(checkpointer),
            path,
            recovered,
        )?;
        if check == integrity::Check::InBackground {
            integrity::check_in_background(path.to_owned(), Arc::clone(&db.damage));
        }
        Ok(SqliteLedger {
            db: Arc::new(db),
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

    /// Check the whole file now (`PRAGMA quick_check`, read-only, also
    /// while a daemon writes it): `Damaged` says what is wrong.
    pub fn check(path: &Path) -> Result<(), LedgerError> {
        integrity::check_now(path)
    }

    /// Runs found in flight (left by a crash) and marked interrupted by `open`.
    pub fn recovered(&self) -> usize {
        self.db.recovered
    }

    /// Count what the writer's connection does from now on: commits, rows
    /// written, SQL compiled (the cycle-cost test; never on otherwise).
    pub async fn count_work(&self) -> Result<Arc<work::WriterWork>, LedgerError> {
        let counted = Arc::new(work::WriterWork::default());
        let hooked = Arc::clone(&counted);
        blocking(&self.db, move |conn| {
            work::install(conn, &hooked);
            Ok(())
        })
        .await?;
        Ok(counted)
    }

    /// Pages the writer's connection has written to the WAL since it
    /// opened: what its commits cost the disk (a page changed by two
    /// commits is written twice). Read on the writer's thread, between jobs.
    pub async fn pages_written(&self) -> Result<u64, LedgerError> {
        blocking(&self.db, |conn| work::pages_written(conn)).await
    }

    pub fn path(&self) -> &Path {
        &self.db.path
    }
}

impl SqliteReader {
    fn start(conn: Connection, path: &Path) -> Result<SqliteReader, LedgerError> {
        Ok(SqliteReader {
            db: Arc::new(Db::start("db-reader", conn, None, None, path, 0)?),
        })
    }

    /// A database opened read-only when it was older than this version has
    /// not been migrated: read it as the shape it has.
    fn version(conn: &Connection) -> Result<i64, LedgerError> {
        user_version(conn)
    }
}

/// A claim as the `nonces` table holds it.
struct ClaimRow {
    run: RunId,
    kind: &'static str,
    value: String,
    at: String,
}

impl ClaimRow {
    fn new(run: RunId, claim: &Claim) -> Result<ClaimRow, LedgerError> {
        if claim.value.is_empty() {
            return Err(LedgerError::InvalidRecord(format!(
                "a {} claim needs a value",
                claim.kind.describe()
            )));
        }
        let value = match claim.kind {
            ClaimKind::JwtJti => claim.value.clone(),
            ClaimKind::AttestNonce | ClaimKind::KeygenNonce => claim.value.to_ascii_lowercase(),
        };
        Ok(ClaimRow {
            run,
            kind: claim.kind.as_str(),
            value,
            at: dbtime::format(claim.at),
        })
    }

    /// Claim it inside the writer's transaction.
    fn insert(&self, tx: &Connection) -> Result<ClaimOutcome, LedgerError> {
        let ClaimRow {
            run,
            kind,
            value,
            at,
        } = self;
        let inserted = tx
            .prepare_cached(
                "INSERT INTO nonces (kind, value, run_id, claimed_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, value) DO NOTHING",
            )
            .and_then(|mut insert| insert.execute(params![kind, value, run, at]))
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => LedgerError::UnknownRun(*run),
                _ => sql("claim nonce")(e),
            })?;
        if inserted == 1 {
            return Ok(ClaimOutcome::Fresh);
        }
        let first_run = tx
            .query_row(
                "SELECT run_id FROM nonces WHERE kind = ?1 AND value = ?2",
                params![kind, value],
                |row| row.get(0),
            )
            .map_err(sql("look up claimed nonce"))?;
        Ok(ClaimOutcome::Replay { first_run })
    }
}

/// Prepared statements the writer's connection keeps.
const WRITER_STATEMENTS: usize = 64;

#[async_trait]
impl Ledger for SqliteLedger {
    async fn begin_run(&self, start: &RunStart) -> Result<RunId, LedgerError> {
        let start = start.clone();
        // Durable with the run's next durable commit (its finish at the
        // latest): see the writer's "One fsync a run".
        grouped_deferred(&self.db, move |conn| {
            let trace = &start.trace;
            conn.prepare_cached(
                "INSERT INTO runs (uid, station_id, port, started_at, outcome,
                                   work_order, lot, operator, product, fixture)
                 VALUES (?1, ?2, ?3, ?4, 'in_flight', ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    uuid_text(start.uid),
                    start.station_id,
                    start.port,
                    dbtime::format(start.started_at),
                    trace.work_order,
                    trace.lot,
                    trace.operator,
                    trace.product,
                    trace.fixture,
                ])
            })
            .map_err(sql("begin run"))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    async fn claim(&self, run: RunId, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        let claim = ClaimRow::new(run, claim)?;
        // Deferred: a claim lost in a power cut goes with the run that made
        // it, and its token answered that run's own random challenge.
        grouped_deferred(&self.db, move |tx| claim.insert(tx)).await
    }

    async fn claim_then_check_device(
        &self,
        run: RunId,
        claim: &Claim,
        check: &super::DeviceCheck,
    ) -> Result<super::ClaimThenCheck, LedgerError> {
        let claim = ClaimRow::new(run, claim)?;
        let check = check.clone();
        // One job: both writes or neither (the job's own savepoint), one
        // trip to the writer; deferred as each of them alone.
        grouped_deferred(&self.db, move |tx| match claim.insert(tx)? {
            ClaimOutcome::Fresh => Ok(super::ClaimThenCheck::Checked(line::check_device_in(
                tx, &check,
            )?)),
            replay => Ok(super::ClaimThenCheck::Replay(replay)),
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
        let packed = payload::Packed::of(record)?;
        let record = Arc::new(record.clone());
        let kept = Arc::clone(&record);
        let pending_dir = self.pending_dir.clone();
        grouped_then(
            &self.db,
            move |conn| finish_packed_in(conn, &record, &packed),
            move |result| match result {
                Ok(()) => {
                    // Committed at last: the kept copy has done its job.
                    let _ = std::fs::remove_file(pending_file(&pending_dir, &kept));
                }
                Err(e) if e.is_transient() => {
                    // Keep what happened, in case the station stops before
                    // the database takes it (best effort: a full disk may
                    // refuse this too, and the station still holds it).
                    let uncommitted = kept.uncommitted(&e.to_string());
                    if let Err(keep) = keep_pending(&pending_dir, &uncommitted) {
                        tracing::warn!(run = kept.id, error = %keep, "could not keep the uncommitted record beside the database");
                    }
                }
                Err(_) => {}
            },
        )
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

    async fn bind(&self, binding: &Binding) -> Result<BindingOutcome, LedgerError> {
        let binding = binding.clone();
        // Deferred, as a claim: lost only with the run that bound it.
        grouped_deferred(&self.db, move |tx| bind_in(tx, &binding)).await
    }

    async fn check_device(
        &self,
        check: &super::DeviceCheck,
    ) -> Result<super::DeviceHistory, LedgerError> {
        line::check_device(&self.db, check).await
    }

    async fn record_shift_change(&self, change: &ShiftChange) -> Result<(), LedgerError> {
        let json = |shift: &Shift| {
            serde_json::to_string(shift).map_err(|e| LedgerError::InvalidRecord(e.to_string()))
        };
        let (old, new) = (json(&change.old)?, json(&change.new)?);
        let (at, by) = (dbtime::format(change.at), change.by.clone());
        blocking(&self.db, move |conn| {
            conn.execute(
                "INSERT INTO shift_changes (changed_at, changed_by, old_json, new_json)
                 VALUES (?1, ?2, ?3, ?4)",
                params![at, by, old, new],
            )
            .map_err(sql("record shift change"))?;
            Ok(())
        })
        .await
    }

    async fn shift_on_record(&self) -> Result<super::ShiftOnRecord, LedgerError> {
        blocking(&self.db, |conn| {
            let current = shift_changes(conn, 1, None)?;
            let from_config = shift_changes(conn, 1, Some(super::CONFIG_CHANGE))?;
            Ok(super::ShiftOnRecord {
                current: current.into_iter().next_back().map(|c| c.new),
                from_config: from_config.into_iter().next_back().map(|c| c.new),
            })
        })
        .await
    }
}

/// The latest `limit` shift changes (made `by` whom, when given), oldest
/// first (none in a database older than version 8).
pub(crate) fn shift_changes(
    conn: &Connection,
    limit: usize,
    by: Option<&str>,
) -> Result<Vec<ShiftChange>, LedgerError> {
    if SqliteReader::version(conn)? < 8 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT changed_at, changed_by, old_json, new_json FROM shift_changes
             WHERE ?2 IS NULL OR changed_by = ?2
             ORDER BY id DESC LIMIT ?1",
        )
        .map_err(sql("query shift changes"))?;
    let rows = stmt
        .query_map(params![limit, by], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .map_err(sql("query shift changes"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("read shift changes"))?;
    let shift = |text: String| {
        serde_json::from_str::<Shift>(&text).map_err(|_| LedgerError::Corrupt {
            what: "shift change",
            value: text,
        })
    };
    rows.into_iter()
        .rev()
        .map(|(at, by, old, new)| {
            Ok(ShiftChange {
                at: parse_time(at, "shift change time")?,
                by,
                old: shift(old)?,
                new: shift(new)?,
            })
        })
        .collect()
}

impl SqliteReader {
    /// The latest `limit` shift changes, oldest first.
    pub async fn shift_changes(&self, limit: usize) -> Result<Vec<ShiftChange>, LedgerError> {
        blocking(&self.db, move |conn| shift_changes(conn, limit, None)).await
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
            what: "bound value",
            value: text.to_string(),
        })
}

/// [`Ledger::bind`] inside the writer's transaction: two reads, and one
/// insert on first sight.
fn bind_in(tx: &Connection, binding: &Binding) -> Result<BindingOutcome, LedgerError> {
    const COLUMNS: &str = "authority, subject, value, bound_at, station_id, port, run_uid";
    let read = |row: &Row<'_>| -> rusqlite::Result<[String; 7]> {
        Ok([
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
        ])
    };
    let stored = |[authority, subject, value, at, station_id, port, run_uid]: [String; 7]| {
        Ok::<_, LedgerError>(Binding {
            authority,
            subject: parse_uuid(Some(subject), "bound subject")?.unwrap_or_default(),
            value: unbase64_key(&value)?,
            at: parse_time(at, "binding time")?,
            station_id,
            port,
            run_uid: parse_uuid(Some(run_uid), "binding run")?.unwrap_or_default(),
        })
    };
    let (authority, subject) = (&binding.authority, uuid_text(binding.subject));
    let value = base64_key(&binding.value);
    let first = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM authority_bindings WHERE authority = ?1 AND subject = ?2"
        ))
        .and_then(|mut stmt| stmt.query_row(params![authority, subject], read).optional())
        .map_err(sql("look up binding"))?
        .map(stored)
        .transpose()?;
    // The same value bound first to another subject.
    let other = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM authority_bindings
             WHERE authority = ?1 AND value = ?2 AND subject <> ?3 ORDER BY bound_at LIMIT 1"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(params![authority, value, subject], read)
                .optional()
        })
        .map_err(sql("look up bound value"))?
        .map(stored)
        .transpose()?;
    let outcome = BindingOutcome::decide(&binding.value, first, other);
    if outcome == BindingOutcome::Bound {
        tx.prepare_cached(&format!(
            "INSERT INTO authority_bindings ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ))
        .and_then(|mut stmt| {
            stmt.execute(params![
                authority,
                subject,
                value,
                dbtime::format(binding.at),
                binding.station_id,
                binding.port,
                uuid_text(binding.run_uid),
            ])
        })
        .map_err(sql("bind"))?;
    }
    Ok(outcome)
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
    finish_packed_in(tx, record, &payload::Packed::of(record)?)
}

/// [`finish_in`] with the run's payload already packed.
fn finish_packed_in(
    tx: &Connection,
    record: &RunRecord,
    packed: &payload::Packed,
) -> Result<(), LedgerError> {
    let device = &record.device;
    // What the run's start and its device check wrote is written again only
    // if it differs: setting an indexed column rewrites its index entry even
    // to the same value, and every page touched is written to the WAL.
    tx.prepare_cached(
        "UPDATE runs SET station_id = ?2, port = ?3, started_at = ?4, device_uuid = ?5,
             work_order = ?6, lot = ?7, operator = ?8, product = ?9, fixture = ?10
         WHERE id = ?1 AND outcome = 'in_flight'
           AND (station_id IS NOT ?2 OR port IS NOT ?3 OR started_at IS NOT ?4
                OR device_uuid IS NOT ?5 OR work_order IS NOT ?6 OR lot IS NOT ?7
                OR operator IS NOT ?8 OR product IS NOT ?9 OR fixture IS NOT ?10)",
    )
    .and_then(|mut update| {
        update.execute(params![
            record.id,
            record.station_id,
            record.port,
            dbtime::format(record.started_at),
            device.device_uuid.map(uuid_text),
            record.trace.work_order,
            record.trace.lot,
            record.trace.operator,
            record.trace.product,
            record.trace.fixture,
        ])
    })
    .map_err(sql("update run"))?;
    let updated = tx
        .prepare_cached(
            "UPDATE runs SET finished_at = ?2, outcome = ?3, failed_step = ?4, reason = ?5,
                 imei = ?6, model = ?7, firmware = ?8, firmware_uuid = ?9, hw_version = ?10,
                 reason_code = ?11, verified_by = ?12
             WHERE id = ?1 AND outcome = 'in_flight'",
        )
        .and_then(|mut update| {
            update.execute(params![
                record.id,
                record.finished_at.map(dbtime::format),
                record.outcome.as_str(),
                record.failed_step.map(Step::as_str),
                record.reason,
                device.imei,
                device.model,
                device.firmware,
                device.firmware_uuid.map(uuid_text),
                device.hw_version,
                record.reason_code.map(ReasonCode::as_str),
                record.verified_by.map(VerifiedBy::as_str),
            ])
        })
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

    payload::store(tx, record.id, packed)?;

    if let Some(uuid) = device.device_uuid {
        let seen = dbtime::format(record.finished_at.unwrap_or(record.started_at));
        // Keep what earlier runs learned when this run learned less.
        tx.prepare_cached(
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
        )
        .and_then(|mut upsert| {
            upsert.execute(params![
                uuid_text(uuid),
                device.imei,
                device.model,
                device.firmware,
                device.firmware_uuid.map(uuid_text),
                device.hw_version,
                seen,
                record.id,
                record.outcome.as_str(),
            ])
        })
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
        blocking(&self.db, tally::counts).await
    }

    async fn summary(&self, filter: &RunFilter) -> Result<super::Summary, LedgerError> {
        let filter = filter.clone();
        blocking(&self.db, move |conn| tally::summary(conn, &filter)).await
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
        blocking(&self.db, tally::counts).await
    }

    async fn summary(&self, filter: &RunFilter) -> Result<super::Summary, LedgerError> {
        let filter = filter.clone();
        blocking(&self.db, move |conn| tally::summary(conn, &filter)).await
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
    // A database older than version 8 has no work orders: no run has one.
    if filter.work_order.is_some() && SqliteReader::version(conn)? < 8 {
        return Ok(Vec::new());
    }
    let (mut conditions, mut values) = filter_sql(filter);
    if let Some(id) = id {
        conditions.push("id = ?");
        values.push(id.into());
    }
    // One selection, used by all four queries. Only the filters given are
    // in it, so that SQLite can pick the index each one has; without a
    // limit, no order either (the runs are read in id order anyway), so
    // that `--since` alone reads its range of the time index.
    let mut selected = format!("SELECT id FROM runs{}", where_clause(&conditions));
    if let Some(limit) = filter.limit {
        selected.push_str(" ORDER BY id DESC LIMIT ?");
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
    }
    let params: Vec<&dyn rusqlite::ToSql> =
        values.iter().map(|v| v as &dyn rusqlite::ToSql).collect();
    read_selected(conn, &selected, &params)
}

/// `filter`'s conditions on `runs` (all must hold), with their values in
/// order; `limit` is the caller's.
fn filter_sql(filter: &RunFilter) -> (Vec<&'static str>, Vec<rusqlite::types::Value>) {
    let mut conditions = Vec::new();
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(device) = filter.device_uuid {
        conditions.push("device_uuid = ?");
        values.push(uuid_text(device).into());
    }
    if let Some(since) = filter.since {
        conditions.push("started_at >= ?");
        values.push(dbtime::format(since).into());
    }
    if let Some(station) = &filter.station_id {
        conditions.push("station_id = ?");
        values.push(station.clone().into());
    }
    if let Some(work_order) = &filter.work_order {
        conditions.push("work_order = ?");
        values.push(work_order.clone().into());
    }
    (conditions, values)
}

fn where_clause(conditions: &[&str]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
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
    let trace = if version >= 8 {
        "work_order, lot, operator, product, fixture"
    } else {
        "NULL, NULL, NULL, NULL, NULL"
    };
    let compacted_at = if version >= RETENTION {
        "compacted_at"
    } else {
        "NULL"
    };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT id, station_id, port, started_at, finished_at, outcome, failed_step, reason,
                    device_uuid, imei, model, firmware, firmware_uuid, hw_version, {reason_code},
                    {uid}, {verified_by}, {trace}, {compacted_at}
             FROM runs WHERE id IN ({selected}) ORDER BY id"
        ))
        .map_err(sql("query runs"))?;
    let raws = stmt
        .query_map(filter_params, RawRun::from_row)
        .map_err(sql("query runs"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql("read runs"))?;

    let mut parts = if version >= PAYLOADS {
        payload::read(conn, selected, filter_params)?
    } else {
        payload::read_tables(conn, selected, filter_params)?
    };

    raws.into_iter()
        .map(|raw| {
            let parts = parts.remove(&raw.id).unwrap_or_default();
            raw.into_record(parts.steps, parts.tokens, parts.artifacts)
        })
        .collect()
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
    // A migration of a large database can outlast systemd's start timeout:
    // while one runs, say so every few seconds and ask for more time.
    let pending = MIGRATIONS.len().saturating_sub(applied);
    if applied > 0 && pending > 0 {
        report_progress(conn, path);
    }
    let migrated = apply_migrations(path, conn, applied);
    conn.progress_handler(0, None::<fn() -> bool>);
    migrated
}

fn apply_migrations(path: &Path, conn: &mut Connection, applied: usize) -> Result<(), LedgerError> {
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
        // A new database is made, not migrated: nothing to say then.
        if applied > 0 {
            tracing::info!(database = %path.display(), from = index, to = index + 1, "migrating the database");
            crate::station::systemd::extend_start_timeout(MIGRATION_EXTEND);
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(sql("begin migration"))?;
        match migration {
            Migration::Sql(text) => tx.execute_batch(text),
            Migration::SqlThen(text, _) => tx.execute_batch(text),
        }
        .map_err(sql("apply migration"))?;
        if let Migration::SqlThen(_, step) = migration {
            step(&tx, path)?;
        }
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

/// How much more start-up time each migration report asks systemd for.
const MIGRATION_EXTEND: Duration = Duration::from_secs(30);
/// How often a running migration reports (well inside [`MIGRATION_EXTEND`]).
const MIGRATION_REPORT_EVERY: Duration = Duration::from_secs(5);

/// From now on SQLite's progress handler logs "still migrating" and
/// extends systemd's start timeout every [`MIGRATION_REPORT_EVERY`].
fn report_progress(conn: &Connection, path: &Path) {
    let started = std::time::Instant::now();
    let mut last = started;
    let path = path.to_owned();
    conn.progress_handler(
        100_000,
        Some(move || {
            if last.elapsed() >= MIGRATION_REPORT_EVERY {
                last = std::time::Instant::now();
                crate::station::systemd::extend_start_timeout(MIGRATION_EXTEND);
                tracing::info!(
                    database = %path.display(),
                    seconds = started.elapsed().as_secs(),
                    "still migrating the database"
                );
            }
            false
        }),
    );
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
    trace: Traceability,
    compacted_at: Option<String>,
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
            trace: Traceability {
                work_order: row.get(17)?,
                lot: row.get(18)?,
                operator: row.get(19)?,
                product: row.get(20)?,
                fixture: row.get(21)?,
            },
            compacted_at: row.get(22)?,
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
            compacted_at: self
                .compacted_at
                .map(|t| parse_time(t, "run compaction time"))
                .transpose()?,
            trace: self.trace,
        })
    }
}
