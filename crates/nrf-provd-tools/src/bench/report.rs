//! One row of the bench table from the runs in the database, the
//! simulator's command costs and the process measurements.
//!
//! Columns:
//! - boards/min: runs ÷ wall time of the rounds × 60. A round's wall time
//!   runs from the replug (the station's start for the first round) to the
//!   last run's commit, so it includes noticing the new boards.
//! - p50/p99 cycle: of `finished_at − started_at` over every run.
//! - limit: per run, the modelled time the simulated board enforced for the
//!   commands received inside that run's window (command delays plus paced
//!   reply bytes). Presence polls before a run and departure polls after it
//!   fall outside the window. The host's own bytes are not paced by a pty,
//!   so their wire time is left out of the limit as well as the measurement.
//! - cycle/limit: Σ cycle ÷ Σ limit over the row (realistic latency only);
//!   p99 ratio: the 99th percentile of the per-run ratio.
//! - host: mean per run of the time no command was at the simulated modem
//!   (cycle − Σ (answered − received)): the station's share, including
//!   the pty hops. The rest of the excess over the limit is the simulator's
//!   own (timer rounding, scheduling), reported as `sim_overshoot_ms`.
//! - cpu/cycle: station process CPU (user + system, all threads but the
//!   bench's sampler and its main thread, which replugs the boards and
//!   waits for runs) from the station's start to the last commit,
//!   ÷ runs. It includes the idle polls between runs.
//! - sinks/run: with `--sinks`, the CPU of the threads that deliver (the
//!   sinks' runtime and the outbox's connection) ÷ runs: the part of
//!   cpu/cycle that delivering costs. The webhook's receiver stands for
//!   the MES and is in neither.
//! - peak RSS / fds: the kernel's high-water mark of `VmRSS` over the row
//!   (`VmHWM`, started afresh for the row; else the largest sampled) and
//!   the largest descriptor count sampled (every 500 ms).
//! - ledger: `sqlite` (the station on its own) or `pg required` /
//!   `pg deferred` (the line's PostgreSQL behind it, `--ledger`).
//! - per round (JSON only, `per_round`): each round's runs, how close
//!   together its boards started (`starts_within_ms`: first start to
//!   last), its p99 cycle and p99 ratio and its mean host time. A row's
//!   tail is mostly one round's: the first, whose boards the station found
//!   in one scan at its start (within a few ms of each other), reach every
//!   step together; later rounds start as the simulator replugs them.
//! - claim p99: the 99th percentile of a central claim's round trip
//!   (`required`), from the ledger call to its answer, read from the
//!   station's own `/metrics` (`nrf_provd_ledger_claim_seconds`, linear
//!   within its bucket as Prometheus' `histogram_quantile` reads it).

use std::time::Duration;

use super::board_index;
use super::metrics::{Sample, percentile};
use crate::record::{Outcome, RunRecord};
use crate::sim::control::Cost;

/// Per board slot, the simulator's logged command costs (its `costs` answer).
pub type Costs = Vec<Vec<Cost>>;

/// Everything a row is computed from.
pub struct RowInput<'a> {
    pub boards: usize,
    /// `sqlite`, or `pg required` / `pg deferred` with a shared ledger.
    pub ledger: &'a str,
    /// The 99th percentile of a central claim's round trip in ms (a shared
    /// ledger in required mode).
    pub claim_p99_ms: Option<f64>,
    pub runs: &'a [RunRecord],
    /// When each round began (the station's start, then each replug), in
    /// order; empty for no per-round split.
    pub round_starts: &'a [time::OffsetDateTime],
    pub costs: Option<&'a Costs>,
    pub wall: Duration,
    pub daemon_cpu: Duration,
    /// With sinks: the delivering threads' share of `daemon_cpu`.
    pub delivery_cpu: Option<Duration>,
    pub samples: &'a [Sample],
    /// The kernel's high-water mark of resident memory over the row, when
    /// it could be started afresh for the row.
    pub peak_rss_kib: Option<u64>,
    /// 1-minute load average before and after the row.
    pub load: [f64; 2],
    pub panics: u64,
}

