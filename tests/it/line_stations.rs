//! A line: two `nrf-provd run` processes (stations A and B, each its own
//! SQLite) and one throwaway PostgreSQL, with simulated boards. Both
//! stations' fleets come from the same seed, so B's board is a clone of A's:
//! the same identity and the same first key-generation nonce and `jti`.
//!
//! - a token recorded at A and replayed at B fails at B with `replay`
//!   (`required`, during the run) or as a `conflict` on both runs after
//!   forwarding (`deferred`); the same device on both stations at once
//!   fails with `duplicate_identity`;
//! - the server killed mid-shift: runs fail `ledger_unreachable`, the
//!   stations keep recording, and after the restart every local run is in
//!   PostgreSQL exactly once;
//! - a station SIGKILLed while forwarding a backlog, restarted: nothing
//!   lost, nothing doubled.
//!
//! Every wait is on the daemons' own log lines, never a sleep.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::station_support::{Daemon, Env, binary, runs_in};
use nrf_provd_core::ledger::{
    Claim, ClaimKind, LedgerReader, Outcome, ReasonCode, RunFilter, RunRecord, RunStart,
    SqliteLedger, StepRecord,
};
use nrf_provd_core::record::Step;
use nrf91_sim::Latency;
use testkit::pg::{PgCluster, cluster};
use time::OffsetDateTime;
use uuid::Uuid;

const FORWARDED: &str = "forwarded runs to the shared ledger";
const ATTEST_DONE: [&str; 3] = ["step done", "step=attest", "passed=true"];

/// `env`'s daemon config as station `id` of the line on `pg`.
fn line_config(env: &Env, id: &str, pg: &PgCluster, mode: &str, extra: &str) -> PathBuf {
    env.write_config(|text| {
        *text = text.replace("station_id = \"test\"", &format!("station_id = \"{id}\""));
        text.push_str(&pg.ledger_section(mode, extra));
    })
}

