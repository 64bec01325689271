//! One response cannot eat the daemon's memory: 200 MB of 1 KiB
//! information lines inside one command's deadline fail that command
//! `overlong` at once, the daemon's memory stays bounded, the port is
//! settled, and the next board passes.

use crate::station_support::{Daemon, Env};
use nrf91_sim::Latency;

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// The bound this test states for the daemon's peak memory with a flood
/// of 200 MB on one port (its RSS is about 15 MiB without one).
const PEAK_BOUND_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_lines_fails_overlong_with_bounded_memory_and_the_next_board_passes() {
    let env = Env::new(2, Latency::None, &["0:flood=200M@KEYGEN"]).await;
    let config = env.write_config(|t| *t = t.replace("[plan]\n", "[plan]\nretries = 0\n"));
    let mut daemon = Daemon::spawn(&config);
    let lines = daemon.runs_finished(2).await;
    let flooded = lines
        .iter()
        .find(|l| l.contains("ttySIM0"))
        .expect("board 0 ran");
    assert!(
        flooded.contains("FAILED keygen overlong"),
        "{flooded}\n{}",
        daemon.log.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ttySIM1") && l.contains("PASSED")),
        "the other port is not held up: {lines:#?}"
    );
    let peak = peak_rss_kib(daemon.child.id());
    eprintln!("daemon peak RSS with a 200 MB flood: {peak} KiB");
    assert!(
        peak < PEAK_BOUND_KIB,
        "peak RSS {peak} KiB with a 200 MB flood (bound {PEAK_BOUND_KIB} KiB)"
    );

    // The port settled; the board, plugged back, passes.
    env.fleet.replug(0).await.unwrap();
    let next = daemon.runs_finished(1).await;
    assert!(next[0].contains("PASSED"), "{next:?}");
    assert!(daemon.stop().await.success());
}
