//! `nrf-provd results`: print recorded runs from the station's results
//! database, or the whole line's from its shared PostgreSQL ledger.
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::config::{LedgerConfig, StationConfig};
use crate::ledger::export::{self, OnboardOptions};
use crate::ledger::{LedgerReader, RunFilter, backends, default_db_path};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns and a summary line.
    Table,
    /// Full records (steps, tokens, certificates) as a JSON array.
    Json,
    /// One row per run, with a header.
    Csv,
    /// Nordic's attestation-token CSV for nRF Cloud bulk claiming
    /// (imei,device_uuid,token,timestamp; no header; latest passed run per device).
    AttestCsv,
    /// Nordic's onboarding CSV for nRF Cloud bulk onboarding
    /// (device_id,subtype,tags,fw_types,"<certificate PEM>"; no header).
    OnboardCsv,
}

#[derive(Debug, clap::Args)]
pub struct ResultsArgs {
    /// Results database [default: $STATE_DIRECTORY/results.db when
    /// STATE_DIRECTORY is set (systemd), else ./nrf-provd.db]. Opened read-only,
    /// so this works while the daemon runs.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ledger", "config"])]
    pub db: Option<PathBuf>,
    /// The line's shared ledger instead: every station's runs. A
    /// PostgreSQL URL without a password (that comes from
    /// $NRF_PROVD_LEDGER_PASSWORD), e.g. postgres://nrf@db.line3/nrf_line.
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    pub ledger: Option<String>,
    /// A station's configuration: its `[ledger]` (URL and password file)
    /// when it has one, else its database.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Only runs of this station.
    #[arg(long, value_name = "ID")]
    pub station: Option<String>,
    /// Only runs recorded under this work order.
    #[arg(long, value_name = "WO")]
    pub work_order: Option<String>,
    /// Instead of runs: yield per station and per work order, and the most
    /// frequent failure reasons (table or json).
    #[arg(long)]
    pub summary: bool,
    /// Instead of runs: check the whole database file (SQLite's
    /// quick_check, which reads every page) and say `ok` or what is
    /// damaged (exit 1). Start checks a large database only after an
    /// unclean shutdown, in the background.
    #[arg(long, conflicts_with_all = ["ledger", "summary"])]
    pub check: bool,
    /// Instead of runs: compact the runs `[retention] keep_full` lets go
    /// now (their steps, tokens and certificates; the run, its verdict,
    /// device, traceability and claims stay forever), then return the
    /// freed pages to the file system. Writes the database.
    #[arg(long, conflicts_with_all = ["ledger", "summary", "check"])]
    pub prune: bool,
    /// With --prune: only say how many runs and bytes would go, and why
    /// the others are kept.
    #[arg(long, requires = "prune")]
    pub dry_run: bool,
    /// With --prune: how long a run keeps its payload, instead of the
    /// config's `[retention] keep_full` (e.g. 90d).
    #[arg(long, value_name = "DURATION", requires = "prune", value_parser = super::parse_duration)]
    pub keep_full: Option<std::time::Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only runs of this device.
    #[arg(long, value_name = "UUID", value_parser = parse_uuid)]
    pub device: Option<Uuid>,
    /// Only runs started at or after TIME: RFC 3339 (2024-05-01T08:00:00Z) or a
    /// date (2024-05-01, midnight UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<OffsetDateTime>,
    /// Only the most recent N runs.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// onboard-csv: the device subtype column.
    #[arg(long, default_value = "")]
    pub subtype: String,
    /// onboard-csv: device tags, `|`-separated.
    #[arg(long, default_value = "")]
    pub tags: String,
    /// onboard-csv: firmware types for FOTA, `|`-separated (e.g. APP|MODEM).
    #[arg(long, default_value = "")]
    pub fw_types: String,
    /// With --format attest-csv or onboard-csv: write files of at most
    /// --max-rows whole rows each into DIR (created if missing), named
    /// attest-001.csv, … or onboard-001.csv, …, instead of standard output.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// With --out-dir: rows per file (nRF Cloud takes at most 1000 per bulk
    /// request).
    #[arg(long, value_name = "N", requires = "out_dir", default_value_t = export::NRF_CLOUD_MAX_ROWS,
          value_parser = parse_max_rows)]
    pub max_rows: usize,
}

fn parse_max_rows(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("at least one row a file".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}; expected a number of rows, e.g. 1000")),
    }
}

fn parse_uuid(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|e| {
        format!("not a UUID ({e}); expected e.g. 50503041-3633-4261-803d-1e2b8f70111a")
    })
}

pub use crate::ledger::parse_since;

/// `--check`: the station's database file, checked in full.
fn check(args: &ResultsArgs) -> ExitCode {
    let path = match &args.config {
        Some(path) => match StationConfig::load(path) {
            Ok(config) => config.database,
            Err(e) => return super::error_exit(e),
        },
        None => args.db.clone().unwrap_or_else(default_db_path),
    };
    match crate::ledger::backends::local::check(&path) {
        Ok(()) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e @ crate::ledger::LedgerError::Damaged { .. }) => {
            eprintln!("nrf-provd: {e}");
            ExitCode::from(super::EXIT_FAIL)
        }
        Err(e) => super::error_exit(e),
    }
}

