use std::process::ExitCode;

use clap::Parser;
use nrf_provd::cli::{self, Cli, Command};
use nrf_provd::config::{LogFormat, StationConfig};

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only for a person at a terminal, never into journald or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        // Each span once: the list of spans (port, then run), not the
        // innermost one again beside it.
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

/// A station waits on serial ports and SQLite; a run costs about 2 ms of
/// CPU (README, "Speed"), so a few workers are plenty, and a bound keeps the
/// unit's `TasksMax=` meaningful on a host with many cores.
const WORKER_THREADS_MAX: usize = 4;
/// SQLite calls run on the blocking pool; while another process holds the
/// database they wait out its busy timeout. Beyond this many they queue
/// instead of each starting a thread.
const BLOCKING_THREADS_MAX: usize = 16;

fn main() -> ExitCode {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(WORKER_THREADS_MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run(Cli::parse())),
        Err(e) => {
            eprintln!("nrf-provd: cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    // A file-size limit (or a quota) reached while writing the database is a
    // fault the station waits out, not a reason to die: take EFBIG as an
    // error instead of the default SIGXFSZ, which would kill the process.
    // SAFETY: setting a signal's disposition to "ignore" runs no handler code.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
    if !cli.command.handles_epipe() {
        cli::quiet_broken_pipes();
    }
    // The daemon's config may choose the format (journald wants JSON).
    let format = cli.log_format.unwrap_or_else(|| match &cli.command {
        Command::Run(args) => StationConfig::load(&args.config)
            .map(|c| c.log_format)
            .unwrap_or_default(),
        _ => LogFormat::Text,
    });
    let filter = cli.log.clone().unwrap_or_else(|| {
        match &cli.command {
            Command::Run(_) | Command::Provision(_) => "info",
            _ => "warn",
        }
        .to_string()
    });
    init_logging(format, &filter);
    match cli.command {
        Command::At(args) => cli::at::run(args).await,
        Command::Parse(args) => cli::token::parse(args).await,
        Command::Verify(args) => cli::token::verify(args).await,
        Command::Simulate(args) => cli::simulate::run(args).await,
        Command::Run(args) => cli::station::run(args).await,
        Command::CheckConfig(args) => cli::check::run(&args),
        Command::Provision(args) => cli::station::provision(args).await,
        Command::Demo(args) => cli::station::demo(args).await,
        Command::Results(args) => cli::results::run(args).await,
        Command::Bench(args) => cli::bench::run(args).await,
        Command::Cloud(args) => cli::cloud::run(args).await,
        Command::Ca(args) => cli::ca::run(args),
        Command::Ports(args) => cli::ports::run(args),
        Command::Completions(args) => cli::docs::completions(args),
        Command::Man(args) => cli::docs::man(args),
    }
}
