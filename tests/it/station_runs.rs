//! The station in-process against simulated boards: parallel passes, every
//! fault failing the right step for the right reason while the other ports
//! pass, an unplug mid-run, replays.

use std::time::Duration;

use crate::station_support::{Env, finished_runs};
use nrf_provd_core::record::{Outcome, ReasonCode, RunRecord, Step};
use nrf_provd_core::station::StationEvent;
use nrf91_sim::{Latency, SimDialect, SimOptions};
use nrf91_token::trust::TrustStore;

fn by_port<'a>(runs: &'a [RunRecord], env: &Env, i: usize) -> &'a RunRecord {
    let port = env.port(i);
    runs.iter()
        .find(|r| r.port == port)
        .unwrap_or_else(|| panic!("no run for board {i}"))
}

/// Provision board 0, unplug and replug it, provision it again.
async fn two_insertions(env: &Env) -> (RunRecord, RunRecord) {
    let (station, mut events, serving) = env.station();
    let first = finished_runs(&mut events, 1).await.remove(0);
    env.fleet.unplug(0).await;
    env.fleet.replug(0).await.unwrap();
    let second = finished_runs(&mut events, 1).await.remove(0);
    station.shutdown();
    serving.await.unwrap();
    (first, second)
}

/// Pull board 0 and plug it back only once the station has let its port go,
/// as a USB port goes away with its board: the port's supervisor ends with
/// the port, and a new one takes it back.
async fn unplug_until_let_go_then_replug(
    env: &Env,
    events: &mut tokio::sync::broadcast::Receiver<StationEvent>,
) {
    env.fleet.unplug(0).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        while !matches!(events.recv().await, Ok(StationEvent::PortGone { .. })) {}
    })
    .await
    .expect("the unplugged port was let go");
    env.fleet.replug(0).await.unwrap();
}

/// A port that appears is taken when it appears, not at the next scan:
/// the station watches the ports' directory (inotify), so with a scan only
/// every ten minutes a replugged board is still provisioned again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replugged_board_is_taken_at_once_not_at_the_next_scan() {
    let mut env = Env::new(1, Latency::None, &[]).await;
    env.config.ports.rescan_interval = Duration::from_secs(600);
    let (first, second) = tokio::time::timeout(Duration::from_secs(60), two_insertions(&env))
        .await
        .expect("the replugged board waited for the ten-minute scan");
    assert_eq!(first.outcome, Outcome::Passed, "{first:?}");
    assert_eq!(second.outcome, Outcome::Passed, "{second:?}");
    assert_eq!(first.port, second.port);
}

/// A link whose device is gone (a `/dev/serial/by-id` link not yet
/// removed, a simulator's link being pointed at its board's new pty) is not
/// a port gone: its supervisor waits and retries. Taken for gone, the
/// scanner found it again at once, thousands of times a second, and an
/// open retried at once could take a device number another board's replug
/// had just reused (a 64-board bench stalled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_to_a_missing_device_is_retried_not_found_again_and_again() {
    let env = Env::new(2, Latency::None, &[]).await;
    let dangling = env.fleet.link(0).with_file_name("ttySIM99");
    std::os::unix::fs::symlink("/dev/pts/nrf-provd-no-such-pty", &dangling).unwrap();
    let dangling = dangling.display().to_string();
    let (station, mut events, serving) = env.station();
    let (mut runs, mut found) = (Vec::new(), 0u64);
    while runs.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(120), events.recv())
            .await
            .expect("station made no progress for 120 s");
        match event {
            Ok(StationEvent::RunFinished { record, .. }) => {
                runs.push(record);
                if runs.len() == 2 {
                    // Both boards pulled and plugged back together.
                    for i in 0..2 {
                        env.fleet.replug(i).await.unwrap();
                    }
                }
            }
            Ok(StationEvent::PortFound { port }) if port == dangling => found += 1,
            Ok(_) => {}
            // Events dropped for a slow receiver: count them against it.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => found += n,
            Err(e) => panic!("events: {e}"),
        }
    }
    station.shutdown();
    serving.await.unwrap();
    assert!(
        runs.iter().all(|r| r.outcome == Outcome::Passed),
        "{runs:#?}"
    );
    assert_eq!(found, 1, "the dangling link was found {found} times");
}

