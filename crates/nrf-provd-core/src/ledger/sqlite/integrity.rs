//! What is checked when, so that start never reads the history:
//!
//! - at every open, a database of at most [`FULL_CHECK_AT_OPEN_MAX_BYTES`]
//!   gets SQLite's `PRAGMA quick_check` before anything is recorded (its
//!   cost is bounded by that size);
//! - a larger one gets only what reading its schema checks; the whole file
//!   is then checked by `quick_check` on a read-only connection of its own,
//!   in the background, after the station is up, when the last writer did
//!   not close it (a crash, a power cut, a kill) or never said how it
//!   closed (an older release). Damage found there fails every later
//!   operation of the ledger with [`LedgerError::Damaged`], which pauses
//!   the station through its gate (records waiting are kept beside the
//!   database), with the message saying what to do;
//! - `nrf-provd results --check` runs `quick_check` on demand.
//!
//! How the last writer closed is the content of the writer's lock file
//! (`<database>.lock`): `open` while a writer holds it, `clean` once its
//! connection has closed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};

use crate::ledger::LedgerError;

/// The largest database checked in full at open: `quick_check` reads
/// every page, about a second per few hundred MiB from a cold disk.
pub const FULL_CHECK_AT_OPEN_MAX_BYTES: u64 = 32 * 1024 * 1024;

const OPEN: &[u8] = b"open\n";
const CLEAN: &[u8] = b"clean\n";

/// What opening a database of `bytes` checks, the last close `clean` or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `quick_check` before anything is recorded.
    AtOpen,
    /// The schema now, `quick_check` in the background.
    InBackground,
    /// The schema only: closed cleanly and too large to read at start.
    SchemaOnly,
}

impl Check {
    pub fn for_open(bytes: u64, clean: bool) -> Check {
        match (bytes <= FULL_CHECK_AT_OPEN_MAX_BYTES, clean) {
            (true, _) => Check::AtOpen,
            (false, false) => Check::InBackground,
            (false, true) => Check::SchemaOnly,
        }
    }
}

/// Whether the last writer closed the database (read from its lock file,
/// which the caller holds).
pub fn closed_cleanly(lock: &File) -> bool {
    let mut buf = [0u8; 16];
    match lock.read_at(&mut buf, 0) {
        Ok(n) => &buf[..n] == CLEAN,
        Err(_) => false,
    }
}

/// Say in the lock file that a writer has the database open, durably:
/// a crash from now on is noticed at the next open.
pub fn mark_open(path: &Path, lock: &File) -> Result<(), LedgerError> {
    mark(lock, OPEN).map_err(|source| LedgerError::Io {
        path: path.to_owned(),
        action: "cannot write the lock file",
        source,
    })
}

/// Say that the writer's connection has closed (best effort: failing, the
/// next open checks the whole database, which is safe).
pub fn mark_closed(lock: &File) {
    let _ = mark(lock, CLEAN);
}

fn mark(lock: &File, what: &[u8]) -> std::io::Result<()> {
    lock.set_len(0)?;
    lock.write_all_at(what, 0)?;
    lock.sync_data()
}

/// `PRAGMA quick_check`: refuse a damaged database, since recording into
/// it would lose what is there and what comes.
pub fn quick_check(path: &Path, conn: &Connection) -> Result<(), LedgerError> {
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

/// What every open checks whatever the size: the header and the schema
/// read (a few pages).
pub fn schema_check(path: &Path, conn: &Connection) -> Result<(), LedgerError> {
    conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |row| {
        row.get::<_, i64>(0)
    })
    .map(drop)
    .map_err(|e| LedgerError::Damaged {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// `quick_check` of `path` on a read-only connection and a thread of its
/// own; damage found goes into `damage`.
pub fn check_in_background(path: PathBuf, damage: Arc<OnceLock<String>>) {
    let spawned = std::thread::Builder::new()
        .name("db-check".into())
        .spawn(move || {
            let started = Instant::now();
            tracing::info!(database = %path.display(), "checking the whole database in the background (the last writer did not close it)");
            let checked = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| LedgerError::Damaged {
                path: path.clone(),
                detail: e.to_string(),
            })
            .and_then(|conn| quick_check(&path, &conn));
            match checked {
                Ok(()) => tracing::info!(
                    database = %path.display(),
                    seconds = started.elapsed().as_secs_f64(),
                    "database check: ok"
                ),
                Err(LedgerError::Damaged { detail, .. }) => {
                    tracing::error!(database = %path.display(), detail = %detail, "database check: damaged; taking no new board");
                    let _ = damage.set(detail);
                }
                Err(e) => tracing::warn!(error = %e, "database check could not run"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the database check");
    }
}

/// `nrf-provd results --check`: `quick_check` of the whole file now.
pub fn check_now(path: &Path) -> Result<(), LedgerError> {
    std::fs::metadata(path).map_err(|source| LedgerError::Io {
        path: path.to_owned(),
        action: "cannot open database",
        source,
    })?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| LedgerError::Damaged {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    quick_check(path, &conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_database_is_checked_at_open_never_and_in_the_background_after_a_crash() {
        let small = FULL_CHECK_AT_OPEN_MAX_BYTES;
        let large = FULL_CHECK_AT_OPEN_MAX_BYTES + 1;
        assert_eq!(Check::for_open(small, true), Check::AtOpen);
        assert_eq!(Check::for_open(small, false), Check::AtOpen);
        assert_eq!(Check::for_open(large, false), Check::InBackground);
        assert_eq!(Check::for_open(large, true), Check::SchemaOnly);
    }

    #[test]
    fn the_lock_file_says_how_the_last_writer_closed() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join("db.lock"))
            .unwrap();
        // An empty lock file (an older release, or never closed): unclean.
        assert!(!closed_cleanly(&file));
        mark_open(dir.path(), &file).unwrap();
        assert!(!closed_cleanly(&file));
        mark_closed(&file);
        assert!(closed_cleanly(&file));
    }
}
