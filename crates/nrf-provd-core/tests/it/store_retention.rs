//! Retention: old runs lose their payload once nothing downstream needs it;
//! their rows and claims stay (a real database file, real sinks' outbox).

use std::path::Path;
use std::time::Duration;

use nrf_provd_core::ledger::deliveries::SinkId;
use nrf_provd_core::ledger::retention::{Count, PrunePlan, Retention};
use nrf_provd_core::ledger::{
    Claim, ClaimKind, ClaimOutcome, DeviceInfo, Ledger, LedgerReader, Outcome, RunId, RunRecord,
    RunStart, SqliteDeliveries, SqliteLedger, SqliteRetention,
};
use nrf_provd_core::record::{TokenRecord, Traceability};
use nrf91_token::TokenKind;
use time::OffsetDateTime;
use uuid::Uuid;

const NINETY_DAYS: Duration = Duration::from_secs(90 * 24 * 3600);

fn policy() -> Retention {
    Retention {
        keep_full: NINETY_DAYS,
        on_line: false,
    }
}

/// A moment when every run recorded now is older than `keep_full`.
fn in_91_days() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(91)
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn open(path: &Path) -> SqliteLedger {
    SqliteLedger::open(path).unwrap_or_else(|e| panic!("open: {e}"))
}

fn retention(path: &Path) -> SqliteRetention {
    SqliteLedger::open_retention(path).unwrap_or_else(|e| panic!("open retention: {e}"))
}

fn outbox(path: &Path) -> SqliteDeliveries {
    SqliteLedger::open_deliveries(path, false).unwrap_or_else(|e| panic!("open deliveries: {e}"))
}

/// A finished run of `device` with a JWT token of `jti` (claimed by the
/// run) whose text is `bulk` bytes that do not compress.
async fn run(
    store: &SqliteLedger,
    device: Uuid,
    outcome: Outcome,
    jti: &str,
    bulk: usize,
) -> RunId {
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
    let claim = Claim {
        kind: ClaimKind::JwtJti,
        value: jti.into(),
        at: OffsetDateTime::now_utc(),
    };
    assert_eq!(
        store
            .claim(id, &claim)
            .await
            .unwrap_or_else(|e| panic!("claim: {e}")),
        ClaimOutcome::Fresh
    );
    let text: String = (0..bulk)
        .map(|_| char::from(b'!' + rand::random::<u8>() % 90))
        .collect();
    let record = RunRecord {
        id,
        uid: start.uid,
        station_id: start.station_id,
        port: start.port,
        started_at: start.started_at,
        finished_at: Some(OffsetDateTime::now_utc()),
        outcome,
        failed_step: None,
        reason_code: None,
        reason: None,
        verified_by: None,
        device: DeviceInfo {
            device_uuid: Some(device),
            ..DeviceInfo::default()
        },
        steps: vec![],
        tokens: vec![
            TokenRecord {
                kind: TokenKind::Identity,
                text: format!("identity-token-of-{jti}"),
                authentic: true,
                checks_json: "[]".into(),
            },
            TokenRecord {
                kind: TokenKind::Jwt,
                text,
                authentic: true,
                checks_json: "[]".into(),
            },
        ],
        artifacts: vec![],
        compacted_at: None,
        trace: start.trace,
    };
    store
        .finish_run(&record)
        .await
        .unwrap_or_else(|e| panic!("finish: {e}"));
    id
}

async fn stored(store: &SqliteLedger, id: RunId) -> RunRecord {
    store
        .run(id)
        .await
        .unwrap_or_else(|e| panic!("read: {e}"))
        .unwrap_or_else(|| panic!("run {id} is gone"))
}