/// A port remembers the dialect its last board spoke and asks the next
/// board in it first: a raw board replugged is not first refused in the
/// shell's form (the first board was; each refusal costs the line a 400 ms
/// settle). Remembered across the port's going away, as a USB port does
/// with its board.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replugged_board_is_asked_in_its_ports_last_dialect_first() {
    let mut env = Env::new(1, Latency::None, &[]).await;
    // No departure poll before the replug: every command is a run's or
    // a detection's.
    env.config.ports.rescan_interval = Duration::from_secs(600);
    let (station, mut events, serving) = env.station();
    let first = finished_runs(&mut events, 1).await.remove(0);
    let first_session = env.fleet.stats(0).commands;
    unplug_until_let_go_then_replug(&env, &mut events).await;
    let second = finished_runs(&mut events, 1).await.remove(0);
    let second_session = env.fleet.stats(0).commands - first_session;
    station.shutdown();
    serving.await.unwrap();
    assert_eq!(first.outcome, Outcome::Passed, "{first:?}");
    assert_eq!(second.outcome, Outcome::Passed, "{second:?}");
    assert_eq!(
        second_session,
        first_session - 1,
        "the same plan, less the shell probe the first board refused"
    );
}

/// A port that ended with its last board (a USB port on the board's own
/// interface chip; here a pty) cannot have a board swapped unseen: a board
/// left in it after its run is not asked who it is every 200 ms to 2 s, as
/// on a port never seen to end (a plain UART, where only a poll tells a
/// swapped board), but every 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_left_on_a_port_that_ended_with_the_last_one_is_seldom_polled() {
    let env = Env::new(1, Latency::None, &[]).await;
    let (station, mut events, serving) = env.station();
    // Commands the board in its fixture is sent over three seconds after
    // its run: departure polls, nothing else.
    let polls_while_left = || async {
        let before = env.fleet.stats(0).commands;
        tokio::time::sleep(Duration::from_secs(3)).await;
        env.fleet.stats(0).commands - before
    };
    let first = finished_runs(&mut events, 1).await.remove(0);
    let on_a_port_never_seen_to_end = polls_while_left().await;
    unplug_until_let_go_then_replug(&env, &mut events).await;
    let second = finished_runs(&mut events, 1).await.remove(0);
    let on_a_port_that_ended = polls_while_left().await;
    station.shutdown();
    serving.await.unwrap();
    assert_eq!(first.outcome, Outcome::Passed, "{first:?}");
    assert_eq!(second.outcome, Outcome::Passed, "{second:?}");
    assert!(
        on_a_port_never_seen_to_end >= 2,
        "polled from 200 ms on: {on_a_port_never_seen_to_end}"
    );
    assert_eq!(on_a_port_that_ended, 0, "the first poll is due after 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_boards_in_parallel_all_pass_with_complete_records() {
    let env = Env::new(8, Latency::None, &[]).await;
    let (station, mut events, serving) = env.station();
    let runs = finished_runs(&mut events, 8).await;
    station.shutdown();
    serving.await.unwrap();

    assert!(
        runs.iter().all(|r| r.outcome == Outcome::Passed),
        "{runs:#?}"
    );
    let stored = env.runs().await;
    assert_eq!(stored.len(), 8);
    for run in &stored {
        assert_eq!(run.outcome, Outcome::Passed);
        let steps: Vec<&str> = run.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            steps,
            [
                "probe", "identify", "offline", "attest", "keygen", "certify", "install",
                "confirm", "jwt", "restore"
            ]
        );
        assert!(run.device.device_uuid.is_some() && run.device.imei.is_some());
        let kinds: Vec<&str> = run.tokens.iter().map(|t| t.kind.as_str()).collect();
        assert_eq!(kinds, ["identity", "keygen", "jwt"]);
        assert!(run.tokens.iter().all(|t| t.authentic));
        let artifacts: Vec<&str> = run.artifacts.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(artifacts, ["csr", "device_certificate"]);
    }
    let uuids: std::collections::HashSet<_> = stored.iter().map(|r| r.device.device_uuid).collect();
    assert_eq!(uuids.len(), 8, "every board is a different device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_fails_its_step_with_its_reason_while_the_others_pass() {
    // (fault on board i, failed step, reason code)
    let cases = [
        ("bad-signature", "attest", "signature"),
        ("ignore-challenge", "attest", "nonce"),
        ("wrong-uuid", "attest", "device_uuid"),
        ("untrusted-key", "attest", "key_trusted"),
        ("bad-digest", "keygen", "digest"),
        ("cme=514@KEYGEN", "keygen", "cme"),
        ("stall@KEYGEN", "keygen", "timeout"),
        ("cme=518@CFUN", "offline", "cme"),
    ];
    let faults: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (fault, _, _))| format!("{}:{fault}", i + 1))
        .collect();
    let fault_refs: Vec<&str> = faults.iter().map(String::as_str).collect();
    let mut env = Env::new(cases.len() + 2, Latency::None, &fault_refs).await;
    env.config.timeouts.commands.keygen = Duration::from_secs(1);
    env.config.plan.retries = 0;
    let (station, mut events, serving) = env.station();
    let runs = finished_runs(&mut events, cases.len() + 2).await;
    station.shutdown();
    serving.await.unwrap();

    for (i, (fault, step, reason)) in cases.iter().enumerate() {
        let run = by_port(&runs, &env, i + 1);
        assert_eq!(run.outcome, Outcome::Failed, "{fault}: {run:#?}");
        assert_eq!(
            run.failed_step.map(|s| s.as_str()),
            Some(*step),
            "{fault}: {:?}",
            run.reason
        );
        assert_eq!(
            run.reason_code.map(|c| c.as_str()),
            Some(*reason),
            "{fault}: {:?}",
            run.reason
        );
    }
    for healthy in [0, cases.len() + 1] {
        assert_eq!(by_port(&runs, &env, healthy).outcome, Outcome::Passed);
    }
    assert_eq!(
        env.runs().await.len(),
        cases.len() + 2,
        "every run is recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_left_in_its_fixture_is_provisioned_once_and_the_next_board_again() {
    let env = Env::new(1, Latency::None, &[]).await;
    let next_board = nrf91_sim::ModemIdentity::from_seed(99, 0);
    let mut trust = TrustStore::load(env.trust_file()).unwrap();
    trust
        .insert(next_board.device_uuid, &next_board.public_key_spki_der())
        .unwrap();
    std::fs::write(env.trust_file(), trust.to_csv()).unwrap();
    let (station, mut events, serving) = env.station();
    let first = finished_runs(&mut events, 1).await;
    // Leave it in the fixture while the station asks it, five times, who
    // it is: the station must not start another run on it.
    let asked = env.fleet.stats(0).commands;
    while env.fleet.stats(0).commands < asked + 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, StationEvent::BoardArrived { .. }),
            "a board in its fixture is provisioned once: {event:?}"
        );
    }
    assert_eq!(env.runs().await.len(), 1);
    // A different board in the same fixture.
    env.fleet.swap(0, next_board).await.unwrap();
    let second = finished_runs(&mut events, 1).await;
    station.shutdown();
    serving.await.unwrap();
    assert_eq!(first[0].outcome, Outcome::Passed);
    assert_eq!(second[0].outcome, Outcome::Passed);
    assert_ne!(first[0].device.device_uuid, second[0].device.device_uuid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_unplugged_mid_run_fails_at_that_step_and_the_port_takes_the_next() {
    let env = Env::new(2, Latency::Realistic, &[]).await;
    let (station, mut events, serving) = env.station();
    let victim = env.port(0);
    // Pull board 0 while it generates its key (1.2 s in realistic mode).
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("progress")
            .expect("events");
        if let StationEvent::StepFinished { port, step, .. } = event
            && port == victim
            && step.name == Step::Attest
        {
            env.fleet.unplug(0).await;
            break;
        }
    }
    let runs = finished_runs(&mut events, 2).await;
    let pulled = runs.iter().find(|r| r.port == victim).unwrap();
    assert_eq!(pulled.outcome, Outcome::Failed);
    assert_eq!(pulled.failed_step, Some(Step::Keygen), "{pulled:#?}");
    assert_eq!(pulled.reason_code, Some(ReasonCode::Disconnected));
    assert_eq!(
        runs.iter().find(|r| r.port != victim).unwrap().outcome,
        Outcome::Passed
    );

    env.fleet.replug(0).await.unwrap();
    let next = finished_runs(&mut events, 1).await;
    station.shutdown();
    serving.await.unwrap();
    assert_eq!(next[0].port, victim);
    assert_eq!(next[0].outcome, Outcome::Passed, "{:#?}", next[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_keygen_tokens_and_jwts_are_rejected_as_replay() {
    // Without attest the replayed keygen token is caught by the nonce store.
    let mut env = Env::new(1, Latency::None, &["0:replay"]).await;
    env.config.plan.steps.retain(|s| *s != Step::Attest);
    let (first, second) = two_insertions(&env).await;
    assert_eq!(first.outcome, Outcome::Passed, "{:#?}", first);
    assert_eq!(second.outcome, Outcome::Failed);
    assert_eq!(second.failed_step, Some(Step::Keygen));
    assert_eq!(second.reason_code, Some(ReasonCode::Replay), "{second:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_identity_token_fails_its_fresh_challenge() {
    let env = Env::new(1, Latency::None, &["0:replay"]).await;
    let (first, second) = two_insertions(&env).await;
    assert_eq!(first.outcome, Outcome::Passed);
    assert_eq!(second.failed_step, Some(Step::Attest));
    assert_eq!(second.reason_code, Some(ReasonCode::Nonce), "{second:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boards_behind_slm_and_the_zephyr_shell_pass_too() {
    for dialect in [SimDialect::Slm, SimDialect::Shell] {
        let options = SimOptions {
            dialect,
            faults: vec!["all:urc-storm".parse().unwrap()],
            ..SimOptions::default()
        };
        let env = Env::with_options(2, options).await;
        let (station, mut events, serving) = env.station();
        let runs = finished_runs(&mut events, 2).await;
        station.shutdown();
        serving.await.unwrap();
        for run in &runs {
            assert_eq!(run.outcome, Outcome::Passed, "{dialect:?}: {run:#?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_on_the_line_does_not_fail_a_good_board() {
    let env = Env::new(4, Latency::None, &["all:garbage", "0-1:urc-storm"]).await;
    let (station, mut events, serving) = env.station();
    let mut runs = finished_runs(&mut events, 4).await;
    for _ in 0..3 {
        for i in 0..4 {
            env.fleet.unplug(i).await;
            env.fleet.replug(i).await.unwrap();
        }
        runs.extend(finished_runs(&mut events, 4).await);
    }
    station.shutdown();
    serving.await.unwrap();
    for run in &runs {
        assert_eq!(run.outcome, Outcome::Passed, "{run:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_for_answers_that_did_not_come_never_for_a_cme_error() {
    // As config/station.toml and the README say: a timed-out step is tried
    // again `plan.retries` times, a CME error is the modem's answer.
    let mut env = Env::new(2, Latency::None, &["0:stall@KEYGEN", "1:cme=514@KEYGEN"]).await;
    env.config.timeouts.commands.keygen = Duration::from_secs(1);
    env.config.plan.retries = 1;
    let (station, mut events, serving) = env.station();
    let runs = finished_runs(&mut events, 2).await;
    station.shutdown();
    serving.await.unwrap();
    let keygen_attempts = |i: usize| {
        let run = by_port(&runs, &env, i);
        assert_eq!(run.outcome, Outcome::Failed, "{run:#?}");
        run.steps
            .iter()
            .find(|s| s.name.as_str() == "keygen")
            .map(|s| (s.attempts, run.reason_code.map(|c| c.as_str())))
    };
    assert_eq!(keygen_attempts(0), Some((2, Some("timeout"))));
    assert_eq!(keygen_attempts(1), Some((1, Some("cme"))));
}

/// A consumer of the test's own: the ports whose runs it saw finish.
#[derive(Default)]
struct Finished(Vec<(String, Outcome)>);

impl nrf_provd_core::station::EventConsumer for Finished {
    fn apply(&mut self, event: &StationEvent) {
        if let StationEvent::RunFinished { record, .. } = event {
            self.0.push((record.port.clone(), record.outcome));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_consumer_started_with_one_line_sees_every_run_and_is_handed_back() {
    let env = Env::new(2, Latency::None, &[]).await;
    let (station, mut events, serving) = env.station();
    // Its one registration.
    let consumer = station.follow(Finished::default());
    finished_runs(&mut events, 2).await;
    station.shutdown();
    serving.await.unwrap();
    // The station's last handle gone, the stream closes: the consumer
    // comes back with what it folded.
    drop(station);
    let Finished(mut seen) = consumer.await.expect("the consumer's task");
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ports = vec![env.port(0), env.port(1)];
    ports.sort();
    assert_eq!(
        seen,
        ports
            .into_iter()
            .map(|p| (p, Outcome::Passed))
            .collect::<Vec<_>>()
    );
}
