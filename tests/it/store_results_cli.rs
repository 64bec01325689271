//! `nrf-provd results` end to end: reads a database the daemon wrote, in
//! every format, and fails clearly on bad input.

use std::path::Path;
use std::process::{Command, Output};

use nrf_provd_core::ledger::{
    DeviceInfo, Ledger, Outcome, ReasonCode, RunRecord, RunStart, SqliteLedger, Step,
};
use time::macros::datetime;

const DEVICE: &str = "50503041-3633-4261-803d-1e2b8f70111a";

fn results(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nrf-provd"))
        .arg("results")
        .args(args)
        .env_remove("STATE_DIRECTORY")
        .output()
        .unwrap_or_else(|e| panic!("run nrf-provd: {e}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A database with one failed run of DEVICE and one run still in flight.
async fn database(path: &Path) -> SqliteLedger {
    let store = SqliteLedger::open(path).unwrap_or_else(|e| panic!("{e}"));
    let at = datetime!(2024-05-01 10:00 UTC);
    let start = |port: &str| RunStart {
        uid: uuid::Uuid::from_u128(u128::from(port.as_bytes().last().copied().unwrap_or(0))),
        station_id: "s1".into(),
        port: port.into(),
        started_at: at,
        trace: Default::default(),
    };
    let id = store
        .begin_run(&start("/dev/a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .finish_run(&RunRecord {
            id,
            uid: uuid::Uuid::from_u128(u128::from(b'a')),
            station_id: "s1".into(),
            port: "/dev/a".into(),
            started_at: at,
            finished_at: Some(datetime!(2024-05-01 10:00:30 UTC)),
            outcome: Outcome::Failed,
            failed_step: Some(Step::Attest),
            reason_code: Some(ReasonCode::Replay),
            reason: Some("identity token nonce already seen in run 1".into()),
            verified_by: None,
            device: DeviceInfo {
                device_uuid: Some(uuid::Uuid::parse_str(DEVICE).unwrap_or_default()),
                ..Default::default()
            },
            steps: vec![],
            tokens: vec![],
            artifacts: vec![],
            trace: Default::default(),
            compacted_at: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .begin_run(&start("/dev/b"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
}

#[tokio::test]
async fn every_format_reads_a_database_in_use() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("results.db");
    let _daemon = database(&db).await;
    let db = db.to_str().unwrap_or_default();

    let table = results(&["--db", db]);
    assert!(table.status.success(), "{table:?}");
    assert!(stdout(&table).ends_with("2 runs: 0 passed, 1 failed, 0 interrupted, 1 in flight\n"));

    let csv = results(&["--db", db, "--format", "csv", "--device", DEVICE]);
    assert!(csv.status.success(), "{csv:?}");
    let text = stdout(&csv);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("run_id,station_id,port,"));
    assert!(lines[1].contains(",failed,attest,replay,"), "{text}");

    let json = results(&["--db", db, "--format", "json", "--device", DEVICE]);
    let value: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(value[0]["reason_code"], "replay");
    assert_eq!(
        value[0]["reason"],
        "identity token nonce already seen in run 1"
    );

    let json = results(&["--db", db, "--format", "json", "--since", "2024-05-01"]);
    let value: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(value.as_array().map(Vec::len), Some(2));

    let later = results(&[
        "--db",
        db,
        "--format",
        "json",
        "--since",
        "2024-05-01T10:00:01Z",
    ]);
    assert_eq!(stdout(&later).trim(), "[]");

    // No passed runs: Nordic's files are empty (they have no header).
    for format in ["attest-csv", "onboard-csv"] {
        let out = results(&["--db", db, "--format", format]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(stdout(&out), "", "{format}");
    }
}

#[tokio::test]
async fn reading_does_not_recover_runs_in_flight() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("results.db");
    drop(database(&db).await);
    let out = results(&["--db", db.to_str().unwrap_or_default(), "--format", "csv"]);
    assert!(stdout(&out).contains(",in_flight,"), "{}", stdout(&out));
}

#[test]
fn bad_input_exits_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("missing.db");
    let out = results(&["--db", missing.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.db"));
    assert!(!missing.exists());

    let out = results(&["--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));

    let out = results(&["--device", "not-a-uuid"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_database_of_the_previous_release_is_migrated_and_shows_reason_codes() {
    // tests/fixtures/v1-results.db was written by the previous release
    // (schema version 1, reasons as "code: words"): one passed run, one
    // failed at attest (a forged signature), one at keygen (a stall).
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("results.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-results.db"),
        &db,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = results(&["--db", db.to_str().unwrap_or_default(), "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let runs: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    let codes: Vec<&serde_json::Value> = runs
        .as_array()
        .unwrap_or_else(|| panic!("array"))
        .iter()
        .map(|r| &r["reason_code"])
        .collect();
    assert_eq!(
        codes,
        [
            &serde_json::Value::Null,
            &"signature".into(),
            &"timeout".into()
        ]
    );
    assert_eq!(runs[1]["failed_step"], "attest");
    let reason = runs[1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("signature (ES256 signature does not verify"),
        "the code prefix moved to reason_code: {reason}"
    );
    let version: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.pragma_query_value(None, "user_version", |row| row.get(0)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        version,
        nrf_provd_core::ledger::SCHEMA_VERSION as i64,
        "migrated in place to this release's schema"
    );
    // History to forward, should the station join a line: the outbox of
    // version 5, owed to the line sink since version 14.
    let queued: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM deliveries d JOIN sinks s ON s.id = d.sink_id
                 WHERE s.name = 'line'",
                [],
                |row| row.get(0),
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(queued, 3, "every old run is owed to the line");
    // Version 6: hand-off state, none yet; the passed run waits to be
    // handed off (the queue is derived from runs, not copied).
    let handoffs: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM handoff", [], |row| row.get(0)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(handoffs, 0, "nothing handed off yet");
    // Version 7: pins are found by their key (`key_reused`); from version
    // 15 as the `pin` authority's bindings, found by value.
    let pin_index: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM sqlite_master
                 WHERE type = 'index' AND name = 'authority_bindings_by_value'",
                [],
                |row| row.get(0),
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pin_index, 1, "the pins are indexed by key");
    // Version 8: traceability; old runs have none (null at the top level),
    // and the shift's history starts empty.
    for run in runs.as_array().unwrap_or_else(|| panic!("array")) {
        for key in ["work_order", "lot", "operator", "product", "fixture"] {
            assert_eq!(run[key], serde_json::Value::Null, "{key}");
        }
    }
    let changes: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM shift_changes", [], |row| row.get(0)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(changes, 0);
    // Version 9: tallies for counts and the summary, kept from the runs.
    let tallied: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("SELECT SUM(runs) FROM run_tally", [], |row| row.get(0)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tallied, 3, "every old run is tallied");
    // Version 10: each run's steps, tokens and artifacts in one compact
    // payload (what the JSON above read back), the three tables gone.
    let (payloads, tables): (i64, i64) = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.query_row(
                "SELECT (SELECT COUNT(*) FROM run_payloads),
                        (SELECT COUNT(*) FROM sqlite_master
                          WHERE name IN ('steps', 'tokens', 'artifacts'))",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((payloads, tables), (3, 0));
    assert!(
        runs.as_array()
            .unwrap_or_else(|| panic!("array"))
            .iter()
            .all(|r| !r["steps"].as_array().is_none_or(Vec::is_empty)),
        "every old run keeps its steps"
    );
    // The sinks' outbox (issue 22's migration, version 11): no sink was
    // configured, so the old runs owe none but the line and (version 16)
    // the hand-off, which its passed device was owed before too.
    let owed: Vec<(String, i64)> = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.prepare(
                "SELECT s.name, d.run_id FROM deliveries d JOIN sinks s ON s.id = d.sink_id
                 WHERE s.name <> 'line' ORDER BY s.id DESC",
            )?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        owed,
        [
            ("cloud-claim".to_string(), 1),
            ("cloud-onboard".to_string(), 1)
        ],
        "history owes no configured sink; the hand-off its passed device"
    );
    // Retention (version 12): a migrated run is kept in full.
    assert!(
        runs.as_array()
            .unwrap_or_else(|| panic!("array"))
            .iter()
            .all(|r| r.get("compacted_at").is_none()),
        "no old run reads as compacted"
    );
    // Version 13 adds a trigger only (amended runs owed again); version 14
    // moves the outbox into `deliveries` (checked above) and drops it.
    let outbox: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'outbox'",
                [],
                |row| row.get(0),
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outbox, 0, "the old outbox is gone");
    // Version 15 moves pins into every authority's `authority_bindings`
    // (indexed by value, checked above); version 1 had no pins.
    let pins: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM pins", [], |row| row.get(0)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pins, 0);
    assert_eq!(nrf_provd_core::ledger::SCHEMA_VERSION, 16);
    // Before version 3 only the trust file vouched: passed runs say so.
    assert_eq!(runs[0]["verified_by"], "keys");
    assert_eq!(runs[1]["verified_by"], serde_json::Value::Null);
    let uids: std::collections::HashSet<&str> = runs
        .as_array()
        .unwrap_or_else(|| panic!("array"))
        .iter()
        .filter_map(|r| r["uid"].as_str())
        .collect();
    assert_eq!(uids.len(), 3, "every old run got a uid of its own");
}

/// A database with `n` passed runs of distinct devices, each with its
/// device certificate (a multi-line PEM, as on a real station).
async fn passed_database(path: &Path, n: u128) {
    use nrf_provd_core::ledger::{Artifact, ArtifactKind};
    let store = SqliteLedger::open(path).unwrap_or_else(|e| panic!("{e}"));
    let at = datetime!(2024-05-01 10:00 UTC);
    for i in 0..n {
        let start = RunStart {
            uid: uuid::Uuid::from_u128(1000 + i),
            station_id: "s1".into(),
            port: "/dev/a".into(),
            started_at: at,
            trace: Default::default(),
        };
        let id = store
            .begin_run(&start)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .finish_run(&RunRecord {
                id,
                uid: start.uid,
                station_id: "s1".into(),
                port: "/dev/a".into(),
                started_at: at,
                finished_at: Some(datetime!(2024-05-01 10:00:30 UTC)),
                outcome: Outcome::Passed,
                failed_step: None,
                reason_code: None,
                reason: None,
                verified_by: None,
                device: DeviceInfo {
                    device_uuid: Some(uuid::Uuid::from_u128(0x5050_0000 + i)),
                    ..Default::default()
                },
                steps: vec![],
                tokens: vec![],
                artifacts: vec![Artifact {
                    kind: ArtifactKind::DeviceCertificate,
                    sec_tag: Some(16_842_753),
                    content: format!(
                        "-----BEGIN CERTIFICATE-----\nMIIB{i:04}\nAAAA\n-----END CERTIFICATE-----\n"
                    ),
                }],
                trace: Default::default(),
                compacted_at: None,
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test]
async fn large_exports_are_written_as_files_of_whole_rows() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("results.db");
    passed_database(&db, 5).await;
    let db = db.to_str().unwrap_or_default();
    let out_dir = dir.path().join("export");
    let out_dir = out_dir.to_str().unwrap_or_default();
    let args = [
        "--db",
        db,
        "--format",
        "onboard-csv",
        "--out-dir",
        out_dir,
        "--max-rows",
        "2",
    ];

    let written = results(&args);
    assert!(written.status.success(), "{written:?}");
    let mut rows_per_file = Vec::new();
    let mut devices = Vec::new();
    for name in ["onboard-001.csv", "onboard-002.csv", "onboard-003.csv"] {
        let path = Path::new(out_dir).join(name);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} holds device identities");
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        for row in &rows {
            assert_eq!(row.len(), 5, "a whole row: {row:?}");
            assert!(
                row[4].starts_with("-----BEGIN CERTIFICATE-----\n")
                    && row[4].ends_with("-----END CERTIFICATE-----\n"),
                "the PEM is whole: {row:?}"
            );
            devices.push(row[0].to_string());
        }
        rows_per_file.push(rows.len());
    }
    assert_eq!(rows_per_file, [2, 2, 1]);
    devices.sort();
    devices.dedup();
    assert_eq!(devices.len(), 5, "every device once: {devices:?}");
    assert!(!Path::new(out_dir).join("onboard-004.csv").exists());
    let listing = stdout(&written);
    assert_eq!(listing.lines().count(), 3, "{listing}");
    assert!(listing.contains("onboard-003.csv\t1 rows"), "{listing}");

    // Never overwritten: a second export refuses before writing anything.
    let before = std::fs::read(Path::new(out_dir).join("onboard-001.csv")).unwrap_or_default();
    let again = results(&args);
    assert_eq!(again.status.code(), Some(2), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("onboard-001.csv exists"),
        "{again:?}"
    );
    assert_eq!(
        std::fs::read(Path::new(out_dir).join("onboard-001.csv")).unwrap_or_default(),
        before
    );

    // Attestation CSV: no authentic token in these runs, so no rows.
    let none = results(&["--db", db, "--format", "attest-csv", "--out-dir", out_dir]);
    assert!(none.status.success(), "{none:?}");
    assert!(String::from_utf8_lossy(&none.stderr).contains("nothing written"));

    for bad in [
        vec!["--db", db, "--format", "onboard-csv", "--max-rows", "2"],
        vec!["--db", db, "--format", "table", "--out-dir", out_dir],
        vec![
            "--db",
            db,
            "--format",
            "onboard-csv",
            "--out-dir",
            out_dir,
            "--max-rows",
            "0",
        ],
    ] {
        let out = results(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
}

/// A run finished on 2024-05-01 (long before any `keep_full`) of `device`,
/// with a certificate as its payload.
async fn old_run(store: &SqliteLedger, n: u128, device: u128, outcome: Outcome) {
    use nrf_provd_core::ledger::{Artifact, ArtifactKind};
    let at = datetime!(2024-05-01 10:00 UTC);
    let start = RunStart {
        uid: uuid::Uuid::from_u128(2000 + n),
        station_id: "s1".into(),
        port: "/dev/a".into(),
        started_at: at,
        trace: Default::default(),
    };
    let id = store
        .begin_run(&start)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .finish_run(&RunRecord {
            id,
            uid: start.uid,
            station_id: "s1".into(),
            port: "/dev/a".into(),
            started_at: at,
            finished_at: Some(datetime!(2024-05-01 10:00:30 UTC)),
            outcome,
            failed_step: None,
            reason_code: None,
            reason: None,
            verified_by: None,
            device: DeviceInfo {
                device_uuid: Some(uuid::Uuid::from_u128(device)),
                ..Default::default()
            },
            steps: vec![],
            tokens: vec![],
            artifacts: vec![Artifact {
                kind: ArtifactKind::DeviceCertificate,
                sec_tag: Some(16_842_753),
                content: format!(
                    "-----BEGIN CERTIFICATE-----\nMIIB{n:04}\n-----END CERTIFICATE-----\n"
                ),
            }],
            trace: Default::default(),
            compacted_at: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

fn compacted(db: &Path) -> Vec<(bool, usize)> {
    let out = results(&["--db", &db.display().to_string(), "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    runs.as_array()
        .unwrap_or_else(|| panic!("array"))
        .iter()
        .map(|r| {
            (
                r.get("compacted_at").is_some(),
                r["artifacts"].as_array().map_or(0, Vec::len),
            )
        })
        .collect()
}

#[tokio::test]
async fn prune_dry_run_says_what_would_go_and_why_the_rest_stays_then_prune_compacts_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("results.db");
    {
        let store = SqliteLedger::open(&db).unwrap_or_else(|e| panic!("{e}"));
        old_run(&store, 1, 0xa, Outcome::Passed).await;
        old_run(&store, 2, 0xb, Outcome::Failed).await;
        old_run(&store, 3, 0xa, Outcome::Passed).await;
    }
    let config = dir.path().join("station.toml");
    std::fs::write(
        &config,
        "station_id = \"s1\"\ndatabase = \"results.db\"\n\n[ports]\npaths = [\"nothing-here/tty*\"]\n\n\
         [identity]\nauthorities = [\"collect\"]\n\n[plan]\nsteps = [\"identify\"]\n\n\
         [retention]\nkeep_full = \"90d\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = config.display().to_string();

    let out = results(&["--prune", "--dry-run", "--config", &config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.contains("would compact: 2 runs"),
        "the older pass and the failure go: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("would trim: 1 runs") && l.contains("latest passed run")),
        "the device's latest pass keeps what exports read: {text}"
    );
    assert!(
        text.contains("kept in full: 0 runs, 0 bytes: a sink has not acknowledged them"),
        "{text}"
    );
    assert_eq!(
        compacted(&db),
        vec![(false, 1); 3],
        "a dry run changes nothing"
    );

    // With --db the station's line is unknown: what the line may lack stays.
    let out = results(&[
        "--prune",
        "--dry-run",
        "--db",
        &db.display().to_string(),
        "--keep-full",
        "90d",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains("would compact: 0 runs"),
        "{}",
        stdout(&out)
    );

    let out = results(&["--prune", "--config", &config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).starts_with("compacted 2 runs and trimmed 1"),
        "{}",
        stdout(&out)
    );
    // The latest pass is trimmed: its device certificate (onboard-csv's) stays.
    assert_eq!(compacted(&db), vec![(true, 0), (true, 0), (true, 1)]);

    // No keep_full anywhere: a clear refusal, nothing compacted.
    let out = results(&["--prune", "--db", &db.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--keep-full"));
}
