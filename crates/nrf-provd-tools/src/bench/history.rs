//! `bench --history N`: what a station that has run for months costs. A
//! history of N runs is built quickly (copies of the boards' own first
//! runs, real token shapes, fresh devices and unique claims, spread over a
//! year, thousands of runs a transaction), then every figure of issue 23's
//! table is measured on it and on an empty database: the daemon's start to
//! "station ready" (cold page cache when this process may drop it, and
//! warm), to its first board passed, a run's commit (p50, p99), `results
//! --limit 100`, `--summary`, `--format attest-csv` over 10,000 devices,
//! `/api/v1/runs?limit=100`, the daemon's RSS, and bytes on disk per run.
//!
//! The daemon and `results` are child processes (`nrf-provd run`, `nrf-provd
//! results`): what is timed is what a user waits for, process start
//! included. Commits are timed in this process on the ledger itself.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::child::{SimChild, SimSpec};
use super::daemon::{self, DaemonChild};
use super::{BenchError, STALL_LIMIT, WorkDir, scrape};
use crate::ledger::{Claim, Ledger, LedgerReader, RunFilter, RunStart, SqliteLedger};
use crate::process::Process;
use crate::record::{Outcome, RunRecord, Traceability};
use crate::sim::Latency;

/// Runs a transaction while the history is built: large enough that the
/// commit's fsync does not count, small enough to keep memory flat.
const BUILD_BATCH: usize = 10_000;
/// Over how long the history's runs are spread (a year of a busy line).
const HISTORY_SPAN: time::Duration = time::Duration::days(365);
/// Commits timed at each history size.
const COMMITS: usize = 300;
/// Devices in the attest-csv figure: the latest passed run of each.
const EXPORT_DEVICES: usize = 10_000;
/// Each read is timed this many times; the median is reported.
const READS: usize = 5;
/// How long the daemon may take to stop gracefully.
const STOP_LIMIT: Duration = Duration::from_secs(120);
const API_PATH: &str = "/api/v1/runs?limit=100";

#[derive(Debug, Clone)]
pub struct HistoryOptions {
    /// Runs to add to the history database (0: measure it as it is).
    pub runs: usize,
    /// Boards of the simulator (their first runs are the templates).
    pub boards: usize,
    /// The history database: kept, and grown if it exists (none: a
    /// temporary one).
    pub db: Option<PathBuf>,
    pub seed: u64,
    /// The `nrf-provd` executable (simulator, daemon, `results`).
    pub executable: PathBuf,
    pub keep: bool,
}

/// Every figure at one history size.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Figures {
    /// Runs in the database when measured.
    pub history: u64,
    pub file_bytes: u64,
    /// Start to "station ready" after the page cache was dropped (`None`
    /// when it could not be).
    pub ready_cold_s: Option<f64>,
    pub ready_warm_s: f64,
    /// Start to the first board passed, cold cache when it was dropped.
    pub first_pass_s: f64,
    /// Mean cycle (run start to finish) of the boards' runs after start.
    pub cycle_ms: f64,
    /// The first [`COMMITS`] commits after the daemon's starts.
    pub commit_first_p99_ms: f64,
    /// The next [`COMMITS`], the file read once before (in the page cache).
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    pub limit_100_ms: f64,
    pub summary_ms: f64,
    pub attest_csv_ms: f64,
    /// Rows attest-csv wrote.
    pub attest_rows: usize,
    pub api_runs_ms: f64,
    /// The daemon's resident set once its boards passed.
    pub rss_kib: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryReport {
    pub added: usize,
    pub build_seconds: f64,
    pub build_runs_per_second: f64,
    /// Why the cold figures are missing, when they are.
    pub cold_cache: Result<(), String>,
    pub empty: Figures,
    pub full: Figures,
    /// Bytes on disk per run added (growth of the file ÷ runs added).
    pub bytes_per_run: Option<f64>,
    pub database: PathBuf,
}

