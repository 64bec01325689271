use std::process::ExitCode;

use clap::Parser;
use nrf_provd::cli::{self, Cli, Command};
use nrf_provd::config::{LogFormat, StationConfig};

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
        // Each span once: the list of spans (port, then run), not the
        // innermost one again beside it.
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.command.handles_epipe() {
        cli::quiet_broken_pipes();
    }
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
        Command::Ca(args) => cli::ca::run(args),
        Command::Ports(args) => cli::ports::run(args),
        Command::Completions(args) => cli::docs::completions(args),
        Command::Man(args) => cli::docs::man(args),
    }
}
