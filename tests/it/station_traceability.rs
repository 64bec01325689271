//! Traceability on a running station (issue 22, point 1): a board waits
//! for a required work order and runs once `nrf-provd shift set` gives
//! one; each change applies to the next board and is recorded old → new;
//! `results --work-order` and the summary follow; only an operator (or the
//! station itself) may change the shift, never another site's page; an
//! operator types a work order into the station page with a barcode
//! scanner's Enter (headless Chromium).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use fantoccini::Locator;
use nrf_provd_core::record::Outcome;
use nrf91_sim::Latency;
use serde_json::Value;

use crate::http_support::get;
use crate::station_page::{Driver, browser, free_port, open_browser, tile_state, until};
use crate::station_support::{Daemon, Env, binary};

fn nrf_provd(args: &[&str]) -> Output {
    std::process::Command::new(binary())
        .args(args)
        .env_remove("NRF_PROVD_LOG")
        .output()
        .expect("run nrf-provd")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The daemon's config for `env` on a fixed loopback port (so that `shift`
/// finds it), with `traceability` appended.
fn config_with(env: &Env, listen: SocketAddr, http: &str, traceability: &str) -> PathBuf {
    env.write_config(|t| {
        *t = t.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{listen}\""),
        );
        t.push_str(http);
        t.push_str(traceability);
    })
}

