use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nrf_provd::cli;
use nrf_provd::config::{LogFormat, StationConfig};

/// Provision and authenticate Nordic nRF91 modems on a factory test station.
#[derive(Debug, Parser)]
#[command(name = "nrf-provd", version, about)]
struct Cli {
    /// Log format on stderr [default: the config's `log_format` for `run`, else text].
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter (tracing EnvFilter syntax), e.g. `debug` or `nrf_provd::at=trace`
    /// [default: `info` for run and provision (one line per run, the station's
    /// start and reloads, warnings, errors), `warn` for the other commands].
    #[arg(long, global = true, env = "NRF_PROVD_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send AT commands to one port and print the answers.
    At(cli::at::AtArgs),
    /// Decode an attestation, key-generation or JWT token.
    Parse(cli::token::ParseArgs),
    /// Verify a token against a trust file of device identity keys.
    Verify(cli::token::VerifyArgs),
    /// Run simulated nRF91 modems on pseudo-terminals.
    Simulate(cli::simulate::SimulateArgs),
    /// Run the station daemon.
    Run(cli::station::RunArgs),
    /// Run the provisioning plan once on one port.
    Provision(cli::station::ProvisionArgs),
    /// Demo: the daemon against simulated modems, no hardware needed.
    Demo(cli::station::DemoArgs),
    /// Show recorded results.
    Results(cli::results::ResultsArgs),
    /// Measure throughput, cycle time and host cost against simulated modems; or soak.
    Bench(cli::bench::BenchArgs),
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only for a person at a terminal, never into journald or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon's config may choose the format (journald wants JSON).
    let format = cli.log_format.unwrap_or_else(|| match &cli.command {
        Command::Run(args) => StationConfig::load(&args.config)
            .map(|c| c.log_format)
            .unwrap_or_default(),
        _ => LogFormat::Text,
    });
    let filter = cli.log.clone().unwrap_or_else(|| {
        match &cli.command {
            Command::Run(_) | Command::Provision(_) => "info",
            _ => "warn",
        }
        .to_string()
    });
    init_logging(format, &filter);
    match cli.command {
        Command::At(args) => cli::at::run(args).await,
        Command::Parse(args) => cli::token::parse(args).await,
        Command::Verify(args) => cli::token::verify(args).await,
        Command::Simulate(args) => cli::simulate::run(args).await,
        Command::Run(args) => cli::station::run(args).await,
        Command::Provision(args) => cli::station::provision(args).await,
        Command::Demo(args) => cli::station::demo(args).await,
        Command::Results(args) => cli::results::run(args).await,
        Command::Bench(args) => cli::bench::run(args).await,
    }
}
