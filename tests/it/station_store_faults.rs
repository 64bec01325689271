//! The store's health gates the station: a damaged database is refused at
//! start; while the database cannot take a record (another process holds a
//! lock, the disk is full) the station takes no new board, says so, and
//! resumes by itself; a run whose commit failed is recorded later with what
//! really happened, never as passed and never lost.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::station_support::{Daemon, Env, finished_runs, refused_start, runs_in};
use async_trait::async_trait;
use nrf_provd_core::ledger::{
    Binding, BindingOutcome, Claim, ClaimOutcome, Ledger, LedgerError, LedgerReader, MemoryLedger,
    RunFilter, RunId, RunRecord, RunStart, SqliteLedger,
};
use nrf_provd_core::record::{Outcome, ReasonCode, Step};
use nrf_provd_core::station::{Sources, StationEvent};
use nrf91_sim::Latency;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_refused_at_start_with_what_to_do() {
    let env = Env::new(1, Latency::None, &[]).await;
    let config = env.write_config(|_| {});
    let db = env.config.database.clone();
    // A database with runs in it, then 8 KiB of noise over its pages.
    let mut daemon = Daemon::spawn(&config);
    daemon.runs_finished(1).await;
    assert!(daemon.stop().await.success());
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .expect("open database");
        file.seek(SeekFrom::Start(4096)).expect("seek");
        let noise: Vec<u8> = (0..8192u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        file.write_all(&noise).expect("write noise");
    }
    let (code, err) = refused_start(&config);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(&db.display().to_string()) && err.contains("damaged"),
        "{err}"
    );
    assert!(
        err.contains("restore the latest backup") && err.contains(".recover"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_another_process_pauses_the_station_and_no_board_fails() {
    let env = Env::new(3, Latency::None, &[]).await;
    let config = env.write_config(|_| {});
    let db = env.config.database.clone();
    let mut daemon = Daemon::spawn(&config);
    let first = daemon.runs_finished(3).await;
    assert!(first.iter().all(|l| l.contains("PASSED")), "{first:#?}");

    // Another process takes the write lock; the boards come back meanwhile.
    let holder = rusqlite::Connection::open(&db).expect("open as another writer");
    holder
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the lock");
    for i in 0..3 {
        env.fleet.replug(i).await.unwrap();
    }
    daemon
        .wait_for_log(&["cannot take a record", "taking no new board"])
        .await;
    holder.execute_batch("ROLLBACK").expect("release the lock");
    drop(holder);
    daemon.wait_for_log(&["takes records again"]).await;
    let second = daemon.runs_finished(3).await;
    assert!(
        second.iter().all(|l| l.contains("PASSED")),
        "no board fails because of the lock: {second:#?}"
    );
    assert!(daemon.stop().await.success());
    let runs = runs_in(&db).await;
    assert_eq!(runs.len(), 6);
    assert!(
        runs.iter().all(|r| r.outcome == Outcome::Passed),
        "{runs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_taken_during_key_generation_does_not_fail_the_run() {
    let env = Env::new(1, Latency::Realistic, &[]).await;
    let config = env.write_config(|_| {});
    let db = env.config.database.clone();
    let mut daemon = Daemon::spawn_logging(&config, Some("info,nrf91_at=debug"));
    daemon.wait_for_log(&["AT send", "AT%KEYGEN"]).await;
    let holder = rusqlite::Connection::open(&db).expect("open as another writer");
    holder
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the lock");
    // The claim of the key-generation nonce meets the lock.
    daemon.wait_for_log(&["cannot take a record"]).await;
    holder.execute_batch("ROLLBACK").expect("release the lock");
    drop(holder);
    let line = daemon.runs_finished(1).await;
    assert!(line[0].contains("PASSED"), "{line:?}");
    assert!(daemon.stop().await.success());
}

/// Raise or lift a running process's file-size limit (RLIMIT_FSIZE): the
/// process's writes past it fail with EFBIG, as on a full disk.
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let value = bytes.unwrap_or(nix::libc::RLIM_INFINITY);
    let limit = nix::libc::rlimit {
        rlim_cur: value,
        rlim_max: nix::libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit reads `limit` and writes nothing through a null pointer.
    let rc = unsafe {
        nix::libc::prlimit(
            pid as nix::libc::pid_t,
            nix::libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_the_station_and_it_resumes_by_itself() {
    let env = Env::new(1, Latency::None, &[]).await;
    let config = env.write_config(|_| {});
    let db = env.config.database.clone();
    let mut daemon = Daemon::spawn(&config);
    assert!(daemon.runs_finished(1).await[0].contains("PASSED"));

    // No file of the daemon may grow: the next commit cannot extend the WAL.
    let wal = Path::new(&format!("{}-wal", db.display())).to_path_buf();
    let wal_size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    limit_file_size(daemon.child.id(), Some(wal_size));
    env.fleet.replug(0).await.unwrap();
    daemon
        .wait_for_log(&["cannot take a record", "taking no new board"])
        .await;
    limit_file_size(daemon.child.id(), None);
    daemon.wait_for_log(&["takes records again"]).await;
    let line = daemon.runs_finished(1).await;
    assert!(line[0].contains("PASSED"), "{line:?}");
    assert!(daemon.stop().await.success());
    assert_eq!(runs_in(&db).await.len(), 2);
}

/// A ledger whose commits fail (as a full disk would) until healed.
struct Failing {
    inner: MemoryLedger,
    failing: AtomicBool,
}

#[async_trait]
impl Ledger for Failing {
    async fn begin_run(&self, start: &RunStart) -> Result<RunId, LedgerError> {
        self.inner.begin_run(start).await
    }
    async fn claim(&self, run: RunId, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        self.inner.claim(run, claim).await
    }
    async fn finish_run(&self, record: &RunRecord) -> Result<(), LedgerError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(LedgerError::Io {
                path: "results.db".into(),
                action: "write",
                source: std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
            });
        }
        self.inner.finish_run(record).await
    }
    async fn bind(&self, binding: &Binding) -> Result<BindingOutcome, LedgerError> {
        self.inner.bind(binding).await
    }
    async fn probe(&self) -> Result<(), LedgerError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(LedgerError::Unreachable {
                ledger: "test",
                detail: "still full".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl LedgerReader for Failing {
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, LedgerError> {
        self.inner.runs(filter).await
    }
    async fn counts(&self) -> Result<nrf_provd_core::ledger::Counts, LedgerError> {
        self.inner.counts().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_commit_failed_is_recorded_later_as_it_happened_never_as_passed() {
    let env = Env::new(1, Latency::None, &[]).await;
    let ledger = Arc::new(Failing {
        inner: MemoryLedger::new(),
        failing: AtomicBool::new(true),
    });
    let station = nrf_provd_daemon::setup::station_with_ledger(
        &env.config,
        ledger.clone(),
        ledger.clone(),
        0,
        None,
        Sources::default(),
    )
    .expect("station");
    let mut events = station.subscribe();
    let serving = tokio::spawn(Arc::clone(&station).serve());

    // Every step passes; the commit fails.
    let reported = finished_runs(&mut events, 1).await.remove(0);
    assert_eq!(reported.outcome, Outcome::Failed, "{reported:#?}");
    assert_eq!(reported.reason_code, Some(ReasonCode::Store));
    assert!(reported.steps.iter().all(|s| s.passed));
    assert_eq!(reported.steps.len(), 10);

    ledger.failing.store(false, Ordering::SeqCst);
    loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(60), events.recv())
            .await
            .expect("the station resumes")
            .expect("events");
        if matches!(event, StationEvent::Resumed) {
            break;
        }
    }
    let stored = ledger
        .inner
        .runs(&RunFilter::default())
        .await
        .expect("runs");
    assert_eq!(stored.len(), 1, "recorded once the ledger was back");
    let run = &stored[0];
    assert_eq!(run.outcome, Outcome::Failed, "never passed");
    assert_eq!(run.reason_code, Some(ReasonCode::Store));
    assert_eq!(run.steps.len(), 10, "which steps completed");
    assert!(
        run.steps
            .iter()
            .any(|s| s.name == Step::Install && s.passed)
    );
    assert!(
        run.artifacts
            .iter()
            .any(|a| a.kind == nrf_provd_core::record::ArtifactKind::DeviceCertificate),
        "the certificate that was installed"
    );
    station.shutdown();
    serving.await.unwrap();
}

#[tokio::test]
async fn a_record_the_database_refused_is_kept_beside_it_and_committed_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("results.db");
    let ledger = SqliteLedger::open(&db).expect("open");
    let start = RunStart {
        uid: uuid::Uuid::from_u128(77),
        station_id: "s".into(),
        port: "p".into(),
        started_at: time::OffsetDateTime::now_utc(),
        trace: Default::default(),
    };
    let id = ledger.begin_run(&start).await.expect("begin");
    let mut record = RunRecord::begun(id, &start);
    record.outcome = Outcome::Passed;
    record.finished_at = Some(start.started_at);

    let holder = rusqlite::Connection::open(&db).expect("another writer");
    holder.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let err = ledger.finish_run(&record).await.expect_err("locked");
    assert!(err.is_transient(), "{err}");
    let kept = dir.path().join("results.db.pending");
    assert_eq!(std::fs::read_dir(&kept).expect("kept").count(), 1);
    // The station stops before the database is back.
    drop(ledger);
    holder.execute_batch("ROLLBACK").expect("unlock");
    drop(holder);

    let reopened = SqliteLedger::open(&db).expect("reopen");
    assert_eq!(reopened.recovered(), 0, "not called interrupted");
    let runs = reopened.runs(&RunFilter::default()).await.expect("runs");
    assert_eq!(runs[0].outcome, Outcome::Failed, "never as passed");
    assert_eq!(runs[0].reason_code, Some(ReasonCode::Store));
    assert_eq!(std::fs::read_dir(&kept).expect("dir").count(), 0);
    let _ = std::fs::OpenOptions::new().mode(0o600);
}
