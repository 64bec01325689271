//! The downstream sinks, end to end: a real daemon provisions 50 simulated
//! boards while a webhook receiver (an HTTP server in this test that checks
//! the signature and dedupes by `Idempotency-Key`) and a command (a script
//! that appends to a file) are down for part of it, and the daemon is
//! SIGKILLed twice in the middle. Every run arrives at both, none is lost;
//! redeliveries (harmless, by key) are counted and reported.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use nix::sys::signal::Signal;
use nrf_provd_core::record::Outcome;
use nrf91_sim::Latency;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::station_support::{Daemon, Env, runs_in};

const SECRET: &str = "webhook-test-secret-0123456789";

/// What the webhook receiver saw.
#[derive(Default)]
struct Received {
    /// Deliveries per `Idempotency-Key` (the run's uid).
    by_key: HashMap<String, usize>,
    /// Requests whose signature, key or body did not check out.
    rejected: Vec<String>,
    /// Requests answered 503 while "down".
    refused_while_down: usize,
}

struct Receiver {
    addr: std::net::SocketAddr,
    down: Arc<AtomicBool>,
    seen: Arc<Mutex<Received>>,
}

/// The `X-Nrf-Provd-Signature` check a receiver would make.
fn signature_ok(header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(v1) = hex::decode(v1) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("hmac key");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

/// One HTTP/1.1 request per connection (the answer closes it).
async fn serve_one(
    mut stream: tokio::net::TcpStream,
    down: Arc<AtomicBool>,
    seen: Arc<Mutex<Received>>,
) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[head_end..head_end + length];
    let answer = if down.load(Ordering::SeqCst) {
        seen.lock().unwrap().refused_while_down += 1;
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    } else {
        let key = header("idempotency-key").unwrap_or_default();
        let signed = header("x-nrf-provd-signature").is_some_and(|s| signature_ok(&s, body));
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let uid = json
            .as_ref()
            .and_then(|j| j["uid"].as_str().map(str::to_string));
        let mut seen = seen.lock().unwrap();
        if signed
            && header("content-type").as_deref() == Some("application/json")
            && uid.as_deref() == Some(key.as_str())
        {
            *seen.by_key.entry(key).or_default() += 1;
            "HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n"
        } else {
            seen.rejected.push(head.clone());
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        }
    };
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn receiver() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let down = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Received::default()));
    let (d, s) = (Arc::clone(&down), Arc::clone(&seen));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_one(stream, Arc::clone(&d), Arc::clone(&s)));
        }
    });
    Receiver { addr, down, seen }
}

/// The uids the command sink appended, one run JSON per line, with how
/// many times each.
fn appended(file: &Path) -> HashMap<String, usize> {
    let mut by_uid = HashMap::new();
    for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
        let run: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a partial line {line:?}: {e}"));
        *by_uid
            .entry(run["uid"].as_str().expect("uid").to_string())
            .or_default() += 1;
    }
    by_uid
}

