//! A restart while a modem is mid-command (a watchdog restart, a crash, an
//! expired shutdown grace) must not park the board in its fixture: the
//! next daemon finds the port in whatever state the modem left it — a late
//! answer on its way, a half-written command line — settles it, and
//! provisions the board without a replug.

use crate::station_support::{Daemon, Env, runs_in};
use nix::sys::signal::Signal;
use nrf_provd_core::record::Outcome;
use nrf91_sim::Latency;

/// Kill the daemon right after it sent `command` (the board is then busy
/// answering it), start a new one on the same database and ports.
async fn killed_mid(command: &str) {
    let env = Env::new(1, Latency::Realistic, &[]).await;
    let config = env.write_config(|_| {});
    let db = env.config.database.clone();
    let mut first = Daemon::spawn_logging(&config, Some("info,nrf91_at=debug"));
    first.wait_for_log(&["AT send", command]).await;
    first.signal(Signal::SIGKILL);
    let _ = first.child.wait();

    let mut second = Daemon::spawn(&config);
    let line = second.runs_finished(1).await;
    assert!(
        line[0].contains("PASSED"),
        "after a kill during {command}, the board passes without a replug: {line:?}\n{}",
        second.log.join("\n")
    );
    assert!(second.stop().await.success());
    let runs = runs_in(&db).await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0].outcome, Outcome::Interrupted, "the killed run");
    assert_eq!(runs[1].outcome, Outcome::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_keygen_does_not_park_the_board() {
    killed_mid("AT%KEYGEN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_credential_write_does_not_park_the_board() {
    killed_mid("AT%CMNG=0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_attestation_does_not_park_the_board() {
    killed_mid("AT%ATTESTTOKEN").await;
}