/// The uids PostgreSQL holds for `station`, with how often each appears
/// (the primary key makes more than once impossible; the count says so).
async fn line_uids(pg: &PgCluster, station: &str) -> Vec<(Uuid, i64)> {
    let client = pg.client().await;
    client
        .query(
            "SELECT uid, count(*) FROM runs WHERE station_id = $1 GROUP BY uid ORDER BY uid",
            &[&station],
        )
        .await
        .expect("query the line")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Every local run of `db` is in PostgreSQL exactly once, with the same
/// steps, tokens and artifacts.
async fn assert_forwarded_exactly_once(pg: &PgCluster, db: &Path, station: &str) -> usize {
    let local = runs_in(db).await;
    let line = line_uids(pg, station).await;
    assert!(line.iter().all(|(_, n)| *n == 1), "doubled: {line:?}");
    let local_uids: BTreeSet<Uuid> = local.iter().map(|r| r.uid).collect();
    let line_set: BTreeSet<Uuid> = line.iter().map(|(u, _)| *u).collect();
    assert_eq!(local_uids.len(), local.len());
    assert_eq!(
        line_set,
        local_uids,
        "{station}: lost {:?}, extra {:?}",
        local_uids.difference(&line_set).collect::<Vec<_>>(),
        line_set.difference(&local_uids).collect::<Vec<_>>()
    );
    let shared = pg
        .ledger()
        .runs(&RunFilter {
            station_id: Some(station.into()),
            ..RunFilter::default()
        })
        .await
        .expect("read the line");
    for run in &local {
        let there = shared.iter().find(|r| r.uid == run.uid).expect("forwarded");
        assert_eq!(
            (there.steps.len(), there.tokens.len(), there.artifacts.len()),
            (run.steps.len(), run.tokens.len(), run.artifacts.len()),
            "run {}",
            run.uid
        );
        assert_eq!(there.id, run.id);
    }
    local.len()
}

/// Wait until every run `db` holds now is in PostgreSQL: checked now, and
/// again each time the daemon says it forwarded a batch (a batch logs after
/// its commit, so a run not there yet is in a batch still to be logged).
async fn wait_forwarded(daemon: &mut Daemon, pg: &PgCluster, db: &Path, station: &str) {
    loop {
        let local: BTreeSet<Uuid> = runs_in(db).await.iter().map(|r| r.uid).collect();
        let line: BTreeSet<Uuid> = line_uids(pg, station)
            .await
            .iter()
            .map(|(u, _)| *u)
            .collect();
        if local.is_subset(&line) {
            return;
        }
        daemon.wait_for_log(&[FORWARDED]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_replayed_at_another_station_fails_there_with_replay() {
    let Some(pg) = cluster("a_token_replayed_at_another_station_fails_there_with_replay") else {
        return;
    };
    let env_a = Env::new(1, Latency::None, &[]).await;
    let env_b = Env::new(1, Latency::None, &[]).await;
    let mut a = Daemon::spawn(&line_config(&env_a, "A", &pg, "required", ""));
    let line = a.runs_finished(1).await.remove(0);
    assert!(line.contains("PASSED"), "{line}");
    wait_forwarded(&mut a, &pg, &env_a.config.database, "A").await;
    let first = runs_in(&env_a.config.database).await.remove(0);

    // The clone at B: its attestation answers B's own challenge, but its
    // key-generation token is the one A recorded.
    let mut b = Daemon::spawn(&line_config(&env_b, "B", &pg, "required", ""));
    let line = b.runs_finished(1).await.remove(0);
    assert!(line.contains("FAILED keygen replay"), "{line}");
    assert!(
        line.contains("station A") && line.contains(&first.uid.to_string()),
        "names the first station and run: {line}"
    );
    wait_forwarded(&mut b, &pg, &env_b.config.database, "B").await;
    let replayed = runs_in(&env_b.config.database).await.remove(0);
    assert_eq!(replayed.reason_code, Some(ReasonCode::Replay));
    assert_eq!(replayed.failed_step, Some(Step::Keygen));

    assert_eq!(
        assert_forwarded_exactly_once(&pg, &env_a.config.database, "A").await,
        1
    );
    assert_eq!(
        assert_forwarded_exactly_once(&pg, &env_b.config.database, "B").await,
        1
    );
    // Caught in time: no conflict afterwards.
    let conflicts: i64 = pg
        .client()
        .await
        .query_one("SELECT count(*) FROM conflicts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(conflicts, 0);

    // The line read back: both stations, one command.
    let out = std::process::Command::new(binary())
        .args(["results", "--ledger", &pg.url(), "--format", "csv"])
        .env(
            nrf_provd_daemon::config::PASSWORD_ENV,
            "line-ledger-test-pw",
        )
        .output()
        .expect("results --ledger");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.contains(",A,") && csv.contains(",B,") && csv.contains("replay"),
        "{csv}"
    );
    let out = std::process::Command::new(binary())
        .args([
            "results",
            "--ledger",
            &pg.url(),
            "--summary",
            "--station",
            "B",
        ])
        .env(
            nrf_provd_daemon::config::PASSWORD_ENV,
            "line-ledger-test-pw",
        )
        .output()
        .expect("results --summary");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        summary.contains("B ") && !summary.contains("\nA "),
        "{summary}"
    );
    assert!(summary.contains("replay"), "{summary}");

    let _ = a.stop().await;
    let _ = b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_replay_is_a_conflict_on_both_runs_after_forwarding() {
    let Some(pg) = cluster("a_deferred_replay_is_a_conflict_on_both_runs_after_forwarding") else {
        return;
    };
    let env_a = Env::new(1, Latency::None, &[]).await;
    let env_b = Env::new(1, Latency::None, &[]).await;
    let mut a = Daemon::spawn(&line_config(&env_a, "A", &pg, "deferred", ""));
    assert!(a.runs_finished(1).await[0].contains("PASSED"));
    wait_forwarded(&mut a, &pg, &env_a.config.database, "A").await;
    // Deferred: B asks nobody during the run, so the clone passes there...
    let mut b = Daemon::spawn(&line_config(&env_b, "B", &pg, "deferred", ""));
    assert!(b.runs_finished(1).await[0].contains("PASSED"));
    // ...and forwarding finds it; each station records it on its own run.
    b.wait_for_log(&["conflict recorded"]).await;
    a.wait_for_log(&["conflict recorded"]).await;

    let run_a = runs_in(&env_a.config.database).await.remove(0);
    let run_b = runs_in(&env_b.config.database).await.remove(0);
    for (run, other) in [(&run_a, &run_b), (&run_b, &run_a)] {
        assert_eq!(run.outcome, Outcome::Failed, "{run:?}");
        assert_eq!(run.reason_code, Some(ReasonCode::Conflict));
        let reason = run.reason.clone().unwrap_or_default();
        assert!(reason.contains(&other.uid.to_string()), "{reason}");
        assert!(reason.contains("recorded as passed"), "{reason}");
    }
    // `results` shows it, from the station's own database.
    let out = std::process::Command::new(binary())
        .args(["results", "--db"])
        .arg(&env_b.config.database)
        .output()
        .expect("results");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("conflict"), "{table}");

    wait_forwarded(&mut a, &pg, &env_a.config.database, "A").await;
    wait_forwarded(&mut b, &pg, &env_b.config.database, "B").await;
    assert_forwarded_exactly_once(&pg, &env_a.config.database, "A").await;
    assert_forwarded_exactly_once(&pg, &env_b.config.database, "B").await;
    let _ = a.stop().await;
    let _ = b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_device_on_two_stations_at_once_is_a_duplicate_identity() {
    let Some(pg) = cluster("the_same_device_on_two_stations_at_once_is_a_duplicate_identity")
    else {
        return;
    };
    // A's board hangs in key generation: A holds the device meanwhile.
    let env_a = Env::new(1, Latency::None, &["0:stall@KEYGEN"]).await;
    let env_b = Env::new(1, Latency::None, &[]).await;
    let mut a = Daemon::spawn(&line_config(&env_a, "A", &pg, "required", ""));
    a.wait_for_log(&ATTEST_DONE).await;
    let mut b = Daemon::spawn(&line_config(&env_b, "B", &pg, "required", ""));
    let line = b.runs_finished(1).await.remove(0);
    assert!(line.contains("FAILED attest duplicate_identity"), "{line}");
    assert!(line.contains("station A"), "{line}");
    let _ = a.child.kill();
    let _ = b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_shift_loses_nothing() {
    let Some(mut pg) = cluster("a_server_killed_mid_shift_loses_nothing") else {
        return;
    };
    let env = Env::new(2, Latency::None, &[]).await;
    let db = env.config.database.clone();
    let mut a = Daemon::spawn(&line_config(&env, "A", &pg, "required", ""));
    for line in a.runs_finished(2).await {
        assert!(line.contains("PASSED"), "{line}");
    }
    wait_forwarded(&mut a, &pg, &db, "A").await;

    pg.kill();
    for i in 0..2 {
        env.fleet.replug(i).await.expect("replug");
    }
    for line in a.runs_finished(2).await {
        assert!(line.contains("FAILED attest ledger_unreachable"), "{line}");
        assert!(!line.contains("line-ledger-test-pw"), "{line}");
    }
    assert_eq!(runs_in(&db).await.len(), 4, "recorded locally meanwhile");

    pg.restart();
    for i in 0..2 {
        env.fleet.replug(i).await.expect("replug");
    }
    for line in a.runs_finished(2).await {
        assert!(line.contains("PASSED"), "{line}");
    }
    wait_forwarded(&mut a, &pg, &db, "A").await;
    let runs = runs_in(&db).await;
    let unreachable = runs
        .iter()
        .filter(|r| r.reason_code == Some(ReasonCode::LedgerUnreachable))
        .count();
    assert_eq!(unreachable, 2);
    assert_eq!(assert_forwarded_exactly_once(&pg, &db, "A").await, 6);
    let _ = a.stop().await;
}

/// `n` finished runs of station `id` with a step, a token and a claim each.
fn backlog(id: &str, n: usize) -> Vec<(RunRecord, Vec<Claim>)> {
    let now = OffsetDateTime::now_utc();
    (0..n)
        .map(|i| {
            let start = RunStart {
                uid: uuid::Builder::from_random_bytes(rand::random()).into_uuid(),
                station_id: id.into(),
                port: format!("/dev/ttyOLD{}", i % 8),
                started_at: now - time::Duration::hours(1),
                trace: Default::default(),
            };
            let mut record = RunRecord::begun(0, &start);
            record.outcome = Outcome::Passed;
            record.finished_at = Some(start.started_at + time::Duration::seconds(2));
            record.steps.push(StepRecord {
                name: Step::Probe,
                started_at: start.started_at,
                duration: Duration::from_millis(12),
                passed: true,
                attempts: 1,
                detail: format!("old run {i}"),
            });
            let claim = Claim {
                kind: ClaimKind::KeygenNonce,
                value: hex::encode(rand::random::<[u8; 16]>()),
                at: start.started_at,
            };
            (record, vec![claim])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_killed_while_forwarding_loses_and_doubles_nothing() {
    let Some(pg) = cluster("a_station_killed_while_forwarding_loses_and_doubles_nothing") else {
        return;
    };
    let env = Env::new(1, Latency::None, &[]).await;
    // No board: the backlog is all there is to forward.
    env.fleet.unplug(0).await;
    let db = env.config.database.clone();
    const OLD: usize = 5000;
    {
        // History from before the station joined the line.
        let ledger = SqliteLedger::open(&db).expect("open");
        ledger
            .record_finished(backlog("A", OLD))
            .await
            .expect("record history");
    }
    let config = line_config(&env, "A", &pg, "required", "batch_size = 20");
    let mut a = Daemon::spawn(&config);
    a.wait_for_log(&[FORWARDED]).await;
    a.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = a.child.wait();
    let forwarded = line_uids(&pg, "A").await.len();
    assert!(
        forwarded > 0 && forwarded < OLD,
        "killed while forwarding: {forwarded} of {OLD} forwarded"
    );

    let mut a = Daemon::spawn(&config);
    wait_forwarded(&mut a, &pg, &db, "A").await;
    let _ = a.stop().await;
    assert_eq!(assert_forwarded_exactly_once(&pg, &db, "A").await, OLD);
}
