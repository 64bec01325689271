//! `nrf-provd bench --scrape --abusive N`: what N clients of the JSON API
//! do to the station. The daemon is a child process (`nrf-provd run`, its
//! page served as in production, an engineer's token configured), so what
//! is measured is the daemon alone. Boards are replugged as soon as their
//! run ends (their first replugs spread over one cycle, so that they are
//! not in step, as on a line), on a database that already holds
//! `--history` runs.
//!
//! Two windows of the same length, back to back on the same daemon: the
//! first with the `--scrape` monitoring only (the page, `/metrics` and the
//! ports every second, one live feed), the second with N clients besides,
//! each from an address of its own (127.1.x.y), asking again and again for
//! the largest answer there is: `/api/v1/runs?limit=1000` with the
//! engineer's token (whole records). Half of them read it at
//! [`SLOW_READ_RATE`], the others as fast as they can; a client refused
//! with 503 asks again after [`BUSY_PAUSE`] (an abusive script does not
//! wait the second `Retry-After` asks for).
//!
//! Per window, from the database afterwards: the runs finished in it (by
//! their `finished_at`), failed and interrupted ones, and the longest time
//! with no run finished; from `/proc`: the daemon's peak RSS (`VmHWM`, the
//! kernel's high-water mark) at the window's end and the largest RSS
//! sampled during it.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::child::{SimChild, SimSpec};
use super::daemon::{self, DaemonChild};
use super::metrics::Sampler;
use super::scrape::{self, Scraped, Scraper};
use super::{BenchError, STALL_LIMIT, WorkDir, board_index};
use crate::ledger::{LedgerReader, RunFilter, SqliteLedger, backends};
use crate::process::Process;
use crate::record::{Outcome, RunRecord};
use crate::sim::Latency;

/// What every abusive client asks for: the largest page there is.
pub const ABUSIVE_PATH: &str = "/api/v1/runs?limit=1000";
/// How fast a slow client reads: this many bytes every [`SLOW_READ_EVERY`].
const SLOW_READ_BYTES: usize = 4 * 1024;
const SLOW_READ_EVERY: Duration = Duration::from_millis(100);
/// The slow clients' rate, for the report.
pub const SLOW_READ_RATE: &str = "40 KiB/s";
/// How long a client refused with 503 waits before it asks again.
pub const BUSY_PAUSE: Duration = Duration::from_millis(100);
/// The daemon's shutdown grace (a run timeout and 30 s) and a margin.
const STOP_LIMIT: Duration = Duration::from_secs(180);
/// How often the daemon's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct AbuseOptions {
    pub boards: usize,
    /// Abusive clients (half of them slow).
    pub clients: usize,
    /// Each window's length.
    pub window: Duration,
    /// Runs in the database before the windows (copies of the first
    /// runs, with fresh devices and claims).
    pub history: usize,
    pub latency: Latency,
    pub baud: Option<u32>,
    pub seed: u64,
    /// The `nrf-provd` executable (daemon and simulator).
    pub executable: PathBuf,
    pub keep: bool,
}

/// One window's measurements.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Window {
    pub runs: usize,
    pub runs_per_minute: f64,
    pub failed: usize,
    pub interrupted: usize,
    /// The longest time in the window with no run finished.
    pub longest_gap_s: f64,
    /// `VmHWM` at the window's end: the daemon's largest RSS so far.
    pub peak_rss_mib: f64,
    /// The largest `VmRSS` sampled during the window.
    pub max_rss_mib: f64,
    pub scraped: Scraped,
}

/// What the abusive clients got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClientTally {
    /// Whole answers read.
    pub answers: u64,
    /// 503s.
    pub busy: u64,
    /// Answers begun and not read to their end (a slow client's, when the
    /// window ended; or one the server cut).
    pub cut: u64,
    /// Connections refused or closed before any answer.
    pub refused: u64,
    /// Body bytes read.
    pub bytes: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AbuseReport {
    pub boards: usize,
    pub clients: usize,
    pub slow_clients: usize,
    pub window_s: f64,
    /// Runs in the database when the first window began.
    pub runs_before: u64,
    /// One whole answer to [`ABUSIVE_PATH`], measured before the windows.
    pub answer_mib: f64,
    pub quiet: Window,
    pub abusive: Window,
    pub tally: ClientTally,
    /// Runs finished with the clients ÷ without.
    pub runs_ratio: f64,
}