fn duplicates(by_key: &HashMap<String, usize>) -> usize {
    by_key.values().map(|n| n - 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_reaches_the_webhook_and_the_command_once_despite_outages_and_two_kills() {
    const BOARDS: usize = 50;
    // The modem's own pace (about 2 s a run), so that a kill after the plan
    // began lands inside a run: at no latency a run is over in ~8 ms, before
    // the log line that says it began is read.
    let env = Env::new(1, Latency::Realistic, &[]).await;
    let hook = receiver().await;
    let secret = env.dir.path().join("webhook.secret");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let received = env.dir.path().join("received.jsonl");
    let down_flag = env.dir.path().join("mes-down");
    let script = format!(
        "if [ -e '{down}' ]; then echo 'MES is down' >&2; exit 1; fi; cat >> '{out}' && echo >> '{out}'",
        down = down_flag.display(),
        out = received.display()
    );
    let config = env.write_config(|text| {
        text.push_str(&format!(
            "\n[[sink]]\nkind = \"webhook\"\nurl = \"http://{addr}/runs\"\nsecret_file = \"{secret}\"\ntimeout = \"2s\"\n\
             \n[[sink]]\nkind = \"command\"\nrun = [\"sh\", \"-c\", {script:?}]\ntimeout = \"5s\"\n",
            addr = hook.addr,
            secret = secret.display(),
        ));
    });
    let db = env.config.database.clone();

    let mut daemon = Daemon::spawn(&config);
    let mut lines = 0;
    while lines < BOARDS {
        daemon.runs_finished(1).await;
        lines += 1;
        match lines {
            // Both receivers go down ...
            10 => {
                hook.down.store(true, Ordering::SeqCst);
                std::fs::write(&down_flag, "").unwrap();
            }
            // ... the daemon is killed in the middle of the next run ...
            15 | 35 => {
                env.fleet.replug(0).await.unwrap();
                daemon.wait_for_log(&["nrf_provd_core::plan"]).await;
                daemon.signal(Signal::SIGKILL);
                let _ = daemon.child.wait();
                // ... and the next daemon provisions the board still in
                // its fixture.
                daemon = Daemon::spawn(&config);
                continue;
            }
            // ... and they come back.
            25 => {
                hook.down.store(false, Ordering::SeqCst);
                std::fs::remove_file(&down_flag).unwrap();
            }
            _ => {}
        }
        env.fleet.replug(0).await.unwrap();
    }
    // Every finished run (a killed one too, as interrupted) delivered to both.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let (runs, hooked, commanded) = loop {
        let runs = runs_in(&db).await;
        let finished: Vec<String> = runs
            .iter()
            .filter(|r| r.outcome != Outcome::InFlight)
            .map(|r| r.uid.hyphenated().to_string())
            .collect();
        let hooked = hook.seen.lock().unwrap().by_key.clone();
        let commanded = appended(&received);
        if finished
            .iter()
            .all(|u| hooked.contains_key(u) && commanded.contains_key(u))
        {
            break (runs, hooked, commanded);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every run delivered: {} finished, {} at the webhook, {} at the command\n{}",
            finished.len(),
            hooked.len(),
            commanded.len(),
            daemon.log.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(daemon.stop().await.success());
    let seen = hook.seen.lock().unwrap();
    assert!(
        seen.rejected.is_empty(),
        "refused requests: {:?}",
        seen.rejected
    );
    assert!(
        seen.refused_while_down > 0,
        "the webhook was down for a while"
    );
    let finished = runs
        .iter()
        .filter(|r| r.outcome != Outcome::InFlight)
        .count();
    assert!(finished >= BOARDS, "{finished} runs");
    assert!(
        runs.iter().any(|r| r.outcome == Outcome::Interrupted),
        "the kills left interrupted runs, delivered too"
    );
    // Nothing arrived that the station did not record.
    assert_eq!(hooked.len(), finished);
    assert_eq!(commanded.len(), finished);
    eprintln!(
        "sinks: {finished} runs; webhook: {} deliveries, {} duplicates (dedupe by Idempotency-Key), {} refused while down; \
         command: {} deliveries, {} duplicates",
        hooked.values().sum::<usize>(),
        duplicates(&hooked),
        seen.refused_while_down,
        commanded.values().sum::<usize>(),
        duplicates(&commanded),
    );
}

/// A receiver that refuses every run with 400.
async fn refusing_receiver() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 65536];
                let _ = tokio::time::timeout(Duration::from_millis(200), async {
                    while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                })
                .await;
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 18\r\nconnection: close\r\n\r\nunknown work order")
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

fn deliveries_cli(config: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(crate::station_support::binary())
        .args(["deliveries", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("run deliveries")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_shows_in_the_log_metrics_and_deliveries_and_is_sent_again_by_hand() {
    let env = Env::new(1, Latency::None, &[]).await;
    let addr = refusing_receiver().await;
    let secret = env.dir.path().join("webhook.secret");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!("http://{addr}/runs");
    let config = env.write_config(|text| {
        text.push_str(&format!(
            "\n[[sink]]\nkind = \"webhook\"\nurl = \"{url}\"\nsecret_file = \"{}\"\n",
            secret.display()
        ));
    });
    let mut daemon = Daemon::spawn(&config);
    let http = daemon.http_addr().await;
    daemon.runs_finished(1).await;
    let warning = daemon.wait_for_log(&["WARN", "behind", "1 dead"]).await;
    assert!(warning.contains(&format!("webhook {url}")), "{warning}");

    let metrics = crate::http_support::get(http, "/metrics", None)
        .expect("scrape")
        .body;
    let sink = format!("sink=\"webhook {url}\"");
    for (name, value) in [
        ("nrf_provd_sink_backlog", "1"),
        ("nrf_provd_sink_dead_letters", "1"),
        ("nrf_provd_sink_retrying", "0"),
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)
                && l.contains(&sink)
                && l.ends_with(&format!(" {value}"))),
            "{name} {value}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("nrf_provd_sink_oldest_undelivered_age_seconds{"),
        "{metrics}"
    );

    // The station page: its snapshot lists the sink with its dead letter
    // (taken from the sinks' backlog, which raises no station event).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let row = loop {
        let mut feed = crate::http_support::Feed::open(http, None).expect("feed");
        let mut snapshot = None;
        for _ in 0..50 {
            if let Some(line) = feed.next_line(Duration::from_millis(100)).expect("feed") {
                if let Some(data) = line.strip_prefix("data: ") {
                    snapshot = Some(serde_json::from_str::<serde_json::Value>(data).expect("json"));
                    break;
                }
            }
        }
        let snapshot = snapshot.expect("the page's snapshot");
        let row = snapshot["sinks"][0].clone();
        if row["dead"] == 1 || std::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(row["sink"], format!("webhook {url}"), "{row}");
    assert_eq!(
        (row["owed"].clone(), row["dead"].clone()),
        (1.into(), 1.into()),
        "{row}"
    );
    assert!(row["oldest_ms"].is_i64(), "{row}");

    let out = deliveries_cli(&config, &["--dead"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a dead letter: {stdout}");
    assert!(
        stdout.contains(&format!("webhook {url}: 1 owed")),
        "{stdout}"
    );
    assert!(
        stdout.contains("400 Bad Request: unknown work order"),
        "{stdout}"
    );
    let runs = runs_in(&env.config.database).await;
    let run_id = runs[0].id.to_string();
    assert!(stdout.contains(&format!("run {run_id} ")), "{stdout}");

    let out = deliveries_cli(&config, &["--sink", "webhook https://elsewhere/", "--all"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no configured sink"));

    let out = deliveries_cli(&config, &["--retry", &run_id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 delivery is sent again now"));
    // Sent again, refused again: a second attempt on the same dead letter.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = deliveries_cli(&config, &["--json"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let delivery = &json["deliveries"][0];
        if delivery["attempts"] == 2 && !delivery["dead_at"].is_null() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{json:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(daemon.stop().await.success());
}
