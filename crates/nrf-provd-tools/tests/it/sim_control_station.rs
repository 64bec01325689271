//! Driving simulated boards for a running daemon, as the README shows: the
//! daemon (`nrf-provd run`) on the ports of `nrf-provd simulate --control`,
//! boards pulled, plugged back, and a new board put in a fixture.

use std::time::Duration;

use nrf_provd_core::record::Outcome;
use nrf_provd_tools::bench::child::{SimChild, SimSpec};
use nrf_provd_tools::bench::daemon::{DaemonChild, Reported, write_config};
use nrf91_sim::Latency;
use nrf91_sim::control::{Answer, Request};

const LIMIT: Duration = Duration::from_secs(60);

async fn next_run(daemon: &mut DaemonChild) -> Reported {
    tokio::time::timeout(LIMIT, daemon.next_run())
        .await
        .expect("a run within the limit")
        .expect("the daemon runs")
}

async fn wait_for_log(log: &std::path::Path, text: &str) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {text:?} in the log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_provisions_boards_plugged_unplugged_and_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let executable = std::path::Path::new(env!("CARGO_BIN_EXE_nrf-provd-dev"));
    let sim_dir = dir.path().join("sim");
    std::fs::create_dir_all(&sim_dir).expect("sim dir");
    let mut sim = SimChild::start(
        &SimSpec {
            executable,
            count: 2,
            latency: Latency::None,
            baud: None,
            seed: 11,
            faults: &[],
        },
        &sim_dir,
    )
    .await
    .expect("simulator");
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).expect("run dir");
    // The station trusts the simulator's own trust file (--trust-out).
    let trust = sim_dir.join("trust.csv");
    let config = write_config(&run_dir, &sim, |table| {
        table.insert("trust_file".into(), trust.display().to_string().into());
    })
    .expect("config");
    let log = run_dir.join("daemon.log");
    let mut daemon = DaemonChild::start(executable, &config, &log).expect("daemon");

    let mut first = vec![next_run(&mut daemon).await, next_run(&mut daemon).await];
    first.sort_by(|a, b| a.port.cmp(&b.port));
    assert!(
        first.iter().all(|r| r.outcome == Outcome::Passed),
        "{first:?}"
    );

    // Pulled and plugged back: provisioned again.
    assert_eq!(
        sim.request(&Request::Unplug(vec![1]))
            .await
            .expect("unplug"),
        Answer::Unplugged(vec![1])
    );
    assert_eq!(
        sim.request(&Request::Plug(vec![1])).await.expect("plug"),
        Answer::Plugged(vec![1])
    );
    let again = next_run(&mut daemon).await;
    assert_eq!(
        (again.port.as_str(), again.outcome),
        (first[1].port.as_str(), Outcome::Passed)
    );

    // A new board in fixture 0: its key goes into the trust file, the
    // station reloads, then the board is plugged and passes.
    let Answer::New(new) = sim.request(&Request::New(vec![0])).await.expect("new") else {
        panic!("not a new-board answer");
    };
    let trusted = std::fs::read_to_string(&trust).expect("trust file");
    assert!(
        trusted.contains(&new[0].device_uuid.to_string()),
        "{trusted}"
    );
    assert_eq!(
        trusted.lines().filter(|l| l.contains(',')).count(),
        4,
        "header, the two first boards and the new one: {trusted}"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.pid).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    wait_for_log(&log, "reloaded trust file").await;
    sim.request(&Request::Plug(vec![0])).await.expect("plug");
    let newcomer = next_run(&mut daemon).await;
    assert_eq!(
        (newcomer.port.as_str(), newcomer.outcome),
        (first[0].port.as_str(), Outcome::Passed),
        "{newcomer:?}"
    );
    let runs = daemon.stop(LIMIT).await.expect("clean stop");
    assert!(runs.is_empty(), "no other run: {runs:?}");
    sim.quit().await;
}
