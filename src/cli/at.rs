//! `nrf-provd at`.
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct AtArgs {}

pub async fn run(_args: AtArgs) -> ExitCode {
    super::error_exit("not implemented yet")
}
