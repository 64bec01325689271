//! `nrf-provd cloud claim|onboard|status`: hand the station's devices off to
//! nRF Cloud by hand, and show per device what was handed off.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::StationConfig;
use crate::handoff::{Handoff, Pass, Progress, Report};
use crate::ledger::{DeviceHandoff, HandoffStep, Outcome, RunId, backends, parse_since};

const DEFAULT_CONFIG: &str = "/etc/nrf-provd/station.toml";

const EXIT_HELP: &str = "\
Exit status: 0 everything sent was taken (or nothing was waiting), 1 nRF Cloud
refused some rows (each keeps its words in the ledger and is sent again next
time), 2 the job could not be done (configuration, API key, nRF Cloud
unreachable, database); what was recorded before stays recorded.";

#[derive(Debug, clap::Args)]
pub struct CloudArgs {
    #[command(subcommand)]
    pub command: CloudCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CloudCommand {
    /// Claim the devices of passed runs (bulk CSV, at most 1000 rows a request, with `claim_tags`).
    #[command(after_help = EXIT_HELP)]
    Claim(ClaimArgs),
    /// Onboard the device certificates installed by passed runs; follow each bulk operation to SUCCEEDED or FAILED.
    #[command(after_help = EXIT_HELP)]
    Onboard(HandArgs),
    /// Show per device what was handed off (claimed, onboarded, bulk operation, last error).
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct HandArgs {
    /// Station configuration: its database and [cloud] section.
    #[arg(long, short, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Only devices whose run started at or after TIME: RFC 3339
    /// (2024-05-01T08:00:00Z) or a date (2024-05-01, midnight UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<OffsetDateTime>,
    /// Print what would be sent (the CSV bodies on stdout, the devices on
    /// stderr); send and record nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct ClaimArgs {
    #[command(flatten)]
    pub hand: HandArgs,
    /// Also the devices of `collected` runs (the `collect` authority's
    /// two-phase claiming: nRF Cloud judges the tokens now).
    #[arg(long)]
    pub include_collected: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// Aligned columns and a summary line.
    Table,
    /// One object per device.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Station configuration: its database.
    #[arg(long, short, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The results database instead of the configuration's (read-only).
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Only devices whose run started at or after TIME.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<OffsetDateTime>,
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,
}

pub async fn run(args: CloudArgs) -> ExitCode {
    match args.command {
        CloudCommand::Claim(args) => {
            hand_off(HandoffStep::Claim, &args.hand, args.include_collected).await
        }
        CloudCommand::Onboard(args) => hand_off(HandoffStep::Onboard, &args, false).await,
        CloudCommand::Status(args) => status(&args).await,
    }
}

async fn hand_off(step: HandoffStep, args: &HandArgs, include_collected: bool) -> ExitCode {
    let config = match StationConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return super::error_exit(e),
    };
    let Some(cloud) = &config.cloud else {
        return super::error_exit(format!(
            "{}: no [cloud] section; add one with the API key (see config/station.toml)",
            args.config.display()
        ));
    };
    let ledger = match backends::local::handoff(&config.database, args.dry_run) {
        Ok(ledger) => ledger,
        Err(e) => return super::error_exit(e),
    };
    let client = match crate::setup::cloud_client(&config) {
        Ok(client) => client,
        Err(e) => return super::error_exit(e),
    };
    let handoff = Handoff::new(client, ledger, cloud.handoff_settings());
    let pass = Pass {
        since: args.since,
        include_collected,
        dry_run: args.dry_run,
        retry_refused_after: None,
    };
    let mut stdout = io::stdout();
    let mut broken = false;
    let mut progress = |p: &Progress| match p {
        Progress::Sending {
            number,
            devices,
            request,
            ..
        } => eprintln!(
            "batch {number}: sending {} row(s): {request}",
            devices.len()
        ),
        Progress::Recorded {
            number,
            done,
            refused,
            ..
        } => eprintln!("batch {number}: {done} {}, {refused} refused", verb(step)),
        Progress::Following { op, rows } => {
            eprintln!("following bulk operation {op} ({rows} row(s)) to SUCCEEDED or FAILED")
        }
        Progress::StillRunning { op, status } => eprintln!(
            "bulk operation {op} still {status}; `nrf-provd cloud onboard` follows it again"
        ),
        Progress::WouldSend {
            number,
            request,
            devices,
            body,
            ..
        } => {
            eprintln!(
                "batch {number}: would send {} row(s): {request}",
                devices.len()
            );
            for d in devices {
                let id = if d.device_id.is_empty() {
                    String::new()
                } else {
                    format!("  device id {}", d.device_id)
                };
                eprintln!("  {}  run {}  {}{id}", d.device_uuid, d.run_id, d.outcome);
            }
            if !broken && stdout.write_all(body.as_bytes()).is_err() {
                broken = true;
            }
        }
    };
    let report = match step {
        HandoffStep::Claim => handoff.claim(&pass, &mut progress).await,
        HandoffStep::Onboard => handoff.onboard(&pass, &mut progress).await,
    };
    let _ = stdout.flush();
    summarize(step, args.dry_run, &report)
}

fn verb(step: HandoffStep) -> &'static str {
    match step {
        HandoffStep::Claim => "claimed",
        HandoffStep::Onboard => "onboarded",
    }
}

