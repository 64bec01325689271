//! `nrf-provd demo`: the station daemon against simulated modems, with a
//! throwaway CA and trust file, a real database and live progress.
//!
//! Everything but the modems is the production code path: the same
//! configuration type (`config/demo.toml`), serial ports (pseudo-terminals),
//! AT client, verifier, store and station supervisors.

/// `println!` that never panics: with `demo | head` the reader goes away,
/// and the demo still finishes and removes its working directory (SIGPIPE
/// stays ignored for it, see `cli::Command::handles_epipe`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;

use crate::ca::StationCa;
use crate::config::StationConfig;
use crate::record::{Outcome, RunRecord};
use crate::sim::{Fleet, Latency, SimOptions};
use crate::station::{Sources, StationEvent};

/// Why the demo could not run (as opposed to a board failing).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("simulated modems: {0}")]
    Sim(std::io::Error),
    #[error(transparent)]
    Setup(#[from] crate::setup::SetupError),
    #[error("station CA: {0}")]
    Ca(#[from] crate::ca::CaError),
    #[error("database: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("no progress for {0:?}: the station stalled")]
    Stalled(Duration),
}

/// What the demo did, per board and in total.
pub struct Summary {
    pub runs: Vec<RunRecord>,
    pub expected: usize,
    pub database: PathBuf,
    /// Whether the working directory (and so the database) is kept.
    pub kept: bool,
    pub elapsed: Duration,
}

impl Summary {
    pub fn all_passed(&self) -> bool {
        self.runs.len() == self.expected && self.runs.iter().all(|r| r.outcome == Outcome::Passed)
    }
}

/// Run the demo: `boards` simulated modems, each provisioned `rounds`
/// times (unplugged and replugged between rounds). `quiet` silences the
/// live output (tests).
pub async fn run(
    boards: usize,
    rounds: usize,
    latency: Latency,
    quiet: bool,
    keep: bool,
) -> Result<Summary, DemoError> {
    let work = WorkDir::create("demo", keep)?;
    let dir = work.path.clone();
    // Step details and reasons carry what boards said: escaped.
    let say = |line: String| {
        if !quiet {
            out!("{}", crate::text::Escaped(&line));
        }
    };
    let ports_dir = work.sub("ports")?;
    let options = SimOptions {
        latency,
        ..SimOptions::default()
    };
    let seed = rand::random();
    let fleet = Fleet::start(&ports_dir, boards, seed, options)
        .await
        .map_err(DemoError::Sim)?;

    let config = station_config(&dir, &ports_dir, &fleet.trust_csv())?;
    say(format!(
        "nrf-provd demo: {boards} simulated nRF91 boards, {rounds} round(s), station CA and trust file in {}",
        dir.display()
    ));
    let station = crate::setup::station(&config, Sources::default())?;
    // The station page, as the daemon serves it; a port already taken (a
    // station runs here) only costs the demo its page.
    let http = match crate::http::HttpServer::start(&station, &config).await {
        Ok(http) => http,
        Err(e) => {
            say(format!("(no station page: {e})"));
            None
        }
    };
    if let Some(http) = &http {
        say(format!("station page: http://{}/", http.local_addr()));
    }
    let mut events = station.subscribe();
    let serving = tokio::spawn(Arc::clone(&station).serve());

    let started = Instant::now();
    let expected = boards * rounds;
    let mut runs = Vec::with_capacity(expected);
    // Generous: a realistic keygen takes seconds, and boards share 2 cores.
    let stall_limit = Duration::from_secs(120);
    for round in 1..=rounds {
        if round > 1 {
            say(format!(
                "-- round {round}: unplugging and replugging every board"
            ));
            for i in 0..fleet.len() {
                fleet.unplug(i).await;
            }
            for i in 0..fleet.len() {
                fleet.replug(i).await.map_err(DemoError::Sim)?;
            }
        }
        let mut finished = 0;
        while finished < boards {
            let event = match tokio::time::timeout(stall_limit, events.recv()).await {
                Ok(Ok(event)) => event,
                Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Err(RecvError::Closed)) | Err(_) => {
                    station.shutdown();
                    return Err(DemoError::Stalled(stall_limit));
                }
            };
            match event {
                StationEvent::BoardArrived { port, dialect } => say(format!(
                    "[{}] board found ({} dialect)",
                    short(&port),
                    dialect.as_str()
                )),
                StationEvent::StepFinished { port, step, .. } => say(format!(
                    "[{}] {:<9} {:<4} {:>8.1} ms  {}",
                    short(&port),
                    step.name,
                    if step.passed { "ok" } else { "FAIL" },
                    step.duration.as_secs_f64() * 1e3,
                    step.detail
                )),
                StationEvent::RunFinished { port, record } => {
                    say(format!(
                        "[{}] {} run {}{}",
                        short(&port),
                        record.outcome.as_str().to_uppercase(),
                        record.id,
                        record
                            .reason_line()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ));
                    runs.push(Arc::unwrap_or_clone(record));
                    finished += 1;
                }
                _ => {}
            }
        }
    }
    station.shutdown();
    let _ = serving.await;
    if let Some(http) = http {
        http.shutdown().await;
    }
    fleet.shutdown().await;
    let summary = Summary {
        runs,
        expected,
        database: config.database.clone(),
        kept: keep,
        elapsed: started.elapsed(),
    };
    if !quiet {
        print_summary(&summary);
    }
    Ok(summary)
}

