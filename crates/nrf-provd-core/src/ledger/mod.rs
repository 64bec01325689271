//! The ledger: where runs are recorded and where the replay defence lives.
//!
//! Two interfaces, both async, so that a ledger on a server and the
//! embedded one look the same to their callers:
//! - [`Ledger`], the write side the station uses during a run: begin a run,
//!   claim a nonce / `jti` (each accepted once, ever), finish the run;
//! - [`LedgerReader`], the read side for `results`, exports and checks.
//!
//! [`SqliteLedger`] is the embedded implementation (WAL, `synchronous=FULL`,
//! versioned migrations); it does its own blocking (each connection on a
//! thread of its own), so no caller needs `spawn_blocking`. The records
//! themselves are domain types in [`crate::record`]; [`export`] turns them
//! into tables, JSON and Nordic's CSV formats.

pub mod backends;
pub mod deliveries;
pub mod export;
pub mod handoff;
pub mod line;
mod memory;
pub mod outbox;
pub mod paged;
pub mod postgres;
mod settings;
pub mod shared;
mod sqlite;
pub mod summary;

use std::path::PathBuf;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

pub use crate::record::{
    Artifact, ArtifactKind, DeviceInfo, Outcome, ReasonCode, RunId, RunRecord, RunStart, Shift,
    ShiftChange, Step, StepRecord, TokenRecord, Traceability, VerifiedBy,
};
pub use handoff::{
    ClaimCandidate, DeviceHandoff, DeviceResult, HandoffLedger, HandoffResult, HandoffStep,
    OnboardCandidate, PendingOnboard, QueueFilter,
};
pub use line::{LineLedger, LineMode};
pub use memory::MemoryLedger;
pub use paged::{Render, RunPage, RunReader, RunReaders};
pub use postgres::{PgSettings, PostgresLedger};
pub use settings::{LedgerConfig, LedgerMode, MAX_BATCH, MAX_POOL, PASSWORD_ENV, PasswordSource};
pub use shared::SharedLedger;
pub use sqlite::readers::{Reader, ReaderPool};
pub use sqlite::{
    SCHEMA_VERSION, SqliteDeliveries, SqliteHandoff, SqliteLedger, SqliteReader, SqliteRetention,
    integrity, retention,
};
pub use summary::Summary;

/// Database used when none is configured: `$STATE_DIRECTORY/results.db`
/// under systemd (`StateDirectory=`), else `./nrf-provd.db`.
pub fn default_db_path() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| {
            // systemd passes one directory per StateDirectory= entry, ':'-separated.
            std::env::split_paths(&dirs).find(|d| !d.as_os_str().is_empty())
        })
        .map(|dir| dir.join("results.db"))
        .unwrap_or_else(|| PathBuf::from("nrf-provd.db"))
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: database is in use by another nrf-provd process (one daemon per database)", path.display())]
    InUse { path: PathBuf },
    #[error("{}: database schema version {found} is newer than this nrf-provd supports ({supported}); use a newer nrf-provd", path.display())]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: usize,
    },
    #[error("{}: another nrf-provd hands off from this database now (the daemon with [cloud] hand_off, or another `nrf-provd cloud`); `nrf-provd cloud status` shows what it did", path.display())]
    HandoffBusy { path: PathBuf },
    #[error("{}: database schema version {found} has no hand-off state (needs {needed}); the daemon holding it is an older nrf-provd: restart it with this release", path.display())]
    OldSchema {
        path: PathBuf,
        found: i64,
        needed: i64,
    },
    #[error("{}: database has no sinks' outbox yet; the daemon holding it is an older nrf-provd: restart it with this release", path.display())]
    NoDeliveries { path: PathBuf },
    #[error("{}: not an nrf-provd results database (no schema); run the daemon once to create it", path.display())]
    NoSchema { path: PathBuf },
    #[error("database: {context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database holds an unreadable {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
    #[error("run {0} does not exist")]
    UnknownRun(RunId),
    #[error("run {id} is already recorded as {outcome}; a run is finished once")]
    AlreadyFinished { id: RunId, outcome: String },
    #[error("invalid run record: {0}")]
    InvalidRecord(String),
    #[error("database: the blocking task failed: {0}")]
    Task(String),
    #[error(
        "{}: the database is damaged ({detail}); nrf-provd will not record into it. Stop the station, keep a copy of the file, then restore the latest backup, or save what still reads with `sqlite3 {} .recover | sqlite3 NEW.db` and point `database` at NEW.db",
        path.display(), path.display()
    )]
    Damaged { path: PathBuf, detail: String },
    /// A ledger on a server that cannot be reached (network, server down).
    #[error("{ledger} ledger unreachable: {detail}")]
    Unreachable {
        ledger: &'static str,
        detail: String,
    },
    /// The server answered, with an error that waiting will not clear.
    #[error("PostgreSQL ledger: {context}: {detail}")]
    Postgres {
        context: &'static str,
        detail: String,
    },
    /// The server refused the data it was sent (SQLSTATE class 22, a data
    /// exception, or 23, a constraint): the same data is refused again, so
    /// a run it names is a dead letter, not a retry.
    #[error("PostgreSQL ledger: {context}: {detail}")]
    PostgresData {
        context: &'static str,
        detail: String,
    },
    /// A file the ledger reads (its password) others could read or replace.
    #[error(transparent)]
    UnsafeFile(#[from] secure_file::UnsafeFile),
}

