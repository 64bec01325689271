//! Command-line front ends. Each subcommand owns one file with its clap
//! arguments and its `run`, returning the process exit status.

pub mod at;
pub mod bench;
pub mod results;
pub mod simulate;
pub mod station;
pub mod token;

use std::process::ExitCode;

/// Exit status for "usable input, negative answer" (a command ended ERROR,
/// a device is not authentic, a run failed).
pub const EXIT_FAIL: u8 = 1;
/// Exit status for "could not do the job" (bad arguments, timeout, I/O).
pub const EXIT_ERROR: u8 = 2;

/// Print `message` to stderr and return [`EXIT_ERROR`].
pub fn error_exit(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_ERROR)
}
