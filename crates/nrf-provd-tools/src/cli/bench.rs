//! `nrf-provd bench`: throughput, cycle time against the physical limit,
//! station CPU, memory and descriptors per board count; `--soak` for the
//! endurance run. See `bench` for what is measured and how.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use super::choice::LedgerModeArg;
use crate::bench::abuse::{self, AbuseOptions};
use crate::bench::crash::{self, CrashOptions};
use crate::bench::history::{self, HistoryOptions};
use crate::bench::ledger::BenchLedger;
use crate::bench::report::{table_header, table_row};
use crate::bench::soak::{self, SoakOptions};
use crate::bench::{self, BenchOptions, Machine};
use crate::sim::{FaultSpec, Latency};

const DEFAULT_BOARDS: &[usize] = &[1, 8, 32, 64, 128];
const DEFAULT_SOAK_BOARDS: usize = 64;
const DEFAULT_CRASH_BOARDS: usize = 8;
const DEFAULT_ABUSE_BOARDS: usize = 16;
const DEFAULT_HISTORY_BOARDS: usize = 16;
const DEFAULT_BAUD: u32 = 115_200;

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// Board counts, one table row each [default: 1,8,32,64,128; 64 with --soak].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub boards: Option<Vec<usize>>,
    /// Rounds per row: every board is provisioned once a round, and
    /// unplugged and plugged back between rounds.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// `realistic`: the modems take as long as real ones; also reports
    /// cycle time against the physical limit. `none`: they answer at once
    /// [default: none; realistic with --crash].
    #[arg(long, value_enum)]
    pub latency: Option<Latency>,
    /// UART pacing of the modems' output, 0 for none [default: 115200 with
    /// realistic latency, none without].
    #[arg(long)]
    pub baud: Option<u32>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Soak instead: run one board count this long (90 = seconds, or 90s,
    /// 10m, 1h30m) with
    /// boards replugged as soon as their run ends, then check for leaks and
    /// lost records. Exit 1 if a check fails.
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
    pub soak: Option<Duration>,
    /// Crash bench instead: SIGKILL the daemon N times at random moments
    /// while it provisions boards (8 unless --boards), restart it on the
    /// same database, and report committed runs lost or changed, runs left
    /// in flight, integrity, and boards failing after a restart. Exit 1 if
    /// any of them is not zero.
    #[arg(long, value_name = "N", conflicts_with_all = ["soak", "faults", "rounds"])]
    pub crash: Option<usize>,
    /// Make modems misbehave (as `simulate --fault`), repeatable.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<FaultSpec>,
    /// Seed of the simulated boards [default: random].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the working directory (databases, simulator logs).
    #[arg(long)]
    pub keep: bool,
    /// Serve the station page, /metrics and the API during each row, as the
    /// daemon does, and fetch the page, /metrics and /api/v1/ports every
    /// second with one page open on the live feed (the fetching threads'
    /// CPU time is not counted as the station's).
    #[arg(long, conflicts_with = "soak")]
    pub scrape: bool,
    /// With --scrape: the abusive profile instead of the table. The daemon
    /// (a child process) provisions boards replugged without pause (16
    /// unless --boards) for two windows back to back: the monitoring only,
    /// then also N clients asking again and again for the largest answer,
    /// /api/v1/runs?limit=1000 as an engineer, half of them reading slowly.
    /// Reports runs per minute in each window, the longest gap between
    /// finished runs and the daemon's peak RSS.
    #[arg(long, value_name = "N", requires = "scrape", conflicts_with_all = ["crash", "ledger"])]
    pub abusive: Option<usize>,
    /// With --abusive: each window's length.
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION", default_value = "20s", requires = "abusive")]
    pub window: Duration,
    /// History bench: build a history of RUNS runs (copies of the boards'
    /// first runs with fresh devices and claims, spread over a year, many
    /// a transaction), then measure start, commits, reads, RSS and bytes
    /// per run on it and on an empty database (--boards: one count, 16
    /// unless given). Cold-cache figures when run as root. With --abusive
    /// instead: runs recorded before the windows, so that the API reads a
    /// realistic history.
    #[arg(long, value_name = "RUNS", conflicts_with_all = ["soak", "crash", "ledger"])]
    pub history: Option<usize>,
    /// With --history: the history database, kept (and grown when it
    /// exists; --history 0 measures it as it is) [default: a temporary one].
    #[arg(long, value_name = "FILE", requires = "history")]
    pub db: Option<std::path::PathBuf>,
    /// The stations also use this line's PostgreSQL ledger (a URL without a
    /// password, which comes from $NRF_PROVD_LEDGER_PASSWORD). Each row runs
    /// in a schema of the bench's own, dropped afterwards; then the
    /// forwarder's backfill rate is measured.
    #[arg(long, value_name = "URL")]
    pub ledger: Option<String>,
    /// With --ledger: where claims are made during a run.
    #[arg(long, value_enum, default_value_t = LedgerModeArg::Required)]
    pub ledger_mode: LedgerModeArg,
    /// With --ledger: runs in the backfill measurement (0: none).
    #[arg(long, default_value_t = 20_000, value_name = "RUNS")]
    pub backfill: usize,
    /// Deliver every run to three sinks while measuring: a webhook (to a
    /// receiver in this process), MQTT (to a Mosquitto of the bench's own)
    /// and a command that appends it to a file; `sinks/run` is what
    /// delivering costs of cpu/cycle.
    #[arg(long, conflicts_with_all = ["soak", "crash", "abusive"])]
    pub sinks: bool,
    /// After each row's rounds, leave every board in its fixture this long
    /// and report the station's CPU per board per second while it only
    /// checks that the boards are still there (departure polling).
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION", conflicts_with_all = ["soak", "crash", "abusive", "history"])]
    pub idle: Option<Duration>,
}

