//! `nrf-provd bench` and its soak mode: the real station code path
//! (`station::Station` with the demo configuration, pseudo-terminals, the
//! SQLite store in a temporary directory, the full plan) against simulated
//! modems running in a child process.
//!
//! Why a child process: the host CPU time per board cycle must be the
//! station's alone. This process is the station; `getrusage(RUSAGE_SELF)`
//! deltas around each row measure it, minus the sampler thread's own time.
//!
//! One row per board count: a fresh simulator, directory, database and
//! station. A round provisions every board once; between rounds every board
//! is unplugged and plugged back (`replug`). See [`report`] for what each
//! column means and [`soak`] for the endurance run.

pub mod abuse;
pub mod child;
pub mod crash;
pub mod daemon;
pub mod history;
pub mod ledger;
pub mod metrics;
pub mod report;
pub mod scrape;
mod sinks;
pub mod soak;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::config::StationConfig;
pub(crate) use crate::demo::WorkDir;
use crate::ledger::RunFilter;
use crate::process::{self, Process};
use crate::record::RunRecord;
use crate::sim::{FaultSpec, Latency};
use crate::station::{Sources, Station};
use child::{SimChild, SimSpec};
use report::{Costs, Row};

/// No run finished for this long means the station stalled.
const STALL_LIMIT: Duration = Duration::from_secs(120);
/// RSS and descriptors are sampled this often during a row: seldom, since
/// the sampler shares the cores with the station and the simulator (a
/// sample lists `/proc/self/fd`); the peak RSS is the kernel's own
/// high-water mark, which no interval misses.
const ROW_SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// With `--scrape`: where the station's server listens, and how often the
/// page and `/metrics` are fetched.
const SCRAPE_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
const SCRAPE_EVERY: Duration = Duration::from_secs(1);

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Board counts, one row each.
    pub boards: Vec<usize>,
    /// Rounds per row (every board provisioned once per round).
    pub rounds: usize,
    pub latency: Latency,
    /// UART pacing of the simulated modems' output.
    pub baud: Option<u32>,
    pub faults: Vec<FaultSpec>,
    pub seed: u64,
    /// The `nrf-provd` executable that runs `simulate --control`.
    pub simulator: PathBuf,
    /// Keep the working directory (databases, logs) instead of removing it.
    pub keep: bool,
    /// Serve the station page and `/metrics` during each row and fetch them
    /// every second (see [`scrape`]).
    pub scrape: bool,
    /// The stations' shared PostgreSQL ledger (none: SQLite only).
    pub ledger: Option<ledger::BenchLedger>,
    /// Deliver every run to three sinks while measuring (see [`sinks`]).
    pub sinks: bool,
    /// After the rounds, leave the boards in their fixtures this long and
    /// measure what the station spends noticing that nothing changed.
    pub idle: Option<Duration>,
}

/// Every row, and the forwarder's backfill rate when a ledger was given.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub rows: Vec<Row>,
    pub backfill: Option<ledger::Backfill>,
}

/// Why a measurement could not be made (as opposed to a board failing).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("simulator: {detail}")]
    Simulator { detail: String },
    #[error(transparent)]
    Setup(#[from] crate::setup::SetupError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
    #[error("database: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("no progress for {0:?}: the station stalled")]
    Stalled(Duration),
    #[error("{0}")]
    Invalid(String),
}

/// Panics anywhere in this process since the bench started (station tasks
/// included: Tokio catches a task's panic, the hook still sees it).
pub fn panics() -> u64 {
    panic_counter().load(Ordering::Relaxed)
}

fn panic_counter() -> &'static AtomicU64 {
    static COUNT: OnceLock<AtomicU64> = OnceLock::new();
    COUNT.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(count) = COUNT.get() {
                count.fetch_add(1, Ordering::Relaxed);
            }
            previous(info);
        }));
        AtomicU64::new(0)
    })
}

/// The machine a measurement ran on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Machine {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: process::cpu_model(),
            kernel: process::kernel_release(),
        }
    }
}

