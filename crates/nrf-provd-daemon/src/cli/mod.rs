//! Command-line front ends. Each subcommand owns one file with its clap
//! arguments and its `run`, returning the process exit status. The clap
//! definition of the whole command line lives here, in the library, so that
//! `completions`, `man` and the tests see the same one the binary parses;
//! [`main`] is the process around a command (signals, logging, the
//! runtime), for the packaged binary and the developers' one alike.

pub mod at;
pub mod ca;
pub mod check;
pub mod choice;
pub mod cloud;
pub mod deliveries;
pub mod docs;
pub mod ports;
mod prune;
pub mod results;
pub mod shift;
pub mod station;
pub mod token;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{LogFormat, StationConfig};

/// Exit status for "usable input, negative answer" (a command ended ERROR,
/// a device is not authentic, a run failed).
pub const EXIT_FAIL: u8 = 1;
/// Exit status for "could not do the job" (bad arguments, timeout, I/O).
pub const EXIT_ERROR: u8 = 2;

/// Print `message` to stderr and return `EXIT_ERROR`.
pub fn error_exit(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_ERROR)
}

/// Provision and authenticate Nordic nRF91 modems on a factory test station.
#[derive(Debug, Parser)]
// The about text is the package's description, as it always was.
#[command(
    name = "nrf-provd",
    version,
    about = "Factory-station daemon that provisions and authenticates Nordic nRF91 modems over UART"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log format on stderr [default: the config's `log_format` for `run`, else text].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter (tracing EnvFilter syntax), e.g. `debug` or `nrf91_at=trace`
    /// [default: `info` for run and provision (one line per run, the station's
    /// start and reloads, warnings, errors), `warn` for the other commands].
    #[arg(long, global = true, env = "NRF_PROVD_LOG")]
    pub log: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send AT commands to one port and print the answers.
    At(at::AtArgs),
    /// Decode an attestation, key-generation or JWT token.
    Parse(token::ParseArgs),
    /// Verify a token against a trust file of device identity keys.
    Verify(token::VerifyArgs),
    /// Run the station daemon.
    Run(station::RunArgs),
    /// Check a station configuration and the files it names; every problem at once.
    CheckConfig(check::CheckConfigArgs),
    /// Run the provisioning plan once on one port.
    Provision(station::ProvisionArgs),
    /// Show recorded results.
    Results(results::ResultsArgs),
    /// Set or show the work order, lot, operator and product the running daemon traces boards by.
    Shift(shift::ShiftArgs),
    /// Hand devices off to nRF Cloud (claim, onboard) and show what was handed off.
    Cloud(cloud::CloudArgs),
    /// Show what each downstream sink is owed (backlog, retries, dead letters); send again.
    Deliveries(deliveries::DeliveriesArgs),
    /// Manage the station CA that signs device certificates.
    Ca(ca::CaArgs),
    /// List the serial ports on this machine, with their USB identity and stable name.
    Ports(ports::PortsArgs),
    /// Print a shell completion script.
    Completions(docs::CompletionsArgs),
    /// Print the man page, or write one per command into a directory.
    Man(docs::ManArgs),
}

impl Command {
    /// Whether the process keeps SIGPIPE ignored (Rust's default), so that a
    /// write to a closed pipe or socket is an `EPIPE` error the command
    /// handles. Every other command gets the default disposition back (see
    /// [`quiet_broken_pipes`]).
    ///
    /// - `run`: the daemon's sockets (service manager, and any peer a future
    ///   interface adds) must survive a peer that closed its end.
    ///
    /// (The developers' `demo` and `bench` keep it too: see `nrf-provd-tools`.)
    pub fn handles_epipe(&self) -> bool {
        matches!(self, Command::Run(_))
    }

    /// How the command logs unless `--log-format` and `--log` say otherwise:
    /// the daemon's config may choose the format (journald wants JSON); `run`
    /// and `provision` say one line per run, the others only warnings.
    pub fn log_defaults(&self) -> LogDefaults {
        match self {
            Command::Run(args) => LogDefaults {
                format: StationConfig::load(&args.config)
                    .map(|c| c.log_format)
                    .unwrap_or_default(),
                filter: "info",
            },
            Command::Provision(_) => LogDefaults {
                format: LogFormat::Text,
                filter: "info",
            },
            _ => LogDefaults::default(),
        }
    }

    /// Run the command; the process's exit status.
    pub async fn run(self) -> ExitCode {
        match self {
            Command::At(args) => at::run(args).await,
            Command::Parse(args) => token::parse(args).await,
            Command::Verify(args) => token::verify(args).await,
            Command::Run(args) => station::run(args).await,
            Command::CheckConfig(args) => check::run(&args),
            Command::Provision(args) => station::provision(args).await,
            Command::Results(args) => results::run(args).await,
            Command::Shift(args) => shift::run(args).await,
            Command::Cloud(args) => cloud::run(args).await,
            Command::Deliveries(args) => deliveries::run(args).await,
            Command::Ca(args) => ca::run(args),
            Command::Ports(args) => ports::run(args),
            Command::Completions(args) => docs::completions(args),
            Command::Man(args) => docs::man(args),
        }
    }
}

/// A command's log format and filter when the command line names none.
#[derive(Debug, Clone, Copy)]
pub struct LogDefaults {
    pub format: LogFormat,
    pub filter: &'static str,
}

impl Default for LogDefaults {
    fn default() -> Self {
        LogDefaults {
            format: LogFormat::Text,
            filter: "warn",
        }
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

/// The process around one command: the async runtime, signal dispositions
/// and logging, then `command` to its end.
pub fn main(
    global: GlobalArgs,
    handles_epipe: bool,
    log: LogDefaults,
    command: impl Future<Output = ExitCode>,
) -> ExitCode {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(WORKER_THREADS_MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nrf-provd: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        // A file-size limit (or a quota) reached while writing the database
        // is a fault the station waits out, not a reason to die: take EFBIG
        // as an error instead of the default SIGXFSZ, which would kill the
        // process.
        // SAFETY: setting a signal's disposition to "ignore" runs no handler code.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGXFSZ,
                nix::sys::signal::SigHandler::SigIgn,
            )
        };
        if !handles_epipe {
            quiet_broken_pipes();
        }
        init_logging(
            global.log_format.unwrap_or(log.format),
            global.log.as_deref().unwrap_or(log.filter),
        );
        command.await
    })
}

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

/// Restore the default SIGPIPE disposition, so that writing to a closed
/// pipe ends the process the way it ends `cat` or `grep` (killed by SIGPIPE,
/// status 141 in a shell) instead of Rust's `println!` panic with exit 101.
///
/// One place for every printing command instead of an `EPIPE` check on each
/// of their writes; a command that has something to clean up or report when
/// a peer goes away opts out through [`Command::handles_epipe`].
pub fn quiet_broken_pipes() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler code, so nothing can run in signal
    // context; changing a disposition is atomic and thread-safe in the kernel.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
/// A duration argument: a bare number is seconds (`90`, `2.5`), anything
/// else goes to humantime (`90s`, `10m`, `1h30m`, `500ms`, `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{text:?}: expected a number of seconds, not negative"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?}: {e} (e.g. 90, 90s, 10m, 1h30m, 500ms)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_or_take_a_unit() {
        let secs = Duration::from_secs;
        for (text, want) in [
            ("90", secs(90)),
            ("2.5", Duration::from_millis(2500)),
            ("90s", secs(90)),
            ("10m", secs(600)),
            ("1h", secs(3600)),
            ("1h30m", secs(5400)),
            (" 1h 30m ", secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "m", "10 parsecs", "-5", "NaN", "1h30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
