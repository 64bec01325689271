//! The daemon's HTTP side as a process: `/metrics` agrees with the
//! database, the API gives the records `results --format json` prints (to
//! an engineer; a viewer's lack token text and certificates), page by
//! page, `/healthz` says when the station stops, a non-loopback listener
//! wants its token, stuck clients cost no run, and the log an operator
//! reads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::http_support::{Feed, Response, get};
use crate::station_support::{Daemon, Env, binary, refused_start};
use nrf_provd_core::ledger::{LedgerReader, SqliteLedger};
use nrf_provd_core::record::Outcome;
use nrf91_sim::Latency;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};

fn fetch(addr: SocketAddr, path: &str) -> Response {
    get(addr, path, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    json_as(addr, path, None)
}

fn json_as(addr: SocketAddr, path: &str, token: Option<&str>) -> serde_json::Value {
    let response = get(addr, path, token).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.status, 200, "GET {path}: {}", response.body);
    serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A record as a viewer sees it: no token text, no CSR or certificate.
fn summary(run: &serde_json::Value) -> serde_json::Value {
    let mut run = run.clone();
    for (list, field) in [("tokens", "text"), ("artifacts", "content")] {
        for item in run[list].as_array_mut().into_iter().flatten() {
            item.as_object_mut().map(|o| o.remove(field));
        }
    }
    run
}

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

fn scrape(addr: SocketAddr) -> Exposition {
    let response = fetch(addr, "/metrics");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        response.headers
    );
    openmetrics_parser::openmetrics::parse_openmetrics(&response.body)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e:?}\n{}", response.body))
}

/// Every sample of a family as (labels, value): counters and gauges by
/// value, histograms by their count.
fn samples(metrics: &Exposition, family: &str) -> Vec<(HashMap<String, String>, f64)> {
    let Some(family) = metrics.families.get(family) else {
        return Vec::new();
    };
    family
        .iter_samples()
        .map(|sample| {
            let labels = sample
                .get_labelset()
                .map(|set| {
                    set.iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<HashMap<_, _>>()
                })
                .unwrap_or_default();
            let value = match &sample.value {
                OpenMetricsValue::Counter(c) => c.value.as_f64(),
                OpenMetricsValue::Gauge(g) | OpenMetricsValue::Unknown(g) => g.as_f64(),
                OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                _ => f64::NAN,
            };
            (labels, value)
        })
        .collect()
}

