//! `nrf-provd results`: print recorded runs from the results database.
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::ledger::export::{self, OnboardOptions};
use crate::ledger::{LedgerReader, RunFilter, SqliteLedger, default_db_path};

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
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
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
}

fn parse_uuid(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|e| {
        format!("not a UUID ({e}); expected e.g. 50503041-3633-4261-803d-1e2b8f70111a")
    })
}

pub use crate::ledger::parse_since;

pub async fn run(args: ResultsArgs) -> ExitCode {
    let path = args.db.clone().unwrap_or_else(default_db_path);
    let reader = match SqliteLedger::open_read_only(&path) {
        Ok(reader) => reader,
        Err(e) => return super::error_exit(e),
    };
    let filter = RunFilter {
        device_uuid: args.device,
        since: args.since,
        limit: args.limit,
    };
    let runs = match reader.runs(&filter).await {
        Ok(runs) => runs,
        Err(e) => return super::error_exit(e),
    };
    write_results(&args, &runs)
}

fn write_results(args: &ResultsArgs, runs: &[crate::record::RunRecord]) -> ExitCode {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let options = OnboardOptions {
        subtype: args.subtype.clone(),
        tags: args.tags.clone(),
        fw_types: args.fw_types.clone(),
    };
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
                "note: {rows} rows; nRF Cloud takes at most {} per bulk request — split the file, e.g. `split -l {}`",
                export::NRF_CLOUD_MAX_ROWS,
                export::NRF_CLOUD_MAX_ROWS
            );
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::SUCCESS,
        // `nrf-provd results | head` is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => super::error_exit(format!("writing results: {e}")),
    }
}