/// The ledger the arguments name.
fn open_reader(args: &ResultsArgs) -> Result<Arc<dyn LedgerReader>, String> {
    let shared = |ledger: &LedgerConfig| backends::line::reader(ledger).map_err(|e| e.to_string());
    if let Some(url) = &args.ledger {
        crate::config::check_ledger_url(url).map_err(|why| format!("--ledger {why}"))?;
        return shared(&LedgerConfig::for_url(url.clone()));
    }
    let path = match &args.config {
        Some(path) => {
            let config = StationConfig::load(path).map_err(|e| e.to_string())?;
            if let Some(ledger) = &config.ledger {
                return shared(ledger);
            }
            config.database
        }
        None => args.db.clone().unwrap_or_else(default_db_path),
    };
    backends::local::reader(&path).map_err(|e| e.to_string())
}

pub async fn run(args: ResultsArgs) -> ExitCode {
    if args.check {
        return check(&args);
    }
    if args.prune {
        return super::prune::run(&args).await;
    }
    let reader = match open_reader(&args) {
        Ok(reader) => reader,
        Err(e) => return super::error_exit(e),
    };
    let filter = RunFilter {
        device_uuid: args.device,
        since: args.since,
        limit: args.limit,
        station_id: args.station.clone(),
        work_order: args.work_order.clone(),
    };
    if args.summary {
        return write_summary(&args, reader.as_ref(), &filter).await;
    }
    let runs = match reader.runs(&filter).await {
        Ok(runs) => runs,
        Err(e) => return super::error_exit(e),
    };
    write_results(&args, &runs)
}

async fn write_summary(
    args: &ResultsArgs,
    reader: &dyn LedgerReader,
    filter: &RunFilter,
) -> ExitCode {
    if !matches!(args.format, Format::Table | Format::Json) {
        return super::error_exit("--summary prints --format table or json");
    }
    let summary = match reader.summary(filter).await {
        Ok(summary) => summary,
        Err(e) => return super::error_exit(e),
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = match args.format {
        Format::Json => serde_json::to_writer_pretty(&mut out, &summary)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out)),
        _ => summary.write_table(&mut out),
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => super::error_exit(format!("writing the summary: {e}")),
    }
}

fn write_results(args: &ResultsArgs, runs: &[crate::record::RunRecord]) -> ExitCode {
    if let Some(dir) = &args.out_dir {
        return write_parts(args, runs, dir);
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let options = onboard_options(args);
    let written = match args.format {
        Format::Table => export::table(runs, &mut out).map(|()| None),
        Format::Json => export::json(runs, &mut out).map(|()| None),
        Format::Csv => export::csv(runs, &mut out).map(|()| None),
        Format::AttestCsv => export::attest_csv(runs, &mut out).map(Some),
        Format::OnboardCsv => export::onboard_csv(runs, &options, &mut out).map(Some),
    };
    let written = written.and_then(|rows| out.flush().map(|()| rows));
    match written {
        Ok(Some(rows)) if rows > export::NRF_CLOUD_MAX_ROWS => {
            eprintln!(
                "note: {rows} rows; nRF Cloud takes at most {} per bulk request: write files of whole rows with --out-dir DIR",
                export::NRF_CLOUD_MAX_ROWS,
            );
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::SUCCESS,
        // `nrf-provd results | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => super::error_exit(format!("writing results: {e}")),
    }
}

/// `--out-dir`: the Nordic CSVs as files of at most `--max-rows` rows.
fn write_parts(args: &ResultsArgs, runs: &[crate::record::RunRecord], dir: &Path) -> ExitCode {
    let (rows, stem) = match args.format {
        Format::AttestCsv => (export::attest_rows(runs), "attest"),
        Format::OnboardCsv => (
            export::onboard_rows(runs, &onboard_options(args)),
            "onboard",
        ),
        _ => return super::error_exit("--out-dir writes --format attest-csv or onboard-csv"),
    };
    if rows.is_empty() {
        eprintln!("no rows: no passed run matches; nothing written");
        return ExitCode::SUCCESS;
    }
    match export::write_parts(&rows, args.max_rows, dir, stem) {
        Ok(parts) => {
            for part in &parts {
                println!("{}\t{} rows", part.path.display(), part.rows);
            }
            eprintln!("{} rows in {} file(s)", rows.len(), parts.len());
            ExitCode::SUCCESS
        }
        Err(e) => super::error_exit(format!("--out-dir {}: {e}", dir.display())),
    }
}

fn onboard_options(args: &ResultsArgs) -> OnboardOptions {
    OnboardOptions {
        subtype: args.subtype.clone(),
        tags: args.tags.clone(),
        fw_types: args.fw_types.clone(),
    }
}