impl LedgerError {
    /// Whether the fault may clear by itself (a lock held by another
    /// process, a full disk, an I/O error, a server that is down), so that
    /// the station should wait and try again rather than give up.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode::*;
        match self {
            LedgerError::Io { .. } | LedgerError::Task(_) | LedgerError::Unreachable { .. } => true,
            // Damage the background check found while the station runs: it
            // pauses, and records are kept beside the database (as for a
            // full disk) until someone restores it and restarts.
            LedgerError::Damaged { .. } => true,
            LedgerError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    DatabaseBusy
                        | DatabaseLocked
                        | DiskFull
                        | SystemIoFailure
                        | CannotOpen
                        | ReadOnly
                        | OutOfMemory
                        | FileLockingProtocolFailed
                )
            ),
            _ => false,
        }
    }

    /// A fault of this station's own store that may clear (a lock, a full
    /// disk): the station pauses for it. A shared ledger out of reach is not
    /// one: its runs fail `ledger_unreachable` while records keep being
    /// written locally, so the station goes on taking boards.
    pub fn is_local_fault(&self) -> bool {
        self.is_transient() && !matches!(self, LedgerError::Unreachable { .. })
    }
}

/// What an identity authority keeps about a device, as the ledger keeps it
/// for every authority alike ([`Ledger::bind`]): under `authority`, `value`
/// (a key, a serial, whatever the authority learns) bound to `subject` (the
/// device UUID) on first sight, with where and when. So an authority with
/// state needs no table, migration or ledger method of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The authority's own name (`pin`): bindings of two authorities never
    /// meet.
    pub authority: String,
    /// The device UUID.
    pub subject: Uuid,
    pub value: Vec<u8>,
    pub at: OffsetDateTime,
    pub station_id: String,
    pub port: String,
    pub run_uid: Uuid,
}

/// Answer to [`Ledger::bind`]. Nothing is bound but on [`BindingOutcome::Bound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingOutcome {
    /// First sight: the value is now bound to the subject.
    Bound,
    /// The subject was bound to the same value before (when, where).
    AlreadyBound(Binding),
    /// The subject was bound to another value first (which, when, where).
    Mismatch(Binding),
    /// The value is bound to another subject of the same authority (which,
    /// when, where): one value never belongs to two devices.
    ValueReused(Binding),
}

impl BindingOutcome {
    /// The answer for `value`, given the binding of its subject (`first`)
    /// and the first binding of the same value to another subject
    /// (`other`), both of the same authority, read in one transaction: a
    /// subject bound to another value says so first; a value another
    /// subject holds is refused (also when this subject holds it too: a
    /// ledger from before the rule); else the same value, or first sight.
    pub fn decide(value: &[u8], first: Option<Binding>, other: Option<Binding>) -> BindingOutcome {
        match (first, other) {
            (Some(first), _) if first.value != value => BindingOutcome::Mismatch(first),
            (_, Some(other)) => BindingOutcome::ValueReused(other),
            (Some(first), None) => BindingOutcome::AlreadyBound(first),
            (None, None) => BindingOutcome::Bound,
        }
    }
}

