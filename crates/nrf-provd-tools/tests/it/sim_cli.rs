//! The `simulate` command (nrf-provd-dev): the boards it lists, the trust
//! file it writes, its clean-up on SIGTERM, and the fault specs it refuses.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use nrf91_sim::ModemIdentity;

/// Kills the child on drop so a failing test leaves no simulator behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn simulate_command_lists_boards_writes_trust_and_cleans_up_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let links = dir.path().join("links");
    let trust = dir.path().join("trust.csv");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_nrf-provd-dev"))
            .args([
                "simulate",
                "--count",
                "3",
                "--seed",
                "9",
                "--dialect",
                "slm",
            ])
            .args(["--fault", "2:untrusted-key"])
            .arg("--dir")
            .arg(&links)
            .arg("--trust-out")
            .arg(&trust)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(3)
        .map(Result::unwrap)
        .collect();
    for (i, line) in lines.iter().enumerate() {
        let id = ModemIdentity::from_seed(9, i as u32);
        let expected = format!(
            "{} {} {}",
            links.join(format!("ttySIM{i}")).display(),
            id.device_uuid,
            id.imei
        );
        assert_eq!(line, &expected);
        assert!(std::fs::read_link(links.join(format!("ttySIM{i}"))).is_ok());
    }
    let csv = std::fs::read_to_string(&trust).unwrap();
    assert_eq!(
        csv.lines().count(),
        3,
        "header and two trusted boards: {csv}"
    );
    assert!(!csv.contains(&ModemIdentity::from_seed(9, 2).device_uuid.to_string()));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    for i in 0..3 {
        assert!(std::fs::symlink_metadata(links.join(format!("ttySIM{i}"))).is_err());
    }
}

#[test]
fn simulate_rejects_a_bad_fault_spec() {
    let out = Command::new(env!("CARGO_BIN_EXE_nrf-provd-dev"))
        .args(["simulate", "--fault", "1:nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown fault"));
}

#[test]
fn simulate_rejects_a_fault_for_a_missing_modem() {
    let out = Command::new(env!("CARGO_BIN_EXE_nrf-provd-dev"))
        .args(["simulate", "--count", "2", "--fault", "2:replay"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only 2 modem(s)"));
}
