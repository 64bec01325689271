//! Command-line front ends. Each subcommand owns one file with its clap
//! arguments and its `run`, returning the process exit status. The clap
//! definition of the whole command line lives here, in the library, so that
//! `completions`, `man` and the tests see the same one the binary parses.

pub mod at;
pub mod bench;
pub mod ca;
pub mod check;
pub mod choice;
pub mod cloud;
pub mod docs;
pub mod ports;
pub mod results;
pub mod simulate;
pub mod station;
pub mod token;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::LogFormat;

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
#[command(name = "nrf-provd", version, about)]
pub struct Cli {
    /// Log format on stderr [default: the config's `log_format` for `run`, else text].
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter (tracing EnvFilter syntax), e.g. `debug` or `nrf91_at=trace`
    /// [default: `info` for run and provision (one line per run, the station's
    /// start and reloads, warnings, errors), `warn` for the other commands].
    #[arg(long, global = true, env = "NRF_PROVD_LOG")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send AT commands to one port and print the answers.
    At(at::AtArgs),
    /// Decode an attestation, key-generation or JWT token.
    Parse(token::ParseArgs),
    /// Verify a token against a trust file of device identity keys.
    Verify(token::VerifyArgs),
    /// Run simulated nRF91 modems on pseudo-terminals.
    Simulate(simulate::SimulateArgs),
    /// Run the station daemon.
    Run(station::RunArgs),
    /// Check a station configuration and the files it names; every problem at once.
    CheckConfig(check::CheckConfigArgs),
    /// Run the provisioning plan once on one port.
    Provision(station::ProvisionArgs),
    /// Demo: the daemon against simulated modems, no hardware needed.
    Demo(station::DemoArgs),
    /// Show recorded results.
    Results(results::ResultsArgs),
    /// Measure throughput, cycle time and host cost against simulated modems; or soak.
    Bench(bench::BenchArgs),
    /// Hand devices off to nRF Cloud (claim, onboard) and show what was handed off.
    Cloud(cloud::CloudArgs),
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
    /// - `demo`: it must remove its working directory, so its output stops
    ///   quietly on `EPIPE` and it runs to its end;
    /// - `bench`: it drives its simulator child over a pipe and must report
    ///   that child's death instead of dying with it; its own output stops
    ///   quietly on `EPIPE` instead (see `cli::bench`).
    pub fn handles_epipe(&self) -> bool {
        matches!(self, Command::Run(_) | Command::Bench(_) | Command::Demo(_))
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