/// A device identity key as the `pin` authority saw it: its binding
/// (authority `pin`, the device UUID, the key) in the pin's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub device_uuid: Uuid,
    /// SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    pub at: OffsetDateTime,
    pub station_id: String,
    pub port: String,
    pub run_uid: Uuid,
}

impl Pin {
    /// The `pin` authority's name, under which its pins are bound.
    pub const AUTHORITY: &'static str = "pin";

    pub fn binding(&self) -> Binding {
        Binding {
            authority: Pin::AUTHORITY.to_string(),
            subject: self.device_uuid,
            value: self.public_key.clone(),
            at: self.at,
            station_id: self.station_id.clone(),
            port: self.port.clone(),
            run_uid: self.run_uid,
        }
    }
}

impl From<Binding> for Pin {
    fn from(binding: Binding) -> Pin {
        Pin {
            device_uuid: binding.subject,
            public_key: binding.value,
            at: binding.at,
            station_id: binding.station_id,
            port: binding.port,
            run_uid: binding.run_uid,
        }
    }
}

/// Answer to [`Ledger::pin`]: a [`BindingOutcome`] in the pin's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// First sight: the key is now pinned to the device UUID.
    Pinned,
    /// The key pinned before (when, where).
    Same(Pin),
    /// Another key was pinned for this device UUID (when, where, which).
    Changed(Pin),
    /// The key is pinned for another device UUID (which, when, where):
    /// one identity key never belongs to two devices. Nothing is pinned.
    Reused(Pin),
}

impl From<BindingOutcome> for PinOutcome {
    fn from(outcome: BindingOutcome) -> PinOutcome {
        match outcome {
            BindingOutcome::Bound => PinOutcome::Pinned,
            BindingOutcome::AlreadyBound(first) => PinOutcome::Same(first.into()),
            BindingOutcome::Mismatch(first) => PinOutcome::Changed(first.into()),
            BindingOutcome::ValueReused(other) => PinOutcome::Reused(other.into()),
        }
    }
}

/// What a run claims so that it can be used once, ever: the replay defence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimKind {
    /// The challenge an identity token answered.
    AttestNonce,
    /// The modem's nonce in a key-generation token.
    KeygenNonce,
    /// A JWT's `jti`.
    JwtJti,
}

impl ClaimKind {
    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimKind::AttestNonce => "attest",
            ClaimKind::KeygenNonce => "keygen",
            ClaimKind::JwtJti => "jwt_jti",
        }
    }

    /// Words for a reason text.
    pub fn describe(self) -> &'static str {
        match self {
            ClaimKind::AttestNonce => "identity token nonce",
            ClaimKind::KeygenNonce => "key-generation token nonce",
            ClaimKind::JwtJti => "JWT jti",
        }
    }
}

/// One claim of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub kind: ClaimKind,
    /// Hex nonces are compared case-insensitively; a `jti` exactly.
    pub value: String,
    pub at: OffsetDateTime,
}

/// Answer to [`Ledger::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Never seen before; now recorded against this run.
    Fresh,
    /// Already claimed, by `first_run` (which may be this same run if the
    /// caller claims a value twice).
    Replay { first_run: RunId },
    /// Already claimed by another station's run: the line's shared ledger
    /// names the first station, port and run.
    ReplayAt(Box<Sighting>),
}

/// Where and when a device, claim or pin was seen on the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub station_id: String,
    pub port: String,
    pub run_uid: Uuid,
    pub at: OffsetDateTime,
}

impl std::fmt::Display for Sighting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "station {} port {} in run {} at {}",
            self.station_id,
            self.port,
            self.run_uid,
            crate::record::ser::rfc3339(&self.at)
        )
    }
}

/// A run that has just proven its device's identity, asking the ledger
/// what it knows of the device ([`Ledger::check_device`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCheck {
    pub run: RunId,
    pub device_uuid: Uuid,
    pub imei: Option<String>,
    pub seen: Sighting,
}

