//! The hand-off to nRF Cloud as two sinks of the one outbox (`cloud-claim`,
//! `cloud-onboard`, schema version 16): an upgraded station's devices still
//! owed a hand-off are owed it, a device's newer run supersedes its owed
//! row, nRF Cloud's answers settle or note the rows where `deliveries`
//! shows them, and retention trims what the hand-off owes and nothing
//! more. A real SQLite file; the hand-off's queues read through
//! `HandoffLedger` as `cloud claim|onboard` read them.

use std::path::Path;
use std::time::Duration;

use nrf_provd_core::ledger::deliveries::{Backlog, SinkId};
use nrf_provd_core::ledger::retention::Retention;
use nrf_provd_core::ledger::{
    DeviceResult, HandoffLedger, HandoffResult, HandoffStep, Ledger, LedgerReader, Outcome,
    QueueFilter, RunId, RunRecord, RunStart, SqliteDeliveries, SqliteHandoff, SqliteLedger, Step,
    StepRecord,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store_records::{SCHEMA_V9, passed, write_as_version_9};

const CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn device(n: u32) -> String {
    format!("50503041-3633-4261-803d-{n:012x}")
}

/// Run `id` of device `n`: passed, collected or failed, with an identity
/// token (claimable), and onboardable when it installed a certificate.
fn record(id: RunId, n: u32, outcome: Outcome, onboardable: bool, at: OffsetDateTime) -> RunRecord {
    let mut record = passed(id, &device(n), at, CERTIFICATE);
    record.uid = Uuid::from_u128(rand::random());
    record.outcome = outcome;
    if onboardable {
        record.steps.push(StepRecord {
            name: Step::Install,
            started_at: at,
            duration: Duration::from_millis(300),
            passed: true,
            attempts: 1,
            detail: "device certificate installed".into(),
        });
    }
    record
}

/// Begin and finish run of device `n` through the ledger, as a station does.
async fn finish(store: &SqliteLedger, n: u32, outcome: Outcome, onboardable: bool) -> RunId {
    let at = OffsetDateTime::now_utc();
    let start = RunStart {
        uid: Uuid::from_u128(rand::random()),
        station_id: "s1".into(),
        port: "/dev/ttyACM0".into(),
        started_at: at,
        trace: Default::default(),
    };
    let id = store
        .begin_run(&start)
        .await
        .unwrap_or_else(|e| panic!("begin: {e}"));
    let mut done = record(id, n, outcome, onboardable, at);
    done.uid = start.uid;
    store
        .finish_run(&done)
        .await
        .unwrap_or_else(|e| panic!("finish: {e}"));
    id
}

fn handoff(path: &Path) -> SqliteHandoff {
    SqliteLedger::open_handoff(path).unwrap_or_else(|e| panic!("open hand-off: {e}"))
}

fn outbox(path: &Path) -> SqliteDeliveries {
    SqliteLedger::open_deliveries(path, false)
        .unwrap_or_else(|e| panic!("open deliveries: {e}"))
        .showing_handoff(true)
}

fn filter(include_collected: bool) -> QueueFilter {
    QueueFilter {
        include_collected,
        limit: 1000,
        ..QueueFilter::default()
    }
}

/// (device number, run) of the claim queue.
async fn claims(h: &SqliteHandoff, include_collected: bool) -> Vec<(u32, RunId)> {
    h.claim_queue(&filter(include_collected))
        .await
        .unwrap_or_else(|e| panic!("claim queue: {e}"))
        .into_iter()
        .map(|c| (number(c.device_uuid), c.run_id))
        .collect()
}

async fn onboardings(h: &SqliteHandoff) -> Vec<(u32, RunId)> {
    h.onboard_queue(&filter(false))
        .await
        .unwrap_or_else(|e| panic!("onboard queue: {e}"))
        .into_iter()
        .map(|c| (number(c.device_uuid), c.run_id))
        .collect()
}

fn number(uuid: Uuid) -> u32 {
    u32::try_from(uuid.as_u128() & 0xffff_ffff).unwrap_or(u32::MAX)
}

/// (sink, run, attempts, last error) of every owed hand-off row.
async fn owed_rows(outbox: &SqliteDeliveries) -> Vec<(String, RunId, u32, Option<String>)> {
    outbox
        .list(None, false)
        .await
        .unwrap_or_else(|e| panic!("list: {e}"))
        .into_iter()
        .filter(|r| r.sink.starts_with("cloud-"))
        .map(|r| (r.sink, r.run_id, r.attempts, r.last_error))
        .collect()
}

async fn answer(h: &SqliteHandoff, step: HandoffStep, n: u32, run: RunId, result: DeviceResult) {
    let result = HandoffResult {
        device_uuid: Uuid::parse_str(&device(n)).unwrap_or_else(|e| panic!("{e}")),
        run_id: run,
        result,
    };
    h.record(step, &[result], OffsetDateTime::now_utc())
        .await
        .unwrap_or_else(|e| panic!("record: {e}"));
}

fn row(
    sink: &str,
    run: RunId,
    attempts: u32,
    error: Option<&str>,
) -> (String, RunId, u32, Option<String>) {
    (sink.into(), run, attempts, error.map(str::to_string))
}

#[tokio::test]
async fn an_upgraded_stations_devices_still_owed_a_hand_off_are_owed_it_after_the_migration() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("v9.db");
    let at = |i: i64| {
        time::macros::datetime!(2024-05-01 10:00 UTC) + Duration::from_secs(60 * i.unsigned_abs())
    };
    // Device 1 claimed and onboarded; device 2 claimed, its onboarding
    // refused twice; device 3 passed twice, never handed off; device 4
    // failed; device 5 collected (claimable, nothing installed).
    let records = [
        record(1, 1, Outcome::Passed, true, at(1)),
        record(2, 2, Outcome::Passed, true, at(2)),
        record(3, 3, Outcome::Passed, true, at(3)),
        record(4, 3, Outcome::Passed, true, at(4)),
        record(5, 4, Outcome::Failed, true, at(5)),
        record(6, 5, Outcome::Collected, false, at(6)),
    ];
    {
        let conn = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        for migration in SCHEMA_V9 {
            conn.execute_batch(migration)
                .unwrap_or_else(|e| panic!("v9 schema: {e}"));
        }
        conn.pragma_update(None, "user_version", 9)
            .unwrap_or_else(|e| panic!("{e}"));
        for r in &records {
            write_as_version_9(&conn, r, &format!("{:032x}", r.id));
        }
        conn.execute_batch(&format!(
            "INSERT INTO handoff (device_uuid, run_id, claimed_at, onboarded_at, attempts, updated_at)
                 VALUES ('{d1}', 1, '2024-05-02T00:00:00.000000Z', '2024-05-02T00:00:00.000000Z',
                         2, '2024-05-02T00:00:00.000000Z');
             INSERT INTO handoff (device_uuid, run_id, claimed_at, last_error, error_step, error_at,
                                  attempts, updated_at)
                 VALUES ('{d2}', 2, '2024-05-02T00:00:00.000000Z', 'no such sub type', 'onboard',
                         '2024-05-02T00:00:00.000000Z', 3, '2024-05-02T00:00:00.000000Z');",
            d1 = device(1),
            d2 = device(2),
        ))
        .unwrap_or_else(|e| panic!("v9 hand-off: {e}"));
    }

    drop(SqliteLedger::open(&path).unwrap_or_else(|e| panic!("open and migrate: {e}")));
    let h = handoff(&path);
    assert_eq!(claims(&h, false).await, [(3, 4)], "device 3's latest pass");
    assert_eq!(
        claims(&h, true).await,
        [(3, 4), (5, 6)],
        "and the collected device when asked"
    );
    assert_eq!(
        onboardings(&h).await,
        [(2, 2), (3, 4)],
        "device 2 (claimed, refused) and device 3"
    );
    assert_eq!(
        owed_rows(&outbox(&path)).await,
        [
            row("cloud-claim", 4, 0, None),
            row("cloud-claim", 6, 0, None),
            row("cloud-onboard", 2, 3, Some("no such sub type")),
            row("cloud-onboard", 4, 0, None),
        ],
        "owed as the derived queues gave them, with the refusal kept"
    );
}

