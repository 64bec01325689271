//! `nrf-provd parse` and `nrf-provd verify`.
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ParseArgs {}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {}

pub async fn parse(_args: ParseArgs) -> ExitCode {
    super::error_exit("not implemented yet")
}

pub async fn verify(_args: VerifyArgs) -> ExitCode {
    super::error_exit("not implemented yet")
}