const AFTER_HELP: &str = "\
Examples:
  nrf-provd-dev bench                                   # host cost, modems answer at once
  nrf-provd-dev bench --latency realistic --rounds 3    # against the physical limit
  nrf-provd-dev bench --latency realistic --boards 64 --scrape   # with the page and /metrics read every second
  nrf-provd-dev bench --scrape --abusive 200 --history 5000     # 200 API clients hammering the largest answer
  nrf-provd-dev bench --latency realistic --boards 64 \\
      --ledger 'postgres://nrf@/nrf_line?host=/run/postgresql'   # a line's ledger, required mode
  nrf-provd-dev bench --soak 10m --latency realistic \\
      --fault 0-3:urc-storm --fault 4-7:garbage --fault 8-9:bad-signature --fault 10:stall@KEYGEN
  nrf-provd-dev bench --history 1000000 --db /var/tmp/history.db   # a year of a busy line
  nrf-provd-dev bench --crash 100                       # 100 SIGKILLs, nothing may be lost";

pub async fn run(args: BenchArgs) -> ExitCode {
    let out = Output::default();
    let status = tokio::select! {
        status = bench(args, &out) => status,
        // Dropping the bench removes its working directory and kills the
        // simulator child (kill_on_drop).
        () = out.stopped() => ExitCode::SUCCESS,
    };
    match out.failure() {
        Some(e) => super::error_exit(format!("cannot write to standard output: {e}")),
        None => status,
    }
}

/// Standard output for the bench, which keeps SIGPIPE ignored (see
/// `Command::handles_epipe`): once a write fails the bench stops — quietly
/// when the reader has gone (`bench | head`), with the error otherwise.
#[derive(Default)]
struct Output {
    stopped: tokio::sync::Notify,
    failure: std::sync::Mutex<Option<std::io::Error>>,
}

impl Output {
    fn line(&self, text: impl std::fmt::Display) {
        self.write(format_args!("{text}\n"));
    }

    fn write(&self, text: std::fmt::Arguments<'_>) {
        let Ok(mut failure) = self.failure.lock() else {
            return;
        };
        if failure.is_some() {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                *failure = Some(e);
            }
            // Stored permit: `stopped` completes even if it starts waiting later.
            self.stopped.notify_one();
        }
    }

    async fn stopped(&self) {
        self.stopped.notified().await;
    }

    fn failure(&self) -> Option<std::io::Error> {
        self.failure.lock().ok()?.take()
    }
}

