//! Run records out: a table for people, JSON and CSV for tools, and the two
//! CSV files Nordic's nRF Cloud bulk tools read.
//!
//! Nordic's formats (nrfcloud-utils `gather_attestation_tokens.py`,
//! `cli_helpers.save_onboarding_csv`, read by `claim_devices.py` and
//! `nrf_cloud_onboard.py`) have **no header row**: every row is data, lines
//! end in `\n`, one row per device (a newer row for the same device replaces
//! the older one), at most 1000 rows per bulk request.
//!
//! CSV injection (OWASP): every cell of every CSV goes through
//! [`crate::text::csv_cell`], except the certificate PEM of the onboarding
//! CSV, which Nordic's tools and nRF Cloud read byte for byte and which must
//! begin `-----BEGIN CERTIFICATE-----`; the station CA made it, and it holds
//! no formula (base64 has no parentheses). In Nordic's formats the other
//! cells hold nothing a board chose freely: an IMEI of 15 digits, UUIDs, an
//! identity token (base64url starting `2dn3`), a time, a CN from the
//! station's template; neutralising them changes nothing a valid row holds.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use der::DecodePem;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

use super::{ArtifactKind, Outcome, RunRecord, Step};
use crate::token::TokenKind;

/// Header of [`csv`].
pub const CSV_HEADER: [&str; 21] = [
    "run_id",
    "station_id",
    "port",
    "started_at",
    "finished_at",
    "duration_s",
    "outcome",
    "failed_step",
    "reason_code",
    "reason",
    "device_uuid",
    "imei",
    "model",
    "firmware",
    "firmware_uuid",
    "hw_version",
    "work_order",
    "lot",
    "operator",
    "product",
    "fixture",
];

/// Rows nRF Cloud accepts in one bulk claim or onboarding request.
pub const NRF_CLOUD_MAX_ROWS: usize = 1000;

/// Optional onboarding CSV columns (empty unless set). `tags` and `fw_types`
/// are `|`-separated, e.g. `APP|MODEM`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnboardOptions {
    pub subtype: String,
    pub tags: String,
    pub fw_types: String,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Python's `datetime.now(timezone.utc).isoformat()`, as Nordic writes it.
fn python_isoformat(t: OffsetDateTime) -> String {
    const FORMAT: &[BorrowedFormatItem<'static>] = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

/// A CSV writer as Python's `csv` module writes (`QUOTE_MINIMAL`, `\n`
/// line ends), which is what Nordic's tools read.
fn csv_writer(out: &mut dyn Write) -> csv::Writer<&mut dyn Write> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .flexible(true)
        .from_writer(out)
}

fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

fn opt(text: &Option<String>) -> &str {
    text.as_deref().unwrap_or("")
}

fn step_name(step: Option<Step>) -> &'static str {
    step.map_or("", Step::as_str)
}

fn uuid(u: Option<uuid::Uuid>) -> String {
    u.map(|u| u.hyphenated().to_string()).unwrap_or_default()
}

/// Table cell: one line, every control character escaped (device text
/// is data: see [`crate::text`]).
fn cell(text: &str) -> String {
    crate::text::escape(text).into_owned()
}

/// A human-readable table, then a summary line. Runs of more than one
/// station (a line's ledger) get a STATION column, runs with a work order a
/// WORK ORDER column.
pub fn table(runs: &[RunRecord], out: &mut dyn Write) -> io::Result<()> {
    const HEAD: [&str; 10] = [
        "RUN",
        "STATION",
        "STARTED (UTC)",
        "PORT",
        "DEVICE",
        "IMEI",
        "WORK ORDER",
        "OUTCOME",
        "STEP",
        "REASON",
    ];
    let stations = runs
        .first()
        .is_some_and(|first| runs.iter().any(|r| r.station_id != first.station_id));
    let work_orders = runs.iter().any(|r| r.trace.work_order.is_some());
    let rows: Vec<[String; 10]> = runs
        .iter()
        .map(|run| {
            let started = run.started_at.to_offset(time::UtcOffset::UTC);
            [
                run.id.to_string(),
                cell(&run.station_id),
                format!(
                    "{} {:02}:{:02}:{:02}",
                    started.date(),
                    started.hour(),
                    started.minute(),
                    started.second()
                ),
                cell(&run.port),
                uuid(run.device.device_uuid),
                cell(opt(&run.device.imei)),
                cell(opt(&run.trace.work_order)),
                run.outcome.to_string(),
                step_name(run.failed_step).to_owned(),
                cell(&run.reason_line().unwrap_or_default()),
            ]
        })
        .collect();
    // Without several stations the STATION column is left out, without
    // work orders the WORK ORDER column.
    let shown = |cells: &[String; 10]| -> Vec<String> {
        cells
            .iter()
            .enumerate()
            .filter(|(i, _)| (stations || *i != 1) && (work_orders || *i != 6))
            .map(|(_, c)| c.clone())
            .collect()
    };
    let head = shown(&HEAD.map(str::to_string));
    let rows: Vec<Vec<String>> = rows.iter().map(shown).collect();
    let mut widths: Vec<usize> = head.iter().map(String::len).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| -> String {
        let mut text = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(c);
            } else {
                text.push_str(&format!("{c:<w$}  "));
            }
        }
        text.trim_end().to_owned()
    };
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    writeln!(out, "{}", line(&head))?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    let count = |o: Outcome| runs.iter().filter(|r| r.outcome == o).count();
    writeln!(
        out,
        "{} runs: {} passed, {} failed, {} interrupted, {} in flight",
        runs.len(),
        count(Outcome::Passed),
        count(Outcome::Failed),
        count(Outcome::Interrupted),
        count(Outcome::InFlight),
    )
}

