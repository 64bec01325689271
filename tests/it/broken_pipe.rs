//! `nrf-provd … | head -1`: a command whose reader has gone ends quietly —
//! no panic message, no exit 101 — and what it did before printing stays
//! done. The pipe's read end is closed before the command starts, so its
//! very first write meets the closed pipe (no race with a real `head`).
//!
//! Most commands get the default SIGPIPE disposition back and end as `cat`
//! does (killed by SIGPIPE); `bench` keeps SIGPIPE ignored and stops on
//! EPIPE with exit 0; `run` keeps it ignored for its sockets.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use crate::station_support::{Env, binary, dev_binary, runs_in};
use nrf91_sim::Latency;

const SIGPIPE: i32 = 13;

/// How a command ended with nobody reading its output.
struct Ended {
    status: ExitStatus,
    stderr: String,
}

/// Run `nrf-provd args…` with stdout a pipe nobody reads.
fn into_closed_pipe(args: &[&str], tmpdir: &Path) -> Ended {
    let child = {
        // Close-on-exec: a child another test thread spawns meanwhile must
        // not inherit the read end and keep the pipe open.
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .unwrap_or_else(|e| panic!("pipe: {e}"));
        drop(read);
        // The tools are the developers' binary's.
        let tool = matches!(args.first(), Some(&("bench" | "demo" | "simulate")));
        Command::new(if tool {
            dev_binary()
        } else {
            std::path::Path::new(binary())
        })
        .args(args)
        .env("TMPDIR", tmpdir)
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"))
        // The Command, and with it our copy of the write end, is dropped here.
    };
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait {args:?}: {e}"));
    Ended {
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn assert_quiet(args: &[&str], ended: &Ended) {
    assert_ne!(ended.status.code(), Some(101), "{args:?} panicked");
    assert!(
        !ended.stderr.contains("panicked") && !ended.stderr.contains("Broken pipe"),
        "{args:?} complained: {}",
        ended.stderr
    );
}

/// Ended as `cat` does when its reader has gone.
fn assert_killed_by_sigpipe(args: &[&str], tmpdir: &Path) {
    let ended = into_closed_pipe(args, tmpdir);
    assert_quiet(args, &ended);
    assert_eq!(
        ended.status.signal(),
        Some(SIGPIPE),
        "{args:?}: {:?} {}",
        ended.status,
        ended.stderr
    );
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn commands_that_print_end_quietly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let tmp = dir.path();
    let sysfs = tmp.join("sys");
    std::fs::create_dir_all(sysfs.join("class/tty")).unwrap_or_else(|e| panic!("{e}"));
    let sysfs = sysfs.to_str().unwrap_or_default();
    let fixtures: serde_json::Value = serde_json::from_str(testkit::fixtures::REAL_MODEM_TOKENS)
        .unwrap_or_else(|e| panic!("{e}"));
    let token = fixtures["attest"]["token"].as_str().unwrap_or_default();

    for args in [
        vec!["completions", "bash"],
        vec!["man"],
        vec!["ports", "--sysfs", sysfs],
        vec!["ports", "--json", "--sysfs", sysfs],
        vec!["parse", token],
        vec!["parse", "--json", token],
        vec!["--help"],
    ] {
        // clap prints help itself and ignores the failed write: exit 0.
        if args == ["--help"] {
            let ended = into_closed_pipe(&args, tmp);
            assert_quiet(&args, &ended);
            continue;
        }
        assert_killed_by_sigpipe(&args, tmp);
    }

    // The CA is written before its [ca] lines are printed.
    let ca_dir = tmp.join("ca");
    assert_killed_by_sigpipe(
        &["ca", "create", "--out", ca_dir.to_str().unwrap_or_default()],
        tmp,
    );
    assert!(ca_dir.join("ca.pem").is_file() && ca_dir.join("ca.key").is_file());
}

/// `provision … | head -1` after a passed run: the run is recorded, the
/// command ends quietly; then `results` and `at` on the same setup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_results_and_at_end_quietly() {
    let env = Env::new(2, Latency::None, &[]).await;
    let config = env.write_config(|_| {});
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("{e}"));
    let (port, config_arg) = (env.port(0), config.display().to_string());
    let db = env.config.database.display().to_string();
    let at_port = env.port(1);
    let tmp_for_children = tmp.clone();
    tokio::task::spawn_blocking(move || {
        let tmp = tmp_for_children.as_path();
        for json in [false, true] {
            let mut args = vec!["provision", "--port", &port, "--config", &config_arg];
            if json {
                args.push("--json");
            }
            assert_killed_by_sigpipe(&args, tmp);
        }
        for format in ["table", "json", "csv", "attest-csv", "onboard-csv"] {
            assert_killed_by_sigpipe(&["results", "--db", &db, "--format", format], tmp);
        }
        assert_killed_by_sigpipe(
            &[
                "at",
                "--port",
                &at_port,
                "--flow-control",
                "none",
                "AT+CGSN",
            ],
            tmp,
        );
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let runs = runs_in(&env.config.database).await;
    assert_eq!(runs.len(), 2, "both provision runs recorded");
    assert!(
        runs.iter()
            .all(|r| r.outcome == nrf_provd_core::record::Outcome::Passed),
        "{runs:?}"
    );
    assert!(leftovers(&tmp).is_empty(), "{:?}", leftovers(&tmp));
}

/// `bench` stops at its first line, removes its working directory and
/// exits 0; with --json it finishes, fails to print, and still cleans up.
#[test]
fn bench_stops_quietly_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for args in [
        vec!["bench", "--boards", "1", "--rounds", "1"],
        vec!["bench", "--boards", "1", "--rounds", "1", "--json"],
    ] {
        let ended = into_closed_pipe(&args, dir.path());
        assert_quiet(&args, &ended);
        assert_eq!(ended.status.code(), Some(0), "{args:?}: {}", ended.stderr);
        assert!(
            leftovers(dir.path()).is_empty(),
            "{args:?} left {:?}",
            leftovers(dir.path())
        );
    }
}

/// `demo | head`: the demo runs to its end, exits 0 and removes its
/// working directory (killed by SIGPIPE it would leave it behind).
#[test]
fn demo_finishes_quietly_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let args = ["demo", "--boards", "2", "--latency", "none"];
    let ended = into_closed_pipe(&args, dir.path());
    assert_quiet(&args, &ended);
    assert_eq!(ended.status.code(), Some(0), "{}", ended.stderr);
    assert!(
        leftovers(dir.path()).is_empty(),
        "demo left {:?}",
        leftovers(dir.path())
    );
}

