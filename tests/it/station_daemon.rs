//! The daemon as a process (`nrf-provd run`): SIGTERM mid-run, SIGHUP with
//! a new trust file, SIGKILL with runs in flight, and the demo command.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::station_support::{Daemon, Env, binary, dev_binary, runs_in};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use nrf_provd_core::ledger::SqliteLedger;
use nrf_provd_core::record::{Outcome, ReasonCode};
use nrf91_sim::Latency;

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal daemon");
}

/// Wait for the child to exit (bounded) and return its status.
async fn exit_of(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    panic!("daemon did not exit within 60 s");
}

/// The daemon's log line of a step that finished (so a run is in flight
/// when the step is not the last).
const ATTEST_DONE: [&str; 3] = ["step done", "step=attest", "passed=true"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_lets_the_run_finish_and_exits_cleanly() {
    let env = Env::new(1, Latency::Realistic, &[]).await;
    let config = env.write_config(|_| {});
    let db = env.config.database.clone();
    let mut daemon = Daemon::spawn(&config);
    daemon.wait_for_log(&ATTEST_DONE).await;
    let status = daemon.stop().await;
    assert!(status.success(), "{status:?}");
    let runs = runs_in(&db).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].outcome,
        Outcome::Passed,
        "the run in flight finished within the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_no_grace_records_the_run_as_interrupted() {
    let env = Env::new(1, Latency::Realistic, &[]).await;
    let config = env.write_config(|t| *t = t.replace("shutdown_grace = 20", "shutdown_grace = 0"));
    let db = env.config.database.clone();
    let mut daemon = Daemon::spawn(&config);
    daemon.wait_for_log(&ATTEST_DONE).await;
    assert!(daemon.stop().await.success());
    let runs = runs_in(&db).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, Outcome::Interrupted, "{:#?}", runs[0]);
    assert_eq!(runs[0].reason_code, Some(ReasonCode::Interrupted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_trust_file() {
    let env = Env::new(2, Latency::None, &[]).await;
    // Trust only board 0 at first.
    let full = env.fleet.trust_csv();
    let uuid1 = env.fleet.identity(1).device_uuid.to_string();
    let partial: String = full
        .lines()
        .filter(|l| !l.starts_with(&uuid1))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(env.trust_file(), partial).unwrap();
    let config = env.write_config(|_| {});
    let db = env.config.database.clone();
    let mut daemon = Daemon::spawn(&config);
    let lines = daemon.runs_finished(2).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("FAILED attest key_trusted:")),
        "{lines:#?}"
    );

    std::fs::write(env.trust_file(), full).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon
        .wait_for_log(&["reloaded trust file", "trusted=2"])
        .await;
    env.fleet.replug(1).await.unwrap();
    let third = daemon.runs_finished(1).await;
    assert!(third[0].contains("PASSED"), "{third:?}");
    assert!(daemon.stop().await.success());
    let runs = runs_in(&db).await;
    let latest = runs.iter().max_by_key(|r| r.id).unwrap();
    assert_eq!(
        latest.device.device_uuid.map(|u| u.to_string()),
        Some(uuid1)
    );
    assert_eq!(latest.outcome, Outcome::Passed, "{latest:#?}");
}