/// The full records as a pretty-printed JSON array.
pub fn json(runs: &[RunRecord], out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, runs)?;
    writeln!(out)
}

/// One row per run, with [`CSV_HEADER`]. Every cell is neutralised as
/// OWASP says ([`crate::text::csv_cell`]): a model string such as
/// `=HYPERLINK(…)` is text in a spreadsheet, never a formula.
pub fn csv(runs: &[RunRecord], out: &mut dyn Write) -> io::Result<()> {
    let mut writer = csv_writer(out);
    writer.write_record(CSV_HEADER).map_err(csv_io)?;
    for run in runs {
        let duration = run
            .finished_at
            .map(|end| format!("{:.3}", (end - run.started_at).as_seconds_f64()))
            .unwrap_or_default();
        let d = &run.device;
        writer
            .write_record(
                [
                    run.id.to_string().as_str(),
                    &run.station_id,
                    &run.port,
                    &rfc3339(run.started_at),
                    &run.finished_at.map(rfc3339).unwrap_or_default(),
                    &duration,
                    run.outcome.as_str(),
                    step_name(run.failed_step),
                    run.reason_code.map_or("", |c| c.as_str()),
                    opt(&run.reason),
                    &uuid(d.device_uuid),
                    opt(&d.imei),
                    opt(&d.model),
                    opt(&d.firmware),
                    &uuid(d.firmware_uuid),
                    opt(&d.hw_version),
                    opt(&run.trace.work_order),
                    opt(&run.trace.lot),
                    opt(&run.trace.operator),
                    opt(&run.trace.product),
                    opt(&run.trace.fixture),
                ]
                .map(|cell| crate::text::csv_cell(cell).into_owned()),
            )
            .map_err(csv_io)?;
    }
    writer.flush()
}

/// Newest first, one item per key: Nordic's tools keep one row per device.
fn latest_per_device<'a, T>(
    runs: &'a [RunRecord],
    pick: impl Fn(&'a RunRecord) -> Option<(String, T)>,
) -> Vec<T> {
    let mut seen = HashSet::new();
    let mut rows: Vec<T> = runs
        .iter()
        .rev()
        .filter_map(&pick)
        .filter(|(key, _)| seen.insert(key.clone()))
        .map(|(_, row)| row)
        .collect();
    rows.reverse();
    rows
}

/// Nordic's attestation-token CSV, `imei,device_uuid,token,timestamp`, no
/// header: the authentic identity token of each device's latest passed run.
/// Returns the number of rows written.
pub fn attest_csv(runs: &[RunRecord], out: &mut dyn Write) -> io::Result<usize> {
    let rows = attest_rows(runs);
    write_rows(out, &rows)?;
    Ok(rows.len())
}

/// The rows of [`attest_csv`].
pub fn attest_rows(runs: &[RunRecord]) -> Vec<Vec<String>> {
    latest_per_device(runs, |run| {
        if run.outcome != Outcome::Passed {
            return None;
        }
        let uuid = run.device.device_uuid?.hyphenated().to_string();
        let token = run
            .tokens
            .iter()
            .rev()
            .find(|t| t.kind == TokenKind::Identity && t.authentic)?;
        // When the token was taken: the attest step's start, else the run's.
        let when = run
            .steps
            .iter()
            .find(|s| s.name == Step::Attest)
            .map_or(run.started_at, |s| s.started_at);
        let row = [
            opt(&run.device.imei),
            &uuid,
            &token.text,
            &python_isoformat(when),
        ]
        .map(|cell| crate::text::csv_cell(cell).into_owned())
        .to_vec();
        Some((uuid, row))
    })
}