/// The boards, replugged as their runs end.
struct Line {
    daemon: DaemonChild,
    sim: SimChild,
    /// Replugs waiting for their time: each board's first, spread out.
    pending: Vec<(tokio::time::Instant, usize)>,
    runs_per_board: Vec<usize>,
    started: Instant,
    boards: usize,
}

impl Line {
    /// Take the daemon's runs and replug their boards until `until`, or
    /// until every board has finished `each` runs.
    async fn drive(
        &mut self,
        until: Option<tokio::time::Instant>,
        each: Option<usize>,
    ) -> Result<(), BenchError> {
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
        loop {
            if each.is_some_and(|n| self.runs_per_board.iter().all(|&r| r >= n)) {
                return Ok(());
            }
            let due = self.pending.iter().map(|(at, _)| *at).min();
            tokio::select! {
                run = self.daemon.next_run() => {
                    let run = run.ok_or_else(|| BenchError::Simulator {
                        detail: "the daemon exited on its own".into(),
                    })?;
                    let Some(board) = board_index(&run.port).filter(|&b| b < self.boards) else {
                        continue;
                    };
                    self.runs_per_board[board] += 1;
                    if self.runs_per_board[board] == 1 {
                        // The first runs all end together: spread the
                        // boards over one cycle.
                        let cycle = self.started.elapsed();
                        let offset = cycle.mul_f64(board as f64 / self.boards as f64);
                        self.pending.push((tokio::time::Instant::now() + offset, board));
                    } else {
                        self.sim.replug(&[board]).await?;
                    }
                }
                () = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => {
                    let now = tokio::time::Instant::now();
                    let ready: Vec<usize> = self.pending.iter().filter(|(at, _)| *at <= now).map(|(_, b)| *b).collect();
                    self.pending.retain(|(at, _)| *at > now);
                    if !ready.is_empty() {
                        self.sim.replug(&ready).await?;
                    }
                }
                () = tokio::time::sleep_until(until.unwrap_or(far)), if until.is_some() => return Ok(()),
                () = tokio::time::sleep(STALL_LIMIT) => return Err(BenchError::Stalled(STALL_LIMIT)),
            }
        }
    }
}

/// A window as it was lived: its bounds and what `/proc` said.
struct Lived {
    start: OffsetDateTime,
    end: OffsetDateTime,
    peak_rss_kib: u64,
    max_rss_kib: u64,
    scraped: Scraped,
}

async fn live_window(
    line: &mut Line,
    addr: SocketAddr,
    length: Duration,
) -> Result<Lived, BenchError> {
    let watched = Process::Pid(line.daemon.pid);
    let sampler = Sampler::start(SAMPLE_EVERY, watched);
    let scraper = Scraper::start(addr, Duration::from_secs(1));
    let start = OffsetDateTime::now_utc();
    line.drive(Some(tokio::time::Instant::now() + length), None)
        .await?;
    let end = OffsetDateTime::now_utc();
    let peak_rss_kib = watched.peak_rss_kib();
    let (samples, _) = sampler.finish();
    let scraped = tokio::task::spawn_blocking(move || scraper.finish())
        .await
        .unwrap_or_default();
    Ok(Lived {
        start,
        end,
        peak_rss_kib,
        max_rss_kib: samples.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        scraped,
    })
}

