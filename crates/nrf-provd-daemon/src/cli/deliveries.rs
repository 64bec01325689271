//! `nrf-provd deliveries`: what each configured sink is still owed, its
//! retries and dead letters; `--retry RUN` or `--all` sends them again now.
//! Safe while the daemon runs (its delivery tasks pick the change up). The
//! line's shared ledger is the sink `line` on a line; a station alone is
//! told how many runs it keeps for a line it may join. With `[cloud]`, the
//! hand-off's devices still owed to nRF Cloud are the sinks `cloud-claim`
//! and `cloud-onboard` (a refusal is sent again by the next `cloud claim`
//! or daemon pass, not by `--retry`).

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use time::OffsetDateTime;

use crate::config::StationConfig;
use crate::ledger::deliveries::{Backlog, DeliveryRow};
use crate::ledger::{RunId, backends};
use crate::text::escape;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each sink is named by its kind and URL or command, as `/metrics` and the log name it;
the line's shared ledger (`[ledger]`) is the sink `line`; with `[cloud]`, the devices
still owed to nRF Cloud are the sinks `cloud-claim` and `cloud-onboard`.
Exit status: 0 nothing is a dead letter, 1 some deliveries are dead letters
(or were just retried), 2 the job could not be done (configuration, database).")]
pub struct DeliveriesArgs {
    /// Station configuration: its database.
    #[arg(
        long,
        short,
        value_name = "FILE",
        default_value = "/etc/nrf-provd/station.toml"
    )]
    pub config: PathBuf,
    /// Only this sink (its name, e.g. "webhook https://mes.example/runs").
    #[arg(long, value_name = "NAME")]
    pub sink: Option<String>,
    /// Only dead letters (refused for good until retried).
    #[arg(long)]
    pub dead: bool,
    /// Send run RUN again now (a dead letter, or a retry still waiting).
    #[arg(long, value_name = "RUN", conflicts_with = "all")]
    pub retry: Option<RunId>,
    /// Send every dead letter and waiting retry again now.
    #[arg(long)]
    pub all: bool,
    /// One JSON object: the sinks' backlogs and the deliveries listed.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: DeliveriesArgs) -> ExitCode {
    let config = match StationConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => return super::error_exit(e),
    };
    let writing = args.retry.is_some() || args.all;
    let opened = if writing {
        backends::local::deliveries(&config.database)
    } else {
        backends::local::deliveries_read_only(&config.database)
    };
    // The hand-off to nRF Cloud's sinks, for a station that hands off.
    let store = match opened {
        Ok(store) => store.showing_handoff(config.cloud.is_some()),
        Err(e) => return super::error_exit(e),
    };
    let backlog = match store.backlog().await {
        Ok(backlog) => backlog,
        Err(e) => return super::error_exit(e),
    };
    if let Some(sink) = &args.sink
        && !backlog.iter().any(|b| &b.sink == sink)
    {
        let known: Vec<String> = backlog.iter().map(|b| format!("{:?}", b.sink)).collect();
        return super::error_exit(format!(
            "no configured sink is named {sink:?}; the sinks are: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ));
    }
    if writing {
        return match store.retry_now(args.sink.clone(), args.retry).await {
            Ok(0) => super::error_exit("nothing to retry: no such delivery is owed"),
            Ok(n) => {
                println!(
                    "{n} deliver{} sent again now",
                    if n == 1 { "y is" } else { "ies are" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => super::error_exit(e),
        };
    }
    let rows = match store.list(args.sink.clone(), args.dead).await {
        Ok(rows) => rows,
        Err(e) => return super::error_exit(e),
    };
    // A station alone: what it keeps for a line (not a backlog: nobody is
    // waiting for it).
    let kept_for_line = match store.kept_for_line().await {
        Ok(kept) => kept.filter(|_| args.sink.is_none()),
        Err(e) => return super::error_exit(e),
    };
    let shown: Vec<&Backlog> = backlog
        .iter()
        .filter(|b| args.sink.as_ref().is_none_or(|s| &b.sink == s))
        .collect();
    let mut out = io::stdout().lock();
    let written = if args.json {
        write_json(&mut out, &shown, &rows, kept_for_line)
    } else {
        write_table(&mut out, &shown, &rows, kept_for_line)
    };
    if let Err(e) = written {
        return super::error_exit(e);
    }
    if shown.iter().any(|b| b.dead > 0) {
        ExitCode::from(super::EXIT_FAIL)
    } else {
        ExitCode::SUCCESS
    }
}

/// `to - from` in words, whole seconds ("1m 5s").
fn between(from: OffsetDateTime, to: OffsetDateTime) -> String {
    let secs = (to - from).whole_seconds().max(0);
    humantime::format_duration(std::time::Duration::from_secs(secs.unsigned_abs())).to_string()
}

fn age(at: OffsetDateTime) -> String {
    between(at, OffsetDateTime::now_utc())
}

fn write_table(
    out: &mut dyn Write,
    backlog: &[&Backlog],
    rows: &[DeliveryRow],
    kept_for_line: Option<u64>,
) -> io::Result<()> {
    if backlog.is_empty() {
        writeln!(out, "no sinks configured")?;
    }
    if let Some(kept) = kept_for_line.filter(|&n| n > 0) {
        writeln!(
            out,
            "line: not configured, {kept} run{} kept for a line this station may join",
            if kept == 1 { "" } else { "s" }
        )?;
    }
    for b in backlog {
        writeln!(
            out,
            "{}: {} owed{}, {} retrying, {} dead",
            b.sink,
            b.owed,
            b.oldest_queued_at
                .map(|t| format!(" (oldest {} old)", age(t)))
                .unwrap_or_default(),
            b.retrying,
            b.dead
        )?;
    }
    for row in rows {
        let state = match (row.dead_at, row.next_attempt_at) {
            (Some(_), _) => "dead".to_string(),
            (None, Some(at)) if at > OffsetDateTime::now_utc() => {
                format!("retry in {}", between(OffsetDateTime::now_utc(), at))
            }
            _ => "due".to_string(),
        };
        writeln!(
            out,
            "  run {} {}  {}  attempts {}  {}{}",
            row.run_id,
            row.run_uid,
            row.sink,
            row.attempts,
            state,
            row.last_error
                .as_deref()
                .map(|e| format!("  {}", escape(e)))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

fn write_json(
    out: &mut dyn Write,
    backlog: &[&Backlog],
    rows: &[DeliveryRow],
    kept_for_line: Option<u64>,
) -> io::Result<()> {
    let time = |t: Option<OffsetDateTime>| {
        t.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
    };
    let value = serde_json::json!({
        "sinks": backlog.iter().map(|b| serde_json::json!({
            "sink": b.sink,
            "owed": b.owed,
            "oldest_queued_at": time(b.oldest_queued_at),
            "retrying": b.retrying,
            "dead": b.dead,
        })).collect::<Vec<_>>(),
        "deliveries": rows.iter().map(|r| serde_json::json!({
            "sink": r.sink,
            "run_id": r.run_id,
            "run_uid": r.run_uid,
            "queued_at": time(Some(r.queued_at)),
            "attempts": r.attempts,
            "next_attempt_at": time(r.next_attempt_at),
            "last_error": r.last_error,
            "dead_at": time(r.dead_at),
        })).collect::<Vec<_>>(),
        // Null on a line (the line is then one of `sinks`).
        "kept_for_line": kept_for_line,
    });
    serde_json::to_writer_pretty(&mut *out, &value)?;
    writeln!(out)
}