/// Build the history and measure both sizes; `progress` hears each stage.
pub async fn run(
    options: &HistoryOptions,
    progress: impl Fn(&str),
) -> Result<HistoryReport, BenchError> {
    if options.boards == 0 {
        return Err(BenchError::Invalid(
            "--history needs at least one board".into(),
        ));
    }
    let base = WorkDir::create("history", options.keep)?;
    let dir = base.sub("station")?;
    let spec = SimSpec {
        executable: &options.executable,
        count: options.boards,
        latency: Latency::None,
        baud: None,
        seed: options.seed,
        faults: &[],
    };
    let mut sim = SimChild::start(&spec, &dir).await?;
    let token = hex::encode(rand::random::<[u8; 16]>());
    let token_file = dir.join("engineer.token");
    write_private(&token_file, &token)?;
    let empty_db = dir.join("empty.db");
    let full_db = options.db.clone().unwrap_or_else(|| dir.join("history.db"));
    let config_for = |db: &Path, name: &str| -> Result<PathBuf, BenchError> {
        let config = daemon::write_config(&dir, &sim, |table| {
            table.insert("database".into(), db.display().to_string().into());
            if let Some(toml::Value::Table(http)) = table.get_mut("http") {
                http.insert(
                    "engineer_token_file".into(),
                    token_file.display().to_string().into(),
                );
            }
        })?;
        let named = dir.join(name);
        std::fs::rename(&config, &named).map_err(|source| BenchError::Dir {
            path: named.clone(),
            source,
        })?;
        Ok(named)
    };
    let empty_config = config_for(&empty_db, "empty.toml")?;
    let full_config = config_for(&full_db, "history.toml")?;
    let cold = can_drop_caches();
    let mut bench = Bench {
        options,
        sim: &mut sim,
        dir: &dir,
        token: &token,
        cold: cold.is_ok(),
    };

    progress("empty database: the boards' first runs (the templates), then every figure");
    let empty = bench.measure(&empty_config, &empty_db, None).await?;
    let templates = SqliteLedger::open_read_only(&empty_db)?
        .runs(&RunFilter::default())
        .await?;

    let before = file_bytes(&full_db);
    let runs_before = runs_in(&full_db).await;
    let started = Instant::now();
    let mut export_since = None;
    if options.runs > 0 {
        progress(&format!(
            "building a history of {} runs, {BUILD_BATCH} a transaction",
            options.runs
        ));
        export_since = Some(build(&full_db, &templates, options.runs, &progress).await?);
    }
    let build_seconds = started.elapsed().as_secs_f64();
    let grown = file_bytes(&full_db).saturating_sub(before);
    progress("history database: every figure");
    let full = bench.measure(&full_config, &full_db, export_since).await?;
    sim.quit().await;
    Ok(HistoryReport {
        added: options.runs,
        build_seconds,
        build_runs_per_second: options.runs as f64 / build_seconds.max(1e-9),
        cold_cache: cold,
        empty,
        full,
        bytes_per_run: (options.runs > 0 && runs_before == 0)
            .then(|| grown as f64 / options.runs as f64),
        database: full_db,
    })
}

/// Runs in `db` (0 when there is none yet).
async fn runs_in(db: &Path) -> u64 {
    match SqliteLedger::open_read_only(db) {
        Ok(reader) => reader.counts().await.map_or(0, |c| c.seen),
        Err(_) => 0,
    }
}

/// The database, its WAL included.
fn file_bytes(db: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    size(db) + size(Path::new(&wal))
}