/// Run every row; `on_row` sees each as soon as it is measured.
pub async fn run(
    options: &BenchOptions,
    mut on_row: impl FnMut(&Row),
) -> Result<BenchReport, BenchError> {
    if options.boards.is_empty() || options.boards.contains(&0) {
        return Err(BenchError::Invalid(
            "--boards needs counts of at least 1".into(),
        ));
    }
    if options.rounds == 0 {
        return Err(BenchError::Invalid("--rounds must be at least 1".into()));
    }
    panic_counter();
    let base = WorkDir::create("bench", options.keep)?;
    let mut rows = Vec::with_capacity(options.boards.len());
    let mut templates = Vec::new();
    for &boards in &options.boards {
        let dir = base.sub(&format!("{boards}-boards"))?;
        let (row, runs) = measure_row(options, boards, &dir).await?;
        rows.push(row);
        templates = runs;
        report::set_scaling(&mut rows);
        if let Some(row) = rows.last() {
            on_row(row);
        }
    }
    let backfill = match &options.ledger {
        Some(shared) => {
            let dir = base.sub("backfill")?;
            templates.retain(|r| r.outcome == crate::record::Outcome::Passed);
            ledger::backfill(shared, &templates, &dir, BACKFILL_BATCH).await?
        }
        None => None,
    };
    Ok(BenchReport { rows, backfill })
}

/// Runs per forwarding transaction in the backfill measurement (the
/// `[ledger] batch_size` default).
pub const BACKFILL_BATCH: usize = 500;

/// The simulator and the station of one row or soak.
struct Rig {
    sim: SimChild,
    config: StationConfig,
    station: Arc<Station>,
    /// Runs finished so far, as the station counts them.
    runs: tokio::sync::watch::Receiver<u64>,
}

impl Rig {
    async fn start(
        spec: &SimSpec<'_>,
        dir: &Path,
        tweak: impl FnOnce(&mut StationConfig),
    ) -> Result<Rig, BenchError> {
        let sim = SimChild::start(spec, dir).await?;
        let mut config = crate::demo::station_config(dir, &sim.ports_dir, &sim.trust_csv)?;
        config.station_id = "bench".into();
        tweak(&mut config);
        let station = crate::setup::station(&config, Sources::default())?;
        let runs = station.watch_runs_finished();
        Ok(Rig {
            sim,
            config,
            station,
            runs,
        })
    }

    /// Runs the station has finished (and committed) so far.
    fn finished(&self) -> u64 {
        self.station.runs_finished()
    }

    /// Wait until `target` runs have finished, woken once per finished run
    /// (not per station event: this process's CPU is measured as the
    /// station's, and the daemon has no such waiter).
    async fn wait_finished(&mut self, target: u64) -> Result<(), BenchError> {
        while self.finished() < target {
            let next = self.finished() + 1;
            match tokio::time::timeout(STALL_LIMIT, self.runs.wait_for(|runs| *runs >= next)).await
            {
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return Err(BenchError::Stalled(STALL_LIMIT)),
            }
        }
        Ok(())
    }

    async fn all_runs(&self) -> Result<Vec<RunRecord>, BenchError> {
        Ok(self.station.reader().runs(&RunFilter::default()).await?)
    }
}