#[tokio::test]
async fn a_newer_run_of_a_device_supersedes_its_owed_row_and_nrf_clouds_answer_settles_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("results.db");
    let store = SqliteLedger::open(&path).unwrap_or_else(|e| panic!("open: {e}"));
    let h = handoff(&path);
    let outbox = outbox(&path);

    let first = finish(&store, 1, Outcome::Passed, true).await;
    assert_eq!(claims(&h, false).await, [(1, first)]);
    let second = finish(&store, 1, Outcome::Passed, true).await;
    assert_eq!(claims(&h, false).await, [(1, second)], "the newer pass");
    let collected = finish(&store, 1, Outcome::Collected, false).await;
    let failed = finish(&store, 1, Outcome::Failed, true).await;
    assert!(failed > collected);
    assert_eq!(claims(&h, false).await, [(1, second)], "passes only");
    assert_eq!(
        claims(&h, true).await,
        [(1, collected)],
        "the newer collected run"
    );
    assert_eq!(onboardings(&h).await, [(1, second)]);
    assert_eq!(
        owed_rows(&outbox).await,
        [
            row("cloud-claim", second, 0, None),
            row("cloud-claim", collected, 0, None),
            row("cloud-onboard", second, 0, None),
        ],
        "one row per device and kind of run: the older pass is owed nothing"
    );

    // nRF Cloud claims the device: nothing more is owed for claims, not
    // even for a later pass; onboarding supersedes as before.
    answer(&h, HandoffStep::Claim, 1, collected, DeviceResult::Done).await;
    let third = finish(&store, 1, Outcome::Passed, true).await;
    assert_eq!(claims(&h, true).await, []);
    assert_eq!(outbox.owed(SinkId::CLOUD_CLAIM).await.ok(), Some(0));
    assert_eq!(onboardings(&h).await, [(1, third)]);

    // A refusal keeps the device owed, visible with nRF Cloud's words;
    // the pages the station serves do not list the hand-off.
    answer(
        &h,
        HandoffStep::Onboard,
        1,
        third,
        DeviceResult::Refused("no such sub type".into()),
    )
    .await;
    assert_eq!(
        owed_rows(&outbox).await,
        [row("cloud-onboard", third, 1, Some("no such sub type"))]
    );
    let shown: Vec<Backlog> = outbox
        .backlog()
        .await
        .unwrap_or_else(|e| panic!("backlog: {e}"));
    let onboard = shown
        .iter()
        .find(|b| b.sink == "cloud-onboard")
        .unwrap_or_else(|| panic!("no cloud-onboard in {shown:?}"));
    assert_eq!((onboard.owed, onboard.retrying, onboard.dead), (1, 1, 0));
    let watched = SqliteLedger::open_deliveries(&path, true)
        .unwrap_or_else(|e| panic!("{e}"))
        .backlog()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        watched.iter().all(|b| !b.sink.starts_with("cloud-")),
        "{watched:?}"
    );
    answer(&h, HandoffStep::Onboard, 1, third, DeviceResult::Done).await;
    assert_eq!(owed_rows(&outbox).await, []);
    assert_eq!(onboardings(&h).await, []);
}