#[tokio::test]
async fn old_acknowledged_runs_lose_their_payload_and_the_rest_are_kept_for_their_reason() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    let deliveries = outbox(&path);
    let sinks = deliveries
        .configure(vec!["command a".into()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (Uuid::from_u128(0xa), Uuid::from_u128(0xb));
    let old_pass = run(&store, a, Outcome::Passed, "jti-1", 100).await;
    let owed = run(&store, a, Outcome::Passed, "jti-2", 100).await;
    let latest = run(&store, a, Outcome::Passed, "jti-3", 100).await;
    let failed = run(&store, b, Outcome::Failed, "jti-4", 100).await;
    for id in [old_pass, latest, failed] {
        deliveries
            .acknowledge(sinks[0], id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let retention = retention(&path);

    let young = retention
        .compact(policy(), OffsetDateTime::now_utc())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(young.runs, 0, "nothing is older than keep_full yet");

    let plan = retention
        .plan(policy(), in_91_days())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.compact.runs, 2, "{plan:?}");
    assert!(plan.compact.bytes > 0, "{plan:?}");
    assert_eq!(plan.owed_to_sink.runs, 1, "{plan:?}");
    assert_eq!(plan.trim.runs, 1, "the device's latest pass: {plan:?}");
    assert_eq!(plan.not_forwarded, Count::default());

    let done = retention
        .compact(policy(), in_91_days())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((done.runs, done.trimmed), (2, 1));
    assert!(
        done.bytes > plan.compact.bytes,
        "the trim saved bytes too: {done:?}"
    );
    for id in [old_pass, failed] {
        let record = stored(&store, id).await;
        assert!(record.tokens.is_empty(), "run {id} was compacted");
        assert!(
            record.compacted_at.is_some(),
            "run {id} says it was compacted"
        );
        assert!(record.device.device_uuid.is_some(), "its identity stays");
        assert_eq!(record.trace.work_order.as_deref(), Some("WO-7"));
    }
    let kept = stored(&store, owed).await;
    assert_eq!(kept.tokens.len(), 2, "the owed run is kept in full");
    assert!(kept.compacted_at.is_none());
    // The latest pass keeps what exports read: its identity token, which
    // attest-csv still gives; the bulky JWT went.
    let trimmed = stored(&store, latest).await;
    assert!(trimmed.compacted_at.is_some());
    assert_eq!(
        trimmed
            .tokens
            .iter()
            .map(|t| (t.kind, t.text.as_str()))
            .collect::<Vec<_>>(),
        vec![(TokenKind::Identity, "identity-token-of-jti-3")]
    );
    let rows = nrf_provd_core::ledger::export::attest_rows(std::slice::from_ref(&trimmed));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][2], "identity-token-of-jti-3");

    // Once the sink has it, the owed run goes too; the latest pass stays
    // trimmed, and nothing is left to do.
    deliveries
        .acknowledge(sinks[0], owed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let done = retention
        .compact(policy(), in_91_days())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((done.runs, done.trimmed), (1, 0));
    assert!(stored(&store, owed).await.tokens.is_empty());
    assert_eq!(stored(&store, latest).await.tokens.len(), 1);
    assert_eq!(
        retention
            .plan(policy(), in_91_days())
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        PrunePlan::default()
    );

    // A newer pass of the device: the trimmed one is no longer the latest
    // and goes entirely.
    let newer = run(&store, a, Outcome::Passed, "jti-5", 100).await;
    deliveries
        .acknowledge(sinks[0], newer)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let done = retention
        .compact(policy(), in_91_days())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((done.runs, done.trimmed), (1, 1), "{done:?}");
    assert!(stored(&store, latest).await.tokens.is_empty());
    assert_eq!(stored(&store, newer).await.tokens.len(), 1);
}

#[tokio::test]
async fn a_replayed_jti_of_a_compacted_run_still_fails_replay() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    let device = Uuid::from_u128(0xc);
    let first = run(&store, device, Outcome::Failed, "jti-replayed", 100).await;
    run(&store, device, Outcome::Passed, "jti-other", 100).await;
    let done = retention(&path)
        .compact(policy(), in_91_days())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.runs, 1);
    assert!(stored(&store, first).await.compacted_at.is_some());

    let start = RunStart {
        uid: Uuid::from_u128(rand::random()),
        station_id: "s1".into(),
        port: "/dev/ttyACM1".into(),
        started_at: OffsetDateTime::now_utc(),
        trace: Traceability::default(),
    };
    let again = store
        .begin_run(&start)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let replayed = Claim {
        kind: ClaimKind::JwtJti,
        value: "jti-replayed".into(),
        at: OffsetDateTime::now_utc(),
    };
    assert_eq!(
        store
            .claim(again, &replayed)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ClaimOutcome::Replay { first_run: first }
    );
}

fn pages(path: &Path) -> (i64, i64) {
    let conn = rusqlite::Connection::open(path).unwrap_or_else(|e| panic!("{e}"));
    let count = |pragma: &str| -> i64 {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{pragma}: {e}"))
    };
    (count("page_count"), count("freelist_count"))
}

#[tokio::test]
async fn compaction_returns_the_freed_pages_to_the_file() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    let device = Uuid::from_u128(0xd);
    for n in 0..200 {
        run(&store, device, Outcome::Failed, &format!("jti-{n}"), 8000).await;
    }
    let (before, _) = pages(&path);
    let done = retention(&path)
        .compact(policy(), in_91_days())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.runs, 200);
    assert!(done.pages_freed > 0, "{done:?}");
    let (after, free) = pages(&path);
    assert_eq!(free, 0, "every free page was returned");
    assert!(
        after < before / 2,
        "the payloads' pages left the file: {before} -> {after} pages"
    );
}

#[tokio::test]
async fn a_run_owed_only_to_the_line_keeps_its_payload_on_a_line_and_not_on_a_station_alone() {
    let dir = tmp();
    let path = dir.path().join("results.db");
    let store = open(&path);
    // Failed: neither a device's latest pass nor the hand-off's, so only
    // the line can keep it. Every finished run is owed to the line.
    let id = run(
        &store,
        Uuid::from_u128(7),
        Outcome::Failed,
        "jti-line",
        4096,
    )
    .await;
    let retention = retention(&path);
    let on_line = Retention {
        on_line: true,
        ..policy()
    };
    let plan = |policy| {
        let retention = retention.clone();
        async move {
            retention
                .plan(policy, in_91_days())
                .await
                .unwrap_or_else(|e| panic!("plan: {e}"))
        }
    };
    let (line, alone) = (plan(on_line).await, plan(policy()).await);
    assert_eq!((line.not_forwarded.runs, line.compact.runs), (1, 0));
    assert_eq!((alone.not_forwarded.runs, alone.compact.runs), (0, 1));

    let compacted = retention
        .compact(on_line, in_91_days())
        .await
        .unwrap_or_else(|e| panic!("compact: {e}"));
    assert_eq!(compacted.runs, 0, "the line has not had it yet");
    assert!(!stored(&store, id).await.tokens.is_empty());

    // Forwarded: nothing keeps it any more.
    outbox(&path)
        .acknowledge_all(SinkId::LINE, vec![id])
        .await
        .unwrap_or_else(|e| panic!("acknowledge: {e}"));
    let compacted = retention
        .compact(on_line, in_91_days())
        .await
        .unwrap_or_else(|e| panic!("compact: {e}"));
    assert_eq!(compacted.runs, 1);
    assert!(stored(&store, id).await.tokens.is_empty());
}
