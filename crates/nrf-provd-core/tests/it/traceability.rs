//! Traceability (issue 22, point 1): the work order, lot, operator, product
//! and fixture of every run, in the SQLite ledger, its filters, exports and
//! summary; shift changes recorded old → new.

use std::path::Path;

use nrf_provd_core::ledger::export;
use nrf_provd_core::ledger::{
    Ledger, LedgerReader, MemoryLedger, Outcome, ReasonCode, RunFilter, RunRecord, RunStart, Shift,
    ShiftChange, ShiftOnRecord, SqliteLedger, Summary, Traceability,
};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

fn open(path: &Path) -> SqliteLedger {
    SqliteLedger::open(path).unwrap_or_else(|e| panic!("open: {e}"))
}

fn trace(work_order: Option<&str>) -> Traceability {
    Traceability {
        work_order: work_order.map(str::to_string),
        lot: Some("LOT-7".into()),
        operator: Some("ana".into()),
        product: Some("ACME-TRACKER rev C".into()),
        fixture: Some("F01".into()),
    }
}

/// Begin and finish a run under `trace` with `outcome`.
async fn run(ledger: &dyn Ledger, n: u128, trace: Traceability, outcome: Outcome) -> RunRecord {
    let at = datetime!(2026-12-07 08:00 UTC) + time::Duration::minutes(n as i64);
    let start = RunStart {
        uid: Uuid::from_u128(n + 1),
        station_id: "s1".into(),
        port: "/dev/nrf91/by-fixture/01".into(),
        started_at: at,
        trace,
    };
    let id = ledger
        .begin_run(&start)
        .await
        .unwrap_or_else(|e| panic!("begin: {e}"));
    let mut record = RunRecord::begun(id, &start);
    record.finished_at = Some(at + time::Duration::seconds(3));
    match outcome {
        Outcome::Failed => record.fail(Outcome::Failed, None, ReasonCode::Timeout, "slow"),
        other => record.outcome = other,
    }
    ledger
        .finish_run(&record)
        .await
        .unwrap_or_else(|e| panic!("finish: {e}"));
    record
}

async fn runs(reader: &dyn LedgerReader, filter: RunFilter) -> Vec<RunRecord> {
    reader
        .runs(&filter)
        .await
        .unwrap_or_else(|e| panic!("runs: {e}"))
}

#[tokio::test]
async fn a_record_carries_its_traceability_at_the_top_level_and_null_when_unset() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("results.db");
    let ledger = open(&path);
    let traced = run(&ledger, 0, trace(Some("WO-1234")), Outcome::Passed).await;
    run(&ledger, 1, Traceability::default(), Outcome::Passed).await;
    drop(ledger);

    // Read back by another process's view, after a reopen.
    let reader = SqliteLedger::open_read_only(&path).unwrap_or_else(|e| panic!("{e}"));
    let all = runs(&reader, RunFilter::default()).await;
    assert_eq!(all[0].trace, traced.trace);
    assert_eq!(all[1].trace, Traceability::default());

    let json: Vec<serde_json::Value> = serde_json::from_slice(&{
        let mut out = Vec::new();
        export::json(&all, &mut out).unwrap_or_else(|e| panic!("{e}"));
        out
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json[0]["work_order"], "WO-1234");
    assert_eq!(json[0]["lot"], "LOT-7");
    assert_eq!(json[0]["operator"], "ana");
    assert_eq!(json[0]["product"], "ACME-TRACKER rev C");
    assert_eq!(json[0]["fixture"], "F01");
    for key in ["work_order", "lot", "operator", "product", "fixture"] {
        assert!(json[1][key].is_null(), "{key}: {}", json[1][key]);
    }
    // The viewer's summary carries them too (they are no secret).
    let summary = serde_json::to_value(all[0].summary()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary["work_order"], "WO-1234");
    assert_eq!(summary["fixture"], "F01");
}

