//! `nrf-provd simulate`.
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {}

pub async fn run(_args: SimulateArgs) -> ExitCode {
    super::error_exit("not implemented yet")
}