/// The last lines and the exit status.
fn summarize(step: HandoffStep, dry_run: bool, report: &Report) -> ExitCode {
    if dry_run {
        eprintln!(
            "dry run: would send {} row(s) in {} request(s); nothing was sent",
            report.rows, report.batches
        );
        return match &report.stopped {
            Some(e) => super::error_exit(e),
            None => ExitCode::SUCCESS,
        };
    }
    if report.rows == 0 && report.stopped.is_none() && report.done == 0 {
        eprintln!("nothing waiting to be {}", verb(step));
        return ExitCode::SUCCESS;
    }
    let already = if report.already > 0 {
        format!(" ({} already claimed)", report.already)
    } else {
        String::new()
    };
    eprintln!(
        "{} {} device(s){already}, {} refused, in {} request(s)",
        verb(step),
        report.done,
        report.refused.len(),
        report.batches
    );
    for (device, why) in report.refused.iter().take(20) {
        eprintln!("  refused {device}: {why}");
    }
    if report.refused.len() > 20 {
        eprintln!(
            "  … {} more (`nrf-provd cloud status` lists them)",
            report.refused.len() - 20
        );
    }
    if let Some(e) = &report.stopped {
        return super::error_exit(format!(
            "stopped: {e}; what was recorded stays, the rest is sent next time"
        ));
    }
    if report.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_FAIL)
    }
}

/// One device of `cloud status`.
#[derive(Debug, serde::Serialize)]
struct StatusRow {
    #[serde(with = "crate::record::ser::uuid")]
    device_uuid: Uuid,
    run_id: RunId,
    /// waiting, claimed, onboarding, onboarded, claim-refused, onboard-refused,
    /// joined by `+`.
    state: String,
    /// The run's outcome, for devices with nothing handed off yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    #[serde(flatten, serialize_with = "handoff_fields")]
    handoff: Option<DeviceHandoff>,
}

/// The hand-off fields beside the row's own (no second device_uuid/run_id).
fn handoff_fields<S: serde::Serializer>(
    h: &Option<DeviceHandoff>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    let time = |t: Option<OffsetDateTime>| t.map(|t| crate::record::ser::rfc3339(&t));
    map.serialize_entry("claimed_at", &h.as_ref().and_then(|h| time(h.claimed_at)))?;
    map.serialize_entry(
        "onboarded_at",
        &h.as_ref().and_then(|h| time(h.onboarded_at)),
    )?;
    map.serialize_entry("bulk_op_id", &h.as_ref().and_then(|h| h.bulk_op_id.clone()))?;
    map.serialize_entry("bulk_op_row", &h.as_ref().and_then(|h| h.bulk_op_row))?;
    map.serialize_entry(
        "onboard_pending",
        &h.as_ref().is_some_and(|h| h.onboard_pending),
    )?;
    map.serialize_entry("last_error", &h.as_ref().and_then(|h| h.last_error.clone()))?;
    map.serialize_entry("error_step", &h.as_ref().and_then(|h| h.error_step))?;
    map.serialize_entry("error_at", &h.as_ref().and_then(|h| time(h.error_at)))?;
    map.serialize_entry("attempts", &h.as_ref().map_or(0, |h| h.attempts))?;
    map.serialize_entry(
        "updated_at",
        &h.as_ref()
            .map(|h| crate::record::ser::rfc3339(&h.updated_at)),
    )?;
    map.end()
}

