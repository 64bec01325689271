//! The line-wide device rules on a station of its own (its SQLite is the
//! history they consult): `plan.reprovision` for a device that passed
//! before, one run per device at a time across the station's ports, and
//! `results --summary`.

use crate::station_support::{Env, binary, finished_runs};
use nrf_provd_core::record::{Outcome, ReasonCode, RunRecord, Step};
use nrf_provd_core::station::StationEvent;
use nrf_provd_daemon::config::Reprovision;
use nrf91_sim::{Latency, ModemIdentity};

/// Provision board 0, replug it, provision it again.
async fn again(policy: Reprovision) -> (RunRecord, RunRecord) {
    let mut env = Env::new(1, Latency::None, &[]).await;
    env.config.plan.reprovision = policy;
    let (station, mut events, serving) = env.station();
    let first = finished_runs(&mut events, 1).await.remove(0);
    env.fleet.replug(0).await.expect("replug");
    let second = finished_runs(&mut events, 1).await.remove(0);
    station.shutdown();
    serving.await.expect("station");
    (first, second)
}

fn attest_detail(run: &RunRecord) -> &str {
    run.steps
        .iter()
        .find(|s| s.name == Step::Attest)
        .map_or("", |s| s.detail.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_passed_is_provisioned_again_by_default() {
    let (first, second) = again(Reprovision::Allow).await;
    assert_eq!(
        (first.outcome, second.outcome),
        (Outcome::Passed, Outcome::Passed)
    );
    assert!(!attest_detail(&second).contains("already passed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprovision_warn_passes_and_says_where_it_passed_before() {
    let (first, second) = again(Reprovision::Warn).await;
    assert_eq!(second.outcome, Outcome::Passed, "{second:?}");
    let detail = attest_detail(&second);
    assert!(
        detail.contains("already passed 1 time(s)") && detail.contains(&first.uid.to_string()),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprovision_refuse_fails_the_second_run() {
    let (first, second) = again(Reprovision::Refuse).await;
    assert_eq!(first.outcome, Outcome::Passed);
    assert_eq!(second.outcome, Outcome::Failed);
    assert_eq!(second.failed_step, Some(Step::Attest));
    assert_eq!(second.reason_code, Some(ReasonCode::Reprovision));
    let reason = second.reason.clone().unwrap_or_default();
    assert!(reason.contains(&first.uid.to_string()), "{reason}");
    // Refused before anything was written to the modem.
    assert!(second.artifacts.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_device_on_two_ports_at_once_is_a_duplicate_identity() {
    // Board 0 hangs in key generation, holding its device.
    let env = Env::new(2, Latency::None, &["0:stall@KEYGEN"]).await;
    env.fleet.unplug(1).await;
    let (station, mut events, serving) = env.station();
    let port0 = env.port(0);
    loop {
        let event = events.recv().await.expect("events");
        if let StationEvent::StepFinished { port, step, .. } = event {
            if port == port0 && step.name == Step::Attest {
                break;
            }
        }
    }
    // A clone of board 0 on port 1.
    env.fleet
        .swap(1, ModemIdentity::from_seed(7, 0))
        .await
        .expect("swap");
    let clone = finished_runs(&mut events, 1).await.remove(0);
    assert_eq!(clone.port, env.port(1));
    assert_eq!(
        clone.reason_code,
        Some(ReasonCode::DuplicateIdentity),
        "{clone:?}"
    );
    let reason = clone.reason.clone().unwrap_or_default();
    assert!(reason.contains(&port0), "{reason}");
    station.shutdown();
    drop(serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_summary_gives_yield_per_station_and_top_reasons() {
    let env = Env::new(3, Latency::None, &["2:bad-signature"]).await;
    let (station, mut events, serving) = env.station();
    finished_runs(&mut events, 3).await;
    station.shutdown();
    serving.await.expect("station");
    let out = std::process::Command::new(binary())
        .args(["results", "--summary", "--db"])
        .arg(&env.config.database)
        .output()
        .expect("results --summary");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("demo"))
        .unwrap_or_else(|| panic!("a row for the station:\n{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..4], ["3", "2", "1"], "{text}");
    assert_eq!(cells.last(), Some(&"66.7%"), "{text}");
    assert!(text.contains("signature"), "{text}");

    let out = std::process::Command::new(binary())
        .args([
            "results",
            "--summary",
            "--format",
            "json",
            "--station",
            "elsewhere",
            "--db",
        ])
        .arg(&env.config.database)
        .output()
        .expect("results --summary --json");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["total"]["seen"], 0, "{json}");
    assert_eq!(json["stations"], serde_json::json!([]));
}