/// `config/demo.toml`, pointed at the simulated ports in `ports_dir`, with
/// a trust file, a throwaway CA and a database written to `dir`.
pub fn station_config(
    dir: &Path,
    ports_dir: &Path,
    trust_csv: &str,
) -> Result<StationConfig, DemoError> {
    let write = |name: &str, content: &str| -> Result<PathBuf, DemoError> {
        let path = dir.join(name);
        std::fs::write(&path, content).map_err(|source| DemoError::Dir {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    let mut config = StationConfig::demo();
    config.ports.paths = vec![ports_dir.join("ttySIM*").display().to_string()];
    config.database = dir.join("results.db");
    config.trust_file = Some(write("trusted-devices.csv", trust_csv)?);
    let ca = StationCa::generate(
        "nrf-provd demo station CA",
        Duration::from_secs(365 * 86_400),
    )?;
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    ca.write(&cert, &key)?;
    if let Some(ca_config) = config.ca.as_mut() {
        ca_config.certificate = cert.clone();
        ca_config.key = key;
        ca_config.install = vec![cert];
    }
    Ok(config)
}

/// A private working directory (0700: it holds a throwaway CA key and
/// results), `$TMPDIR/nrf-provd-<kind>-XXXXXX`, removed on drop unless
/// kept: the demo and the benches leave nothing in the temporary directory
/// unless asked to (`--keep`, which prints where it is).
pub struct WorkDir {
    pub path: PathBuf,
    dir: Option<tempfile::TempDir>,
    keep: bool,
}

impl WorkDir {
    pub fn create(kind: &str, keep: bool) -> Result<WorkDir, DemoError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("nrf-provd-{kind}-"))
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|source| DemoError::Dir {
                path: std::env::temp_dir(),
                source,
            })?;
        Ok(WorkDir {
            path: dir.path().to_path_buf(),
            dir: Some(dir),
            keep,
        })
    }

    /// A subdirectory, created.
    pub fn sub(&self, name: &str) -> Result<PathBuf, DemoError> {
        let path = self.path.join(name);
        std::fs::create_dir_all(&path).map_err(|source| DemoError::Dir {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Dropping the TempDir removes it; kept, it stays where it is.
        if let Some(dir) = self.dir.take().filter(|_| self.keep) {
            eprintln!("nrf-provd: kept {}", dir.keep().display());
        }
    }
}

fn short(port: &str) -> &str {
    Path::new(port)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(port)
}

fn print_summary(summary: &Summary) {
    let mut per_board: BTreeMap<String, (String, String, usize, usize, Duration)> = BTreeMap::new();
    for run in &summary.runs {
        let entry = per_board
            .entry(short(&run.port).to_string())
            .or_insert_with(|| {
                (
                    run.device
                        .device_uuid
                        .map(|u| u.to_string())
                        .unwrap_or_else(|| "-".into()),
                    run.device.imei.clone().unwrap_or_else(|| "-".into()),
                    0,
                    0,
                    Duration::ZERO,
                )
            });
        if run.outcome == Outcome::Passed {
            entry.2 += 1;
        } else {
            entry.3 += 1;
        }
        if let Some(finished) = run.finished_at {
            let cycle = (finished - run.started_at).unsigned_abs();
            entry.4 = entry.4.max(cycle);
        }
    }
    out!();
    out!(
        "{:<9} {:<36} {:<15} {:>6} {:>6} {:>12}",
        "port",
        "device uuid",
        "imei",
        "passed",
        "failed",
        "slowest run"
    );
    for (port, (uuid, imei, passed, failed, slowest)) in &per_board {
        out!(
            "{port:<9} {uuid:<36} {imei:<15} {passed:>6} {failed:>6} {:>9.2} s",
            slowest.as_secs_f64()
        );
    }
    let passed = summary
        .runs
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    out!(
        "\n{passed}/{} runs passed in {:.1} s. Database: {}",
        summary.expected,
        summary.elapsed.as_secs_f64(),
        summary.database.display()
    );
    if summary.kept {
        out!(
            "See the records with: nrf-provd results --db {}",
            summary.database.display()
        );
    } else {
        out!(
            "(removed at exit; `nrf-provd-dev demo --keep` keeps the database to read with `nrf-provd results --db`)"
        );
    }
}
