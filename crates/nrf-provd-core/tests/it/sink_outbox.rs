//! The sinks' outbox: a finished run owes a delivery to each configured
//! sink, written with the run; each sink's task delivers it (a real
//! program, a real database file) and its failures wait without holding
//! the station or the other sinks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nrf_provd_core::ledger::deliveries::Backlog;
use nrf_provd_core::ledger::{
    DeviceInfo, Ledger, Outcome, RunRecord, RunStart, SqliteDeliveries, SqliteLedger,
};
use nrf_provd_core::record::Traceability;
use nrf_provd_core::sink::{self, SinkConfig};
use time::OffsetDateTime;
use uuid::Uuid;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn open(path: &Path) -> SqliteLedger {
    SqliteLedger::open(path).unwrap_or_else(|e| panic!("open: {e}"))
}

fn outbox(path: &Path) -> SqliteDeliveries {
    SqliteLedger::open_deliveries(path, false).unwrap_or_else(|e| panic!("open deliveries: {e}"))
}

/// Begin a run and, unless `left_in_flight`, finish it as passed.
async fn run(store: &SqliteLedger, left_in_flight: bool) -> RunRecord {
    let start = RunStart {
        uid: Uuid::from_u128(rand::random()),
        station_id: "s1".into(),
        port: "/dev/ttyACM0".into(),
        started_at: OffsetDateTime::now_utc(),
        trace: Traceability {
            work_order: Some("WO-7".into()),
            ..Traceability::default()
        },
    };
    let id = store
        .begin_run(&start)
        .await
        .unwrap_or_else(|e| panic!("begin: {e}"));
    let record = RunRecord {
        id,
        uid: start.uid,
        station_id: start.station_id,
        port: start.port,
        started_at: start.started_at,
        finished_at: Some(OffsetDateTime::now_utc()),
        outcome: Outcome::Passed,
        failed_step: None,
        reason_code: None,
        reason: None,
        verified_by: None,
        device: DeviceInfo::default(),
        steps: vec![],
        tokens: vec![],
        artifacts: vec![],
        trace: start.trace,
        compacted_at: None,
    };
    if !left_in_flight {
        store
            .finish_run(&record)
            .await
            .unwrap_or_else(|e| panic!("finish: {e}"));
    }
    record
}

fn command(script: &str, timeout: Duration) -> SinkConfig {
    SinkConfig::Command {
        run: vec!["sh".into(), "-c".into(), script.into()],
        timeout,
    }
}

/// A command sink that appends each run's JSON, one line each, to `file`.
fn appending_to(file: &Path) -> SinkConfig {
    let script = format!(
        "cat >> '{}' && echo >> '{}'",
        file.display(),
        file.display()
    );
    command(&script, Duration::from_secs(10))
}

fn sinks(configs: &[SinkConfig]) -> Vec<SinkConfig> {
    configs.to_vec()
}

async fn backlog(store: &SqliteDeliveries) -> Vec<Backlog> {
    store
        .backlog()
        .await
        .unwrap_or_else(|e| panic!("backlog: {e}"))
}

