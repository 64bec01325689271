//! `results --summary`: yield per station and per work order, and the most
//! frequent failure reasons, from any ledger.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};

use super::{Counts, LedgerError, Outcome, RunRecord};

/// How many failure reasons the summary lists.
pub const TOP_REASONS: usize = 10;

/// One station's runs (or the whole line's).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StationYield {
    pub station_id: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// Distinct devices seen.
    pub devices: u64,
    /// Passed ÷ finished runs (in-flight ones left out); none without any.
    #[serde(rename = "yield")]
    pub yield_: Option<f64>,
}

impl StationYield {
    fn new(station_id: String, counts: Counts, devices: u64) -> Self {
        StationYield {
            station_id,
            counts,
            devices,
            yield_: yield_of(&counts),
        }
    }
}

/// Passed ÷ finished runs; none without any finished.
fn yield_of(counts: &Counts) -> Option<f64> {
    let finished = counts.seen - counts.in_flight;
    (finished > 0).then(|| counts.passed as f64 / finished as f64)
}

fn percent(y: Option<f64>) -> String {
    y.map_or_else(|| "-".to_string(), |y| format!("{:.1}%", y * 100.0))
}

/// One work order's runs, across the stations summarised.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct WorkOrderYield {
    /// `None`: runs recorded without a work order.
    pub work_order: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
    /// Passed ÷ finished runs (in-flight ones left out); none without any.
    #[serde(rename = "yield")]
    pub yield_: Option<f64>,
}

/// A failure reason and how many runs failed with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReasonCount {
    pub reason_code: String,
    pub runs: u64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub stations: Vec<StationYield>,
    pub total: StationYield,
    /// Yield per work order, by work order (runs without one last).
    pub work_orders: Vec<WorkOrderYield>,
    /// Failed and interrupted runs by reason code, most frequent first.
    pub top_reasons: Vec<ReasonCount>,
}

/// Runs of one station with one outcome and reason (a ledger's GROUP BY).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    pub station_id: String,
    pub work_order: Option<String>,
    pub outcome: String,
    pub reason_code: Option<String>,
    pub runs: u64,
}