/// Measure the two windows.
pub async fn run(
    options: &AbuseOptions,
    mut progress: impl FnMut(&str),
) -> Result<AbuseReport, BenchError> {
    if options.boards == 0 || options.clients == 0 || options.window.is_zero() {
        return Err(BenchError::Invalid(
            "--abusive needs at least one board, one client and a window".into(),
        ));
    }
    let base = WorkDir::create("abuse", options.keep)?;
    let dir = base.sub("run")?;
    let spec = SimSpec {
        executable: &options.executable,
        count: options.boards,
        latency: options.latency,
        baud: options.baud,
        seed: options.seed,
        faults: &[],
    };
    let mut sim = SimChild::start(&spec, &dir).await?;
    let token = hex::encode(rand::random::<[u8; 16]>());
    let token_file = dir.join("engineer.token");
    write_private(&token_file, &token)?;
    let config = daemon::write_config(&dir, &sim, |table| {
        if let Some(toml::Value::Table(http)) = table.get_mut("http") {
            http.insert(
                "engineer_token_file".into(),
                token_file.display().to_string().into(),
            );
        }
        if let Some(toml::Value::Table(timeouts)) = table.get_mut("timeouts") {
            let run = timeouts
                .get("run")
                .and_then(toml::Value::as_integer)
                .unwrap_or(60);
            timeouts.insert("shutdown_grace".into(), (run + 30).into());
        }
    })?;
    let database = dir.join("results.db");
    let log = dir.join("daemon.log");
    if options.history > 0 {
        progress(&format!(
            "making a history of {} runs from the boards' first runs",
            options.history
        ));
        make_history(options, &mut sim, &config, &database, &log).await?;
    }

    let mut daemon = DaemonChild::start(&options.executable, &config, &log)?;
    let addr = daemon.http_addr().await?;
    let mut line = Line {
        daemon,
        sim,
        pending: Vec::new(),
        runs_per_board: vec![0; options.boards],
        started: Instant::now(),
        boards: options.boards,
    };
    progress("warming up: every board runs twice");
    line.drive(None, Some(2)).await?;
    let runs_before = backends::local::reader(&database)?.counts().await?.seen;
    let whole = {
        let failed = |e: reqwest::Error| BenchError::Invalid(format!("{ABUSIVE_PATH}: {e}"));
        let client = scrape::client().map_err(failed)?;
        scrape::get(&client, addr, ABUSIVE_PATH, Some(&token))
            .await
            .map_err(failed)?
    };

    progress(&format!(
        "window 1: {} s with the monitoring only",
        options.window.as_secs_f64()
    ));
    let quiet = live_window(&mut line, addr, options.window).await?;
    progress(&format!(
        "window 2: {} s with {} clients on {ABUSIVE_PATH}",
        options.window.as_secs_f64(),
        options.clients
    ));
    let clients = Clients::start(addr, options.clients, &token)?;
    let abusive = live_window(&mut line, addr, options.window).await;
    let tally = clients.finish().await;
    let abusive = abusive?;

    progress("letting the runs in flight finish");
    let Line {
        daemon, mut sim, ..
    } = line;
    daemon.stop(STOP_LIMIT).await?;
    let runs = backends::local::reader(&database)?
        .runs(&RunFilter::default())
        .await?;
    sim.quit().await;

    let quiet = window_of(&runs, &quiet);
    let abusive = window_of(&runs, &abusive);
    Ok(AbuseReport {
        boards: options.boards,
        clients: options.clients,
        slow_clients: options.clients / 2,
        window_s: options.window.as_secs_f64(),
        runs_before,
        answer_mib: whole.body.len() as f64 / 1_048_576.0,
        runs_ratio: if quiet.runs == 0 {
            0.0
        } else {
            abusive.runs as f64 / quiet.runs as f64
        },
        quiet,
        abusive,
        tally,
    })
}

/// The report as the bench prints it.
pub fn render(report: &AbuseReport) -> String {
    let mib = |b: u64| b as f64 / 1_048_576.0;
    let row = |name: &str, w: &Window| {
        format!(
            "{name:<16} {:>5} {:>9.1} {:>7} {:>12} {:>10.2} s {:>11.1} MiB {:>12.1} MiB\n",
            w.runs,
            w.runs_per_minute,
            w.failed,
            w.interrupted,
            w.longest_gap_s,
            w.peak_rss_mib,
            w.max_rss_mib
        )
    };
    let t = &report.tally;
    format!(
        "database: {} runs when the windows began; one answer to {ABUSIVE_PATH} is {:.1} MiB\n\
         window            runs  runs/min  failed  interrupted  longest gap  peak RSS (VmHWM)  max RSS sampled\n\
         {}{}\
         with the clients: {:.2} of the runs; the clients read {} whole answers and {:.0} MiB, got {} × 503, {} answers unfinished, {} connections refused\n",
        report.runs_before,
        report.answer_mib,
        row("monitoring only", &report.quiet),
        row(&format!("+{} clients", report.clients), &report.abusive),
        report.runs_ratio,
        t.answers,
        mib(t.bytes),
        t.busy,
        t.cut,
        t.refused,
    )
}