fn write_rows(out: &mut dyn Write, rows: &[Vec<String>]) -> io::Result<()> {
    let mut writer = csv_writer(out);
    for row in rows {
        writer.write_record(row).map_err(csv_io)?;
    }
    writer.flush()
}

/// Common name of a PEM certificate's subject, if it has one.
pub(crate) fn certificate_cn(pem: &str) -> Option<String> {
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes()).ok()?;
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == const_oid::db::rfc4519::CN)
        .and_then(|atv| {
            der::asn1::Utf8StringRef::try_from(&atv.value)
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    der::asn1::PrintableStringRef::try_from(&atv.value)
                        .map(|s| s.as_str().to_owned())
                })
                .ok()
        })
}

/// Nordic's onboarding CSV, `device_id,subtype,tags,fw_types,"<certificate PEM>"`,
/// no header: the device certificate of each device's latest passed run.
/// `device_id` is the certificate's CN, as Nordic's installer does (the
/// default CSR template makes it the device UUID), else the device UUID.
/// Returns the number of rows written.
pub fn onboard_csv(
    runs: &[RunRecord],
    options: &OnboardOptions,
    out: &mut dyn Write,
) -> io::Result<usize> {
    let rows = onboard_rows(runs, options);
    write_rows(out, &rows)?;
    Ok(rows.len())
}

/// The rows of [`onboard_csv`].
pub fn onboard_rows(runs: &[RunRecord], options: &OnboardOptions) -> Vec<Vec<String>> {
    latest_per_device(runs, |run| {
        if run.outcome != Outcome::Passed {
            return None;
        }
        let cert = run
            .artifacts
            .iter()
            .rev()
            .find(|a| a.kind == ArtifactKind::DeviceCertificate)?;
        let uuid = run.device.device_uuid.map(|u| u.hyphenated().to_string());
        let device_id = certificate_cn(&cert.content).or_else(|| uuid.clone())?;
        // Python writes the PEM as read from disk: "\n" line ends (and so
        // the PEM column is always quoted).
        let pem = cert.content.replace("\r\n", "\n");
        let mut row = [
            &device_id,
            &options.subtype,
            &options.tags,
            &options.fw_types,
        ]
        .map(|cell| crate::text::csv_cell(cell).into_owned())
        .to_vec();
        row.push(pem);
        Some((uuid.unwrap_or_else(|| device_id.clone()), row))
    })
}

/// One file written by [`write_parts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub path: PathBuf,
    pub rows: usize,
}

/// Write `rows` as CSV files of at most `max_rows` whole rows each (a PEM
/// column is never cut), `dir/<stem>-001.csv`, `-002`, …: nRF Cloud takes
/// at most [`NRF_CLOUD_MAX_ROWS`] per bulk request. `dir` is created (0700)
/// if missing; the files are 0600 (they hold device identities) and are
/// never overwritten: an existing one is an error, before anything is
/// written.
pub fn write_parts(
    rows: &[Vec<String>],
    max_rows: usize,
    dir: &Path,
    stem: &str,
) -> io::Result<Vec<Part>> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if max_rows == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "at most 0 rows a file: nothing could be written",
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let chunks: Vec<&[Vec<String>]> = rows.chunks(max_rows).collect();
    let path_of = |i: usize| dir.join(format!("{stem}-{:03}.csv", i + 1));
    if let Some(existing) = (0..chunks.len()).map(path_of).find(|p| p.exists()) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists; remove it or choose another --out-dir",
                existing.display()
            ),
        ));
    }
    let mut parts = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.into_iter().enumerate() {
        let path = path_of(i);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut out = io::BufWriter::new(file);
        write_rows(&mut out, chunk)?;
        out.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()?;
        parts.push(Part {
            path,
            rows: chunk.len(),
        });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_follows_python_quote_minimal() {
        let mut out = Vec::new();
        write_rows(
            &mut out,
            &[vec![
                "plain".into(),
                "a,b".into(),
                "say \"hi\"".into(),
                "two\nlines".into(),
            ]],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\"\n"
        );
    }

    #[test]
    fn timestamps_look_like_pythons_isoformat() {
        let t = time::macros::datetime!(2024-05-01 10:00:00.5 UTC);
        assert_eq!(python_isoformat(t), "2024-05-01T10:00:00.500000+00:00");
    }
}
