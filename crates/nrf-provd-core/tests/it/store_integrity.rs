//! What is checked when: start never reads a large history; a large
//! database left open by a crash is checked in the background, and damage
//! found there stops the ledger (the station's gate pauses on it) with the
//! message that says what to do; `SqliteLedger::check` checks on demand.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use nrf_provd_core::ledger::integrity::FULL_CHECK_AT_OPEN_MAX_BYTES;
use nrf_provd_core::ledger::{Ledger, LedgerError, SqliteLedger};

/// A database larger than the at-open bound: the ledger's schema and a
/// table of filler rows (small rows, so that the filler is b-tree leaves).
fn large_database(path: &Path) {
    drop(SqliteLedger::open(path).expect("create"));
    let conn = rusqlite::Connection::open(path).expect("open");
    let rows = FULL_CHECK_AT_OPEN_MAX_BYTES / 1000 + 2000;
    conn.execute_batch(&format!(
        "CREATE TABLE filler (x BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO filler SELECT randomblob(1000) FROM n;
         PRAGMA wal_checkpoint(TRUNCATE);"
    ))
    .expect("fill");
}

/// Noise over two pages in the middle of the file (the filler's leaves).
fn damage(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start((len / 2) / 4096 * 4096)).unwrap();
    let noise: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    file.write_all(&noise).unwrap();
}

/// What a crash leaves in the writer's lock file.
fn as_after_a_crash(path: &Path) {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    std::fs::write(lock, "open\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_a_large_database_left_open_by_a_crash_is_found_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    large_database(&db);
    damage(&db);
    as_after_a_crash(&db);

    // Start does not read the file: it opens, and takes records at first.
    let ledger = SqliteLedger::open(&db).expect("a large database opens without a full check");
    // The background check finds the damage; from then on every operation
    // says so (the station's gate pauses on it).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let err = loop {
        match ledger.probe().await {
            Err(e) => break e,
            Ok(()) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(()) => panic!("the background check did not report the damage"),
        }
    };
    assert!(matches!(err, LedgerError::Damaged { .. }), "{err}");
    assert!(err.is_local_fault(), "the gate pauses on it: {err}");
    let text = err.to_string();
    assert!(
        text.contains("damaged") && text.contains(".recover"),
        "{text}"
    );

    // On demand, the same verdict.
    drop(ledger);
    let err = SqliteLedger::check(&db).expect_err("damaged");
    assert!(matches!(err, LedgerError::Damaged { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_database_closed_cleanly_opens_without_a_check_and_checks_ok_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    large_database(&db);
    as_after_a_crash(&db);
    // Left open by a crash, undamaged: the background check finds nothing.
    let ledger = SqliteLedger::open(&db).expect("open");
    ledger.probe().await.expect("takes records");
    drop(ledger);
    // Closed cleanly: the lock file says so.
    let mut lock = db.as_os_str().to_owned();
    lock.push(".lock");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "clean\n");
    SqliteLedger::check(&db).expect("an undamaged database checks ok");
}
