//! `nrf-provd bench`: throughput, cycle time against the physical limit,
//! station CPU, memory and descriptors per board count; `--soak` for the
//! endurance run. See `bench` for what is measured and how.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use crate::bench::report::{table_header, table_row};
use crate::bench::soak::{self, SoakOptions};
use crate::bench::{self, BenchOptions, Machine};
use crate::sim::{FaultSpec, Latency};

const DEFAULT_BOARDS: &[usize] = &[1, 8, 32, 64, 128];
const DEFAULT_SOAK_BOARDS: usize = 64;
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
    /// cycle time against the physical limit. `none`: they answer at once.
    #[arg(long, value_enum, default_value_t = Latency::None)]
    pub latency: Latency,
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
}

const AFTER_HELP: &str = "\
Examples:
  nrf-provd bench                                   # host cost, modems answer at once
  nrf-provd bench --latency realistic --rounds 3    # against the physical limit
  nrf-provd bench --latency realistic --boards 64 --scrape   # with the page and /metrics read every second
  nrf-provd bench --soak 10m --latency realistic \\
      --fault 0-3:urc-storm --fault 4-7:garbage --fault 8-9:bad-signature --fault 10:stall@KEYGEN";

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
    let baud = match (args.baud, args.latency) {
        (Some(0), _) => None,
        (Some(b), _) => Some(b),
        (None, Latency::Realistic) => Some(DEFAULT_BAUD),
        (None, Latency::None) => None,
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let machine = Machine::this();
    let latency = match args.latency {
        Latency::None => "none",
        Latency::Realistic => "realistic",
    };
    let baud_text = baud.map_or_else(|| "unpaced".into(), |b| format!("{b} baud"));
    if let Some(duration) = args.soak {
        let boards = match args.boards.as_deref() {
            None => DEFAULT_SOAK_BOARDS,
            Some([one]) => *one,
            Some(_) => return super::error_exit("--soak takes one board count"),
        };
        let options = SoakOptions {
            boards,
            duration,
            latency: args.latency,
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

    let options = BenchOptions {
        boards: args.boards.unwrap_or_else(|| DEFAULT_BOARDS.to_vec()),
        rounds: args.rounds,
        latency: args.latency,
        baud,
        faults: args.faults.clone(),
        seed,
        simulator,
        keep: args.keep,
        scrape: args.scrape,
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
        }
    })
    .await;
    match rows {
        Ok(rows) if json => {
            let doc = serde_json::json!({
                "machine": machine,
                "latency": latency,
                "baud": baud,
                "rounds": options.rounds,
                "seed": seed,
                "rows": rows,
            });
            out.line(doc);
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => super::error_exit(e),
    }
}
