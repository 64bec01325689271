//! `nrf-provd bench --ledger`: the rows' stations on a throwaway PostgreSQL
//! in required mode, the claim p99 column, the backfill figure. Speed is
//! never asserted.

use serde_json::Value;

#[test]
fn bench_with_a_ledger_reports_claims_and_the_backfill() {
    let Some(pg) = testkit::pg::cluster("bench_with_a_ledger_reports_claims_and_the_backfill")
    else {
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nrf-provd-dev"))
        .args([
            "bench",
            "--boards",
            "1,2",
            "--rounds",
            "1",
            "--latency",
            "none",
            "--json",
            "--backfill",
            "300",
            "--ledger",
        ])
        .arg(pg.url())
        .env(
            nrf_provd_daemon::config::PASSWORD_ENV,
            "line-ledger-test-pw",
        )
        .output()
        .expect("run the bench");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    for (row, boards) in doc["rows"].as_array().expect("rows").iter().zip([1u64, 2]) {
        assert_eq!(row["ledger"], "pg required", "{row}");
        assert_eq!(row["passed"], boards, "{row}");
        assert!(
            row["claim_p99_ms"].as_f64().is_some_and(|ms| ms > 0.0),
            "{row}"
        );
    }
    let backfill = &doc["backfill"];
    assert_eq!(backfill["runs"], 300, "{doc}");
    assert!(
        backfill["runs_per_second"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    );
    // The bench's schemas are gone; the line's default schema untouched.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = pg.client().await;
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'nrf_provd_bench_%'",
                &[],
            )
            .await
            .expect("schemata")
            .get(0);
        assert_eq!(left, 0);
        let tables: i64 = client
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
                &[],
            )
            .await
            .expect("tables")
            .get(0);
        assert_eq!(tables, 0, "the bench made nothing outside its schemas");
    });
}