/// One row of the table (also its JSON form).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub boards: usize,
    pub ledger: String,
    pub runs: usize,
    pub passed: usize,
    pub wall_s: f64,
    pub boards_per_minute: f64,
    /// Boards/minute per board relative to the first row's (1.0 = linear).
    pub scaling: Option<f64>,
    pub cycle_p50_ms: f64,
    pub cycle_p99_ms: f64,
    pub cycle_max_ms: f64,
    pub limit_p50_ms: Option<f64>,
    pub cycle_over_limit: Option<f64>,
    pub cycle_over_limit_p99: Option<f64>,
    /// Mean per run: time with no command at the modem.
    pub host_ms: Option<f64>,
    /// Mean per run: time commands spent at the modem beyond the model.
    pub sim_overshoot_ms: Option<f64>,
    pub cpu_ms_per_cycle: f64,
    /// With sinks: of `cpu_ms_per_cycle`, what delivering cost per run.
    pub sinks_ms_per_run: Option<f64>,
    pub peak_rss_mib: f64,
    pub peak_fds: usize,
    /// 99th percentile of a central claim's round trip.
    pub claim_p99_ms: Option<f64>,
    pub load_before: f64,
    pub load_after: f64,
    pub panics: u64,
    /// With `--scrape`: what the scraper fetched during the row.
    pub scrape: Option<super::scrape::Scraped>,
    /// With `--idle`: the cost of the boards left in their fixtures.
    pub idle: Option<Idle>,
    /// Each round's share (see the module's doc).
    pub per_round: Vec<RoundRow>,
}

/// One round of a row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RoundRow {
    /// 1 for the first.
    pub round: usize,
    pub runs: usize,
    /// From the round's first run's start to its last's.
    pub starts_within_ms: f64,
    pub cycle_p99_ms: f64,
    pub cycle_over_limit_p99: Option<f64>,
    /// Mean per run: time with no command at the modem.
    pub host_ms: Option<f64>,
}

/// What one run adds to its round.
struct RunShare {
    round: usize,
    started_us: i128,
    cycle_ms: f64,
    /// Cycle ÷ limit and host ms, with the simulator's costs.
    against_limit: Option<(f64, f64)>,
}

fn per_round(shares: &[RunShare]) -> Vec<RoundRow> {
    let rounds = shares.iter().map(|s| s.round + 1).max().unwrap_or(0);
    (0..rounds)
        .filter_map(|round| {
            let of: Vec<&RunShare> = shares.iter().filter(|s| s.round == round).collect();
            let first = of.iter().map(|s| s.started_us).min()?;
            let last = of.iter().map(|s| s.started_us).max()?;
            let mut cycles: Vec<f64> = of.iter().map(|s| s.cycle_ms).collect();
            cycles.sort_by(f64::total_cmp);
            let mut ratios: Vec<f64> = of
                .iter()
                .filter_map(|s| s.against_limit)
                .map(|a| a.0)
                .collect();
            ratios.sort_by(f64::total_cmp);
            let hosts: Vec<f64> = of
                .iter()
                .filter_map(|s| s.against_limit)
                .map(|a| a.1)
                .collect();
            Some(RoundRow {
                round: round + 1,
                runs: of.len(),
                starts_within_ms: (last - first) as f64 / 1e3,
                cycle_p99_ms: percentile(&cycles, 0.99).unwrap_or(0.0),
                cycle_over_limit_p99: percentile(&ratios, 0.99),
                host_ms: (!hosts.is_empty())
                    .then(|| hosts.iter().sum::<f64>() / hosts.len() as f64),
            })
        })
        .collect()
}

/// What boards left in their fixtures cost the station (`--idle`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Idle {
    /// How long the boards were left.
    pub seconds: f64,
    /// Station CPU (all threads but the sampler's) ÷ boards ÷ seconds.
    pub ms_per_board_second: f64,
}

fn unix_micros(t: time::OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos() / 1000
}

/// What one run's commands cost at the simulated modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCost {
    /// Modelled: delays plus paced reply bytes (the physical limit).
    pub limit: Duration,
    /// Measured: Σ (answered − received), the time a command was at the modem.
    pub at_modem: Duration,
}

