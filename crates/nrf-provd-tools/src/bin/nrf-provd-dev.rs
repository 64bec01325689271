//! `nrf-provd-dev`: every command of `nrf-provd` plus the developers'
//! tools (`simulate`, `demo`, `bench`), which the package leaves out: the
//! README's `cargo run --release -p nrf-provd-tools -- demo`.

use std::process::ExitCode;

use clap::Parser;
use nrf_provd_tools::cli::{self, DevCli};

fn main() -> ExitCode {
    cli::run(DevCli::parse())
}
