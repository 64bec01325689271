//! `nrf-provd results`.
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ResultsArgs {}

pub async fn run(_args: ResultsArgs) -> ExitCode {
    super::error_exit("not implemented yet")
}