/// What a ledger knows of a device, for the line-wide rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceHistory {
    /// Another run of the device that is in flight now (on another port).
    pub running: Option<Sighting>,
    /// Runs of the device that passed before, and the latest of them.
    pub passed: u64,
    pub last_passed: Option<Sighting>,
}

/// What [`Ledger::claim_then_check_device`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimThenCheck {
    /// The value was claimed before (never [`ClaimOutcome::Fresh`]); the
    /// device was not checked.
    Replay(ClaimOutcome),
    /// Claimed now, and what the ledger knows of the device.
    Checked(DeviceHistory),
}

/// The write side, used by the station during runs.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Record that a run started (durably: a crash later leaves a run the
    /// ledger reports as interrupted, never as passed).
    async fn begin_run(&self, start: &RunStart) -> Result<RunId, LedgerError>;

    /// Claim a nonce or `jti` for `run`, durably; a second claim of the same
    /// value is a [`ClaimOutcome::Replay`].
    async fn claim(&self, run: RunId, claim: &Claim) -> Result<ClaimOutcome, LedgerError>;

    /// Record the end of a run in one transaction; durable when it returns.
    async fn finish_run(&self, record: &RunRecord) -> Result<(), LedgerError>;

    /// Bind `binding.value` to its subject under its authority on first
    /// sight, or say what was bound before: atomically, so two stations
    /// cannot both bind (line-wide on a line). The one store of every
    /// identity authority's state ([`Binding`]).
    async fn bind(&self, binding: &Binding) -> Result<BindingOutcome, LedgerError>;

    /// The `pin` authority's [`Ledger::bind`]: a device's identity key.
    async fn pin(&self, pin: &Pin) -> Result<PinOutcome, LedgerError> {
        Ok(self.bind(&pin.binding()).await?.into())
    }

    /// Whether the ledger can take a record now: a small real write. The
    /// station calls it while paused, to know when to resume.
    async fn probe(&self) -> Result<(), LedgerError> {
        Ok(())
    }

    /// Note that `check.run` is now running the proven device, and say
    /// whether it runs elsewhere right now and where it passed before. A
    /// ledger that keeps no such history knows nothing.
    async fn check_device(&self, check: &DeviceCheck) -> Result<DeviceHistory, LedgerError> {
        let _ = check;
        Ok(DeviceHistory::default())
    }

    /// The identity step's two calls: [`Ledger::claim`] the token's nonce,
    /// then, only if it was fresh, [`Ledger::check_device`]. A ledger that
    /// can do both in one transaction (the station's SQLite) overrides it:
    /// one round trip and one commit where the boards of a replugged
    /// fixture all arrive together.
    async fn claim_then_check_device(
        &self,
        run: RunId,
        claim: &Claim,
        check: &DeviceCheck,
    ) -> Result<ClaimThenCheck, LedgerError> {
        match self.claim(run, claim).await? {
            ClaimOutcome::Fresh => Ok(ClaimThenCheck::Checked(self.check_device(check).await?)),
            replay => Ok(ClaimThenCheck::Replay(replay)),
        }
    }

    /// How the ledger is doing, for the operator's view and metrics.
    fn status(&self) -> LedgerStatus {
        LedgerStatus::default()
    }

    /// Record a change of the station-wide traceability values, durably.
    /// A ledger that keeps no such history refuses it.
    async fn record_shift_change(&self, change: &ShiftChange) -> Result<(), LedgerError> {
        let _ = change;
        Err(LedgerError::InvalidRecord(
            "this ledger keeps no shift history".into(),
        ))
    }

    /// What the recorded shift changes say (nothing before any).
    async fn shift_on_record(&self) -> Result<ShiftOnRecord, LedgerError> {
        Ok(ShiftOnRecord::default())
    }
}

/// What a ledger's shift history says, for a station that starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShiftOnRecord {
    /// The values the last change set.
    pub current: Option<Shift>,
    /// The values the config last set (a change made `by` `config`).
    pub from_config: Option<Shift>,
}