/// Wait (up to a minute: not a speed check) until `done` holds.
pub(crate) async fn until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_finished_run_owes_every_configured_sink_until_each_acknowledges() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    let deliveries = outbox(&path);
    let ids = deliveries
        .configure(vec!["command a".into(), "command b".into()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let in_flight = run(&store, true).await;
    assert!(
        deliveries
            .list(None, false)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty(),
        "a run in flight owes nothing yet"
    );
    let finished = run(&store, false).await;
    let owed = deliveries
        .list(None, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let owed: Vec<_> = owed.iter().map(|d| (d.sink.as_str(), d.run_uid)).collect();
    assert_eq!(
        owed,
        vec![("command a", finished.uid), ("command b", finished.uid)]
    );
    assert!(
        !deliveries
            .acknowledged_by_all(finished.id)
            .await
            .unwrap_or(true)
    );
    deliveries
        .acknowledge(ids[0], finished.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !deliveries
            .acknowledged_by_all(finished.id)
            .await
            .unwrap_or(true),
        "one sink of two acknowledged is not enough"
    );
    deliveries
        .acknowledge(ids[1], finished.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        deliveries
            .acknowledged_by_all(finished.id)
            .await
            .unwrap_or(false)
    );
    drop(in_flight);
}

#[tokio::test]
async fn a_run_a_crash_left_in_flight_is_owed_as_interrupted() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let left = {
        let store = open(&path);
        outbox(&path)
            .configure(vec!["command a".into()])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        run(&store, true).await
    };
    let _store = open(&path);
    let deliveries = outbox(&path);
    let next = deliveries
        .configure(vec!["command a".into()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let due = deliveries
        .next(next[0])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("the interrupted run is owed"));
    let owed = deliveries
        .run(due.run)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(owed.uid, left.uid);
    assert_eq!(owed.outcome, Outcome::Interrupted);
}

#[tokio::test]
async fn a_sink_added_later_starts_from_the_runs_finished_after_it() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    let deliveries = outbox(&path);
    deliveries
        .configure(vec!["command a".into()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let before = run(&store, false).await;
    deliveries
        .configure(vec!["command a".into(), "command b".into()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after = run(&store, false).await;
    let owed = deliveries
        .list(Some("command b".into()), false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        owed.iter().map(|d| d.run_uid).collect::<Vec<_>>(),
        vec![after.uid]
    );
    // A sink removed from the config owes nothing more, and holds no run.
    deliveries
        .configure(vec!["command b".into()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        deliveries
            .acknowledged_by_all(before.id)
            .await
            .unwrap_or(false)
    );
    assert!(
        !deliveries
            .acknowledged_by_all(after.id)
            .await
            .unwrap_or(true)
    );
}

#[tokio::test]
async fn the_command_sink_gets_every_run_once_in_order_on_stdin() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let received = dir.path().join("received.jsonl");
    let store = open(&path);
    let delivering = sink::start(outbox(&path), sinks(&[appending_to(&received)]), None)
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    let mut uids = Vec::new();
    for _ in 0..5 {
        uids.push(run(&store, false).await.uid);
    }
    until("the backlog is delivered", || async {
        backlog(delivering.store()).await[0].owed == 0
    })
    .await;
    let text = std::fs::read_to_string(&received).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<Uuid> = text
        .lines()
        .map(|line| {
            let run: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(run["outcome"], "passed");
            assert!(run.get("tokens").is_some(), "the API's run JSON: {line}");
            // Traceability at the top level, as the MES reads it.
            assert_eq!(run["work_order"], "WO-7", "{line}");
            assert_eq!(run["lot"], serde_json::Value::Null, "{line}");
            run["uid"]
                .as_str()
                .and_then(|u| Uuid::parse_str(u).ok())
                .unwrap_or_else(|| panic!("no uid: {line}"))
        })
        .collect();
    assert_eq!(got, uids);
}

/// The sinks deliver on a thread of their own, woken by the station's
/// count of finished runs: a station runtime that is busy (here blocked
/// outright, its one thread asleep) holds no delivery.
#[tokio::test(flavor = "current_thread")]
async fn sinks_deliver_while_the_station_runtime_is_blocked() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let received = dir.path().join("received.jsonl");
    let store = open(&path);
    let (finished, runs_finished) = tokio::sync::watch::channel(0u64);
    let delivering = sink::start(
        outbox(&path),
        sinks(&[appending_to(&received)]),
        Some(runs_finished),
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}"));
    let uid = run(&store, false).await.uid.to_string();
    finished.send_modify(|runs| *runs += 1);
    // Nothing on this runtime runs while it sleeps (up to a minute: not
    // a speed check).
    let delivered = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(&received).is_ok_and(|text| text.contains(&uid))
    });
    assert!(
        delivered,
        "the run reached the command while the station's runtime was blocked"
    );
    drop(delivering);
}

/// A run the line's conflict amends after the sinks had it is owed again,
/// under a key of its own, so a receiver that dedupes by key applies it.
#[tokio::test]
async fn a_run_a_line_conflict_amends_is_delivered_again_under_its_amended_key() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let received = dir.path().join("received");
    let store = open(&path);
    let script = format!(
        "printf '%s ' \"$NRF_PROVD_IDEMPOTENCY_KEY\" >> '{0}' && cat >> '{0}' && echo >> '{0}'",
        received.display()
    );
    let delivering = sink::start(
        outbox(&path),
        sinks(&[command(&script, Duration::from_secs(10))]),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}"));
    let passed = run(&store, false).await;
    until("the run is delivered", || async {
        backlog(delivering.store()).await[0].owed == 0
    })
    .await;

    let conflict = nrf_provd_core::ledger::outbox::Conflict {
        run_uid: passed.uid,
        kind: "attest".into(),
        value: "a nonce another station used".into(),
        other: nrf_provd_core::ledger::Sighting {
            station_id: "s2".into(),
            port: "/dev/ttyACM3".into(),
            run_uid: Uuid::from_u128(0x5e),
            at: OffsetDateTime::now_utc(),
        },
        found_at: OffsetDateTime::now_utc(),
    };
    let amended = store
        .record_conflicts(vec![conflict.clone()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(amended.len(), 1, "the run is amended");
    until("the amended run is delivered", || async {
        std::fs::read_to_string(&received).is_ok_and(|t| t.lines().count() == 2)
            && backlog(delivering.store()).await[0].owed == 0
    })
    .await;
    // The same conflict again changes nothing and owes nothing more.
    store
        .record_conflicts(vec![conflict])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(backlog(delivering.store()).await[0].owed, 0);

    let text = std::fs::read_to_string(&received).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<(&str, serde_json::Value)> = text
        .lines()
        .map(|line| {
            let (key, json) = line.split_once(' ').unwrap_or_else(|| panic!("{line}"));
            (
                key,
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {line}")),
            )
        })
        .collect();
    let uid = passed.uid.hyphenated().to_string();
    assert_eq!(lines[0].0, uid);
    assert_eq!(lines[0].1["outcome"], "passed");
    assert_eq!(lines[1].0, format!("{uid}:amended"));
    assert_eq!(lines[1].1["outcome"], "failed");
    assert_eq!(lines[1].1["reason_code"], "conflict");
    assert_eq!(lines[1].1["uid"], uid.as_str());
}

#[tokio::test]
async fn a_failing_command_waits_and_keeps_its_stderr_while_the_others_deliver() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let received = dir.path().join("received");
    let store = open(&path);
    let failing = command("echo 'MES says no' >&2; exit 3", Duration::from_secs(10));
    let working = command(
        &format!("cat > /dev/null; echo x >> '{}'", received.display()),
        Duration::from_secs(10),
    );
    let delivering = sink::start(outbox(&path), sinks(&[failing, working]), None)
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    let first = run(&store, false).await;
    let second = run(&store, false).await;
    until("the working sink has both runs", || async {
        backlog(delivering.store()).await[1].owed == 0
    })
    .await;
    until("the failing sink has tried", || async {
        backlog(delivering.store()).await[0].retrying == 1
    })
    .await;
    let owed = delivering
        .store()
        .list(
            Some("command sh -c echo 'MES says no' >&2; exit 3".into()),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(owed.len(), 2, "{owed:?}");
    assert_eq!(owed[0].run_uid, first.uid);
    let error = owed[0].last_error.as_deref().unwrap_or("");
    assert!(error.contains("MES says no"), "{error}");
    assert!(owed[0].next_attempt_at.is_some());
    // Oldest first: the second run waits behind the first, untried.
    assert_eq!(owed[1].run_uid, second.uid);
    assert_eq!(owed[1].attempts, 0);
    assert!(
        !delivering
            .store()
            .acknowledged_by_all(first.id)
            .await
            .unwrap_or(true)
    );
}

#[tokio::test]
async fn a_command_that_hangs_is_killed_at_its_timeout_and_retried() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    let delivering = sink::start(
        outbox(&path),
        sinks(&[command("sleep 600", Duration::from_millis(300))]),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}"));
    run(&store, false).await;
    until("the hanging command has been given up on", || async {
        backlog(delivering.store()).await[0].retrying == 1
    })
    .await;
    // The station records on meanwhile.
    let next = run(&store, false).await;
    assert_eq!(next.outcome, Outcome::Passed);
    let owed = delivering
        .store()
        .list(None, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let error = owed[0].last_error.as_deref().unwrap_or("");
    assert!(error.contains("did not finish within"), "{error}");
}

#[tokio::test]
async fn a_dead_letter_is_set_aside_until_retried_by_hand() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    let deliveries = outbox(&path);
    let ids = deliveries
        .configure(vec!["webhook https://mes.example/runs".into()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = run(&store, false).await;
    let next = run(&store, false).await;
    deliveries
        .dead_letter(
            ids[0],
            refused.id,
            "400 Bad Request: unknown work order".into(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let due = deliveries
        .next(ids[0])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("the next run is due"));
    assert_eq!(due.run, next.id, "a dead letter does not hold the next run");
    let dead = deliveries
        .list(None, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].last_error.as_deref(),
        Some("400 Bad Request: unknown work order")
    );
    assert_eq!(backlog(&deliveries).await[0].dead, 1);
    let requeued = deliveries
        .retry_now(None, Some(refused.id))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(requeued, 1);
    let due = deliveries
        .next(ids[0])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("due"));
    assert_eq!(due.run, refused.id, "retried, it is the oldest again");
}

/// A webhook receiver that answers every request with `answer` (or never,
/// with `None`) and counts the requests.
async fn scripted_receiver(
    answer: Option<&'static str>,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut buf = [0u8; 65536];
                // Enough of the request for this test: its head and body
                // arrive in the first reads.
                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                    while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                })
                .await;
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match answer {
                    Some(answer) => {
                        let _ = stream.write_all(answer.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    // Hang: hold the connection open, answer nothing.
                    None => tokio::time::sleep(Duration::from_secs(600)).await,
                }
            });
        }
    });
    (addr, count)
}