fn total(metrics: &Exposition, family: &str, label: Option<(&str, &str)>) -> f64 {
    samples(metrics, family)
        .into_iter()
        .filter(|(labels, _)| {
            label.is_none_or(|(k, v)| labels.get(k).map(String::as_str) == Some(v))
        })
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_api_agree_with_the_database_after_a_run_of_boards() {
    let env = Env::new(6, Latency::None, &["1:bad-signature", "2:untrusted-key"]).await;
    let engineer = "7d1e0c9b3a5f4e2d8c6b4a29f0e1d3c5";
    let engineer_file = env.dir.path().join("engineer.token");
    std::fs::write(&engineer_file, format!("{engineer}\n")).expect("token");
    std::fs::set_permissions(&engineer_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let config = env.write_config(|t| {
        t.push_str(&format!(
            "engineer_token_file = \"{}\"\n",
            engineer_file.display()
        ))
    });
    let db = env.config.database.clone();
    let mut daemon = Daemon::spawn(&config);
    let addr = daemon.http_addr().await;
    daemon.runs_finished(6).await;

    // The page and metrics fold events a few times a second: wait until
    // they have seen the six runs (bounded; a hang is a failure).
    let mut metrics = scrape(addr);
    for _ in 0..200 {
        if total(&metrics, "nrf_provd_runs", None) >= 6.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        metrics = scrape(addr);
    }
    let reader = SqliteLedger::open_read_only(&db).expect("database");
    let counts = reader.counts().await.expect("counts");
    let runs = reader
        .runs(&nrf_provd_core::ledger::RunFilter::default())
        .await
        .expect("runs");
    assert_eq!(counts.seen, 6);
    assert_eq!(
        total(&metrics, "nrf_provd_runs", Some(("outcome", "passed"))),
        counts.passed as f64
    );
    assert_eq!(
        total(&metrics, "nrf_provd_runs", Some(("outcome", "failed"))),
        counts.failed as f64
    );
    assert_eq!(total(&metrics, "nrf_provd_runs", None), counts.seen as f64);
    // Each failure under its step and reason code, as the database has it.
    for run in runs.iter().filter(|r| r.outcome == Outcome::Failed) {
        let step = run.failed_step.map_or("none", |s| s.as_str());
        let code = run.reason_code.map_or("none", |c| c.as_str());
        let found = samples(&metrics, "nrf_provd_runs")
            .into_iter()
            .any(|(l, v)| {
                l.get("step").map(String::as_str) == Some(step)
                    && l.get("reason_code").map(String::as_str) == Some(code)
                    && v >= 1.0
            });
        assert!(found, "run {} ({step}, {code}) counted", run.id);
    }
    assert_eq!(total(&metrics, "nrf_provd_boards_seen", None), 6.0);
    assert_eq!(total(&metrics, "nrf_provd_ports_watched", None), 6.0);
    assert_eq!(total(&metrics, "nrf_provd_boards_in_fixtures", None), 6.0);
    // Step durations: one observation per recorded step.
    let steps_recorded: usize = runs.iter().map(|r| r.steps.len()).sum();
    assert_eq!(
        total(&metrics, "nrf_provd_step_duration_seconds", None),
        steps_recorded as f64
    );
    // Every identity token was judged and timed (passed or not).
    let identity_tokens = runs
        .iter()
        .flat_map(|r| &r.tokens)
        .filter(|t| t.kind.as_str() == "identity")
        .count();
    assert_eq!(
        total(
            &metrics,
            "nrf_provd_token_verification_seconds",
            Some(("kind", "identity"))
        ),
        identity_tokens as f64
    );
    assert!(total(&metrics, "process_resident_memory_bytes", None) > 1e6);
    assert!(total(&metrics, "process_open_fds", None) > 3.0);
    assert!(metrics.families.contains_key("process_cpu_seconds"));
    assert!(metrics.families.contains_key("nrf_provd_build"));
    // No device, port or run in any label value.
    for family in metrics.families.values() {
        for sample in family.iter_samples() {
            let labels = sample.get_labelset().expect("labels");
            for value in labels.iter_values() {
                assert!(
                    !value.contains('/') && value.len() < 32,
                    "{}: unbounded label value {value:?}",
                    family.family_name
                );
            }
        }
    }

    // The API's runs are `results --format json`'s.
    let out = std::process::Command::new(binary())
        .args(["results", "--format", "json", "--db"])
        .arg(&db)
        .output()
        .expect("results");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("results json");
    let runs_printed = printed.as_array().expect("runs");
    // The engineer sees the records whole; a viewer without token text,
    // JWTs and certificates.
    assert_eq!(json_as(addr, "/api/v1/runs", Some(engineer)), printed);
    let summaries: Vec<_> = runs_printed.iter().map(summary).collect();
    let viewed = fetch(addr, "/api/v1/runs");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&viewed.body).expect("json"),
        serde_json::Value::from(summaries.clone())
    );
    assert!(
        !viewed.body.contains("BEGIN CERTIFICATE") && !viewed.body.contains("\"text\""),
        "{}",
        viewed.body
    );
    let token_texts: Vec<&str> = runs_printed
        .iter()
        .flat_map(|r| r["tokens"].as_array().into_iter().flatten())
        .filter_map(|t| t["text"].as_str())
        .collect();
    assert!(token_texts.len() >= 6, "{token_texts:?}");
    assert!(token_texts.iter().all(|t| !viewed.body.contains(t)));
    let first = &printed[0];
    let id = first["id"].as_i64().expect("id");
    assert_eq!(
        json_as(addr, &format!("/api/v1/runs/{id}"), Some(engineer)),
        *first
    );
    assert_eq!(json(addr, &format!("/api/v1/runs/{id}")), summaries[0]);
    // Page by page with the cursor: `Link` names the next page while one
    // may follow.
    let mut paged = Vec::new();
    let mut next = Some("/api/v1/runs?after=0&limit=4".to_string());
    while let Some(path) = next.take() {
        let page = get(addr, &path, Some(engineer)).expect("page");
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        let runs: Vec<serde_json::Value> = serde_json::from_str(&page.body).expect("json");
        assert!(runs.len() <= 4);
        paged.extend(runs);
        next = page.header("link").map(|link| {
            assert!(link.ends_with("rel=\"next\""), "{link}");
            link[link.find('<').expect("<") + 1..link.find('>').expect(">")].to_string()
        });
        assert!(paged.len() <= 6, "the pages end");
    }
    assert_eq!(serde_json::Value::from(paged), printed);
    let tail = json(addr, &format!("/api/v1/runs?after={id}&limit=2"));
    assert_eq!(tail, serde_json::Value::from(summaries[1..3].to_vec()));
    assert_eq!(fetch(addr, "/api/v1/runs?after=-1").status, 400);
    assert_eq!(fetch(addr, "/api/v1/runs/999999").status, 404);
    assert_eq!(fetch(addr, "/api/v1/runs/x").status, 400);
    assert_eq!(fetch(addr, "/api/v1/runs?since=yesterday").status, 400);
    assert_eq!(fetch(addr, "/api/v1/runs?limit=0").status, 400);
    let limited = json(addr, "/api/v1/runs?limit=2");
    assert_eq!(limited.as_array().map(Vec::len), Some(2));
    assert_eq!(limited[1], summaries[5], "the most recent, oldest first");
    // The earliest start, not the first id's: boards that begin together
    // may take their ids in another order than their clocks read.
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let started = runs_printed
        .iter()
        .filter_map(|run| run["started_at"].as_str())
        .min_by_key(|at| time::OffsetDateTime::parse(at, rfc3339).expect("started_at"))
        .expect("started_at");
    let since = json(addr, &format!("/api/v1/runs?since={started}"));
    assert_eq!(since.as_array().map(Vec::len), Some(6));
    let future = json(addr, "/api/v1/runs?since=2999-01-01");
    assert_eq!(future.as_array().map(Vec::len), Some(0));

    // Ports: one tile each, in the state its run ended in.
    let ports = json(addr, "/api/v1/ports");
    let tiles = ports.as_array().expect("tiles");
    assert_eq!(tiles.len(), 6);
    for run in &runs {
        let tile = tiles
            .iter()
            .find(|t| t["port"] == run.port.as_str())
            .unwrap_or_else(|| panic!("tile for {}", run.port));
        assert_eq!(tile["state"], run.outcome.as_str(), "{tile}");
        assert_eq!(tile["board"]["run"], run.id);
    }
    let health = fetch(addr, "/healthz");
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(fetch(addr, "/nope").status, 404);
    assert!(daemon.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_while_the_station_stops() {
    let env = Env::new(1, Latency::Realistic, &[]).await;
    let config = env.write_config(|_| {});
    let mut daemon = Daemon::spawn(&config);
    let addr = daemon.http_addr().await;
    daemon
        .wait_for_log(&["step done", "step=attest", "passed=true"])
        .await;
    assert_eq!(fetch(addr, "/healthz").status, 200);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    // The run in flight finishes within the grace period; meanwhile the
    // station says it is stopping.
    let mut saw = None;
    for _ in 0..200 {
        match get(addr, "/healthz", None) {
            Ok(r) if r.status == 503 => {
                saw = Some(r.body);
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("the server went away before saying it stops: {e}"),
        }
    }
    let body = saw.expect("503 while stopping");
    assert!(body.contains("stopping"), "{body}");
    assert!(daemon.stop().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_every_request_needs_the_token() {
    let env = Env::new(1, Latency::None, &[]).await;
    let token_file = env.dir.path().join("http.token");
    let token = "3f9c1b7e5a2d4c6b8e0f1a3c5e7b9d2f";
    std::fs::write(&token_file, format!("{token}\n")).expect("token");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let wide = |t: &mut String| {
        *t = t.replace(
            "listen = \"127.0.0.1:0\"",
            &format!(
                "listen = \"0.0.0.0:0\"\ntoken_file = \"{}\"",
                token_file.display()
            ),
        )
    };
    // A token others can read is refused, and nothing starts.
    let config = env.write_config(wide);
    let (code, stderr) = refused_start(&config);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("http token file") && stderr.contains("chmod 600"),
        "{stderr}"
    );

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut daemon = Daemon::spawn(&config);
    let addr = daemon.http_addr().await;
    assert!(addr.ip().is_unspecified(), "{addr}");
    let addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
    for path in [
        "/",
        "/metrics",
        "/api/v1/ports",
        "/api/v1/runs",
        "/events",
        "/healthz",
    ] {
        let denied = fetch(addr, path);
        assert_eq!(denied.status, 401, "{path}");
        assert!(
            denied
                .headers
                .iter()
                .any(|(n, v)| n == "www-authenticate" && v.starts_with("Bearer")),
            "{path}: {:?}",
            denied.headers
        );
        let wrong = get(addr, path, Some("3f9c1b7e5a2d4c6b8e0f1a3c5e7b9d2e")).expect("get");
        assert_eq!(wrong.status, 401, "{path}");
    }
    for path in ["/", "/metrics", "/api/v1/ports", "/api/v1/runs", "/healthz"] {
        let allowed = get(addr, path, Some(token)).expect("get");
        assert_eq!(allowed.status, 200, "{path}: {}", allowed.body);
    }
    let feed = Feed::open(addr, Some(token)).expect("feed");
    assert_eq!(feed.status, 200);
    assert!(daemon.stop().await.success());
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Open the live feed and never read it, with a small receive buffer so
/// that the server's writes back up soon. From 127.0.1.`client`: 200
/// stuck pages are 200 clients (one client may hold only
/// `MAX_CONNECTIONS_PER_CLIENT`).
async fn stuck_feed(addr: SocketAddr, client: u8) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket
        .bind(SocketAddr::from(([127, 0, 1, client], 0)))
        .expect("bind a loopback address");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    stream
}

/// A daemon's counter from `/metrics`.
fn counter(addr: SocketAddr, family: &str) -> f64 {
    total(&scrape(addr), family, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_feeds_that_never_read_change_no_run_and_memory_stays_bounded() {
    const BOARDS: usize = 8;
    const ROUNDS: usize = 10;
    const CLIENTS: usize = 200;
    /// What 200 stuck clients may add to the daemon's resident memory.
    const BOUND_KIB: u64 = 48 * 1024;
    let env = Env::new(BOARDS, Latency::None, &["3:bad-signature"]).await;
    let config = env.write_config(|_| {});
    let mut daemon = Daemon::spawn(&config);
    let addr = daemon.http_addr().await;
    daemon.runs_finished(BOARDS).await;
    let pid = daemon.child.id();
    let before = rss_kib(pid);

    let mut stuck = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        stuck.push(stuck_feed(addr, u8::try_from(i + 1).expect("client")).await);
    }
    // Every board provisioned again and again while they hang on; each
    // run's events go to all 200.
    let mut peak = before;
    for _ in 1..ROUNDS {
        for i in 0..BOARDS {
            env.fleet.unplug(i).await;
        }
        for i in 0..BOARDS {
            env.fleet.replug(i).await.expect("replug");
        }
        daemon.runs_finished(BOARDS).await;
        peak = peak.max(rss_kib(pid));
    }
    let runs = env.runs().await;
    assert_eq!(runs.len(), BOARDS * ROUNDS);
    for run in &runs {
        let expected = if run.port == env.port(3) {
            Outcome::Failed
        } else {
            Outcome::Passed
        };
        assert_eq!(
            run.outcome, expected,
            "run {} on {}: {:?}",
            run.id, run.port, run.reason
        );
    }
    assert!(
        peak <= before + BOUND_KIB,
        "RSS grew from {before} KiB to {peak} KiB with {CLIENTS} stuck clients"
    );

    // The server drops them (they stopped reading), and still serves.
    let mut dropped = 0.0;
    for _ in 0..300 {
        dropped = counter(addr, "nrf_provd_http_clients_dropped");
        if dropped >= CLIENTS as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dropped >= CLIENTS as f64,
        "{dropped} of {CLIENTS} stuck clients dropped"
    );
    eprintln!(
        "{CLIENTS} stuck clients: daemon RSS {before} KiB before, peak {peak} KiB, {} KiB after they were dropped",
        rss_kib(pid)
    );
    assert_eq!(counter(addr, "nrf_provd_http_sse_clients"), 0.0);
    assert!(rss_kib(pid) <= before + BOUND_KIB);
    let mut feed = Feed::open(addr, None).expect("a new feed");
    assert_eq!(feed.status, 200);
    let mut snapshot = false;
    for _ in 0..50 {
        if let Some(line) = feed.next_line(Duration::from_millis(200)).expect("feed") {
            if line.starts_with("event: snapshot") {
                snapshot = true;
                break;
            }
        }
    }
    assert!(snapshot, "a new client gets the snapshot");
    drop(stuck);
    assert!(daemon.stop().await.success());
}

/// `key=` fields of a text log line (outside its message).
fn field_names(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .filter_map(|word| word.split_once('=').map(|(k, _)| k))
        .map(|k| k.rsplit(['{', ':']).next().unwrap_or(k))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_default_level_the_daemon_says_one_line_per_run() {
    let env = Env::new(3, Latency::None, &["1:bad-signature", "2:stall@KEYGEN"]).await;
    // The stalled board fails soon (key generation's deadline, twice).
    let config = env.write_config(|t| *t = t.replace("keygen = 30", "keygen = 0.5"));
    let mut daemon = Daemon::spawn_logging(&config, None);
    let _ = daemon.http_addr().await;
    let lines = daemon.runs_finished(3).await;
    let (status, log_lines) = daemon.stop_with_log().await;
    assert!(status.success());
    let log = log_lines.join("\n");
    assert!(!log.contains('\u{1b}'), "no colours into a pipe:\n{log}");
    assert!(!log.contains("Some("), "no Some(..):\n{log}");
    assert!(!log.contains("step done"), "steps are debug:\n{log}");
    let mut by_port: HashMap<String, String> = HashMap::new();
    for line in &lines {
        let names = field_names(line);
        for name in &names {
            assert_eq!(
                names.iter().filter(|n| *n == name).count(),
                1,
                "field {name} twice: {line}"
            );
        }
        let port = (0..3)
            .map(|i| env.port(i))
            .find(|p| line.contains(p.as_str()))
            .unwrap_or_else(|| panic!("the port in: {line}"));
        assert!(line.contains("imei=35"), "{line}");
        assert!(line.contains("device="), "{line}");
        by_port.insert(port, line.clone());
    }
    assert!(by_port[&env.port(0)].contains("PASSED"), "{by_port:?}");
    assert!(
        by_port[&env.port(1)].contains("FAILED attest signature: "),
        "{by_port:?}"
    );
    assert!(
        by_port[&env.port(2)].contains("FAILED keygen timeout: "),
        "{by_port:?}"
    );
    let stopping = log_lines
        .iter()
        .position(|l| l.contains("shutting down"))
        .expect("a shutdown line");
    assert!(
        !log_lines[stopping..]
            .iter()
            .any(|l| l.contains("port found")),
        "no port is found again while stopping:\n{log}"
    );
    // Besides the run lines: the start, the trust file, ports, the stop.
    let other: Vec<&String> = log_lines
        .iter()
        .filter(|l| !l.contains(nrf_provd_core::station::RUN_LOG))
        .filter(|l| !l.contains(" WARN ") && !l.contains(" ERROR "))
        .collect();
    assert!(other.len() <= 12, "a quiet log: {other:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_run_line_without_some() {
    let env = Env::new(2, Latency::None, &["1:untrusted-key"]).await;
    let config = env.write_config(|t| {
        *t = t.replace(
            "station_id = \"test\"",
            "station_id = \"test\"\nlog_format = \"json\"",
        );
    });
    let mut daemon = Daemon::spawn_logging(&config, None);
    daemon.runs_finished(2).await;
    let (status, log) = daemon.stop_with_log().await;
    assert!(status.success());
    let mut runs = 0;
    if std::env::var_os("SHOW_LOG").is_some() {
        eprintln!("{}", log.join("\n"));
    }
    for line in &log {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(!line.contains("Some("), "{line}");
        if value["target"] == nrf_provd_core::station::RUN_LOG {
            runs += 1;
            let fields = &value["fields"];
            assert!(
                fields["imei"].as_str().is_some_and(|i| i.len() == 15),
                "{line}"
            );
            assert!(fields["device"].as_str().is_some(), "{line}");
            assert!(fields["run"].as_i64().is_some(), "{line}");
            let spans = value["spans"].as_array().cloned().unwrap_or_default();
            assert_eq!(spans.len(), 1, "the port's span, once: {line}");
            assert!(value.get("span").is_none(), "no second copy of it: {line}");
            let port = spans[0]["port"].as_str().unwrap_or_default();
            assert!(port.contains("ttySIM"), "{line}");
        }
    }
    assert_eq!(runs, 2);
}