#[tokio::test]
async fn runs_are_filtered_by_work_order_in_sqlite_and_in_memory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sqlite = open(&dir.path().join("results.db"));
    let memory = MemoryLedger::new();
    let ledgers: [(&dyn Ledger, &dyn LedgerReader); 2] = [(&sqlite, &sqlite), (&memory, &memory)];
    for (ledger, reader) in ledgers {
        run(ledger, 0, trace(Some("WO-1")), Outcome::Passed).await;
        run(ledger, 1, trace(Some("WO-2")), Outcome::Failed).await;
        run(ledger, 2, trace(Some("WO-1")), Outcome::Failed).await;
        run(ledger, 3, Traceability::default(), Outcome::Passed).await;
        let of = |wo: &str| RunFilter {
            work_order: Some(wo.into()),
            ..RunFilter::default()
        };
        let wo1 = runs(reader, of("WO-1")).await;
        assert_eq!(
            wo1.iter().map(|r| r.uid.as_u128()).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(runs(reader, of("WO-2")).await.len(), 1);
        assert!(runs(reader, of("WO-3")).await.is_empty());
        assert_eq!(runs(reader, RunFilter::default()).await.len(), 4);
    }
}

#[tokio::test]
async fn the_summary_gives_the_yield_per_work_order() {
    let memory = MemoryLedger::new();
    run(&memory, 0, trace(Some("WO-1")), Outcome::Passed).await;
    run(&memory, 1, trace(Some("WO-1")), Outcome::Passed).await;
    run(&memory, 2, trace(Some("WO-1")), Outcome::Failed).await;
    run(&memory, 3, trace(Some("WO-2")), Outcome::Failed).await;
    run(&memory, 4, Traceability::default(), Outcome::Passed).await;
    let summary: Summary = memory
        .summary(&RunFilter::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let of = |wo: Option<&str>| {
        summary
            .work_orders
            .iter()
            .find(|w| w.work_order.as_deref() == wo)
            .unwrap_or_else(|| panic!("no row for {wo:?}: {:?}", summary.work_orders))
    };
    assert_eq!(of(Some("WO-1")).counts.seen, 3);
    assert_eq!(of(Some("WO-1")).counts.passed, 2);
    assert!((of(Some("WO-1")).yield_.unwrap_or(0.0) - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(of(Some("WO-2")).yield_, Some(0.0));
    assert_eq!(of(None).counts.seen, 1);
    // Runs without a work order come last.
    assert_eq!(
        summary.work_orders.last().map(|w| w.work_order.clone()),
        Some(None)
    );
    let mut table = Vec::new();
    summary
        .write_table(&mut table)
        .unwrap_or_else(|e| panic!("{e}"));
    let table = String::from_utf8_lossy(&table);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("WO-1") && l.ends_with("66.7%")),
        "{table}"
    );
}

#[tokio::test]
async fn csv_and_table_carry_the_fields_and_a_formula_stays_text() {
    let memory = MemoryLedger::new();
    let mut hostile = trace(Some("=HYPERLINK(\"http://x\")"));
    hostile.operator = Some("@ana".into());
    run(&memory, 0, hostile, Outcome::Passed).await;
    let all = runs(&memory, RunFilter::default()).await;

    let mut out = Vec::new();
    export::csv(&all, &mut out).unwrap_or_else(|e| panic!("{e}"));
    let mut reader = csv::Reader::from_reader(out.as_slice());
    let header = reader.headers().unwrap_or_else(|e| panic!("{e}")).clone();
    let row = reader
        .records()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no row"));
    let cell = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .and_then(|i| row.get(i))
            .unwrap_or_else(|| panic!("no column {name}"))
            .to_string()
    };
    assert_eq!(cell("work_order"), "'=HYPERLINK(\"http://x\")");
    assert_eq!(cell("operator"), "'@ana");
    assert_eq!(cell("lot"), "LOT-7");
    assert_eq!(cell("product"), "ACME-TRACKER rev C");
    assert_eq!(cell("fixture"), "F01");

    let mut table = Vec::new();
    export::table(&all, &mut table).unwrap_or_else(|e| panic!("{e}"));
    let table = String::from_utf8_lossy(&table);
    assert!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("WORK ORDER")),
        "{table}"
    );
    assert!(table.contains("=HYPERLINK"), "{table}");
}

