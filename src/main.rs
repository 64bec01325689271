//! `nrf-provd`: the daemon and the commands a station needs, as the Debian
//! package installs it. The developers' binary with the simulator, the
//! demo and the bench besides is `nrf-provd-dev` (src/bin/nrf-provd-dev.rs).

use std::process::ExitCode;

use clap::Parser;
use nrf_provd_daemon::cli::{self, Cli};

fn main() -> ExitCode {
    let Cli { global, command } = Cli::parse();
    let (epipe, log) = (command.handles_epipe(), command.log_defaults());
    cli::main(global, epipe, log, command.run())
}