/// Run the daemon until every board has finished once, then record
/// `options.history` copies of those runs (fresh devices and claims).
async fn make_history(
    options: &AbuseOptions,
    sim: &mut SimChild,
    config: &Path,
    database: &Path,
    log: &Path,
) -> Result<(), BenchError> {
    let mut daemon = DaemonChild::start(&options.executable, config, log)?;
    for _ in 0..options.boards {
        let run = tokio::time::timeout(STALL_LIMIT, daemon.next_run()).await;
        if !matches!(run, Ok(Some(_))) {
            return Err(BenchError::Stalled(STALL_LIMIT));
        }
    }
    daemon.stop(STOP_LIMIT).await?;
    let ledger = SqliteLedger::open(database)?;
    let templates = ledger.runs(&RunFilter::default()).await?;
    let copies = super::ledger::copies(&templates, options.history, "bench");
    ledger.record_finished(copies).await?;
    drop(ledger);
    // The boards that just ran come back as new boards for the next daemon.
    sim.replug(&[]).await
}

/// The runs finished inside `lived`, and what they say.
fn window_of(runs: &[RunRecord], lived: &Lived) -> Window {
    let mut finished: Vec<(OffsetDateTime, Outcome)> = runs
        .iter()
        .filter_map(|r| r.finished_at.map(|f| (f, r.outcome)))
        .filter(|(f, _)| *f >= lived.start && *f <= lived.end)
        .collect();
    finished.sort_by_key(|(f, _)| *f);
    let mut last = lived.start;
    let mut longest = time::Duration::ZERO;
    for (at, _) in &finished {
        longest = longest.max(*at - last);
        last = *at;
    }
    longest = longest.max(lived.end - last);
    let seconds = (lived.end - lived.start).as_seconds_f64().max(1e-9);
    let count = |o: Outcome| finished.iter().filter(|(_, x)| *x == o).count();
    Window {
        runs: finished.len(),
        runs_per_minute: finished.len() as f64 / seconds * 60.0,
        failed: count(Outcome::Failed),
        interrupted: count(Outcome::Interrupted),
        longest_gap_s: longest.as_seconds_f64(),
        peak_rss_mib: lived.peak_rss_kib as f64 / 1024.0,
        max_rss_mib: lived.max_rss_kib as f64 / 1024.0,
        scraped: lived.scraped,
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), BenchError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| writeln!(f, "{text}"))
        .map_err(|source| BenchError::Dir {
            path: path.to_owned(),
            source,
        })
}

/// The abusive clients, on a runtime (and thread) of their own so that
/// they cost the harness's replugging nothing.
struct Clients {
    stop: CancellationToken,
    ended: tokio::sync::oneshot::Receiver<()>,
    tally: Arc<Tally>,
}

#[derive(Default)]
struct Tally {
    answers: AtomicU64,
    busy: AtomicU64,
    cut: AtomicU64,
    refused: AtomicU64,
    bytes: AtomicU64,
}

impl Clients {
    fn start(addr: SocketAddr, count: usize, token: &str) -> Result<Clients, BenchError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BenchError::Invalid(format!("clients' runtime: {e}")))?;
        let stop = CancellationToken::new();
        let tally = Arc::new(Tally::default());
        let (done, ended) = tokio::sync::oneshot::channel();
        let request: Arc<[u8]> = format!(
            "GET {ABUSIVE_PATH} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
        .into();
        let (stopping, counting) = (stop.clone(), Arc::clone(&tally));
        std::thread::Builder::new()
            .name("abusive-clients".into())
            .spawn(move || {
                lower_priority();
                runtime.block_on(async move {
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..count {
                        let client = Client {
                            addr,
                            source: source_address(i),
                            slow: i % 2 == 1,
                            request: Arc::clone(&request),
                            tally: Arc::clone(&counting),
                        };
                        let stop = stopping.clone();
                        tasks.spawn(async move {
                            tokio::select! {
                                () = stop.cancelled() => {}
                                () = client.run() => {}
                            }
                        });
                    }
                    while tasks.join_next().await.is_some() {}
                });
                let _ = done.send(());
            })
            .map_err(|e| BenchError::Invalid(format!("clients' thread: {e}")))?;
        Ok(Clients { stop, ended, tally })
    }

    async fn finish(self) -> ClientTally {
        self.stop.cancel();
        let _ = self.ended.await;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        ClientTally {
            answers: get(&self.tally.answers),
            busy: get(&self.tally.busy),
            // Those still reading when the window ended count as cut.
            cut: get(&self.tally.cut),
            refused: get(&self.tally.refused),
            bytes: get(&self.tally.bytes),
        }
    }
}