/// Add `count` copies of `templates` to `db`, oldest first, spread over
/// [`HISTORY_SPAN`] up to an hour ago; the start time from which the
/// last [`EXPORT_DEVICES`] runs are.
pub async fn build(
    db: &Path,
    templates: &[RunRecord],
    count: usize,
    progress: &impl Fn(&str),
) -> Result<OffsetDateTime, BenchError> {
    let ledger = SqliteLedger::open(db)?;
    let end = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let step = HISTORY_SPAN / u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    let first = end - step * u32::try_from(count).unwrap_or(u32::MAX);
    let mut since = end;
    let mut made = 0;
    let started = Instant::now();
    while made < count {
        let batch = (count - made).min(BUILD_BATCH);
        let copies = super::ledger::copies(templates, batch, "bench")
            .into_iter()
            .enumerate()
            .map(|(i, (run, claims))| {
                let index = made + i;
                let at = first + step * u32::try_from(index).unwrap_or(u32::MAX);
                if count - index == EXPORT_DEVICES.min(count) {
                    since = at;
                }
                let (mut run, claims) = moved(run, claims, at);
                run.trace = traced(index);
                (run, claims)
            })
            .collect();
        ledger.record_finished(copies).await?;
        made += batch;
        if made % (BUILD_BATCH * 10) == 0 || made == count {
            progress(&format!(
                "  {made} runs, {:.0} runs/s",
                made as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
        }
    }
    Ok(since)
}

/// The traceability of the `index`th run of the history: a line's work
/// order of 2,000 boards, a lot of 500, three operators on shifts, one
/// product and sixteen fixtures (so `--work-order` and the summary's yield
/// per work order read realistic data).
fn traced(index: usize) -> Traceability {
    Traceability {
        work_order: Some(format!("WO-{:05}", index / 2_000)),
        lot: Some(format!("LOT-{:06}", index / 500)),
        operator: Some(["ana", "ben", "chloe"][(index / 400) % 3].to_string()),
        product: Some("ACME-TRACKER rev C".to_string()),
        fixture: Some(format!("F{:02}", index % 16 + 1)),
    }
}

/// `run` and its claims as if it had started at `at`.
fn moved(
    mut run: RunRecord,
    mut claims: Vec<Claim>,
    at: OffsetDateTime,
) -> (RunRecord, Vec<Claim>) {
    let shift = at - run.started_at;
    run.started_at = at;
    run.finished_at = run.finished_at.map(|t| t + shift);
    for step in &mut run.steps {
        step.started_at += shift;
    }
    for claim in &mut claims {
        claim.at = at;
    }
    (run, claims)
}

struct Bench<'a> {
    options: &'a HistoryOptions,
    sim: &'a mut SimChild,
    dir: &'a Path,
    token: &'a str,
    cold: bool,
}

impl Bench<'_> {
    /// Every figure on `db` (run by the daemon with `config`); the
    /// attest-csv figure reads the runs started at or after `export_since`
    /// (none: all of them).
    async fn measure(
        &mut self,
        config: &Path,
        db: &Path,
        export_since: Option<OffsetDateTime>,
    ) -> Result<Figures, BenchError> {
        let mut figures = Figures::default();
        // First start: cold when the cache can be dropped. The first start
        // on the empty database also makes the templates.
        if self.cold {
            drop_caches().map_err(BenchError::Invalid)?;
        }
        let first = self.start_daemon(config).await?;
        if self.cold {
            figures.ready_cold_s = Some(first.ready.as_secs_f64());
        }
        figures.first_pass_s = first.first_pass.as_secs_f64();
        figures.rss_kib = first.rss_kib;
        figures.api_runs_ms = first.api_ms;
        let warm = self.start_daemon(config).await?;
        figures.ready_warm_s = warm.ready.as_secs_f64();
        if !self.cold {
            figures.first_pass_s = warm.first_pass.as_secs_f64();
        }
        figures.api_runs_ms = figures.api_runs_ms.min(warm.api_ms);

        let reader = SqliteLedger::open_read_only(db)?;
        let recent = reader
            .runs(&RunFilter {
                limit: Some(self.options.boards),
                ..RunFilter::default()
            })
            .await?;
        figures.cycle_ms = mean(
            recent
                .iter()
                .filter_map(|r| Some((r.finished_at? - r.started_at).as_seconds_f64() * 1e3)),
        );
        drop(reader);

        // Twice: the first batch right after the starts (the random index
        // pages a commit touches — device, devices, station's devices —
        // mostly still on disk after a cold start), the second with the
        // file in the page cache, as on a station that has been running
        // (the file is read once in between).
        let (_, first_p99) = commits(db, &recent).await?;
        figures.commit_first_p99_ms = first_p99;
        read_through(db)?;
        let (p50, p99) = commits(db, &recent).await?;
        figures.commit_p50_ms = p50;
        figures.commit_p99_ms = p99;

        let db_arg = db.display().to_string();
        figures.limit_100_ms = self
            .results(&["--db", &db_arg, "--limit", "100", "--format", "json"])?
            .0;
        figures.summary_ms = self.results(&["--db", &db_arg, "--summary"])?.0;
        let since = export_since
            .map(|t| t.format(&time::format_description::well_known::Rfc3339))
            .transpose()
            .map_err(|e| BenchError::Invalid(format!("--since: {e}")))?;
        let mut attest = vec!["--db", &db_arg, "--format", "attest-csv"];
        if let Some(since) = &since {
            attest.extend(["--since", since]);
        }
        let (ms, rows) = self.results(&attest)?;
        figures.attest_csv_ms = ms;
        figures.attest_rows = rows;
        figures.history = runs_in(db).await;
        figures.file_bytes = file_bytes(db);
        Ok(figures)
    }

    /// Replug every board, start the daemon, wait for "station ready",
    /// every board's run, read the API; stop it.
    async fn start_daemon(&mut self, config: &Path) -> Result<Started, BenchError> {
        self.sim.replug(&[]).await?;
        let log = self.dir.join("daemon.log");
        let started = Instant::now();
        let mut daemon = DaemonChild::start(&self.options.executable, config, &log)?;
        let addr = daemon.http_addr().await?;
        let ready = started.elapsed();
        let mut first_pass = None;
        for _ in 0..self.options.boards {
            match tokio::time::timeout(STALL_LIMIT, daemon.next_run()).await {
                Ok(Some(run)) => {
                    if run.outcome == Outcome::Passed && first_pass.is_none() {
                        first_pass = Some(started.elapsed());
                    }
                }
                _ => return Err(BenchError::Stalled(STALL_LIMIT)),
            }
        }
        let rss_kib = Process::Pid(daemon.pid).rss_kib();
        let failed = |e: reqwest::Error| BenchError::Invalid(format!("{API_PATH}: {e}"));
        let client = scrape::client().map_err(failed)?;
        let mut times = Vec::with_capacity(READS);
        for _ in 0..READS {
            let t = Instant::now();
            let response = scrape::get(&client, addr, API_PATH, Some(self.token))
                .await
                .map_err(failed)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if response.status != 200 {
                return Err(BenchError::Invalid(format!(
                    "{API_PATH} answered {}",
                    response.status
                )));
            }
        }
        daemon.stop(STOP_LIMIT).await?;
        Ok(Started {
            ready,
            first_pass: first_pass.ok_or_else(|| {
                BenchError::Invalid("no board passed after the daemon started".into())
            })?,
            rss_kib,
            api_ms: median(&mut times),
        })
    }

    /// `nrf-provd results ARGS`, [`READS`] times: the median wall time in
    /// ms and the lines of the last answer.
    fn results(&self, args: &[&str]) -> Result<(f64, usize), BenchError> {
        let mut times = Vec::with_capacity(READS);
        let mut lines = 0;
        for _ in 0..READS {
            let t = Instant::now();
            let output = std::process::Command::new(&self.options.executable)
                .arg("results")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| BenchError::Invalid(format!("results {args:?}: {e}")))?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if !output.status.success() {
                return Err(BenchError::Invalid(format!(
                    "results {args:?}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
            lines = output
                .stdout
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
        }
        Ok((median(&mut times), lines))
    }
}

struct Started {
    ready: Duration,
    first_pass: Duration,
    rss_kib: u64,
    api_ms: f64,
}

/// [`COMMITS`] runs shaped like `templates` committed one by one as the
/// station does (begin, three claims, finish): p50 and p99 of the finish
/// in ms.
async fn commits(db: &Path, templates: &[RunRecord]) -> Result<(f64, f64), BenchError> {
    let ledger = SqliteLedger::open(db)?;
    let mut times = Vec::with_capacity(COMMITS);
    for (mut run, claims) in super::ledger::copies(templates, COMMITS, "bench-commit") {
        let start = RunStart {
            uid: run.uid,
            station_id: run.station_id.clone(),
            port: run.port.clone(),
            started_at: OffsetDateTime::now_utc(),
            trace: run.trace.clone(),
        };
        run.id = ledger.begin_run(&start).await?;
        run.started_at = start.started_at;
        for claim in &claims {
            ledger.claim(run.id, claim).await?;
        }
        let t = Instant::now();
        ledger.finish_run(&run).await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let p50 = percentile(&mut times, 0.5);
    Ok((p50, percentile(&mut times, 0.99)))
}

/// Read `db` once (into the page cache).
fn read_through(db: &Path) -> Result<(), BenchError> {
    std::fs::File::open(db)
        .and_then(|mut file| std::io::copy(&mut file, &mut std::io::sink()))
        .map(drop)
        .map_err(|source| BenchError::Dir {
            path: db.to_owned(),
            source,
        })
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn median(values: &mut [f64]) -> f64 {
    percentile(values, 0.5)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / f64::from(n) }
}

/// Whether this process may drop the page cache (root, a writable
/// `/proc/sys/vm/drop_caches`): `Err` says why not.
fn can_drop_caches() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(
            "not root: cold-cache figures need `sync; echo 3 > /proc/sys/vm/drop_caches`".into(),
        );
    }
    drop_caches()
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: the next start reads the
/// database from disk, as after a reboot.
fn drop_caches() -> Result<(), String> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .map_err(|e| format!("cannot drop the page cache (/proc/sys/vm/drop_caches): {e}"))
}

fn write_private(path: &Path, text: &str) -> Result<(), BenchError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| BenchError::Dir {
            path: path.to_owned(),
            source,
        })
}