fn webhook(dir: &Path, addr: std::net::SocketAddr, timeout: Duration) -> SinkConfig {
    let secret = dir.join("webhook.secret");
    std::fs::write(&secret, "s3cret").unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));
    SinkConfig::Webhook {
        url: format!("http://{addr}/runs"),
        secret_file: secret,
        timeout,
    }
}

#[tokio::test]
async fn a_receiver_that_answers_400_dead_letters_each_run_once_without_retrying() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    let (addr, requests) = scripted_receiver(Some(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 20\r\nconnection: close\r\n\r\nunknown work order\r\n",
    ))
    .await;
    let delivering = sink::start(
        outbox(&path),
        sinks(&[webhook(dir.path(), addr, Duration::from_secs(5))]),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}"));
    for _ in 0..3 {
        run(&store, false).await;
    }
    until("three dead letters", || async {
        backlog(delivering.store()).await[0].dead == 3
    })
    .await;
    // Well past the first retry's wait: still one request per run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 3);
    let dead = delivering
        .store()
        .list(None, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dead.len(), 3);
    let answer = dead[0].last_error.as_deref().unwrap_or("");
    assert!(
        answer.contains("400") && answer.contains("unknown work order"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_receiver_that_answers_429_is_tried_again_after_its_retry_after() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    let (addr, _) = scripted_receiver(Some(
        "HTTP/1.1 429 Too Many Requests\r\nretry-after: 120\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ))
    .await;
    let delivering = sink::start(
        outbox(&path),
        sinks(&[webhook(dir.path(), addr, Duration::from_secs(5))]),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}"));
    run(&store, false).await;
    until("the first attempt", || async {
        backlog(delivering.store()).await[0].retrying == 1
    })
    .await;
    let owed = delivering
        .store()
        .list(None, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let wait = owed[0]
        .next_attempt_at
        .unwrap_or_else(|| panic!("a retry time"))
        - OffsetDateTime::now_utc();
    // Retry-After: 120 rather than the first backoff of 1 s.
    assert!(wait > time::Duration::seconds(100), "{wait}");
    assert!(owed[0].dead_at.is_none());
}

#[tokio::test]
async fn a_receiver_that_hangs_times_out_and_holds_neither_the_station_nor_the_other_sink() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let received = dir.path().join("received");
    let store = open(&path);
    let (addr, _) = scripted_receiver(None).await;
    let other = command(
        &format!("cat > /dev/null; echo x >> '{}'", received.display()),
        Duration::from_secs(10),
    );
    let delivering = sink::start(
        outbox(&path),
        sinks(&[webhook(dir.path(), addr, Duration::from_millis(300)), other]),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}"));
    run(&store, false).await;
    // The station records on while the webhook waits for an answer.
    let second = run(&store, false).await;
    assert_eq!(second.outcome, Outcome::Passed);
    until("the other sink delivered both", || async {
        backlog(delivering.store()).await[1].owed == 0
    })
    .await;
    until("the hanging receiver was given up on", || async {
        backlog(delivering.store()).await[0].retrying == 1
    })
    .await;
    let owed = delivering
        .store()
        .list(None, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        owed.len(),
        2,
        "both runs still owed to the webhook: {owed:?}"
    );
    let error = owed[0].last_error.as_deref().unwrap_or("");
    assert!(error.contains("no answer in time"), "{error}");
}

/// A subscriber to `topic` on `broker` with a session the broker keeps
/// (across its restart too): every run it is sent, by uid, in order.
/// A subscriber to `topic` (the runs' uids) and to the station's status
/// beside it (each status message's `state`).
struct Subscriber {
    runs: tokio::sync::mpsc::UnboundedReceiver<Uuid>,
    states: tokio::sync::mpsc::UnboundedReceiver<String>,
    subscribed: tokio::sync::mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

fn mqtt_subscriber(broker: &testkit::mqtt::Broker, topic: &str) -> Subscriber {
    use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
    let mut options = MqttOptions::new("test-subscriber", "127.0.0.1", broker.port());
    options
        .set_clean_session(false)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 10);
    let (runs_tx, runs) = tokio::sync::mpsc::unbounded_channel();
    let (states_tx, states) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::mpsc::unbounded_channel();
    let topic = topic.to_string();
    let status = sink::mqtt::status_topic(&topic);
    let task = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    // Harmless when the session already holds them.
                    let _ = client.try_subscribe(&topic, QoS::AtLeastOnce);
                    let _ = client.try_subscribe(&status, QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(Event::Incoming(Incoming::Publish(publish))) if publish.topic == status => {
                    let state: serde_json::Value = serde_json::from_slice(&publish.payload)
                        .unwrap_or_else(|e| panic!("the status is not JSON: {e}"));
                    let _ = states_tx.send(state["state"].as_str().unwrap_or("?").to_string());
                }
                Ok(Event::Incoming(Incoming::Publish(publish))) => {
                    let run: serde_json::Value = serde_json::from_slice(&publish.payload)
                        .unwrap_or_else(|e| panic!("the run is not JSON: {e}"));
                    let uid = run["uid"]
                        .as_str()
                        .and_then(|u| Uuid::parse_str(u).ok())
                        .unwrap_or_else(|| panic!("no uid: {run}"));
                    let _ = runs_tx.send(uid);
                }
                Ok(_) => {}
                // The broker is down: keep trying until it is back.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    Subscriber {
        runs,
        states,
        subscribed,
        task,
    }
}

/// The station status messages until `state` (a minute at most).
async fn until_state(states: &mut tokio::sync::mpsc::UnboundedReceiver<String>, state: &str) {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(60), states.recv()).await {
            Ok(Some(got)) if got == state => return,
            Ok(Some(got)) => seen.push(got),
            _ => panic!("no {state:?} status; saw {seen:?}"),
        }
    }
}

/// The next `n` runs the subscriber gets (a minute at most: not a speed check).
async fn next_runs(runs: &mut tokio::sync::mpsc::UnboundedReceiver<Uuid>, n: usize) -> Vec<Uuid> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(Duration::from_secs(60), runs.recv()).await {
            Ok(Some(uid)) => got.push(uid),
            _ => panic!(
                "timed out waiting for run {} of {n}; got {got:?}",
                got.len() + 1
            ),
        }
    }
    got
}

