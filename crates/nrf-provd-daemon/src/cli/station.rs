//! `nrf-provd run` and `provision`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::StationConfig;
use crate::http::HttpServer;
use crate::record::{Outcome, RunRecord};
use crate::station::{Sources, Station, systemd};
use crate::text::Escaped;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Station configuration (see config/station.toml).
    #[arg(long, short)]
    pub config: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// Serial port of the board, e.g. /dev/ttyACM0.
    #[arg(long, short)]
    pub port: PathBuf,
    /// Station configuration; the plan, trust file, CA and database come from it.
    #[arg(long, short, default_value = "/etc/nrf-provd/station.toml")]
    pub config: PathBuf,
    /// Print the run record as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The daemon: serve every configured port until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> ExitCode {
    // The checks of `check-config`: every problem at once, before anything
    // is opened; warnings are logged and the station starts.
    let (config, report) =
        crate::check::check_file(&args.config, crate::check::Writer::ThisProcess);
    for finding in &report.findings {
        match finding.severity {
            crate::check::Severity::Warning => warn!("{finding}"),
            crate::check::Severity::Error => eprintln!("{finding}"),
        }
    }
    let config = match config {
        Some(config) if report.errors() == 0 => config,
        _ => {
            return super::error_exit(format!(
                "{}: {} problem(s); the station does not start (`nrf-provd check-config {}` lists them again)",
                args.config.display(),
                report.errors(),
                args.config.display()
            ));
        }
    };
    let station = match crate::setup::station(&config, Sources::default()) {
        Ok(station) => station,
        Err(err) => return super::error_exit(err),
    };
    // Before the station serves, so the page and metrics see every port.
    let http = match HttpServer::start(&station, &config).await {
        Ok(http) => http,
        Err(err) => return super::error_exit(err),
    };
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return super::error_exit("cannot install signal handlers");
    };
    let recovered = station.recovered();
    if recovered > 0 {
        warn!(
            recovered,
            "runs left in flight by an earlier crash are recorded as interrupted"
        );
    }
    // The downstream sinks: a task each, never in the station's way.
    let deliveries = match crate::setup::sinks(&config, Some(station.watch_runs_finished())).await {
        Ok(deliveries) => deliveries,
        Err(err) => return super::error_exit(err),
    };
    // The station's event consumers: one line each.
    let mut status = systemd::Status::start();
    if let Some(deliveries) = &deliveries {
        station.attach_sinks(std::sync::Arc::clone(deliveries.health()));
        status = status.with_sinks(std::sync::Arc::clone(deliveries.health()));
    }
    let status = station.follow(status);
    let serving = tokio::spawn(Arc::clone(&station).serve());
    systemd::notify_ready();
    systemd::spawn_watchdog();
    // Retention: once now, then hourly, on a connection of its own.
    let retention = match config.keep_full {
        Some(keep_full) => match crate::ledger::backends::local::retention(&config.database) {
            Ok(retention) => Some(tokio::spawn(retention.serve(
                crate::ledger::retention::Retention {
                    keep_full,
                    on_line: config.ledger.is_some(),
                },
                crate::ledger::retention::EVERY,
            ))),
            Err(err) => {
                warn!(%err, "retention is off: its connection did not open");
                None
            }
        },
        None => None,
    };
    match &http {
        Some(http) => {
            info!(config = %args.config.display(), http = %format!("http://{}/", http.local_addr()), "station ready")
        }
        None => info!(config = %args.config.display(), "station ready (no http)"),
    }
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&station, &args.config),
        }
    }
    systemd::notify_stopping();
    info!("shutting down");
    station.shutdown();
    if let Some(retention) = retention {
        retention.abort();
    }
    if let Err(err) = serving.await {
        error!(%err, "station task failed");
    }
    if let Some(http) = http {
        http.shutdown().await;
    }
    // Deliveries stop where they are; what is owed is sent at the next start.
    drop(deliveries);
    // The station's last handle closes the event stream; the status
    // reporter then returns the shift's counts.
    drop(station);
    if let Ok(status) = status.await {
        info!(status = %status.shift.status_line(), "stopped");
    }
    ExitCode::SUCCESS
}

/// SIGHUP: re-read the config's trust file, CA and port list. A config
/// with mistakes keeps the running configuration and logs every mistake
/// (the checks of `check-config`, one line each).
fn reload(station: &Station, path: &Path) {
    use crate::check::{Severity, Writer};
    let (config, report) = crate::check::check_file(path, Writer::ThisProcess);
    for finding in &report.findings {
        match finding.severity {
            Severity::Warning => warn!(problem = %finding, "reload"),
            Severity::Error => {
                error!(problem = %finding, "reload failed; keeping the running configuration")
            }
        }
    }
    let config = match config {
        Some(config) if report.errors() == 0 => config,
        _ => {
            error!(
                config = %path.display(),
                errors = report.errors(),
                "reload failed; keeping the running configuration"
            );
            return;
        }
    };
    if let Err(err) = crate::setup::reload(station, &config) {
        error!(%err, "reload failed; keeping the running configuration");
    }
}

/// Run the plan once on one port and print the record.
pub async fn provision(args: ProvisionArgs) -> ExitCode {
    let config = match StationConfig::load(&args.config) {
        Ok(config) => config,
        Err(err) => return super::error_exit(err),
    };
    let record = match crate::setup::provision_port(&config, &args.port).await {
        Ok(record) => record,
        Err(err) => return super::error_exit(err),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&record).unwrap_or_default()
        );
    } else {
        print_record(&record);
    }
    match record.outcome {
        // Collected is what a `collect` station is for: its checks passed.
        Outcome::Passed | Outcome::Collected => ExitCode::SUCCESS,
        _ => ExitCode::from(super::EXIT_FAIL),
    }
}

/// The record for a person at a terminal: what the board said (details,
/// reasons) is escaped, so that it cannot move the cursor, retitle the
/// window or forge a line.
fn print_record(record: &RunRecord) {
    println!(
        "run {} on {}: {}",
        record.id,
        Escaped(&record.port),
        record.outcome.as_str().to_uppercase()
    );
    if let Some(uuid) = record.device.device_uuid {
        println!("  device uuid {uuid}");
    }
    if let Some(imei) = &record.device.imei {
        println!("  imei        {}", Escaped(imei));
    }
    for step in &record.steps {
        println!(
            "  {:<9} {:<4} {:>7.1} ms  {}",
            step.name,
            if step.passed { "ok" } else { "FAIL" },
            step.duration.as_secs_f64() * 1000.0,
            Escaped(&step.detail)
        );
    }
    if let Some(reason) = record.reason_line() {
        println!("  reason: {}", Escaped(&reason));
    }
}
