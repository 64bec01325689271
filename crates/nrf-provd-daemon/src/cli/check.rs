//! `nrf-provd check-config FILE`: the config and the files it names,
//! every problem in one pass. Exit 0 clean, 1 warnings only, 2 errors.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::check::{self, Severity};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Checks the TOML and every value (as the daemon would), then the files it names:
the trust file parses, the CA certificate and key load and match and the key is
private, the nRF Cloud API key and the HTTP token files are private, the port
patterns match something now (a warning), and the service user (nrf-provd, or
you when there is none) can write the database directory.

Exit status: 0 no problem, 1 warnings only, 2 errors.")]
pub struct CheckConfigArgs {
    /// The station configuration to check.
    #[arg(value_name = "FILE", default_value = "/etc/nrf-provd/station.toml")]
    pub config: PathBuf,
}

pub fn run(args: &CheckConfigArgs) -> ExitCode {
    let (_, report) = check::check_file(&args.config, crate::check::Writer::ServiceUser);
    for finding in &report.findings {
        println!("{finding}");
    }
    let (errors, warnings) = (report.errors(), report.warnings());
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    if errors == 0 && warnings == 0 {
        println!("{}: ok", args.config.display());
    } else {
        eprintln!(
            "{}: {}, {}",
            args.config.display(),
            plural(errors, "error"),
            plural(warnings, "warning")
        );
    }
    let worst = report.findings.iter().map(|f| f.severity).max();
    match worst {
        None => ExitCode::SUCCESS,
        Some(Severity::Warning) => ExitCode::from(super::EXIT_FAIL),
        Some(Severity::Error) => ExitCode::from(super::EXIT_ERROR),
    }
}