async fn measure_row(
    options: &BenchOptions,
    boards: usize,
    dir: &Path,
) -> Result<(Row, Vec<RunRecord>), BenchError> {
    let spec = SimSpec {
        executable: &options.simulator,
        count: boards,
        latency: options.latency,
        baud: options.baud,
        seed: options.seed,
        faults: &options.faults,
    };
    let schema = match &options.ledger {
        Some(shared) => Some(shared.schema(&format!("{boards}")).await?),
        None => None,
    };
    let ledger_config = options
        .ledger
        .as_ref()
        .zip(schema.as_ref())
        .map(|(shared, schema)| shared.config(schema));
    let bench_sinks = match options.sinks {
        true => Some(sinks::start(dir)?),
        false => None,
    };
    let configs = bench_sinks.as_ref().map(|s| s.configs.clone());
    let mut rig = Rig::start(&spec, dir, |config| {
        config.ledger = ledger_config;
        config.sinks = configs.unwrap_or_default();
    })
    .await?;
    // Delivering while the station works, as the daemon does.
    let deliveries =
        crate::setup::sinks(&rig.config, Some(rig.station.watch_runs_finished())).await?;
    let panics_before = panics();
    let load_before = process::load_average();
    let peak_rss_counted = Process::This.reset_peak_rss();
    let sampler = metrics::Sampler::start(ROW_SAMPLE_EVERY, Process::This);
    let cpu_before = process::cpu();
    // This thread drives the bench (replugs, waits for runs): not the
    // station's work, which runs on the runtime's workers.
    let driver_before = process::main_thread_cpu();
    let delivering_before = process::threads_cpu(DELIVERY_THREADS);
    let receiving_before = process::threads_cpu(&[sinks::RECEIVER_THREAD]);
    // With a shared ledger the claim column comes from the station's own
    // `/metrics`, so the server runs then too (idle but for that one read).
    let http = match options.scrape || options.ledger.is_some() {
        true => {
            let config = StationConfig {
                http: crate::config::HttpConfig {
                    listen: Some(SCRAPE_LISTEN),
                    ..crate::config::HttpConfig::default()
                },
                ..rig.config.clone()
            };
            crate::http::HttpServer::start(&rig.station, &config).await?
        }
        false => None,
    };
    let scraper = http
        .as_ref()
        .filter(|_| options.scrape)
        .map(|http| scrape::Scraper::start(http.local_addr(), SCRAPE_EVERY));
    let mut round_start = Instant::now();
    let mut round_starts = vec![time::OffsetDateTime::now_utc()];
    let serving = tokio::spawn(Arc::clone(&rig.station).serve());
    let mut wall = Duration::ZERO;
    let per_round = u64::try_from(boards).unwrap_or(u64::MAX);
    let mut target = 0;
    for round in 1..=options.rounds {
        if round > 1 {
            round_starts.push(time::OffsetDateTime::now_utc());
            rig.sim.replug(&[]).await?;
            round_start = Instant::now();
        }
        target += per_round;
        rig.wait_finished(target).await?;
        wall += round_start.elapsed();
    }
    let cpu = process::cpu().saturating_sub(cpu_before);
    let driver_cpu = process::main_thread_cpu().saturating_sub(driver_before);
    let delivering = process::threads_cpu(DELIVERY_THREADS).saturating_sub(delivering_before);
    let receiving =
        process::threads_cpu(&[sinks::RECEIVER_THREAD]).saturating_sub(receiving_before);
    let (samples, sampler_cpu) = sampler.finish();
    let peak_rss_kib = peak_rss_counted.then(|| Process::This.peak_rss_kib());
    let scraped = scraper.map(scrape::Scraper::finish);
    let idle = match options.idle {
        Some(duration) => Some(measure_idle(boards, duration).await),
        None => None,
    };
    let scraper_cpu = scraped.map_or(Duration::ZERO, |s| s.cpu);
    let load_after = process::load_average();
    // Every command of every run is logged once its paced reply is over,
    // a few milliseconds after the host read it: wait well past that.
    let costs: Option<Costs> = match options.latency {
        Latency::Realistic => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let costs = rig.sim.costs().await?;
            if options.keep {
                // For a closer look later, next to the kept database.
                let answer = crate::sim::control::Answer::Costs(costs.clone());
                let _ = std::fs::write(dir.join("costs.json"), answer.to_line());
            }
            Some(costs)
        }
        Latency::None => None,
    };
    let claim_p99_ms = match (&http, &options.ledger) {
        (Some(http), Some(_)) => claim_p99_ms(http.local_addr()).await?,
        _ => None,
    };
    rig.station.shutdown();
    let _ = serving.await;
    if let Some(http) = http {
        http.shutdown().await;
    }
    drop(deliveries);
    drop(bench_sinks);
    let runs = rig.all_runs().await?;
    let log = rig.sim.log.clone();
    rig.sim.quit().await;
    drop(rig);
    if let Some(schema) = schema {
        schema.drop_all().await;
    }
    let ledger = options.ledger.as_ref().map_or_else(
        || "sqlite".to_string(),
        |l| format!("pg {}", l.mode.as_str()),
    );
    let simulator_panics = child::panics_in(&log);
    let mut row = report::summarize(report::RowInput {
        boards,
        ledger: &ledger,
        claim_p99_ms,
        runs: &runs,
        round_starts: &round_starts,
        costs: costs.as_ref(),
        wall,
        // The webhook's receiver stands for the MES: not the station's CPU.
        daemon_cpu: cpu
            .saturating_sub(sampler_cpu)
            .saturating_sub(driver_cpu)
            .saturating_sub(scraper_cpu)
            .saturating_sub(receiving),
        delivery_cpu: options.sinks.then_some(delivering),
        samples: &samples,
        peak_rss_kib,
        load: [load_before[0], load_after[0]],
        panics: (panics() - panics_before) + u64::try_from(simulator_panics).unwrap_or(u64::MAX),
    });
    row.scrape = scraped;
    row.idle = idle;
    Ok((row, runs))
}

