//! Command-line front ends. Each subcommand owns one file with its clap
//! arguments and its `run`, returning the process exit status.

pub mod at;
pub mod bench;
pub mod results;
pub mod simulate;
pub mod station;
pub mod token;

use std::process::ExitCode;
use std::time::Duration;

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