/// The cost of the commands board `costs` received inside `[start, end]`
/// (Unix microseconds); `None` if nothing modelled was logged there.
pub fn cost_in_window(costs: &[Cost], start: i128, end: i128) -> Option<WindowCost> {
    let (mut limit, mut at_modem) = (0u64, 0u64);
    for cost in costs {
        let at = i128::from(cost.received_us);
        if at >= start && at <= end {
            limit = limit
                .saturating_add(cost.delay_us)
                .saturating_add(cost.wire_out_us);
            at_modem = at_modem.saturating_add(cost.answered_us.saturating_sub(cost.received_us));
        }
    }
    (limit > 0).then(|| WindowCost {
        limit: Duration::from_micros(limit),
        at_modem: Duration::from_micros(at_modem),
    })
}

pub fn summarize(input: RowInput<'_>) -> Row {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut cycles = Vec::with_capacity(input.runs.len());
    let mut limits = Vec::new();
    let mut ratios = Vec::new();
    let mut shares = Vec::new();
    let (mut cycle_sum, mut limit_sum, mut modem_sum) = (0.0, 0.0, 0.0);
    for run in input.runs {
        let Some(finished) = run.finished_at else {
            continue;
        };
        let cycle = ms((finished - run.started_at).unsigned_abs());
        cycles.push(cycle);
        let cost = input.costs.and_then(|costs| {
            let slot = costs.get(board_index(&run.port)?)?;
            cost_in_window(slot, unix_micros(run.started_at), unix_micros(finished))
        });
        let mut against_limit = None;
        if let Some(cost) = cost {
            let limit = ms(cost.limit);
            limits.push(limit);
            ratios.push(cycle / limit);
            cycle_sum += cycle;
            limit_sum += limit;
            modem_sum += ms(cost.at_modem);
            against_limit = Some((cycle / limit, cycle - ms(cost.at_modem)));
        }
        if !input.round_starts.is_empty() {
            shares.push(RunShare {
                round: input
                    .round_starts
                    .partition_point(|start| *start <= run.started_at)
                    .saturating_sub(1),
                started_us: unix_micros(run.started_at),
                cycle_ms: cycle,
                against_limit,
            });
        }
    }
    let sort = |v: &mut Vec<f64>| v.sort_by(f64::total_cmp);
    sort(&mut cycles);
    sort(&mut limits);
    sort(&mut ratios);
    let runs = input.runs.len();
    let wall = input.wall.as_secs_f64();
    Row {
        boards: input.boards,
        ledger: input.ledger.to_string(),
        runs,
        passed: input
            .runs
            .iter()
            .filter(|r| r.outcome == Outcome::Passed)
            .count(),
        wall_s: wall,
        boards_per_minute: if wall > 0.0 {
            runs as f64 / wall * 60.0
        } else {
            0.0
        },
        scaling: None,
        cycle_p50_ms: percentile(&cycles, 0.5).unwrap_or(0.0),
        cycle_p99_ms: percentile(&cycles, 0.99).unwrap_or(0.0),
        cycle_max_ms: cycles.last().copied().unwrap_or(0.0),
        limit_p50_ms: percentile(&limits, 0.5),
        cycle_over_limit: (limit_sum > 0.0).then(|| cycle_sum / limit_sum),
        cycle_over_limit_p99: percentile(&ratios, 0.99),
        host_ms: (!ratios.is_empty()).then(|| (cycle_sum - modem_sum) / ratios.len() as f64),
        sim_overshoot_ms: (!ratios.is_empty())
            .then(|| (modem_sum - limit_sum) / ratios.len() as f64),
        cpu_ms_per_cycle: if runs > 0 {
            ms(input.daemon_cpu) / runs as f64
        } else {
            0.0
        },
        sinks_ms_per_run: input
            .delivery_cpu
            .filter(|_| runs > 0)
            .map(|cpu| ms(cpu) / runs as f64),
        peak_rss_mib: input
            .samples
            .iter()
            .map(|s| s.rss_kib)
            .chain(input.peak_rss_kib)
            .max()
            .unwrap_or(0) as f64
            / 1024.0,
        peak_fds: input.samples.iter().map(|s| s.fds).max().unwrap_or(0),
        claim_p99_ms: input.claim_p99_ms,
        load_before: input.load[0],
        load_after: input.load[1],
        panics: input.panics,
        scrape: None,
        idle: None,
        per_round: per_round(&shares),
    }
}

