//! The line's shared ledger as a sink of the one outbox (`deliveries`, the
//! line sink): an upgraded station's owed runs reach the line, a station
//! alone keeps its runs for a line it may join, a run the line refuses for
//! its data is a dead letter until retried, and the line and the other
//! sinks never hold each other back. A real SQLite file, a throwaway
//! PostgreSQL, a real program as the other sink.

use crate::sink_outbox::until;
use std::path::Path;
use std::time::Duration;

use nrf_provd_core::ledger::deliveries::{Backlog, LINE_SINK, SinkId};
use nrf_provd_core::ledger::line::ForwardSettings;
use nrf_provd_core::ledger::{
    Ledger, LedgerMode, LedgerReader, LineLedger, Outcome, RunFilter, RunRecord, RunStart,
    SqliteDeliveries, SqliteLedger,
};
use nrf_provd_core::sink::{self, SinkConfig};
use testkit::pg::{PgCluster, cluster};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store_records::{SCHEMA_V9, passed, write_as_version_9};

fn line(pg: &PgCluster, local: SqliteLedger) -> LineLedger {
    LineLedger::new(
        local,
        pg.ledger(),
        LedgerMode::Deferred,
        "A",
        Duration::from_secs(60),
    )
}

fn outbox(path: &Path) -> SqliteDeliveries {
    SqliteLedger::open_deliveries(path, false).expect("open the outbox")
}

/// A passed run of a device of its own, finished now.
async fn finish(ledger: &dyn Ledger, port: &str) -> RunRecord {
    let start = RunStart {
        uid: Uuid::from_u128(rand::random()),
        station_id: "A".into(),
        port: port.into(),
        started_at: OffsetDateTime::now_utc(),
        trace: Default::default(),
    };
    let id = ledger.begin_run(&start).await.expect("begin");
    let mut record = RunRecord::begun(id, &start);
    record.outcome = Outcome::Passed;
    record.device.device_uuid = Some(Uuid::from_u128(rand::random()));
    record.finished_at = Some(OffsetDateTime::now_utc());
    ledger.finish_run(&record).await.expect("finish");
    record
}

/// The uids the line holds, oldest first (none while it is down).
async fn on_the_line(pg: &PgCluster) -> Vec<Uuid> {
    pg.ledger()
        .runs(&RunFilter::default())
        .await
        .map(|runs| runs.iter().map(|r| r.uid).collect())
        .unwrap_or_default()
}

