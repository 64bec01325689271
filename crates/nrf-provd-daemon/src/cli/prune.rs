//! `nrf-provd results --prune [--dry-run]`: retention now, or what it
//! would do. Opens the station's database for writing (beside a running
//! daemon too: a connection of its own, a batch a transaction).

use std::process::ExitCode;
use std::time::Duration;

use time::OffsetDateTime;

use super::results::ResultsArgs;
use crate::config::StationConfig;
use crate::ledger::retention::{Count, Retention};
use crate::ledger::{backends, default_db_path};

/// The database and policy the arguments name: `[retention] keep_full`
/// and whether the station is on a line from `--config`, `--keep-full`
/// before it. With `--db` alone a run the line may not have yet is kept
/// (whether the station forwards is in its config, not its database).
fn policy(args: &ResultsArgs) -> Result<(std::path::PathBuf, Retention), String> {
    let (path, keep_full, on_line) = match &args.config {
        Some(path) => {
            let config = StationConfig::load(path).map_err(|e| e.to_string())?;
            (config.database, config.keep_full, config.ledger.is_some())
        }
        None => (args.db.clone().unwrap_or_else(default_db_path), None, true),
    };
    let keep_full = args
        .keep_full
        .or(keep_full)
        .ok_or("--prune: no [retention] keep_full in the config; give --keep-full (e.g. 90d)")?;
    Ok((path, Retention { keep_full, on_line }))
}

fn line(count: Count) -> String {
    format!("{} runs, {} bytes", count.runs, count.bytes)
}

/// `90 days` for a whole number of days (humantime would say
/// `2months 29days 2h 52m 48s`, its month being 30.44 days).
fn age(keep_full: Duration) -> String {
    const DAY: u64 = 86_400;
    match keep_full.as_secs() {
        secs if secs % DAY == 0 && keep_full.subsec_nanos() == 0 => format!("{} days", secs / DAY),
        _ => humantime::format_duration(keep_full).to_string(),
    }
}

pub async fn run(args: &ResultsArgs) -> ExitCode {
    let (path, policy) = match policy(args) {
        Ok(found) => found,
        Err(e) => return super::error_exit(e),
    };
    let retention = match backends::local::retention(&path) {
        Ok(retention) => retention,
        Err(e) => return super::error_exit(e),
    };
    let now = OffsetDateTime::now_utc();
    if args.dry_run {
        let plan = match retention.plan(policy, now).await {
            Ok(plan) => plan,
            Err(e) => return super::error_exit(e),
        };
        println!(
            "would compact: {} (finished more than {} ago, nothing downstream needs them)",
            line(plan.compact),
            age(policy.keep_full)
        );
        println!(
            "kept in full: {}: a sink has not acknowledged them",
            line(plan.owed_to_sink)
        );
        println!(
            "kept in full: {}: not yet forwarded to the line{}",
            line(plan.not_forwarded),
            if args.config.is_none() {
                " (with --db every run the line may not have is kept; --config knows)"
            } else {
                ""
            }
        );
        println!(
            "would trim: {} to what exports and the hand-off read: the latest passed run of its device, \
             or one the hand-off to nRF Cloud may still send",
            line(plan.trim)
        );
        return ExitCode::SUCCESS;
    }
    match retention.compact(policy, now).await {
        Ok(done) => {
            println!(
                "compacted {} runs and trimmed {} ({} bytes of payloads); {} pages returned to the file system",
                done.runs, done.trimmed, done.bytes, done.pages_freed
            );
            ExitCode::SUCCESS
        }
        Err(e) => super::error_exit(e),
    }
}