#[tokio::test]
async fn shift_changes_are_recorded_old_to_new_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("results.db");
    let ledger = open(&path);
    assert_eq!(
        ledger
            .shift_on_record()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ShiftOnRecord::default()
    );
    let first = Shift {
        work_order: Some("WO-1".into()),
        operator: Some("ana".into()),
        ..Shift::default()
    };
    let second = first
        .updated(&Shift {
            work_order: Some("WO-2".into()),
            operator: Some(String::new()),
            ..Shift::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.work_order.as_deref(), Some("WO-2"));
    assert_eq!(second.operator, None, "an empty value clears the field");
    let at = |m: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(m);
    for change in [
        ShiftChange {
            at: at(1),
            by: "operator".into(),
            old: Shift::default(),
            new: first.clone(),
        },
        ShiftChange {
            at: at(2),
            by: "engineer".into(),
            old: first.clone(),
            new: second.clone(),
        },
    ] {
        ledger
            .record_shift_change(&change)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    drop(ledger);
    let ledger = open(&path);
    let on_record = ledger
        .shift_on_record()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(on_record.current, Some(second.clone()));
    assert_eq!(on_record.from_config, None, "no change was the config's");
    drop(ledger);
    let reader = SqliteLedger::open_read_only(&path).unwrap_or_else(|e| panic!("{e}"));
    let history = reader
        .shift_changes(10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].by, "engineer");
    assert_eq!(history[1].at, at(2));
    assert_eq!(history[1].old, first);
    assert_eq!(history[1].new, second);
}

#[test]
fn a_shift_value_with_a_control_character_or_too_long_is_refused() {
    let now = Shift::default();
    let with = |work_order: &str| Shift {
        work_order: Some(work_order.into()),
        ..Shift::default()
    };
    assert_eq!(
        now.updated(&with("  WO-9\n".trim_end()))
            .map(|s| s.work_order),
        Ok(Some("WO-9".into()))
    );
    let err = now.updated(&with("WO\u{1b}[2J")).err().unwrap_or_default();
    assert!(
        err.contains("work_order") && err.contains("U+001B"),
        "{err}"
    );
    assert!(now.updated(&with(&"W".repeat(129))).is_err());
}

/// A finish writes again only what differs from its run's start (an
/// unchanged indexed column is not rewritten: issue 25's pages per cycle),
/// so a record that finishes with other start values must still have them
/// all written, and the per-work-order tally must follow.
#[tokio::test]
async fn a_finish_with_other_start_values_than_its_begin_writes_them_all() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sqlite = open(&dir.path().join("results.db"));
    let at = datetime!(2026-12-07 08:00 UTC);
    let start = RunStart {
        uid: Uuid::from_u128(7),
        station_id: "s1".into(),
        port: "/dev/nrf91/by-fixture/01".into(),
        started_at: at,
        trace: trace(Some("WO-1")),
    };
    let id = sqlite
        .begin_run(&start)
        .await
        .unwrap_or_else(|e| panic!("begin: {e}"));
    let mut record = RunRecord::begun(id, &start);
    record.station_id = "s2".into();
    record.port = "/dev/nrf91/by-fixture/02".into();
    record.started_at = at + time::Duration::seconds(1);
    record.trace = Traceability {
        work_order: Some("WO-2".into()),
        lot: None,
        operator: Some("ben".into()),
        product: Some("ACME-TRACKER rev D".into()),
        fixture: Some("F02".into()),
    };
    record.device.device_uuid = Some(Uuid::from_u128(0xd));
    record.finished_at = Some(at + time::Duration::seconds(3));
    record.outcome = Outcome::Passed;
    sqlite
        .finish_run(&record)
        .await
        .unwrap_or_else(|e| panic!("finish: {e}"));
    let stored = runs(&sqlite, RunFilter::default()).await;
    assert_eq!(stored.len(), 1);
    let stored = &stored[0];
    assert_eq!(
        (
            stored.station_id.as_str(),
            stored.port.as_str(),
            stored.started_at,
            stored.device.device_uuid
        ),
        (
            "s2",
            "/dev/nrf91/by-fixture/02",
            record.started_at,
            record.device.device_uuid
        )
    );
    assert_eq!(stored.trace, record.trace);
    let summary = sqlite
        .summary(&RunFilter::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let orders: Vec<_> = summary
        .work_orders
        .iter()
        .map(|w| (w.work_order.clone(), w.counts.seen, w.counts.passed))
        .collect();
    assert_eq!(orders, vec![(Some("WO-2".to_string()), 1, 1)]);
}
