//! What the writer's connection does, counted when asked (the cycle-cost
//! test): commits, rows written, and SQL compiled. Nothing is counted until
//! [`super::SqliteLedger::count_work`] installs the hooks. The pages its
//! commits wrote, SQLite counts anyway ([`pages_written`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::hooks::Authorization;
use rusqlite::{Connection, ffi};

use crate::ledger::LedgerError;

/// The counters, shared with the writer's thread.
#[derive(Debug, Default)]
pub struct WriterWork {
    commits: AtomicU64,
    durable_commits: AtomicU64,
    rows: AtomicU64,
    compiled: AtomicU64,
}

/// A reading of [`WriterWork`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterCounts {
    /// Transactions committed.
    pub commits: u64,
    /// Of them, those that waited for the disk (an fsync under
    /// `synchronous=FULL`; see the writer's "One fsync a run").
    pub durable_commits: u64,
    /// Rows inserted, updated or deleted (triggers' included).
    pub rows: u64,
    /// SQLite's authorizer checks while compiling statements: one per
    /// table and column a statement compiled touches, so 0 when every
    /// statement was already prepared (cached).
    pub compiled: u64,
}

impl WriterWork {
    pub fn counts(&self) -> WriterCounts {
        WriterCounts {
            commits: self.commits.load(Ordering::Relaxed),
            durable_commits: self.durable_commits.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            compiled: self.compiled.load(Ordering::Relaxed),
        }
    }
}

/// Count `conn`'s work into `work` from now on.
pub(super) fn install(conn: &Connection, work: &Arc<WriterWork>) {
    let commits = Arc::clone(work);
    conn.commit_hook(Some(move || {
        commits.commits.fetch_add(1, Ordering::Relaxed);
        if super::owner::commit_is_durable() {
            commits.durable_commits.fetch_add(1, Ordering::Relaxed);
        }
        false // let it commit
    }));
    let rows = Arc::clone(work);
    conn.update_hook(Some(move |_, _: &str, _: &str, _| {
        rows.rows.fetch_add(1, Ordering::Relaxed);
    }));
    let compiled = Arc::clone(work);
    conn.authorizer(Some(move |_: rusqlite::hooks::AuthContext<'_>| {
        compiled.compiled.fetch_add(1, Ordering::Relaxed);
        Authorization::Allow
    }));
}

/// Pages `conn` has written to the WAL since it opened
/// (`SQLITE_DBSTATUS_CACHE_WRITE`; rusqlite has no wrapper for it).
pub(super) fn pages_written(conn: &Connection) -> Result<u64, LedgerError> {
    let (mut current, mut highwater) = (0, 0);
    // SAFETY: `conn` is borrowed for the call, so its handle is open, and
    // only this thread uses it; both out-pointers outlive the call.
    let code = unsafe {
        ffi::sqlite3_db_status(
            conn.handle(),
            ffi::SQLITE_DBSTATUS_CACHE_WRITE,
            &mut current,
            &mut highwater,
            0,
        )
    };
    if code != ffi::SQLITE_OK {
        return Err(LedgerError::Task(format!(
            "SQLite's page count failed (code {code})"
        )));
    }
    Ok(u64::try_from(current).unwrap_or(0))
}