impl Summary {
    /// The summary of `runs`.
    pub fn of(runs: &[RunRecord]) -> Summary {
        type Key<'a> = (String, Option<&'a str>, &'a str, Option<&'a str>);
        let mut rows: BTreeMap<Key<'_>, u64> = BTreeMap::new();
        let mut devices: BTreeMap<Option<String>, HashSet<uuid::Uuid>> = BTreeMap::new();
        for run in runs {
            *rows
                .entry((
                    run.station_id.clone(),
                    run.trace.work_order.as_deref(),
                    run.outcome.as_str(),
                    run.reason_code.map(|c| c.as_str()),
                ))
                .or_default() += 1;
            if let Some(device) = run.device.device_uuid {
                devices
                    .entry(Some(run.station_id.clone()))
                    .or_default()
                    .insert(device);
                devices.entry(None).or_default().insert(device);
            }
        }
        let rows: Vec<SummaryRow> = rows
            .into_iter()
            .map(
                |((station_id, work_order, outcome, reason_code), runs)| SummaryRow {
                    station_id,
                    work_order: work_order.map(str::to_string),
                    outcome: outcome.to_string(),
                    reason_code: reason_code.map(str::to_string),
                    runs,
                },
            )
            .collect();
        let devices: Vec<(Option<String>, u64)> = devices
            .into_iter()
            .map(|(station, set)| (station, set.len() as u64))
            .collect();
        // Outcomes come from records, so they always parse.
        Summary::from_groups(&rows, &devices).unwrap_or_default()
    }

    /// The summary from grouped counts and distinct devices per station
    /// (`None`: the whole line).
    pub fn from_groups(
        rows: &[SummaryRow],
        devices: &[(Option<String>, u64)],
    ) -> Result<Summary, LedgerError> {
        let mut stations: BTreeMap<&str, Counts> = BTreeMap::new();
        let mut total = Counts::default();
        let mut work_orders: BTreeMap<Option<&str>, Counts> = BTreeMap::new();
        let mut reasons: BTreeMap<&str, u64> = BTreeMap::new();
        for row in rows {
            let outcome = Outcome::parse(&row.outcome).ok_or_else(|| LedgerError::Corrupt {
                what: "run outcome",
                value: row.outcome.clone(),
            })?;
            stations
                .entry(&row.station_id)
                .or_default()
                .add(outcome, row.runs);
            total.add(outcome, row.runs);
            work_orders
                .entry(row.work_order.as_deref())
                .or_default()
                .add(outcome, row.runs);
            if matches!(outcome, Outcome::Failed | Outcome::Interrupted) {
                *reasons
                    .entry(row.reason_code.as_deref().unwrap_or("-"))
                    .or_default() += row.runs;
            }
        }
        let devices_of = |station: Option<&str>| {
            devices
                .iter()
                .find(|(s, _)| s.as_deref() == station)
                .map_or(0, |(_, n)| *n)
        };
        let mut top_reasons: Vec<ReasonCount> = reasons
            .into_iter()
            .map(|(code, runs)| ReasonCount {
                reason_code: code.to_string(),
                runs,
            })
            .collect();
        top_reasons.sort_by(|a, b| b.runs.cmp(&a.runs).then(a.reason_code.cmp(&b.reason_code)));
        top_reasons.truncate(TOP_REASONS);
        Ok(Summary {
            stations: stations
                .into_iter()
                .map(|(id, counts)| StationYield::new(id.to_string(), counts, devices_of(Some(id))))
                .collect(),
            total: StationYield::new("(all)".into(), total, devices_of(None)),
            // `None` sorts first in a map; shown last.
            work_orders: work_orders
                .iter()
                .filter(|(w, _)| w.is_some())
                .chain(work_orders.iter().filter(|(w, _)| w.is_none()))
                .map(|(work_order, counts)| WorkOrderYield {
                    work_order: work_order.map(str::to_string),
                    counts: *counts,
                    yield_: yield_of(counts),
                })
                .collect(),
            top_reasons,
        })
    }

    /// For people: a table of stations, then the top reasons.
    pub fn write_table(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(
            out,
            "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
            "STATION", "RUNS", "PASSED", "FAILED", "INTERR", "COLLECT", "DEVICES", "YIELD"
        )?;
        let line = |out: &mut dyn Write, s: &StationYield| {
            let c = &s.counts;
            writeln!(
                out,
                "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
                s.station_id,
                c.seen,
                c.passed,
                c.failed,
                c.interrupted,
                c.collected,
                s.devices,
                percent(s.yield_),
            )
        };
        for station in &self.stations {
            line(out, station)?;
        }
        if self.stations.len() > 1 {
            line(out, &self.total)?;
        }
        writeln!(out)?;
        if self.work_orders.iter().any(|w| w.work_order.is_some()) {
            writeln!(
                out,
                "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
                "WORK ORDER", "RUNS", "PASSED", "FAILED", "INTERR", "COLLECT", "YIELD"
            )?;
            for w in &self.work_orders {
                let c = &w.counts;
                // Device text: a work order is what a scanner typed.
                let name = w.work_order.as_deref().map_or_else(
                    || "(none)".to_string(),
                    |n| crate::text::escape(n).into_owned(),
                );
                writeln!(
                    out,
                    "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
                    name,
                    c.seen,
                    c.passed,
                    c.failed,
                    c.interrupted,
                    c.collected,
                    percent(w.yield_),
                )?;
            }
            writeln!(out)?;
        }
        if self.top_reasons.is_empty() {
            return writeln!(out, "no failed runs");
        }
        writeln!(out, "{:<24} {:>7} {:>8}", "FAILURE REASON", "RUNS", "SHARE")?;
        let failed = (self.total.counts.failed + self.total.counts.interrupted).max(1);
        for reason in &self.top_reasons {
            writeln!(
                out,
                "{:<24} {:>7} {:>7.1}%",
                reason.reason_code,
                reason.runs,
                reason.runs as f64 * 100.0 / failed as f64
            )?;
        }
        Ok(())
    }
}
