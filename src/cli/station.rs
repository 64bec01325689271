//! `nrf-provd run`, `provision` and `demo`.
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct RunArgs {}

#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

pub async fn run(_args: RunArgs) -> ExitCode {
    super::error_exit("not implemented yet")
}

pub async fn provision(_args: ProvisionArgs) -> ExitCode {
    super::error_exit("not implemented yet")
}

pub async fn demo(_args: DemoArgs) -> ExitCode {
    super::error_exit("not implemented yet")
}