fn state_of(h: &DeviceHandoff) -> String {
    let mut parts = Vec::new();
    if h.claimed_at.is_some() {
        parts.push("claimed");
    }
    if h.onboarded_at.is_some() {
        parts.push("onboarded");
    } else if h.onboard_pending {
        parts.push("onboarding");
    }
    if h.last_error.is_some() {
        parts.push(match h.error_step {
            Some(HandoffStep::Onboard) => "onboard-refused",
            _ => "claim-refused",
        });
    }
    if parts.is_empty() {
        "waiting".into()
    } else {
        parts.join("+")
    }
}

async fn status(args: &StatusArgs) -> ExitCode {
    let path = match &args.db {
        Some(db) => db.clone(),
        None => match StationConfig::load(&args.config) {
            Ok(config) => config.database,
            Err(e) => return super::error_exit(e),
        },
    };
    let ledger = match backends::local::handoff(&path, true) {
        Ok(ledger) => ledger,
        Err(e) => return super::error_exit(e),
    };
    let (handed, waiting) = match tokio::try_join!(
        ledger.handoffs(args.since),
        ledger.not_handed_off(args.since)
    ) {
        Ok(both) => both,
        Err(e) => return super::error_exit(e),
    };
    let mut rows: Vec<StatusRow> = handed
        .into_iter()
        .map(|h| StatusRow {
            device_uuid: h.device_uuid,
            run_id: h.run_id,
            state: state_of(&h),
            handoff: Some(h),
            outcome: None,
        })
        .chain(waiting.into_iter().map(|(uuid, run, outcome)| StatusRow {
            device_uuid: uuid,
            run_id: run,
            state: "waiting".into(),
            handoff: None,
            outcome: Some(outcome),
        }))
        .collect();
    rows.sort_by_key(|r| r.device_uuid);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = match args.format {
        StatusFormat::Json => serde_json::to_writer_pretty(&mut out, &rows)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out)),
        StatusFormat::Table => write_table(&mut out, &rows),
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => super::error_exit(format!("writing the status: {e}")),
    }
}

fn time_text(t: Option<OffsetDateTime>) -> String {
    t.map_or_else(|| "-".into(), |t| crate::record::ser::rfc3339(&t))
}

fn write_table(out: &mut dyn Write, rows: &[StatusRow]) -> io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:>6}  {:<24}  {:<27}  {:<27}  {:<26}  {:>8}  last error",
        "device_uuid", "run", "state", "claimed_at", "onboarded_at", "bulk_op", "attempts"
    )?;
    let (mut claimed, mut onboarded, mut waiting, mut refused) = (0, 0, 0, 0);
    for row in rows {
        let h = row.handoff.as_ref();
        if h.is_some_and(|h| h.claimed_at.is_some()) {
            claimed += 1;
        }
        if h.is_some_and(|h| h.onboarded_at.is_some()) {
            onboarded += 1;
        }
        if h.is_some_and(|h| h.last_error.is_some()) {
            refused += 1;
        }
        if h.is_none() {
            waiting += 1;
        }
        let error = h
            .and_then(|h| {
                h.last_error
                    .as_ref()
                    .map(|e| format!("{}: {e}", h.error_step.map_or("", HandoffStep::as_str)))
            })
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<36}  {:>6}  {:<24}  {:<27}  {:<27}  {:<26}  {:>8}  {error}",
            row.device_uuid.hyphenated().to_string(),
            row.run_id,
            row.state,
            time_text(h.and_then(|h| h.claimed_at)),
            time_text(h.and_then(|h| h.onboarded_at)),
            h.and_then(|h| h.bulk_op_id.clone())
                .unwrap_or_else(|| "-".into()),
            h.map_or(0, |h| h.attempts),
        )?;
    }
    writeln!(
        out,
        "{} device(s): {claimed} claimed, {onboarded} onboarded, {refused} with a refusal, {waiting} not handed off yet",
        rows.len()
    )
}