/// Fill in each row's scaling against the first row.
pub fn set_scaling(rows: &mut [Row]) {
    let Some(base) = rows.first().map(|r| r.boards_per_minute / r.boards as f64) else {
        return;
    };
    for row in rows.iter_mut() {
        row.scaling = (base > 0.0).then(|| row.boards_per_minute / row.boards as f64 / base);
    }
}

/// The column titles, aligned with [`table_row`].
pub fn table_header() -> String {
    format!(
        "{:>6} {:>5} {:>5} {:>10} {:>6} {:>10} {:>10} {:>10} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>5} {:>9} {:>12} {:>9}",
        "boards",
        "runs",
        "pass",
        "boards/min",
        "×lin",
        "p50 cycle",
        "p99 cycle",
        "limit p50",
        "c/limit",
        "p99 c/l",
        "host",
        "cpu/cycle",
        "sinks/run",
        "peak RSS",
        "fds",
        "load",
        "ledger",
        "claim p99",
    )
}

pub fn table_row(row: &Row) -> String {
    let opt = |v: Option<f64>, digits: usize, unit: &str| {
        v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}{unit}"))
    };
    format!(
        "{:>6} {:>5} {:>5} {:>10.1} {:>6} {:>10} {:>10} {:>10} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>5} {:>9} {:>12} {:>9}",
        row.boards,
        row.runs,
        row.passed,
        row.boards_per_minute,
        opt(row.scaling, 2, ""),
        format!("{:.1} ms", row.cycle_p50_ms),
        format!("{:.1} ms", row.cycle_p99_ms),
        opt(row.limit_p50_ms, 1, " ms"),
        opt(row.cycle_over_limit, 3, ""),
        opt(row.cycle_over_limit_p99, 3, ""),
        opt(row.host_ms, 1, " ms"),
        format!("{:.2} ms", row.cpu_ms_per_cycle),
        opt(row.sinks_ms_per_run, 2, " ms"),
        format!("{:.1} MiB", row.peak_rss_mib),
        row.peak_fds,
        format!("{:.2}→{:.2}", row.load_before, row.load_after),
        row.ledger,
        opt(row.claim_p99_ms, 2, " ms"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::DeviceInfo;
    use time::OffsetDateTime;

    fn run(port: &str, start_us: i64, cycle_us: i64) -> RunRecord {
        let started_at =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(start_us) * 1000).unwrap();
        RunRecord {
            id: 1,
            uid: uuid::Uuid::nil(),
            station_id: "bench".into(),
            port: port.into(),
            started_at,
            finished_at: Some(started_at + time::Duration::microseconds(cycle_us)),
            outcome: Outcome::Passed,
            failed_step: None,
            reason_code: None,
            reason: None,
            verified_by: None,
            device: DeviceInfo::default(),
            steps: Vec::new(),
            tokens: Vec::new(),
            artifacts: Vec::new(),
            trace: Default::default(),
            compacted_at: None,
        }
    }

    /// A row's input with nothing measured but its runs, the simulator's
    /// costs and the rounds' starts (2 s of wall time).
    fn input<'a>(
        boards: usize,
        runs: &'a [RunRecord],
        costs: Option<&'a Costs>,
        round_starts: &'a [OffsetDateTime],
    ) -> RowInput<'a> {
        RowInput {
            boards,
            ledger: "sqlite",
            claim_p99_ms: None,
            runs,
            round_starts,
            costs,
            wall: Duration::from_secs(2),
            daemon_cpu: Duration::ZERO,
            delivery_cpu: None,
            peak_rss_kib: None,
            samples: &[],
            load: [0.0, 0.0],
            panics: 0,
        }
    }

    #[test]
    fn the_limit_counts_only_commands_inside_the_run() {
        let t0 = 1_700_000_000_000_000u64;
        // A presence poll before, two commands inside, a departure poll after.
        let costs: Costs = vec![vec![
            Cost::from([t0 - 10, 5_000, 100, 200, t0 + 5_300]),
            Cost::from([t0 + 10, 1_000_000, 100, 50_000, t0 + 1_051_010]),
            Cost::from([t0 + 1_100_000, 100_000, 100, 0, t0 + 1_200_000]),
            Cost::from([t0 + 2_000_000, 5_000, 100, 200, t0 + 2_005_300]),
        ]];
        let t0 = i64::try_from(t0).unwrap();
        let runs = [run("/x/ttySIM0", t0, 1_300_000)];
        let started = runs[0].started_at;
        let row = summarize(RowInput {
            daemon_cpu: Duration::from_millis(4),
            ..input(1, &runs, Some(&costs), &[started])
        });
        assert_eq!(row.limit_p50_ms, Some(1150.0));
        let ratio = row.cycle_over_limit.unwrap();
        assert!((ratio - 1300.0 / 1150.0).abs() < 1e-9, "{ratio}");
        assert_eq!(row.cycle_p50_ms, 1300.0);
        // 1151 ms at the modem (1 ms beyond the model): 149 ms were the host's.
        assert!((row.host_ms.unwrap() - 149.0).abs() < 1e-9);
        assert!((row.sim_overshoot_ms.unwrap() - 1.0).abs() < 1e-9);
        let round = &row.per_round[0];
        assert_eq!((round.round, round.runs), (1, 1));
        assert!((round.host_ms.unwrap() - 149.0).abs() < 1e-9);
        assert_eq!(round.cycle_over_limit_p99, row.cycle_over_limit_p99);
        assert_eq!(row.boards_per_minute, 30.0);
        assert_eq!(row.cpu_ms_per_cycle, 4.0);
        // Without costs (latency none) there is no limit.
        let row = summarize(input(1, &runs, None, &[]));
        assert_eq!((row.limit_p50_ms, row.cycle_over_limit), (None, None));
        assert!(table_row(&row).contains(" - "));
    }

    #[test]
    fn each_round_reports_its_own_tail_and_how_close_its_boards_started() {
        let t0 = 1_700_000_000_000_000i64;
        let at =
            |us: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap();
        // Round 1: two boards found together, slow; round 2: replugged
        // 200 ms apart, fast.
        let runs = [
            run("/x/ttySIM0", t0 + 1_000, 2_100_000),
            run("/x/ttySIM1", t0 + 1_500, 2_090_000),
            run("/x/ttySIM0", t0 + 3_000_000, 2_020_000),
            run("/x/ttySIM1", t0 + 3_200_000, 2_010_000),
        ];
        let row = summarize(input(2, &runs, None, &[at(t0), at(t0 + 2_900_000)]));
        let rounds: Vec<_> = row
            .per_round
            .iter()
            .map(|r| (r.round, r.runs, r.starts_within_ms, r.cycle_p99_ms))
            .collect();
        assert_eq!(
            rounds,
            [(1, 2, 0.5, 2100.0), (2, 2, 200.0, 2020.0)],
            "{:?}",
            row.per_round
        );
        // Without the simulator's costs there is no limit to compare with.
        assert!(row.per_round.iter().all(|r| r.host_ms.is_none()));
    }

    #[test]
    fn scaling_is_relative_to_the_first_row_per_board() {
        let row = |boards, bpm| Row {
            boards,
            ledger: "sqlite".into(),
            runs: 0,
            passed: 0,
            wall_s: 1.0,
            boards_per_minute: bpm,
            scaling: None,
            cycle_p50_ms: 0.0,
            cycle_p99_ms: 0.0,
            cycle_max_ms: 0.0,
            limit_p50_ms: None,
            cycle_over_limit: None,
            cycle_over_limit_p99: None,
            host_ms: None,
            sim_overshoot_ms: None,
            cpu_ms_per_cycle: 0.0,
            sinks_ms_per_run: None,
            peak_rss_mib: 0.0,
            peak_fds: 0,
            claim_p99_ms: None,
            load_before: 0.0,
            load_after: 0.0,
            panics: 0,
            scrape: None,
            idle: None,
            per_round: Vec::new(),
        };
        let mut rows = vec![row(1, 20.0), row(64, 1152.0)];
        set_scaling(&mut rows);
        assert_eq!(rows[0].scaling, Some(1.0));
        assert_eq!(rows[1].scaling, Some(0.9));
    }
}