/// The report as a table: one row per figure, empty and history side by side.
pub fn render(report: &HistoryReport) -> String {
    let e = &report.empty;
    let f = &report.full;
    let opt = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.2}"));
    let mut out = String::new();
    let mut row = |name: &str, empty: String, full: String| {
        out.push_str(&format!("{name:<44} {empty:>14} {full:>14}\n"));
    };
    row("figure", "empty".into(), format!("{} runs", f.history));
    row(
        "start to station ready, cold cache (s)",
        opt(e.ready_cold_s),
        opt(f.ready_cold_s),
    );
    row(
        "start to station ready, warm cache (s)",
        format!("{:.2}", e.ready_warm_s),
        format!("{:.2}", f.ready_warm_s),
    );
    row(
        "start to first board passed (s)",
        format!("{:.2}", e.first_pass_s),
        format!("{:.2}", f.first_pass_s),
    );
    row(
        "cycle, mean (ms)",
        format!("{:.0}", e.cycle_ms),
        format!("{:.0}", f.cycle_ms),
    );
    row(
        "commit, first 300 after start, p99 (ms)",
        format!("{:.2}", e.commit_first_p99_ms),
        format!("{:.2}", f.commit_first_p99_ms),
    );
    row(
        "commit, file in page cache, p50 (ms)",
        format!("{:.2}", e.commit_p50_ms),
        format!("{:.2}", f.commit_p50_ms),
    );
    row(
        "commit, file in page cache, p99 (ms)",
        format!("{:.2}", e.commit_p99_ms),
        format!("{:.2}", f.commit_p99_ms),
    );
    row(
        "results --limit 100 (ms)",
        format!("{:.0}", e.limit_100_ms),
        format!("{:.0}", f.limit_100_ms),
    );
    row(
        "results --summary (ms)",
        format!("{:.0}", e.summary_ms),
        format!("{:.0}", f.summary_ms),
    );
    row(
        "results --format attest-csv (ms)",
        format!("{:.0} ({} rows)", e.attest_csv_ms, e.attest_rows),
        format!("{:.0} ({} rows)", f.attest_csv_ms, f.attest_rows),
    );
    row(
        "GET /api/v1/runs?limit=100 (ms)",
        format!("{:.1}", e.api_runs_ms),
        format!("{:.1}", f.api_runs_ms),
    );
    row(
        "daemon RSS after its boards passed (MiB)",
        format!("{:.1}", e.rss_kib as f64 / 1024.0),
        format!("{:.1}", f.rss_kib as f64 / 1024.0),
    );
    row(
        "database file (MiB)",
        format!("{:.1}", e.file_bytes as f64 / 1048576.0),
        format!("{:.1}", f.file_bytes as f64 / 1048576.0),
    );
    let mut text = out;
    if let Some(per_run) = report.bytes_per_run {
        text.push_str(&format!("bytes on disk per run added: {per_run:.0}\n"));
    }
    if report.added > 0 {
        text.push_str(&format!(
            "history built: {} runs in {:.1} s ({:.0} runs/s)\n",
            report.added, report.build_seconds, report.build_runs_per_second
        ));
    }
    match &report.cold_cache {
        Ok(()) => text.push_str("cold: the page cache was dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before the first start at each size\n"),
        Err(why) => text.push_str(&format!("cold: not measured ({why})\n")),
    }
    text
}
