//! `nrf-provd bench` runs end to end on a small board count and prints a
//! well-formed table or JSON; the soak mode checks its records. Speed is
//! never asserted here.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn nrf_provd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nrf-provd-dev"))
        .args(args)
        .output()
        .expect("run nrf-provd")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8 output")
}

#[test]
fn bench_prints_one_table_row_per_board_count() {
    let out = stdout(&nrf_provd(&[
        "bench",
        "--boards",
        "1,2",
        "--rounds",
        "1",
        "--latency",
        "none",
        "--seed",
        "4",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("boards"))
        .unwrap_or_else(|| panic!("no table header in:\n{out}"));
    for title in [
        "boards/min",
        "p50 cycle",
        "p99 cycle",
        "cpu/cycle",
        "peak RSS",
        "fds",
    ] {
        assert!(lines[header].contains(title), "{title} missing: {out}");
    }
    let rows: Vec<Vec<&str>> = lines[header + 1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    for (row, boards) in rows.iter().zip([1, 2]) {
        // boards, runs, passed: every board provisioned once.
        assert_eq!(
            row[..3],
            [boards.to_string(), boards.to_string(), boards.to_string()]
        );
        let per_minute: f64 = row[3].parse().unwrap();
        assert!(per_minute > 0.0, "{out}");
        // No physical limit without latency.
        assert!(row.contains(&"-"), "{out}");
    }
}

#[test]
fn bench_json_has_a_row_per_board_count_and_the_limit_with_latency() {
    let out = stdout(&nrf_provd(&[
        "bench",
        "--boards",
        "1,2",
        "--rounds",
        "1",
        "--latency",
        "realistic",
        "--baud",
        "1000000",
        "--json",
    ]));
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(doc["latency"], "realistic");
    assert!(doc["machine"]["cpus"].as_u64().unwrap() >= 1);
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (row, boards) in rows.iter().zip([1u64, 2]) {
        assert_eq!(row["boards"], boards);
        assert_eq!(row["runs"], boards);
        assert_eq!(row["passed"], boards);
        assert_eq!(row["panics"], 0);
        // A realistic cycle waits for key generation (1.2 s) at least, and
        // can never beat the modelled time.
        let limit = row["limit_p50_ms"].as_f64().unwrap();
        assert!(limit >= 1200.0, "{row}");
        assert!(row["cycle_over_limit"].as_f64().unwrap() >= 1.0, "{row}");
        // One round: its share is the whole row's.
        let rounds = row["per_round"].as_array().unwrap();
        assert_eq!(rounds.len(), 1, "{row}");
        assert_eq!(rounds[0]["runs"], boards);
        assert_eq!(
            rounds[0]["cycle_over_limit_p99"],
            row["cycle_over_limit_p99"]
        );
        assert!(rounds[0]["host_ms"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["peak_rss_mib"].as_f64().unwrap() > 0.0);
        assert!(row["peak_fds"].as_u64().unwrap() > 0);
    }
}

#[test]
fn a_short_soak_with_faults_loses_no_record() {
    // The exit status also reflects the memory checks, which a 3-second
    // soak cannot judge fairly; look at the record checks only.
    let output = nrf_provd(&[
        "bench",
        "--soak",
        "3s",
        "--boards",
        "3",
        "--fault",
        "1:bad-signature",
        "--fault",
        "2:urc-storm",
        "--json",
    ]);
    let out = String::from_utf8_lossy(&output.stdout);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!(
            "{e}: {out}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let soak = &doc["soak"];
    assert!(soak["runs"].as_u64().unwrap() >= 3, "{soak}");
    assert!(
        soak["failed"].as_u64().unwrap() >= 1,
        "bad signatures fail: {soak}"
    );
    assert_eq!(soak["interrupted"], 0, "{soak}");
    let checks = soak["checks"].as_array().unwrap();
    let check = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} not checked: {soak}"))
    };
    for name in [
        "records",
        "panics",
        "tokens_attest",
        "tokens_keygen",
        "tokens_jwt",
    ] {
        assert_eq!(check(name)["passed"], true, "{soak}");
    }
    for name in ["rss_flat", "anon_flat", "fds_flat", "threads_flat"] {
        check(name);
    }
    assert_eq!(output.status.success(), doc["ok"] == true);
}

#[test]
fn the_crash_bench_kills_the_daemon_and_finds_nothing_lost() {
    let output = nrf_provd(&[
        "bench", "--crash", "3", "--boards", "2", "--seed", "7", "--json",
    ]);
    let out = String::from_utf8_lossy(&output.stdout);
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!(
            "{e}: {out}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let crash = &doc["crash"];
    assert_eq!(crash["kills"], 3, "{crash}");
    // The last daemon provisions both boards before its clean stop.
    assert!(crash["passed"].as_u64().unwrap() >= 2, "{crash}");
    for empty in ["lost", "changed", "integrity"] {
        assert_eq!(crash[empty], serde_json::json!([]), "{empty}: {crash}");
    }
    assert_eq!(crash["left_in_flight"], 0, "{crash}");
    assert_eq!(
        crash["failed_after_restart"],
        serde_json::json!({}),
        "{crash}"
    );
    assert!(output.status.success(), "{crash}");
}

#[test]
fn simulate_control_replugs_and_reports_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nrf-provd-dev"))
        .args(["simulate", "--control", "--count", "2", "--seed", "1"])
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    // The listing, then ready.
    assert!(next().contains("ttySIM0"));
    assert!(next().contains("ttySIM1"));
    assert_eq!(next(), r#"{"ready":2}"#);
    let mut ask = |command: &str| -> Value {
        writeln!(stdin, "{command}").unwrap();
        serde_json::from_str(&next()).unwrap()
    };
    assert_eq!(ask("replug 0")["replugged"], serde_json::json!([0]));
    let stats = ask("stats");
    assert_eq!(stats["stats"][0]["sessions"], 2);
    assert_eq!(stats["stats"][1]["sessions"], 1);
    assert_eq!(ask("costs")["costs"], serde_json::json!([[], []]));
    assert!(ask("fly").get("error").is_some());
    assert_eq!(ask("quit")["quit"], true);
    assert!(child.wait().unwrap().success());
    assert!(
        !dir.path().join("ttySIM0").exists(),
        "links removed on quit"
    );
}

#[test]
fn bench_scrape_reads_the_page_and_metrics_during_the_row() {
    let out = stdout(&nrf_provd(&[
        "bench",
        "--boards",
        "2",
        "--rounds",
        "2",
        "--latency",
        "none",
        "--seed",
        "4",
        "--scrape",
        "--json",
    ]));
    let doc: Value = serde_json::from_str(out.trim()).expect("json");
    let row = &doc["rows"][0];
    assert_eq!(row["passed"], 4, "{doc}");
    let scrape = &row["scrape"];
    // At least the first round of fetches (page, script, metrics, ports)
    // happened, none failed, and the live feed carried the runs.
    assert!(scrape["requests"].as_u64().is_some_and(|n| n >= 4), "{doc}");
    assert_eq!(scrape["failed"], 0, "{doc}");
    assert!(
        scrape["feed_bytes"].as_u64().is_some_and(|n| n > 0),
        "{doc}"
    );
    // Without --scrape there is nothing to report.
    let plain = stdout(&nrf_provd(&[
        "bench",
        "--boards",
        "1",
        "--rounds",
        "1",
        "--latency",
        "none",
        "--seed",
        "4",
        "--json",
    ]));
    let plain: Value = serde_json::from_str(plain.trim()).expect("json");
    assert!(plain["rows"][0]["scrape"].is_null(), "{plain}");
}

#[test]
fn bench_history_builds_the_runs_and_reports_every_figure_at_both_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let out = stdout(&nrf_provd(&[
        "bench",
        "--history",
        "500",
        "--boards",
        "2",
        "--seed",
        "9",
        "--json",
        "--db",
        db.to_str().unwrap(),
    ]));
    let report: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let history = &report["history"];
    assert_eq!(history["added"], 500, "{out}");
    // The history database is kept where asked, with every run added.
    assert!(db.exists());
    let full = &history["full"];
    assert!(full["history"].as_u64().unwrap() >= 500, "{out}");
    for size in ["empty", "full"] {
        let figures = &history[size];
        for figure in [
            "ready_warm_s",
            "first_pass_s",
            "commit_p99_ms",
            "limit_100_ms",
            "summary_ms",
            "attest_csv_ms",
            "api_runs_ms",
        ] {
            assert!(
                figures[figure].as_f64().is_some_and(|v| v > 0.0),
                "{size} {figure}: {out}"
            );
        }
        assert!(figures["rss_kib"].as_u64().unwrap() > 0, "{out}");
    }
    // Every copied run passed, so attest-csv has a row per device.
    assert!(full["attest_rows"].as_u64().unwrap() >= 500, "{out}");
    assert!(history["bytes_per_run"].as_f64().unwrap() > 0.0, "{out}");
}