/// 1-based line and column of the first `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle}"));
    let before = &text[..offset];
    (
        before.matches('\n').count() + 1,
        offset - before.rfind('\n').map_or(0, |i| i + 1) + 1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_config_mistakes_keeps_the_running_config_and_logs_every_one() {
    let env = Env::new(2, Latency::None, &[]).await;
    // Trust only board 0 at first.
    let full = env.fleet.trust_csv();
    let uuid1 = env.fleet.identity(1).device_uuid.to_string();
    let partial: String = full
        .lines()
        .filter(|l| !l.starts_with(&uuid1))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(env.trust_file(), partial).unwrap();
    let config = env.write_config(|_| {});
    let good = std::fs::read_to_string(&config).unwrap();
    let mut daemon = Daemon::spawn(&config);
    let lines = daemon.runs_finished(2).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("FAILED attest key_trusted:")),
        "{lines:#?}"
    );

    // Board 1's key is in the trust file now, but the config around it has
    // four mistakes in its TOML and names a CA certificate that is not there.
    std::fs::write(env.trust_file(), &full).unwrap();
    let broken = good
        .replacen("database = ", "databse = ", 1)
        .replace("rescan_interval_ms = 100", "rescan_interval_ms = \"fast\"")
        .replace("flow_control = \"none\"", "flow_control = \"sometimes\"")
        .replace(
            "\"attest\", \"keygen\"",
            "\"attest\", \"teleport\", \"keygen\"",
        )
        .replace("[ca]\n", "[ca]\ninstall = [\"missing-root-ca.pem\"]\n");
    std::fs::write(&config, &broken).unwrap();
    daemon.signal(Signal::SIGHUP);
    let origin = config.display().to_string();
    for (needle, words) in [
        ("databse", "did you mean `database`?"),
        ("\"fast\"", "found string \"fast\""),
        ("\"sometimes\"", "unknown value \"sometimes\""),
        ("\"teleport\"", "unknown value \"teleport\""),
        (
            "[\"missing-root-ca.pem\"]",
            "cannot read the CA certificate to install",
        ),
    ] {
        // In the order of the file, one line each.
        let (line, column) = position_of(&broken, needle);
        let at = format!("{origin}:{line}:{column}: error: ");
        daemon
            .wait_for_log(&[
                "reload failed; keeping the running configuration",
                &at,
                words,
            ])
            .await;
    }
    daemon
        .wait_for_log(&[
            "reload failed; keeping the running configuration",
            "errors=5",
        ])
        .await;

    // The running trust set was kept: board 1 still fails.
    env.fleet.replug(1).await.unwrap();
    let again = daemon.runs_finished(1).await;
    assert!(again[0].contains("FAILED attest key_trusted:"), "{again:?}");

    // Fixed, the same SIGHUP takes the new trust file.
    std::fs::write(&config, &good).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon
        .wait_for_log(&["reloaded trust file", "trusted=2"])
        .await;
    env.fleet.replug(1).await.unwrap();
    let fixed = daemon.runs_finished(1).await;
    assert!(fixed[0].contains("PASSED"), "{fixed:?}");
    assert!(daemon.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_runs_in_flight_loses_no_committed_record() {
    let env = Env::new(4, Latency::Realistic, &[]).await;
    let config = env.write_config(|_| {});
    let db = env.config.database.clone();
    let mut daemon = Daemon::spawn(&config);
    // Let every board finish once, then replug two so runs are in flight.
    let lines = daemon.runs_finished(4).await;
    assert!(lines.iter().all(|l| l.contains("PASSED")), "{lines:#?}");
    env.fleet.replug(0).await.unwrap();
    env.fleet.replug(1).await.unwrap();
    daemon.wait_for_log(&ATTEST_DONE).await;
    daemon.wait_for_log(&ATTEST_DONE).await;
    let committed: Vec<_> = runs_in(&db)
        .await
        .into_iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .collect();
    assert_eq!(committed.len(), 4);
    daemon.signal(Signal::SIGKILL);
    let _ = exit_of(&mut daemon.child).await;

    // Restart: the database opens, committed runs are intact, none of the
    // runs in flight is marked passed.
    let ledger = SqliteLedger::open(&db).expect("database opens after SIGKILL");
    assert_eq!(ledger.recovered(), 2);
    drop(ledger);
    let after = runs_in(&db).await;
    for run in &committed {
        let same = after
            .iter()
            .find(|r| r.id == run.id)
            .expect("committed run kept");
        assert_eq!(same, run, "a committed run is unchanged");
    }
    let interrupted: Vec<_> = after
        .iter()
        .filter(|r| r.outcome == Outcome::Interrupted)
        .collect();
    assert_eq!(interrupted.len(), 2);
    assert!(
        interrupted
            .iter()
            .all(|r| r.reason_code == Some(ReasonCode::Interrupted))
    );
    assert_eq!(after.len(), 6);
}

#[test]
fn demo_command_provisions_every_board_and_exits_zero() {
    // Its own temporary directory, to see what the demo leaves behind.
    let tmp = tempfile::tempdir().expect("tempdir");
    let demo = |extra: &[&str]| {
        Command::new(dev_binary())
            .args([
                "demo",
                "--boards",
                "3",
                "--rounds",
                "2",
                "--latency",
                "none",
            ])
            .args(extra)
            .env("TMPDIR", tmp.path())
            .output()
            .expect("run demo")
    };
    let output = demo(&[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("6/6 runs passed"), "{stdout}");
    assert!(
        stdout.contains("--keep"),
        "says how to keep the records: {stdout}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).expect("read tmp").collect();
    assert!(left.is_empty(), "the demo leaves nothing behind: {left:?}");

    let kept = demo(&["--keep"]);
    let stdout = String::from_utf8_lossy(&kept.stdout);
    assert!(kept.status.success(), "{stdout}");
    let db = stdout
        .lines()
        .find_map(|l| l.strip_prefix("See the records with: nrf-provd results --db "))
        .unwrap_or_else(|| panic!("names the database: {stdout}"));
    assert!(db.starts_with(&*tmp.path().to_string_lossy()), "{db}");
    // Kept where it was made: private (it holds the throwaway CA's key).
    let work = std::path::Path::new(db).parent().expect("its directory");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(work).expect("kept").permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o700, "{}", work.display());
    let kept_stderr = String::from_utf8_lossy(&kept.stderr);
    assert!(
        kept_stderr.contains(&format!("nrf-provd: kept {}", work.display())),
        "{kept_stderr}"
    );
    let results = Command::new(binary())
        .args(["results", "--db", db])
        .output()
        .expect("results");
    assert!(
        String::from_utf8_lossy(&results.stdout).contains("6 runs: 6 passed"),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_tells_systemd_ready_status_watchdog_and_stopping() {
    let env = Env::new(1, Latency::None, &[]).await;
    let config = env.write_config(|_| {});
    let socket_path = env.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // systemd names the watched process in WATCHDOG_PID; exec keeps the pid.
    let mut daemon = Command::new("sh")
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" run --config "$1""#)
        .arg(binary())
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let mut stopping_sent = false;
    for _ in 0..300 {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
        let all = seen.join("\n");
        if !stopping_sent && all.contains("passed 1,") && all.contains("WATCHDOG=1") {
            signal(&daemon, Signal::SIGTERM);
            stopping_sent = true;
        }
        if all.contains("STOPPING=1") {
            break;
        }
    }
    if !stopping_sent {
        signal(&daemon, Signal::SIGTERM);
    }
    assert!(exit_of(&mut daemon).await.success());
    let all = seen.join("\n");
    assert!(all.contains("READY=1"), "{all}");
    assert!(
        all.contains("boards seen 1; runs 1: passed 1, failed 0, interrupted 0"),
        "{all}"
    );
    assert!(all.contains("WATCHDOG=1"), "{all}");
    assert!(all.contains("STOPPING=1"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_runs_the_plan_once_and_exits_by_outcome() {
    let env = Env::new(2, Latency::None, &["1:bad-signature"]).await;
    let config = env.write_config(|_| {});
    let run = |port: String| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(binary())
                .args(["provision", "--json", "--port", &port, "--config"])
                .arg(&config)
                .output()
                .expect("run provision")
        })
    };
    let good = run(env.port(0)).await.unwrap();
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let record: serde_json::Value = serde_json::from_slice(&good.stdout).expect("JSON record");
    assert_eq!(record["outcome"], "passed");
    assert_eq!(record["steps"].as_array().map(Vec::len), Some(10));

    let forged = run(env.port(1)).await.unwrap();
    assert_eq!(forged.status.code(), Some(1));
    let record: serde_json::Value = serde_json::from_slice(&forged.stdout).expect("JSON record");
    assert_eq!(record["failed_step"], "attest");
    assert_eq!(record["reason_code"], "signature");
    assert!(record["reason"].as_str().unwrap().contains("signature"));

    let missing = run("/nonexistent/ttyACM9".into()).await.unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/ttyACM9"));
    assert_eq!(
        runs_in(&env.config.database).await.len(),
        2,
        "both runs recorded"
    );
}