#[tokio::test]
async fn a_pass_a_line_amends_to_failed_gives_the_device_back_its_previous_pass() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("results.db");
    let store = SqliteLedger::open(&path).unwrap_or_else(|e| panic!("open: {e}"));
    let h = handoff(&path);
    let first = finish(&store, 7, Outcome::Passed, true).await;
    let second = finish(&store, 7, Outcome::Passed, true).await;
    assert_eq!(claims(&h, false).await, [(7, second)]);
    // As the line's forwarder amends a run whose nonce another station
    // claimed first (`ledger::sqlite::line`).
    rusqlite::Connection::open(&path)
        .and_then(|c| {
            c.execute(
                "UPDATE runs SET outcome = 'failed', reason_code = 'conflict' WHERE id = ?1",
                [second],
            )
        })
        .unwrap_or_else(|e| panic!("amend: {e}"));
    assert_eq!(
        claims(&h, false).await,
        [(7, first)],
        "never the amended run"
    );
    assert_eq!(onboardings(&h).await, [(7, first)]);
}

#[tokio::test]
async fn retention_trims_the_runs_the_hand_off_owes_and_compacts_the_rest_as_before() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("results.db");
    let store = SqliteLedger::open(&path).unwrap_or_else(|e| panic!("open: {e}"));
    let h = handoff(&path);
    // Device 1: an older pass (compacted) and its latest (trimmed).
    let p1 = finish(&store, 1, Outcome::Passed, true).await;
    let p2 = finish(&store, 1, Outcome::Passed, true).await;
    // Device 2: a pass, then a newer collected run: both may be sent.
    let q1 = finish(&store, 2, Outcome::Passed, true).await;
    let q2 = finish(&store, 2, Outcome::Collected, false).await;
    // Device 3, claimed and onboarded: its latest pass is trimmed (the
    // exports read it), the older one compacted.
    let r1 = finish(&store, 3, Outcome::Passed, true).await;
    let r2 = finish(&store, 3, Outcome::Passed, true).await;
    answer(&h, HandoffStep::Claim, 3, r2, DeviceResult::Done).await;
    answer(&h, HandoffStep::Onboard, 3, r2, DeviceResult::Done).await;
    // Device 4: failed.
    let s1 = finish(&store, 4, Outcome::Failed, true).await;

    let retention = SqliteLedger::open_retention(&path).unwrap_or_else(|e| panic!("{e}"));
    let policy = Retention {
        keep_full: Duration::from_secs(3600),
        on_line: false,
    };
    let later = OffsetDateTime::now_utc() + time::Duration::days(1);
    let plan = retention
        .plan(policy, later)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (plan.compact.runs, plan.trim.runs, plan.owed_to_sink.runs),
        (3, 4, 0),
        "{plan:?}"
    );
    let before = (claims(&h, true).await, onboardings(&h).await);
    let done = retention
        .compact(policy, later)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((done.runs, done.trimmed), (3, 4), "{done:?}");
    for id in [p1, r1, s1] {
        let run = store
            .run(id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("run {id}"));
        assert!(run.tokens.is_empty(), "run {id} compacted");
    }
    for id in [p2, q1, q2, r2] {
        let run = store
            .run(id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("run {id}"));
        assert_eq!(
            run.tokens.len(),
            1,
            "run {id} trimmed to its identity token"
        );
        assert!(run.compacted_at.is_some());
    }
    // The trimmed payloads written again owe nothing anew: the queues are
    // what they were, and a second pass has nothing to do.
    assert_eq!((claims(&h, true).await, onboardings(&h).await), before);
    assert_eq!(before.0, [(1, p2), (2, q2)]);
    let again = retention
        .compact(policy, later)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((again.runs, again.trimmed), (0, 0));
}