/// Whether `pid` ignores SIGPIPE, from the SigIgn mask in /proc.
fn ignores_sigpipe(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no SigIgn in {status}"));
    mask & (1 << (SIGPIPE - 1)) != 0
}

fn stop(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

/// The daemon keeps SIGPIPE ignored (its sockets must survive a closed
/// peer); a long-running printing command does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_alone_keeps_sigpipe_ignored() {
    use std::io::{BufRead, BufReader};

    let env = Env::new(1, Latency::None, &[]).await;
    let config = env.write_config(|_| {});
    let daemon_ignores = tokio::task::spawn_blocking(move || {
        let mut daemon = Command::new(binary())
            .args(["run", "--log", "info", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn run: {e}"));
        let stderr = daemon.stderr.take().unwrap_or_else(|| panic!("stderr"));
        let ready = BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains("station ready"));
        assert!(ready, "the daemon never got ready");
        let ignores = ignores_sigpipe(daemon.id());
        stop(daemon);
        ignores
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(daemon_ignores, "run must keep SIGPIPE ignored");

    let sim_dir = env.dir.path().join("sim");
    let mut simulate = Command::new(dev_binary())
        .args(["simulate", "--count", "1", "--dir"])
        .arg(&sim_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn simulate: {e}"));
    let stdout = simulate.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let mut first = String::new();
    let _ = BufReader::new(stdout).read_line(&mut first);
    assert!(!first.is_empty(), "simulate printed its ports");
    let simulate_ignores = ignores_sigpipe(simulate.id());
    stop(simulate);
    assert!(!simulate_ignores, "simulate gets the default SIGPIPE back");
}