/// A raw HTTP/1.1 POST of `body` with `headers`: the status and body.
fn post(addr: SocketAddr, headers: &[String], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut request = "POST /api/v1/shift HTTP/1.1\r\n".to_string();
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    stream.write_all(request.as_bytes()).expect("request");
    let mut got = String::new();
    let _ = stream.read_to_string(&mut got);
    let status = got
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {got:?}"));
    let body = got
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn write_token(dir: &Path, name: &str, token: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).expect("token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// `/api/v1/ports` once `done` holds for it (bounded: a hang fails).
async fn poll_tiles(listen: SocketAddr, done: impl Fn(&Value) -> bool) -> Value {
    let mut tiles = Value::Null;
    for _ in 0..600 {
        tiles = serde_json::from_str(
            &get(listen, "/api/v1/ports", None)
                .expect("GET /api/v1/ports")
                .body,
        )
        .expect("ports JSON");
        if done(&tiles) {
            return tiles;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the tiles never got there: {tiles}");
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_waits_for_its_work_order_and_shift_set_traces_the_next_board() {
    let env = Env::new(1, Latency::None, &[]).await;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let port = env.port(0);
    let config = config_with(
        &env,
        listen,
        "",
        &format!(
            "\n[traceability]\nlot = \"LOT-7\"\nproduct = \"ACME-TRACKER rev C\"\nrequire = [\"work_order\"]\n\
             [traceability.fixtures]\n\"{port}\" = \"F01\"\n"
        ),
    );
    let config_arg = config.display().to_string();
    let mut daemon = Daemon::spawn(&config);
    assert_eq!(daemon.http_addr().await, listen);

    // The board is there but waits: no run begins, its tile says why.
    daemon.wait_for_log(&["waiting for work_order"]).await;
    // The page's view folds the station's events on its own thread.
    let tiles = poll_tiles(listen, |tiles| tiles[0]["state"] == "waiting").await;
    let tile = &tiles[0];
    assert_eq!(tile["state"], "waiting", "{tiles}");
    assert_eq!(tile["fixture"], "F01", "{tiles}");
    assert!(
        tile["board"]["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("work_order")),
        "{tiles}"
    );
    let metrics = get(listen, "/metrics", None).expect("metrics").body;
    assert!(
        metrics.lines().any(|l| l == "nrf_provd_boards_waiting 1"),
        "{metrics}"
    );
    assert!(
        env.runs().await.is_empty(),
        "a run began without a work order"
    );

    // The operator sets it from the command line (loopback, no operator
    // token configured): the board runs under it.
    let set = nrf_provd(&[
        "shift",
        "set",
        "--config",
        &config_arg,
        "--work-order",
        "WO-1234",
        "--operator",
        "ana",
    ]);
    assert!(set.status.success(), "{}", text(&set));
    assert!(
        text(&set).contains("work_order - -> WO-1234"),
        "{}",
        text(&set)
    );
    daemon.runs_finished(1).await;
    let runs = env.runs().await;
    assert_eq!(runs.len(), 1);
    let first = &runs[0];
    assert_eq!(first.outcome, Outcome::Passed, "{first:?}");
    assert_eq!(first.trace.work_order.as_deref(), Some("WO-1234"));
    assert_eq!(first.trace.lot.as_deref(), Some("LOT-7"));
    assert_eq!(first.trace.operator.as_deref(), Some("ana"));
    assert_eq!(first.trace.product.as_deref(), Some("ACME-TRACKER rev C"));
    assert_eq!(first.trace.fixture.as_deref(), Some("F01"));

    // A change applies to the next board, not to the one before.
    let set = nrf_provd(&[
        "shift",
        "set",
        "--config",
        &config_arg,
        "--work-order",
        "WO-2",
        "--lot",
        "",
    ]);
    assert!(set.status.success(), "{}", text(&set));
    env.fleet.replug(0).await.expect("replug");
    daemon.runs_finished(1).await;
    let runs = env.runs().await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].trace.work_order.as_deref(), Some("WO-1234"));
    assert_eq!(runs[1].trace.work_order.as_deref(), Some("WO-2"));
    assert_eq!(runs[1].trace.lot, None, "an empty value clears the lot");
    assert_eq!(runs[1].trace.operator.as_deref(), Some("ana"));

    // Every change is recorded: who, when, old -> new.
    let show = nrf_provd(&["shift", "show", "--config", &config_arg]);
    let shown = text(&show);
    assert!(show.status.success(), "{shown}");
    assert!(shown.contains("by config: lot - -> LOT-7"), "{shown}");
    assert!(
        shown.contains("by local: work_order - -> WO-1234"),
        "{shown}"
    );
    assert!(
        shown.contains("by local: work_order WO-1234 -> WO-2"),
        "{shown}"
    );
    assert!(shown.contains("by local: lot LOT-7 -> -"), "{shown}");
    let history = json(&nrf_provd(&[
        "shift",
        "show",
        "--config",
        &config_arg,
        "--json",
    ]));
    let last = &history["history"][2];
    assert_eq!(last["old"]["work_order"], "WO-1234", "{history}");
    assert_eq!(last["new"]["work_order"], "WO-2", "{history}");
    assert!(
        last["at"].as_str().is_some_and(|t| t.starts_with("20")),
        "{history}"
    );

    // The JSON API carries them at the top level (a viewer's summary too).
    let api: Value = serde_json::from_str(&get(listen, "/api/v1/runs", None).expect("runs").body)
        .expect("runs JSON");
    assert_eq!(api[0]["work_order"], "WO-1234", "{api}");
    assert_eq!(api[1]["work_order"], "WO-2", "{api}");
    assert_eq!(api[1]["lot"], Value::Null, "{api}");
    assert_eq!(api[1]["fixture"], "F01", "{api}");

    // results --work-order, the CSV and the summary, while the daemon runs.
    let db = env.config.database.display().to_string();
    let wo1 = json(&nrf_provd(&[
        "results",
        "--db",
        &db,
        "--work-order",
        "WO-1234",
        "--format",
        "json",
    ]));
    assert_eq!(wo1.as_array().map(Vec::len), Some(1), "{wo1}");
    assert_eq!(wo1[0]["work_order"], "WO-1234");
    assert_eq!(wo1[0]["fixture"], "F01");
    let none = json(&nrf_provd(&[
        "results",
        "--db",
        &db,
        "--work-order",
        "WO-9",
        "--format",
        "json",
    ]));
    assert_eq!(none, Value::Array(Vec::new()));
    let csv = nrf_provd(&[
        "results",
        "--db",
        &db,
        "--work-order",
        "WO-2",
        "--format",
        "csv",
    ]);
    let csv_text = String::from_utf8_lossy(&csv.stdout);
    assert!(
        csv_text
            .lines()
            .next()
            .is_some_and(|h| h.ends_with("work_order,lot,operator,product,fixture")),
        "{csv_text}"
    );
    assert!(
        csv_text
            .lines()
            .nth(1)
            .is_some_and(|r| r.ends_with(",WO-2,,ana,ACME-TRACKER rev C,F01")),
        "{csv_text}"
    );
    let summary = json(&nrf_provd(&[
        "results",
        "--db",
        &db,
        "--summary",
        "--format",
        "json",
    ]));
    let orders = summary["work_orders"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(orders.len(), 2, "{summary}");
    assert!(
        orders.iter().all(|w| w["passed"] == 1 && w["yield"] == 1.0),
        "{summary}"
    );
    assert!(daemon.stop().await.success());

    // A restart (or a crash) goes on with the values last recorded.
    let mut daemon = Daemon::spawn(&config);
    assert_eq!(daemon.http_addr().await, listen);
    let shown = json(&nrf_provd(&[
        "shift",
        "show",
        "--config",
        &config_arg,
        "--json",
    ]));
    assert_eq!(shown["shift"]["work_order"], "WO-2", "{shown}");
    assert_eq!(shown["shift"]["lot"], Value::Null, "{shown}");
    assert_eq!(
        shown["history"].as_array().map(Vec::len),
        Some(3),
        "{shown}"
    );
    assert!(daemon.stop().await.success());

    // A config whose values changed applies them, recorded as the config's.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, text.replace("LOT-7", "LOT-8")).expect("config");
    let mut daemon = Daemon::spawn(&config);
    assert_eq!(daemon.http_addr().await, listen);
    let shown = json(&nrf_provd(&[
        "shift",
        "show",
        "--config",
        &config_arg,
        "--json",
    ]));
    assert_eq!(shown["shift"]["lot"], "LOT-8", "{shown}");
    assert_eq!(shown["shift"]["work_order"], Value::Null, "{shown}");
    let last = &shown["history"][3];
    assert_eq!(last["by"], "config", "{shown}");
    assert_eq!(last["old"]["work_order"], "WO-2", "{shown}");
    assert!(daemon.stop().await.success());
}

const VIEWER: &str = "v1ewer-a1c3e5b7d9f1a3c5e7b9d1f3";
const OPERATOR: &str = "0perator-e9b2c4d6f8a0e1c3b5d7f9a1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_operator_changes_the_shift_and_never_from_another_sites_page() {
    let env = Env::new(1, Latency::None, &[]).await;
    let viewer = write_token(env.dir.path(), "viewer.token", VIEWER);
    let operator = write_token(env.dir.path(), "operator.token", OPERATOR);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = config_with(
        &env,
        listen,
        &format!(
            "token_file = \"{}\"\noperator_token_file = \"{}\"\n",
            viewer.display(),
            operator.display()
        ),
        "",
    );
    let mut daemon = Daemon::spawn(&config);
    assert_eq!(daemon.http_addr().await, listen);
    daemon.runs_finished(1).await;
    let host = format!("Host: {listen}");
    let json_type = "Content-Type: application/json".to_string();
    let bearer = |t: &str| format!("Authorization: Bearer {t}");
    let body = r#"{"work_order":"WO-EVIL"}"#;
    let refused = [
        ("no token", vec![host.clone(), json_type.clone()], 401),
        (
            "the viewer's token",
            vec![host.clone(), json_type.clone(), bearer(VIEWER)],
            403,
        ),
        (
            "another site's Origin",
            vec![
                host.clone(),
                json_type.clone(),
                bearer(OPERATOR),
                "Origin: http://evil.example".into(),
            ],
            403,
        ),
        (
            "a form posted from another site",
            vec![
                host.clone(),
                json_type.clone(),
                bearer(OPERATOR),
                "Sec-Fetch-Site: cross-site".into(),
                "Sec-Fetch-Mode: navigate".into(),
                "Sec-Fetch-Dest: document".into(),
            ],
            403,
        ),
        (
            "another host's name",
            vec![
                "Host: evil.example".into(),
                json_type.clone(),
                bearer(OPERATOR),
            ],
            421,
        ),
        (
            "a form's content type",
            vec![
                host.clone(),
                "Content-Type: text/plain".into(),
                bearer(OPERATOR),
            ],
            415,
        ),
    ];
    for (what, headers, status) in refused {
        let (got, answer) = post(listen, &headers, body);
        assert_eq!(got, status, "{what}: {answer}");
    }
    let shift = |token: &str| -> Value {
        let answer = get(listen, "/api/v1/shift", Some(token)).expect("GET /api/v1/shift");
        assert_eq!(answer.status, 200, "{}", answer.body);
        serde_json::from_str(&answer.body).expect("shift JSON")
    };
    let now = shift(VIEWER);
    assert_eq!(now["shift"]["work_order"], Value::Null, "{now}");
    assert_eq!(now["history"], Value::Array(Vec::new()), "{now}");

    // A value with a control character is refused, and nothing changes.
    let (got, answer) = post(
        listen,
        &[host.clone(), json_type.clone(), bearer(OPERATOR)],
        r#"{"work_order":"WO\u001b[2J"}"#,
    );
    assert_eq!(got, 400, "{answer}");

    // The operator's token, from the station's own page: recorded as theirs.
    let (got, answer) = post(
        listen,
        &[
            host.clone(),
            json_type,
            bearer(OPERATOR),
            format!("Origin: http://{listen}"),
            "Sec-Fetch-Site: same-origin".into(),
        ],
        r#"{"work_order":"WO-42","operator":"ana"}"#,
    );
    assert_eq!(got, 200, "{answer}");
    let now = shift(VIEWER);
    assert_eq!(now["shift"]["work_order"], "WO-42", "{now}");
    let history = now["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len(), 1, "{now}");
    assert_eq!(history[0]["by"], "operator");
    assert_eq!(history[0]["old"]["work_order"], Value::Null);
    assert_eq!(history[0]["new"]["operator"], "ana");

    // The CLI sends the operator's token from the config.
    let set = nrf_provd(&[
        "shift",
        "set",
        "--config",
        &config.display().to_string(),
        "--lot",
        "LOT-9",
    ]);
    assert!(set.status.success(), "{}", text(&set));
    assert_eq!(shift(OPERATOR)["shift"]["lot"], "LOT-9");
    let metrics = get(listen, "/metrics", Some(VIEWER)).expect("metrics").body;
    assert!(metrics.contains("reason=\"not_operator\"} 1"), "{metrics}");
    assert!(daemon.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_scans_a_work_order_into_the_page_and_the_waiting_board_runs_under_it() {
    let binary = match browser() {
        Ok(binary) => binary,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{why}: scripts/test-deps installs it, and CI must run this test")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED station_traceability page: {why}; run scripts/test-deps to install it"
            );
            return;
        }
    };
    let env = Env::new(1, Latency::None, &[]).await;
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = config_with(
        &env,
        listen,
        "",
        "\n[traceability]\nrequire = [\"work_order\"]\n",
    );
    let port = env.port(0);
    let driver = Driver::start();
    let profile = tempfile::tempdir().expect("profile dir");
    let browser = open_browser(&driver, binary, profile.path()).await;
    let mut daemon = Daemon::spawn(&config);
    assert_eq!(daemon.http_addr().await, listen);
    browser
        .goto(&format!("http://{listen}/"))
        .await
        .expect("load the page");
    tile_state(&browser, &port, "waiting").await;
    until(
        &browser,
        "the page says boards wait",
        "const w = document.getElementById('waiting'); return w.hidden ? '' : w.textContent",
        |v| v.as_str().is_some_and(|t| t.contains("work order")),
    )
    .await;

    // A barcode scanner types the code and presses Enter.
    let field = browser
        .find(Locator::Id("s-work_order"))
        .await
        .expect("the work order field");
    field.click().await.expect("focus the field");
    field
        .send_keys("WO-SCAN-77\u{E007}")
        .await
        .expect("type and Enter");
    until(
        &browser,
        "saved",
        "return document.getElementById('shift-status').textContent",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("saved for the next board"))
        },
    )
    .await;
    tile_state(&browser, &port, "passed").await;
    daemon.runs_finished(1).await;
    let runs = env.runs().await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].trace.work_order.as_deref(), Some("WO-SCAN-77"));
    let banner = browser
        .execute("return document.getElementById('waiting').hidden", vec![])
        .await
        .expect("banner");
    assert_eq!(banner, Value::Bool(true), "the banner goes once it is set");
    let db = env.config.database.display().to_string();
    let found = json(&nrf_provd(&[
        "results",
        "--db",
        &db,
        "--work-order",
        "WO-SCAN-77",
        "--format",
        "json",
    ]));
    assert_eq!(found.as_array().map(Vec::len), Some(1), "{found}");
    assert_eq!(found[0]["work_order"], "WO-SCAN-77");
    assert!(daemon.stop().await.success());
    let _ = browser.close().await;
}
