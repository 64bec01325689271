//! `nrf-provd at` end to end: the binary on a pty slave, a scripted peer on
//! the master; exit status 0 / 1 / 2 and what is printed.

use std::process::Output;

use testkit::at::{script_peer, step};
use tokio_serial::{SerialPort, SerialStream};

async fn run_cli(args: &[&str], steps: Vec<testkit::at::PeerStep>) -> Output {
    let (master, pair_slave) = SerialStream::pair().expect("pty pair");
    let path = pair_slave.name().expect("slave path");
    let peer = script_peer(master, steps);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nrf-provd"));
    cmd.arg("at").arg("--port").arg(&path).args(args);
    let out = cmd.output().await.expect("run nrf-provd");
    // Keep the slave open until the CLI is done so the master never sees EIO.
    drop(pair_slave);
    peer.abort();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn all_ok_prints_lines_and_marked_notifications() {
    let out = run_cli(
        &["--dialect", "raw", "AT+CGMM", "AT+CGSN=1"],
        vec![
            step("AT+CGMM", "nRF9161-LACA\r\n+CEREG: 5\r\nOK\r\n"),
            step("AT+CGSN=1", "+CGSN: \"352656100367872\"\r\nOK\r\n"),
        ],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("nRF9161-LACA\n"), "{stdout}");
    assert!(stdout.contains("[urc] +CEREG: 5\n"), "{stdout}");
    assert!(stdout.contains("+CGSN: \"352656100367872\"\n"), "{stdout}");
}

#[tokio::test]
async fn cme_error_exits_1_with_code_and_meaning() {
    let out = run_cli(
        &["--dialect", "auto", "AT%KEYGEN=17,2,0", "AT+CGMM"],
        vec![
            step("at 'AT+CGSN'", "ERROR\r\n"),
            step("AT+CGSN", "352656100367872\r\nOK\r\n"),
            // The dialect that seemed to work is confirmed by a second command.
            step("AT+CGSN=1", "+CGSN: \"352656100367872\"\r\nOK\r\n"),
            step("AT%KEYGEN=17,2,0", "+CME ERROR: 518\r\n"),
            step("AT+CGMM", "nRF9161-LACA\r\nOK\r\n"),
        ],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("518"), "{stderr}");
    assert!(stderr.contains("not allowed in active state"), "{stderr}");
    assert!(
        text(&out.stdout).contains("nRF9161-LACA"),
        "later commands still run"
    );
}

#[tokio::test]
async fn timeout_exits_2() {
    let out = run_cli(
        &["--dialect", "raw", "--timeout", "0.3", "AT%ATTESTTOKEN"],
        vec![step("AT%ATTESTTOKEN", "")],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no final result"), "{stderr}");
}

#[tokio::test]
async fn missing_port_exits_2() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
        .args(["at", "--port", "/nonexistent/ttyACM9", "AT"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/ttyACM9"));
}