async fn backlog_of(outbox: &SqliteDeliveries, sink: &str) -> Option<Backlog> {
    outbox
        .backlog()
        .await
        .expect("backlog")
        .into_iter()
        .find(|b| b.sink == sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_stations_runs_still_owed_to_the_line_reach_it_and_no_others() {
    let Some(pg) = cluster("an_upgraded_stations_runs_still_owed_to_the_line") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("v9.db");
    let base = time::macros::datetime!(2024-05-01 10:00 UTC);
    let records: Vec<RunRecord> = (1..=5i64)
        .map(|i| {
            let at = base + Duration::from_secs(60 * u64::try_from(i).expect("small"));
            let device = format!("50503041-3633-4261-803d-{i:012x}");
            passed(i, &device, at, "")
        })
        .collect();
    {
        // A station of version 9 that forwarded runs 1 and 3; run 4 was
        // set aside by a refusal (tried again at the forwarder's start).
        let conn = rusqlite::Connection::open(&path).expect("open v9");
        for migration in SCHEMA_V9 {
            conn.execute_batch(migration).expect("v9 schema");
        }
        conn.pragma_update(None, "user_version", 9).expect("v9");
        for record in &records {
            write_as_version_9(&conn, record, &format!("{:032x}", record.id));
        }
        conn.execute_batch(
            "INSERT INTO outbox (run_id, queued_at) VALUES
                 (2, '2024-05-01T10:02:13.000000Z'), (5, '2024-05-01T10:05:13.000000Z');
             INSERT INTO outbox (run_id, queued_at, attempts, last_error)
                 VALUES (4, '2024-05-01T10:04:13.000000Z', 1, 'refused');",
        )
        .expect("v9 outbox");
    }

    let local = SqliteLedger::open(&path).expect("open and migrate");
    assert_eq!(
        local
            .outbox()
            .expect("outbox")
            .owed(SinkId::LINE)
            .await
            .expect("owed"),
        3,
        "the old outbox is owed to the line"
    );
    let a = line(&pg, local);
    assert_eq!(a.forward_now(10).await.expect("forward"), 3);
    let owed = [&records[1], &records[3], &records[4]].map(|r| r.uid);
    assert_eq!(on_the_line(&pg).await, owed.to_vec());
    assert_eq!(
        outbox(&path).owed(SinkId::LINE).await.expect("owed"),
        0,
        "the line has them all"
    );
    assert_eq!(a.forward_now(10).await.expect("again"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_alone_keeps_every_run_for_a_line_it_joins_later_and_a_sink_added_later_starts_after_it()
 {
    let Some(pg) = cluster("a_station_alone_keeps_every_run_for_a_line") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("results.db");
    let alone = SqliteLedger::open(&path).expect("open");
    let mut uids = Vec::new();
    for _ in 0..3 {
        uids.push(finish(&alone, "/dev/ttyA0").await.uid);
    }
    // A `[[sink]]` configured later owes only the runs after it.
    let outbox = outbox(&path);
    outbox
        .configure(vec!["command cat".into()])
        .await
        .expect("configure");
    outbox.configure_line(false).await.expect("no line");
    for _ in 0..2 {
        uids.push(finish(&alone, "/dev/ttyA0").await.uid);
    }
    assert_eq!(outbox.kept_for_line().await.expect("kept"), Some(5));
    let shown = outbox.backlog().await.expect("backlog");
    assert_eq!(
        shown
            .iter()
            .map(|b| (b.sink.as_str(), b.owed))
            .collect::<Vec<_>>(),
        [("command cat", 2)],
        "the line a station alone keeps runs for is no stuck sink"
    );

    // Joined to the line: its whole history goes.
    let a = line(&pg, alone);
    assert_eq!(a.forward_now(2).await.expect("forward"), 5);
    assert_eq!(on_the_line(&pg).await, uids);
    assert_eq!(outbox.kept_for_line().await.expect("kept"), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_the_line_refuses_for_its_data_is_a_dead_letter_with_the_answer_until_retried() {
    let Some(pg) = cluster("a_run_the_line_refuses_for_its_data_is_a_dead_letter") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("results.db");
    let a = line(&pg, SqliteLedger::open(&path).expect("open"));
    a.central().connect().await.expect("the line's schema");
    // The line's administrator refuses a port name: a data error, which
    // no retry will clear.
    let client = pg.client().await;
    client
        .batch_execute(
            "ALTER TABLE runs ADD CONSTRAINT no_refused_port CHECK (port <> '/dev/refused')",
        )
        .await
        .expect("constraint");
    let outbox = outbox(&path);
    outbox.configure_line(true).await.expect("on a line");
    let first = finish(&a, "/dev/ttyA0").await;
    let refused = finish(&a, "/dev/refused").await;
    let last = finish(&a, "/dev/ttyA0").await;

    // The runs around it go on.
    assert_eq!(a.forward_now(10).await.expect("forward"), 2);
    assert_eq!(on_the_line(&pg).await, [first.uid, last.uid]);
    let dead = outbox
        .list(Some(LINE_SINK.into()), true)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].run_uid, refused.uid);
    let answer = dead[0].last_error.clone().unwrap_or_default();
    assert!(answer.contains("no_refused_port"), "{answer}");
    let line_backlog = backlog_of(&outbox, LINE_SINK)
        .await
        .expect("the line is shown");
    assert_eq!((line_backlog.owed, line_backlog.dead), (1, 1));
    // A dead letter is not tried again by itself.
    assert_eq!(a.forward_now(10).await.expect("again"), 0);

    // Fixed on the server, retried by hand (`deliveries --retry RUN`).
    client
        .batch_execute("ALTER TABLE runs DROP CONSTRAINT no_refused_port")
        .await
        .expect("drop constraint");
    assert_eq!(
        outbox
            .retry_now(Some(LINE_SINK.into()), Some(refused.id))
            .await
            .expect("retry"),
        1
    );
    assert_eq!(a.forward_now(10).await.expect("forward the retry"), 1);
    // The line lists its runs by when they ran.
    assert_eq!(on_the_line(&pg).await, [first.uid, refused.uid, last.uid]);
    assert_eq!(outbox.owed(SinkId::LINE).await.expect("owed"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_down_holds_back_no_other_sink_and_a_sink_down_holds_back_no_line() {
    let Some(mut pg) = cluster("the_line_down_holds_back_no_other_sink") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("results.db");
    let received = dir.path().join("received");
    let a = line(&pg, SqliteLedger::open(&path).expect("open"));
    let outbox = outbox(&path);
    outbox.configure_line(true).await.expect("on a line");
    let command = |script: String| SinkConfig::Command {
        run: vec!["sh".into(), "-c".into(), script],
        timeout: Duration::from_secs(10),
    };
    let working = command(format!(
        "cat >> '{}'; echo >> '{}'",
        received.display(),
        received.display()
    ));
    let failing = command("cat > /dev/null; exit 1".into());
    let sinks = vec![failing.clone(), working];
    let _delivering = sink::start(
        SqliteLedger::open_deliveries(&path, false).expect("outbox"),
        sinks,
        None,
    )
    .await
    .expect("start the sinks");

    // The line down: the working sink has every run all the same.
    pg.kill();
    a.start_forwarding(ForwardSettings {
        batch_size: 10,
        interval: Duration::from_millis(200),
    });
    let mut uids = Vec::new();
    for _ in 0..3 {
        uids.push(finish(&a, "/dev/ttyA0").await.uid);
    }
    until("the working sink has every run", || async {
        let text = std::fs::read_to_string(&received).unwrap_or_default();
        uids.iter().all(|u| text.contains(&u.to_string()))
    })
    .await;
    until("the line's runs wait, and say why", || async {
        backlog_of(&outbox, LINE_SINK)
            .await
            .is_some_and(|b| (b.owed, b.retrying) == (3, 3))
    })
    .await;
    let waiting = outbox
        .list(Some(LINE_SINK.into()), false)
        .await
        .expect("list");
    assert!(
        waiting.iter().all(|d| d
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("unreachable"))),
        "{waiting:?}"
    );

    // The line back, a sink still failing: the line has every run.
    pg.restart();
    until("the line has every run", || async {
        on_the_line(&pg).await == uids
    })
    .await;
    let failing = backlog_of(&outbox, &failing.name())
        .await
        .expect("failing sink");
    assert_eq!((failing.owed, failing.dead), (3, 0), "{failing:?}");
    assert_eq!(outbox.owed(SinkId::LINE).await.expect("owed"), 0);
}
