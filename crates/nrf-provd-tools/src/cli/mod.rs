//! `nrf-provd-dev`: the product's command line (`nrf_provd_daemon::cli`)
//! and the developers' tools beside it, one file each.

pub mod bench;
pub mod demo;
pub mod simulate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nrf_provd_daemon::cli::{Command, GlobalArgs, LogDefaults};
// What the tools' commands share with the product's.
use nrf_provd_daemon::cli::choice;
use nrf_provd_daemon::cli::{EXIT_FAIL, error_exit, parse_duration};

/// nrf-provd with the developers' tools: the simulator, the demo and the
/// bench (not in the Debian package).
#[derive(Debug, Parser)]
#[command(name = "nrf-provd-dev", version)]
pub struct DevCli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: DevCommand,
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    #[command(flatten)]
    Product(Command),
    /// Run simulated nRF91 modems on pseudo-terminals.
    Simulate(simulate::SimulateArgs),
    /// Demo: the daemon against simulated modems, no hardware needed.
    Demo(demo::DemoArgs),
    /// Measure throughput, cycle time and host cost against simulated modems; or soak.
    Bench(bench::BenchArgs),
}

/// Run one command of `nrf-provd-dev` in its process (see
/// `nrf_provd_daemon::cli::main`); its exit status.
///
/// `demo` must remove its working directory, so its output stops quietly
/// on `EPIPE` and it runs to its end; `bench` drives its simulator child
/// over a pipe and must report that child's death instead of dying with
/// it: both keep SIGPIPE ignored.
pub fn run(cli: DevCli) -> ExitCode {
    let DevCli { global, command } = cli;
    match command {
        DevCommand::Product(command) => {
            let (epipe, log) = (command.handles_epipe(), command.log_defaults());
            nrf_provd_daemon::cli::main(global, epipe, log, command.run())
        }
        DevCommand::Simulate(args) => {
            nrf_provd_daemon::cli::main(global, false, LogDefaults::default(), simulate::run(args))
        }
        DevCommand::Demo(args) => {
            nrf_provd_daemon::cli::main(global, true, LogDefaults::default(), demo::run(args))
        }
        DevCommand::Bench(args) => {
            nrf_provd_daemon::cli::main(global, true, LogDefaults::default(), bench::run(args))
        }
    }
}