impl ShiftOnRecord {
    /// Of `changes`, oldest first.
    pub fn of(changes: &[ShiftChange]) -> ShiftOnRecord {
        ShiftOnRecord {
            current: changes.last().map(|c| c.new.clone()),
            from_config: changes
                .iter()
                .rev()
                .find(|c| c.by == CONFIG_CHANGE)
                .map(|c| c.new.clone()),
        }
    }
}

/// Who a change the config made at start is recorded as made by.
pub const CONFIG_CHANGE: &str = "config";

/// A ledger's health, as the operator's view and the metrics show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LedgerStatus {
    /// Runs recorded locally and not yet forwarded to a shared ledger.
    pub backlog: u64,
    /// Conflicts a shared ledger found after the runs were recorded.
    pub conflicts: u64,
    /// Whether a shared ledger is configured and was reachable last time.
    pub shared_reachable: Option<bool>,
}

/// Which runs [`LedgerReader::runs`] returns: all filters must match. With
/// `limit`, the most recent `limit` runs; results are always oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub device_uuid: Option<Uuid>,
    pub station_id: Option<String>,
    pub since: Option<OffsetDateTime>,
    pub limit: Option<usize>,
    /// Only runs of this work order.
    pub work_order: Option<String>,
}

/// A `since` bound as people write it (`results --since`, the API's
/// `?since=`): an RFC 3339 time or a date (midnight UTC).
pub fn parse_since(text: &str) -> Result<OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, date_format)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| {
            format!("expected an RFC 3339 time (2024-05-01T08:00:00Z) or a date (2024-05-01), got {text:?}")
        })
}

/// Number of runs by outcome; `seen` counts every run (one per board
/// insertion), in flight included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub seen: u64,
    pub passed: u64,
    pub failed: u64,
    pub interrupted: u64,
    pub collected: u64,
    pub in_flight: u64,
}

impl Counts {
    /// Count one run of `outcome`.
    pub fn add(&mut self, outcome: Outcome, n: u64) {
        self.seen += n;
        match outcome {
            Outcome::Passed => self.passed += n,
            Outcome::Failed => self.failed += n,
            Outcome::Interrupted => self.interrupted += n,
            Outcome::Collected => self.collected += n,
            Outcome::InFlight => self.in_flight += n,
        }
    }
}

/// The read side: `results`, exports, bench and soak checks.
#[async_trait]
pub trait LedgerReader: Send + Sync {
    /// Recorded runs matching `filter`, oldest first.
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, LedgerError>;

    /// One run by its id; `None` when there is none. The default reads
    /// every run: a ledger that can look one up directly (SQLite, memory)
    /// does so.
    async fn run(&self, id: RunId) -> Result<Option<RunRecord>, LedgerError> {
        let runs = self.runs(&RunFilter::default()).await?;
        Ok(runs.into_iter().find(|r| r.id == id))
    }

    /// Number of runs by outcome.
    async fn counts(&self) -> Result<Counts, LedgerError>;

    /// Yield per station and the most frequent failure reasons of the runs
    /// `filter` selects (its `limit` ignored).
    async fn summary(&self, filter: &RunFilter) -> Result<Summary, LedgerError> {
        let filter = RunFilter {
            limit: None,
            ..filter.clone()
        };
        Ok(Summary::of(&self.runs(&filter).await?))
    }
}

/// Fixed-width UTC timestamps: readable in `sqlite3` and sortable as text.
pub(crate) mod dbtime {
    use time::format_description::BorrowedFormatItem;
    use time::macros::format_description;
    use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

    const FORMAT: &[BorrowedFormatItem<'static>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

    pub fn format(t: OffsetDateTime) -> String {
        // Formatting a UTC time with this description cannot fail for years 0..=9999.
        t.to_offset(UtcOffset::UTC)
            .format(FORMAT)
            .unwrap_or_else(|_| t.unix_timestamp().to_string())
    }

    pub fn parse(text: &str) -> Option<OffsetDateTime> {
        PrimitiveDateTime::parse(text, FORMAT)
            .ok()
            .map(PrimitiveDateTime::assume_utc)
    }
}
