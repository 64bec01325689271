//! `nrf-provd-dev demo`.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of simulated boards.
    #[arg(long, default_value_t = 4)]
    pub boards: usize,
    /// Provisioning rounds; between rounds every board is unplugged and replugged.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// How fast the simulated modems answer: `realistic` models a real modem (key generation takes about a second), `none` answers at once.
    #[arg(long, value_enum, default_value_t = crate::sim::Latency::Realistic)]
    pub latency: crate::sim::Latency,
    /// Keep the working directory (throwaway CA, trust file, results
    /// database) instead of removing it at exit.
    #[arg(long)]
    pub keep: bool,
}

/// The demo: simulated boards, a throwaway CA and trust file, the real
/// daemon code path, a summary at the end.
pub async fn run(args: DemoArgs) -> ExitCode {
    match crate::demo::run(args.boards, args.rounds, args.latency, false, args.keep).await {
        Ok(summary) if summary.all_passed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(super::EXIT_FAIL),
        Err(err) => super::error_exit(err),
    }
}