async fn bench(args: BenchArgs, out: &Output) -> ExitCode {
    let simulator = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return super::error_exit(format!("cannot find the nrf-provd executable: {e}")),
    };
    let default_latency = if args.crash.is_some() {
        Latency::Realistic
    } else {
        Latency::None
    };
    let baud = match (args.baud, args.latency.unwrap_or(default_latency)) {
        (Some(0), _) => None,
        (Some(b), _) => Some(b),
        (None, Latency::Realistic) => Some(DEFAULT_BAUD),
        (None, Latency::None) => None,
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let machine = Machine::this();
    if let Some(kills) = args.crash {
        return crash(&args, kills, seed, simulator, &machine, out).await;
    }
    if let Some(clients) = args.abusive {
        return abusive(&args, clients, seed, simulator, &machine, out).await;
    }
    if let Some(runs) = args.history {
        return history(&args, runs, seed, simulator, &machine, out).await;
    }
    let latency = match args.latency.unwrap_or(Latency::None) {
        Latency::None => "none",
        Latency::Realistic => "realistic",
    };
    let baud_text = baud.map_or_else(|| "unpaced".into(), |b| format!("{b} baud"));
    if let Some(duration) = args.soak {
        let boards = match one_board_count(&args, DEFAULT_SOAK_BOARDS, "--soak") {
            Ok(boards) => boards,
            Err(exit) => return exit,
        };
        let options = SoakOptions {
            boards,
            duration,
            latency: args.latency.unwrap_or(Latency::None),
            baud,
            faults: args.faults.clone(),
            seed,
            simulator,
            keep: args.keep,
            sample_every: Duration::from_secs(1),
        };
        if !args.json {
            out.line(format_args!(
                "nrf-provd soak: {boards} boards for {duration:?}, latency {latency}, {baud_text}, seed {seed}, faults [{}]",
                args.faults
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        let quiet = args.json;
        let report = match soak::run(&options, |line| {
            if !quiet {
                out.line(line);
            }
        })
        .await
        {
            Ok(report) => report,
            Err(e) => return super::error_exit(e),
        };
        if args.json {
            let doc = serde_json::json!({
                "machine": machine,
                "latency": latency,
                "baud": baud,
                "seed": seed,
                "faults": args.faults.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "soak": report,
                "ok": report.ok(),
            });
            out.line(doc);
        } else {
            out.write(format_args!("{}", soak::render(&report)));
        }
        return if report.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(super::EXIT_FAIL)
        };
    }

    if let Some(url) = &args.ledger {
        if let Err(why) = crate::config::check_ledger_url(url) {
            return super::error_exit(format!("--ledger {why}"));
        }
    }
    let options = BenchOptions {
        ledger: args.ledger.clone().map(|url| BenchLedger {
            url,
            mode: args.ledger_mode.into(),
            backfill: args.backfill,
        }),
        boards: args.boards.unwrap_or_else(|| DEFAULT_BOARDS.to_vec()),
        rounds: args.rounds,
        latency: args.latency.unwrap_or(Latency::None),
        baud,
        faults: args.faults.clone(),
        seed,
        simulator,
        keep: args.keep,
        scrape: args.scrape,
        sinks: args.sinks,
        idle: args.idle,
    };
    if !args.json {
        out.line(format_args!(
            "nrf-provd bench: latency {latency}, {baud_text}, {} round(s) per row, seed {seed}",
            options.rounds
        ));
        out.line(format_args!(
            "machine: {} × {}, Linux {}",
            machine.cpus, machine.cpu_model, machine.kernel
        ));
        out.line(table_header());
    }
    let json = args.json;
    let rows = bench::run(&options, |row| {
        if !json {
            out.line(table_row(row));
            if let Some(s) = &row.scrape {
                out.line(format_args!(
                    "       scraped: {} requests ({} failed), {:.1} MiB; live feed {:.1} KiB",
                    s.requests,
                    s.failed,
                    s.bytes as f64 / 1_048_576.0,
                    s.feed_bytes as f64 / 1024.0
                ));
            }
            if let Some(idle) = &row.idle {
                out.line(format_args!(
                    "       idle: {:.3} ms CPU per board per second ({} boards left in their fixtures for {:.0} s)",
                    idle.ms_per_board_second, row.boards, idle.seconds
                ));
            }
        }
    })
    .await;
    match rows {
        Ok(report) if json => {
            let doc = serde_json::json!({
                "machine": machine,
                "latency": latency,
                "baud": baud,
                "rounds": options.rounds,
                "seed": seed,
                "rows": report.rows,
                "backfill": report.backfill,
            });
            out.line(doc);
            ExitCode::SUCCESS
        }
        Ok(report) => {
            if let Some(b) = report.backfill {
                out.line(format_args!(
                    "forwarder backfill: {} runs in {:.2} s = {:.0} runs/s ({} per transaction)",
                    b.runs, b.seconds, b.runs_per_second, b.batch
                ));
            }
            ExitCode::SUCCESS
        }
        Err(e) => super::error_exit(e),
    }
}

/// The one board count a bench with a daemon child takes (`--boards N`),
/// or its default; more than one is an error naming `flag`.
fn one_board_count(args: &BenchArgs, default: usize, flag: &str) -> Result<usize, ExitCode> {
    match args.boards.as_deref() {
        None => Ok(default),
        Some([one]) => Ok(*one),
        Some(_) => Err(super::error_exit(format!("{flag} takes one board count"))),
    }
}

/// A daemon-child bench's latency (realistic unless asked) and the baud
/// rate that paces it (`--baud 0`: unpaced).
fn paced(args: &BenchArgs) -> (Latency, Option<u32>) {
    let latency = args.latency.unwrap_or(Latency::Realistic);
    let baud = match (args.baud, latency) {
        (Some(0), _) | (None, Latency::None) => None,
        (Some(b), _) => Some(b),
        (None, Latency::Realistic) => Some(DEFAULT_BAUD),
    };
    (latency, baud)
}

/// `bench --crash N`: the report, exit 1 unless every target is met.
async fn crash(
    args: &BenchArgs,
    kills: usize,
    seed: u64,
    executable: std::path::PathBuf,
    machine: &Machine,
    out: &Output,
) -> ExitCode {
    let boards = match one_board_count(args, DEFAULT_CRASH_BOARDS, "--crash") {
        Ok(boards) => boards,
        Err(exit) => return exit,
    };
    let (latency, baud) = paced(args);
    let options = CrashOptions {
        kills,
        boards,
        latency,
        baud,
        seed,
        executable,
        keep: args.keep,
    };
    if !args.json {
        out.line(format_args!(
            "nrf-provd crash bench: {kills} SIGKILLs, {boards} boards, latency {}, seed {seed}",
            latency_name(latency)
        ));
    }
    let quiet = args.json;
    let report = match crash::run(&options, |line| {
        if !quiet {
            out.line(line);
        }
    })
    .await
    {
        Ok(report) => report,
        Err(e) => return super::error_exit(e),
    };
    if args.json {
        out.line(serde_json::json!({
            "machine": machine,
            "latency": latency_name(latency),
            "seed": seed,
            "crash": report,
            "ok": report.ok(),
        }));
    } else {
        out.write(format_args!("{}", crash::render(&report)));
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAIL)
    }
}

/// `bench --scrape --abusive N`: the two windows' row.
async fn abusive(
    args: &BenchArgs,
    clients: usize,
    seed: u64,
    executable: std::path::PathBuf,
    machine: &Machine,
    out: &Output,
) -> ExitCode {
    let boards = match one_board_count(args, DEFAULT_ABUSE_BOARDS, "--abusive") {
        Ok(boards) => boards,
        Err(exit) => return exit,
    };
    let (latency, baud) = paced(args);
    let options = AbuseOptions {
        boards,
        clients,
        window: args.window,
        history: args.history.unwrap_or(0),
        latency,
        baud,
        seed,
        executable,
        keep: args.keep,
    };
    if !args.json {
        out.line(format_args!(
            "nrf-provd bench --scrape --abusive {clients}: {boards} boards, latency {}, seed {seed}; \
             {clients} clients on {} as engineer ({} reading at {}), two {:.0} s windows",
            latency_name(latency),
            abuse::ABUSIVE_PATH,
            clients / 2,
            abuse::SLOW_READ_RATE,
            args.window.as_secs_f64()
        ));
        out.line(format_args!(
            "machine: {} × {}, Linux {}",
            machine.cpus, machine.cpu_model, machine.kernel
        ));
    }
    let quiet = args.json;
    let report = match abuse::run(&options, |line| {
        if !quiet {
            out.line(line);
        }
    })
    .await
    {
        Ok(report) => report,
        Err(e) => return super::error_exit(e),
    };
    if args.json {
        out.line(serde_json::json!({
            "machine": machine,
            "latency": latency_name(latency),
            "seed": seed,
            "abusive": report,
        }));
    } else {
        out.write(format_args!("{}", abuse::render(&report)));
    }
    ExitCode::SUCCESS
}

fn latency_name(latency: Latency) -> &'static str {
    match latency {
        Latency::None => "none",
        Latency::Realistic => "realistic",
    }
}

/// `bench --history N`: a history's figures beside an empty database's.
async fn history(
    args: &BenchArgs,
    runs: usize,
    seed: u64,
    executable: std::path::PathBuf,
    machine: &Machine,
    out: &Output,
) -> ExitCode {
    let boards = match one_board_count(args, DEFAULT_HISTORY_BOARDS, "--history") {
        Ok(boards) => boards,
        Err(exit) => return exit,
    };
    let options = HistoryOptions {
        runs,
        boards,
        db: args.db.clone(),
        seed,
        executable,
        keep: args.keep,
    };
    let quiet = args.json;
    if !quiet {
        out.line(format_args!(
            "nrf-provd bench --history {runs}: {boards} boards, seed {seed}; machine: {} × {}, Linux {}",
            machine.cpus, machine.cpu_model, machine.kernel
        ));
    }
    let report = match history::run(&options, |line| {
        if !quiet {
            out.line(line);
        }
    })
    .await
    {
        Ok(report) => report,
        Err(e) => return super::error_exit(e),
    };
    if args.json {
        out.line(serde_json::json!({
            "machine": machine,
            "seed": seed,
            "history": report,
        }));
    } else {
        out.write(format_args!("{}", history::render(&report)));
    }
    ExitCode::SUCCESS
}