#[tokio::test]
async fn the_mqtt_sink_publishes_every_run_and_those_finished_while_the_broker_was_down_after_it_is_back()
 {
    let dir = tmp();
    let Some(mut broker) = testkit::mqtt::broker("mqtt sink", dir.path()) else {
        return;
    };
    let topic = "nrf-provd/s1/runs";
    let mut subscriber = mqtt_subscriber(&broker, topic);
    tokio::time::timeout(Duration::from_secs(60), subscriber.subscribed.recv())
        .await
        .unwrap_or_else(|_| panic!("the subscriber never subscribed"));
    let path = dir.path().join("results.db");
    let store = open(&path);
    let mqtt = SinkConfig::Mqtt {
        url: broker.url(),
        topic: topic.into(),
        client_id: "nrf-provd-s1".into(),
        username: None,
        password_file: None,
        timeout: Duration::from_secs(2),
    };
    let delivering = sink::start(outbox(&path), sinks(&[mqtt]), None)
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    // The station says it is there before any run.
    until_state(&mut subscriber.states, "online").await;

    let mut finished = Vec::new();
    for _ in 0..3 {
        finished.push(run(&store, false).await.uid);
    }
    assert_eq!(
        next_runs(&mut subscriber.runs, 3).await,
        finished,
        "each run, in order"
    );
    until("the broker's PUBACKs emptied the outbox", || async {
        backlog(delivering.store()).await[0].owed == 0
    })
    .await;

    broker.stop();
    let mut while_down = Vec::new();
    for _ in 0..2 {
        while_down.push(run(&store, false).await.uid);
    }
    until("the sink failed against the stopped broker", || async {
        backlog(delivering.store()).await[0].retrying >= 1
    })
    .await;
    let owed = delivering
        .store()
        .list(None, false)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        owed.iter().map(|d| d.run_uid).collect::<Vec<_>>(),
        while_down,
        "no PUBACK, so both still owed"
    );
    assert!(
        owed[0].last_error.as_deref().is_some_and(|e| !e.is_empty()),
        "{owed:?}"
    );

    broker
        .resume()
        .unwrap_or_else(|e| panic!("restarting the broker: {e}"));
    until("the outbox emptied once the broker was back", || async {
        backlog(delivering.store()).await[0].owed == 0
    })
    .await;
    // At least once: a publish the stopped broker cut off may come twice.
    let mut after: Vec<Uuid> = Vec::new();
    while after.len() < while_down.len() {
        let uid = next_runs(&mut subscriber.runs, 1).await[0];
        if after.last() != Some(&uid) {
            after.push(uid);
        }
    }
    assert_eq!(after, while_down);
    // Back online after the broker's restart (retained), and offline once
    // the station's connection ends: the broker publishes its last will.
    until_state(&mut subscriber.states, "online").await;
    drop(delivering);
    until_state(&mut subscriber.states, "offline").await;
    subscriber.task.abort();
}
