//! Which implementation keeps the records: the one place a backend is
//! named. The daemon's setup, the HTTP API, `results` and `cloud` open
//! their ledgers here and use them through the traits ([`Ledger`],
//! [`LedgerReader`], [`RunReaders`], [`HandoffLedger`]), so another backend
//! is its module and its lines here.
//!
//! - [`local`]: the station's own records (SQLite, always: local first);
//! - [`line`]: the line's shared ledger behind them (PostgreSQL).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{
    HandoffLedger, LedgerConfig, LedgerError, LedgerReader, LineLedger, PgSettings, PostgresLedger,
    ReaderPool, RunReaders, SqliteDeliveries, SqliteLedger, SqliteRetention,
};

/// The station's own records, in the database at a path.
pub mod local {
    use super::*;

    /// The writer: one per database (a second daemon is refused); runs a
    /// crash left in flight become interrupted.
    pub fn open(database: &Path) -> Result<SqliteLedger, LedgerError> {
        SqliteLedger::open(database)
    }

    /// A read-only view, beside a daemon that writes (`results`).
    pub fn reader(database: &Path) -> Result<Arc<dyn LedgerReader>, LedgerError> {
        Ok(Arc::new(SqliteLedger::open_read_only(database)?))
    }

    /// The whole file checked now (`results --check`), read-only, also
    /// while a daemon writes it: `Damaged` says what is wrong.
    pub fn check(database: &Path) -> Result<(), LedgerError> {
        SqliteLedger::check(database)
    }

    /// The HTTP API's readers: at most `size` reads at once, none on the
    /// writer's thread, connection or lock.
    pub fn readers(database: &Path, size: usize) -> Result<Arc<dyn RunReaders>, LedgerError> {
        Ok(Arc::new(ReaderPool::open(database, size)?))
    }

    /// The sinks' outbox (the daemon's delivery tasks, `deliveries
    /// --retry`), on a connection of its own.
    pub fn deliveries(database: &Path) -> Result<SqliteDeliveries, LedgerError> {
        SqliteLedger::open_deliveries(database, false)
    }

    /// Retention (the daemon's task, `results --prune`), on a connection of
    /// its own.
    pub fn retention(database: &Path) -> Result<SqliteRetention, LedgerError> {
        SqliteLedger::open_retention(database)
    }

    /// The sinks' outbox to read only (`deliveries`, `/metrics`).
    pub fn deliveries_read_only(database: &Path) -> Result<SqliteDeliveries, LedgerError> {
        SqliteLedger::open_deliveries(database, true)
    }

    /// The hand-off state (`cloud`, the daemon's hand-off): one hand-off
    /// per database at a time; `read_only` for a dry run or `cloud status`,
    /// which take no lock and write nothing.
    pub fn handoff(
        database: &Path,
        read_only: bool,
    ) -> Result<Arc<dyn HandoffLedger>, LedgerError> {
        Ok(Arc::new(if read_only {
            SqliteLedger::open_handoff_read_only(database)?
        } else {
            SqliteLedger::open_handoff(database)?
        }))
    }
}

/// The line's shared ledger, as `[ledger]` describes it.
pub mod line {
    use super::*;

    /// The station's ledger on a line: `local` first, the shared ledger
    /// behind it (not started: see [`LineLedger::start_forwarding`]).
    /// Never waits for the server.
    pub fn open(
        local: SqliteLedger,
        line: &LedgerConfig,
        station_id: &str,
        hold: Duration,
    ) -> Result<LineLedger, LedgerError> {
        let central = PostgresLedger::new(&PgSettings::new(line)?)?;
        Ok(LineLedger::new(local, central, line.mode, station_id, hold))
    }

    /// Every station's runs (`results --ledger`).
    pub fn reader(line: &LedgerConfig) -> Result<Arc<dyn LedgerReader>, LedgerError> {
        Ok(Arc::new(PostgresLedger::new(&PgSettings::new(line)?)?))
    }
}