/// Give this thread the least share of the CPU that others want (nice 19):
/// the clients stand for dashboards and scripts on other machines, so
/// their own CPU time must not be taken from the station measured here.
/// Best effort: without it they only make the measurement harsher.
fn lower_priority() {
    // SAFETY: setpriority reads no memory of ours; on Linux `who` 0 with
    // PRIO_PROCESS is the calling thread.
    let _ = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19) };
}

/// Client `i`'s own loopback address: 127.1.x.y.
fn source_address(i: usize) -> Ipv4Addr {
    let [x, y] = [i / 250, i % 250 + 1].map(|n| u8::try_from(n).unwrap_or(u8::MAX));
    Ipv4Addr::new(127, 1, x, y)
}

struct Client {
    addr: SocketAddr,
    source: Ipv4Addr,
    slow: bool,
    request: Arc<[u8]>,
    tally: Arc<Tally>,
}

/// How one request went.
enum Asked {
    Whole,
    Busy,
    Cut,
}

impl Client {
    async fn run(self) {
        loop {
            // Counted as cut until read to its end (the window may end first).
            match self.ask().await {
                Ok(Asked::Whole) => {}
                Ok(Asked::Busy) => tokio::time::sleep(BUSY_PAUSE).await,
                Ok(Asked::Cut) => {}
                Err(_) => {
                    self.tally.refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
            }
        }
    }

    async fn ask(&self) -> std::io::Result<Asked> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        if self.slow {
            socket.set_recv_buffer_size(16 * 1024)?;
        }
        socket.bind(SocketAddr::from((self.source, 0)))?;
        let mut stream = socket.connect(self.addr).await?;
        stream.write_all(&self.request).await?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut head = Vec::new();
        let body_start = loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        let status = std::str::from_utf8(&head[..body_start])
            .ok()
            .and_then(|h| h.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok());
        match status {
            Some(503) => {
                self.tally.busy.fetch_add(1, Ordering::Relaxed);
                return Ok(Asked::Busy);
            }
            Some(200) => {}
            _ => return Err(std::io::ErrorKind::InvalidData.into()),
        }
        self.tally.cut.fetch_add(1, Ordering::Relaxed);
        let mut tail = head[body_start..].to_vec();
        self.tally
            .bytes
            .fetch_add(tail.len() as u64, Ordering::Relaxed);
        let chunk = if self.slow {
            SLOW_READ_BYTES
        } else {
            buf.len()
        };
        loop {
            let n = match stream.read(&mut buf[..chunk]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.tally.bytes.fetch_add(n as u64, Ordering::Relaxed);
            // Keep the last bytes: a whole chunked answer ends "0\r\n\r\n".
            tail.extend_from_slice(&buf[n.saturating_sub(5)..n]);
            if tail.len() > 5 {
                tail.drain(..tail.len() - 5);
            }
            if self.slow {
                tokio::time::sleep(SLOW_READ_EVERY).await;
            }
        }
        if tail.ends_with(b"0\r\n\r\n") {
            self.tally.cut.fetch_sub(1, Ordering::Relaxed);
            self.tally.answers.fetch_add(1, Ordering::Relaxed);
            Ok(Asked::Whole)
        } else {
            Ok(Asked::Cut)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_an_address_of_its_own() {
        assert_eq!(source_address(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(source_address(249), Ipv4Addr::new(127, 1, 0, 250));
        assert_eq!(source_address(250), Ipv4Addr::new(127, 1, 1, 1));
        let all: std::collections::HashSet<_> = (0..1000).map(source_address).collect();
        assert_eq!(all.len(), 1000);
    }
}