/// The threads that deliver to the sinks: the sinks' runtime and the
/// outbox's connection.
const DELIVERY_THREADS: &[&str] = &[
    crate::sink::deliver::THREAD,
    crate::sink::deliver::BLOCKING_THREADS,
    "db-deliveries",
];

/// The station's CPU while `boards` provisioned boards stay in their
/// fixtures for `duration`: nothing but departure checks (and the port
/// rescan) runs, so this is what a board left in place costs.
async fn measure_idle(boards: usize, duration: Duration) -> report::Idle {
    // Let the last runs' departure polls start before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sampler = metrics::Sampler::start(Duration::from_secs(1), Process::This);
    let before = process::cpu();
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let cpu = process::cpu().saturating_sub(before);
    let seconds = started.elapsed().as_secs_f64();
    let (_, sampler_cpu) = sampler.finish();
    let cpu_ms = cpu.saturating_sub(sampler_cpu).as_secs_f64() * 1000.0;
    report::Idle {
        seconds,
        ms_per_board_second: cpu_ms / (boards as f64 * seconds),
    }
}

/// The 99th percentile of the central claims' round trips in ms, from the
/// station's `/metrics` (`None` when no claim was made centrally).
async fn claim_p99_ms(addr: std::net::SocketAddr) -> Result<Option<f64>, BenchError> {
    let failed = |e: reqwest::Error| BenchError::Invalid(format!("GET /metrics: {e}"));
    let client = scrape::client().map_err(failed)?;
    let metrics = scrape::get(&client, addr, "/metrics", None)
        .await
        .map_err(failed)?;
    Ok(
        scrape::histogram_quantile(&metrics.body, "nrf_provd_ledger_claim_seconds", 0.99)
            .map(|seconds| seconds * 1000.0),
    )
}

impl Drop for Rig {
    /// On an early return (an error), stop taking boards; the simulator
    /// child is killed when its handle drops.
    fn drop(&mut self) {
        self.station.shutdown();
    }
}

/// The slot index of a simulated port path (`…/ttySIM12` → 12).
pub fn board_index(port: &str) -> Option<usize> {
    Path::new(port)
        .file_name()?
        .to_str()?
        .strip_prefix("ttySIM")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_index_reads_the_link_name() {
        assert_eq!(board_index("/tmp/x/ports/ttySIM12"), Some(12));
        assert_eq!(board_index("/dev/ttyACM0"), None);
        assert_eq!(board_index("ttySIMx"), None);
    }
}
