//! `nrf-provd bench --soak DURATION`: many boards for a long time, faults
//! mixed in, then checks that nothing leaked and nothing was lost.
//!
//! Unlike the bench rows, boards cycle independently, as fixtures on a line
//! do: as soon as the station reports a board's run finished, that board
//! is unplugged and plugged back, so one slow (stalled) board does not hold
//! up the others. At the end the station shuts down with a grace period
//! longer than a run, so runs in flight finish normally.
//!
//! Checks (all must hold):
//! - records: every run the daemon reported finished (its run line) is in
//!   the database exactly once with the same outcome; the database holds no
//!   other run and none in flight.
//! - tokens: for each kind, the tokens the simulator issued equal the token
//!   records in the database (a simulated cycle is "completed" for a kind
//!   when its token was issued; each must be recorded exactly once).
//! - panics: none in the station process, none in the simulator's log.
//! - flat from the second quarter to the last: in the last quarter, RSS
//!   and anonymous memory at most 10% above the second quarter's maximum,
//!   and the median descriptor and thread counts no higher than in the
//!   second quarter (the first quarter is the warm-up: the daemon starts,
//!   opens its ports and fills its caches; medians because a port being
//!   reopened holds two descriptors for a moment).
//!
//! The station is a daemon child (`nrf-provd run` on a generated config),
//! so the process measured is the daemon alone: the soak's bookkeeping
//! lives here. Its runs are learnt from its log (one JSON line a run).
//! Also reported: anonymous memory (`RssAnon`: heap and stacks, without
//! the executable's pages), threads and a timeline.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::child::{self, SimChild, SimSpec};
use super::daemon::{self, DaemonChild};
use super::metrics::{Sample, Sampler, percentile};
use super::{BenchError, STALL_LIMIT, WorkDir, board_index};
use crate::ledger::{RunFilter, backends};
use crate::process::{self, Process};
use crate::record::{Outcome, RunId, RunRecord, Step};
use crate::sim::control::BoardStats;
use crate::sim::{FaultSpec, Latency};
use crate::token::TokenKind;

/// How often the simulator's cost log is emptied (it is not used here).
const DRAIN_COSTS_EVERY: Duration = Duration::from_secs(30);
/// The daemon's shutdown grace (a run timeout and 30 s) and a margin.
const STOP_LIMIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub boards: usize,
    pub duration: Duration,
    pub latency: Latency,
    pub baud: Option<u32>,
    pub faults: Vec<FaultSpec>,
    pub seed: u64,
    pub simulator: PathBuf,
    pub keep: bool,
    pub sample_every: Duration,
}

/// Mean, median and maximum of a quantity over the second and last quarter.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Quarters {
    pub second_mean: f64,
    pub second_median: f64,
    pub second_max: f64,
    pub last_mean: f64,
    pub last_median: f64,
    pub last_max: f64,
}

/// One named check and what it found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SoakReport {
    pub boards: usize,
    /// The soak and the drain of the last runs after it.
    pub seconds: f64,
    pub runs: usize,
    pub passed: usize,
    pub failed: usize,
    pub interrupted: usize,
    /// Failed runs by `step: reason code`.
    pub failures: BTreeMap<String, usize>,
    /// Runs finished within the soak ÷ its duration.
    pub boards_per_minute: f64,
    pub passed_cycle_p50_ms: Option<f64>,
    pub passed_cycle_p99_ms: Option<f64>,
    pub cpu_ms_per_cycle: f64,
    pub rss_mib: Quarters,
    /// Anonymous resident memory (`RssAnon`: heap and stacks).
    pub anon_mib: Quarters,
    pub fds: Quarters,
    pub threads: Quarters,
    /// Means over consecutive spans of the soak (at most 12, at least a minute).
    pub timeline: Vec<Point>,
    pub checks: Vec<Check>,
}

/// Means of the samples over one span of the soak.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Point {
    /// End of the span, seconds since the soak began.
    pub until_s: f64,
    pub rss_mib: f64,
    pub anon_mib: f64,
    pub fds: f64,
    pub threads: f64,
}

impl SoakReport {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

pub async fn run(
    options: &SoakOptions,
    mut progress: impl FnMut(&str),
) -> Result<SoakReport, BenchError> {
    if options.boards == 0 || options.duration.is_zero() {
        return Err(BenchError::Invalid(
            "a soak needs at least one board and a duration".into(),
        ));
    }
    let base = WorkDir::create("soak", options.keep)?;
    let dir = base.sub("run")?;
    let spec = SimSpec {
        executable: &options.simulator,
        count: options.boards,
        latency: options.latency,
        baud: options.baud,
        seed: options.seed,
        faults: &options.faults,
    };
    let mut sim = SimChild::start(&spec, &dir).await?;
    let config = daemon::write_config(&dir, &sim, |table| {
        // Runs in flight at the end finish normally, tokens recorded.
        if let Some(toml::Value::Table(timeouts)) = table.get_mut("timeouts") {
            let run = timeouts
                .get("run")
                .and_then(toml::Value::as_integer)
                .unwrap_or(60);
            timeouts.insert("shutdown_grace".into(), (run + 30).into());
        }
    })?;
    let log = dir.join("daemon.log");
    let cpu_before = process::children_cpu();
    let mut daemon = DaemonChild::start(&options.simulator, &config, &log)?;
    let watched = Process::Pid(daemon.pid);
    let sampler = Sampler::start(options.sample_every, watched);
    let started = Instant::now();
    let soak_started_at = time::OffsetDateTime::now_utc();
    let deadline = tokio::time::Instant::now() + options.duration;
    let mut reported: Vec<(RunId, Outcome)> = Vec::new();
    let mut next_drain = Instant::now() + DRAIN_COSTS_EVERY;
    loop {
        let run = tokio::select! {
            run = daemon.next_run() => run,
            () = tokio::time::sleep_until(deadline) => break,
            () = tokio::time::sleep(STALL_LIMIT) => return Err(BenchError::Stalled(STALL_LIMIT)),
        };
        let Some(run) = run else {
            return Err(BenchError::Simulator {
                detail: format!("the daemon exited on its own; see {}", log.display()),
            });
        };
        reported.push((run.run, run.outcome));
        if let Some(i) = board_index(&run.port) {
            sim.replug(&[i]).await?;
        }
        if Instant::now() >= next_drain {
            sim.costs().await?;
            next_drain += DRAIN_COSTS_EVERY;
            progress(&format!(
                "{:>6.0} s: {} runs, daemon RSS {:.1} MiB, anon {:.1} MiB, {} fds, {} threads",
                started.elapsed().as_secs_f64(),
                reported.len(),
                watched.rss_kib() as f64 / 1024.0,
                watched.anon_kib() as f64 / 1024.0,
                watched.open_fds(),
                watched.threads()
            ));
        }
    }
    progress("time is up: letting runs in flight finish");
    let (samples, _) = sampler.finish();
    reported.extend(
        daemon
            .stop(STOP_LIMIT)
            .await?
            .into_iter()
            .map(|r| (r.run, r.outcome)),
    );
    // The daemon has been waited for: its whole CPU time is counted now.
    let cpu = process::children_cpu().saturating_sub(cpu_before);
    let seconds = started.elapsed().as_secs_f64();
    let soak_end = soak_started_at + options.duration;
    let stats = sim.stats().await?;
    let runs = read_runs(&dir.join("results.db")).await?;
    sim.quit().await;
    let daemon_panics = child::panics_in(&log);
    let simulator_panics = child::panics_in(&sim.log);

    let mut checks = vec![
        records_check(&reported, &runs),
        Check {
            name: "panics",
            passed: daemon_panics == 0 && simulator_panics == 0,
            detail: format!("daemon {daemon_panics}, simulator {simulator_panics}"),
        },
    ];
    checks.extend(token_checks(&stats, &runs));
    // Only the soak itself: while the last runs drain, ports close.
    let soaking: Vec<Sample> = samples
        .into_iter()
        .filter(|s| s.at <= options.duration)
        .collect();
    let rss = quarters(&soaking, |s| s.rss_kib as f64 / 1024.0);
    let anon = quarters(&soaking, |s| s.anon_kib as f64 / 1024.0);
    let fds = quarters(&soaking, |s| s.fds as f64);
    let threads = quarters(&soaking, |s| s.threads as f64);
    let timeline = timeline(&soaking, options.duration);
    for (name, q) in [("rss_flat", &rss), ("anon_flat", &anon)] {
        checks.push(Check {
            name,
            passed: q.last_max <= q.second_max * 1.10,
            detail: format!(
                "max {:.1} MiB in the second quarter, {:.1} MiB in the last",
                q.second_max, q.last_max
            ),
        });
    }
    for (name, q) in [("fds_flat", &fds), ("threads_flat", &threads)] {
        checks.push(Check {
            name,
            passed: q.last_median <= q.second_median,
            detail: format!(
                "median {} (max {}) in the second quarter, {} (max {}) in the last",
                q.second_median, q.second_max, q.last_median, q.last_max
            ),
        });
    }

    let count = |o: Outcome| runs.iter().filter(|r| r.outcome == o).count();
    let mut failures = BTreeMap::new();
    for run in runs.iter().filter(|r| r.outcome == Outcome::Failed) {
        let code = run.reason_code.map_or("?", |c| c.as_str());
        let key = format!("{}: {code}", run.failed_step.map_or("?", |s| s.as_str()));
        *failures.entry(key).or_insert(0) += 1;
    }
    let mut passed_cycles: Vec<f64> = runs
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .filter_map(|r| {
            r.finished_at
                .map(|f| (f - r.started_at).as_seconds_f64() * 1e3)
        })
        .collect();
    passed_cycles.sort_by(f64::total_cmp);
    Ok(SoakReport {
        boards: options.boards,
        seconds,
        runs: runs.len(),
        passed: count(Outcome::Passed),
        failed: count(Outcome::Failed),
        interrupted: count(Outcome::Interrupted),
        failures,
        boards_per_minute: runs
            .iter()
            .filter(|r| r.finished_at.is_some_and(|f| f <= soak_end))
            .count() as f64
            / options.duration.as_secs_f64()
            * 60.0,
        passed_cycle_p50_ms: percentile(&passed_cycles, 0.5),
        passed_cycle_p99_ms: percentile(&passed_cycles, 0.99),
        cpu_ms_per_cycle: if runs.is_empty() {
            0.0
        } else {
            cpu.as_secs_f64() * 1e3 / runs.len() as f64
        },
        rss_mib: rss,
        anon_mib: anon,
        fds,
        threads,
        timeline,
        checks,
    })
}

async fn read_runs(database: &std::path::Path) -> Result<Vec<RunRecord>, BenchError> {
    let reader = backends::local::reader(database)?;
    Ok(reader.runs(&RunFilter::default()).await?)
}

/// Every reported run in the database exactly once, nothing else there.
fn records_check(reported: &[(RunId, Outcome)], runs: &[RunRecord]) -> Check {
    let in_db: HashMap<RunId, Outcome> = runs.iter().map(|r| (r.id, r.outcome)).collect();
    let mut problems = Vec::new();
    let mut seen = HashMap::new();
    for &(id, outcome) in reported {
        *seen.entry(id).or_insert(0) += 1;
        match in_db.get(&id) {
            None => problems.push(format!("run {id} reported but not in the database")),
            Some(&db) if db != outcome => {
                problems.push(format!("run {id} reported {outcome}, database says {db}"));
            }
            Some(_) => {}
        }
    }
    if let Some((id, n)) = seen.iter().find(|(_, n)| **n > 1) {
        problems.push(format!("run {id} reported {n} times"));
    }
    if let Some(run) = runs.iter().find(|r| !seen.contains_key(&r.id)) {
        problems.push(format!("run {} in the database was never reported", run.id));
    }
    if let Some(run) = runs.iter().find(|r| r.outcome == Outcome::InFlight) {
        problems.push(format!("run {} left in flight", run.id));
    }
    Check {
        name: "records",
        passed: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "{} runs reported = {} in the database, none in flight",
                reported.len(),
                runs.len()
            )
        } else {
            problems.join("; ")
        },
    }
}

/// Tokens the simulator issued = token records in the database, per kind.
fn token_checks(boards: &[BoardStats], runs: &[RunRecord]) -> Vec<Check> {
    let issued = |count: fn(&BoardStats) -> u64| boards.iter().map(count).sum::<u64>();
    [
        (issued(|b| b.attest_tokens), TokenKind::Identity, Step::Attest, "tokens_attest"),
        (issued(|b| b.keygen_tokens), TokenKind::Keygen, Step::Keygen, "tokens_keygen"),
        (issued(|b| b.jwts), TokenKind::Jwt, Step::Jwt, "tokens_jwt"),
    ]
    .into_iter()
    .map(|(issued, kind, step, name)| {
        let recorded = runs
            .iter()
            .flat_map(|r| &r.tokens)
            .filter(|t| t.kind == kind)
            .count() as u64;
        // A step tried again discarded its earlier answer (a timeout, a
        // garbled or overlong line): a token issued then is never judged
        // or stored. Only so many may be missing; none may be invented.
        let retried: u64 = runs
            .iter()
            .flat_map(|r| &r.steps)
            .filter(|s| s.name == step)
            .map(|s| u64::from(s.attempts.saturating_sub(1)))
            .sum();
        let detail = if retried == 0 {
            format!("simulator issued {issued}, database holds {recorded}")
        } else {
            format!(
                "simulator issued {issued}, database holds {recorded}; {retried} retried {step} attempt(s) may each have discarded one"
            )
        };
        Check {
            name,
            passed: recorded <= issued && issued <= recorded + retried && !boards.is_empty(),
            detail,
        }
    })
    .collect()
}

/// Mean, median and max of `value` over the second and the last quarter of
/// the sampled time.
fn quarters(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> Quarters {
    let end = samples.last().map_or(Duration::ZERO, |s| s.at);
    let (second_start, second_end, last_start) = (end / 4, end / 2, end - end / 4);
    let stats = |pick: &dyn Fn(&Sample) -> bool| {
        let mut values: Vec<f64> = samples.iter().filter(|s| pick(s)).map(&value).collect();
        values.sort_by(f64::total_cmp);
        let mean = if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        };
        let median = percentile(&values, 0.5).unwrap_or(0.0);
        (mean, median, values.last().copied().unwrap_or(0.0))
    };
    let (second_mean, second_median, second_max) =
        stats(&|s| s.at > second_start && s.at <= second_end);
    let (last_mean, last_median, last_max) = stats(&|s| s.at >= last_start);
    Quarters {
        second_mean,
        second_median,
        second_max,
        last_mean,
        last_median,
        last_max,
    }
}

/// Means over at most 12 equal spans of `duration` (each at least a minute).
fn timeline(samples: &[Sample], duration: Duration) -> Vec<Point> {
    let span = (duration / 12).max(Duration::from_secs(60));
    let mut points = Vec::new();
    let mut from = Duration::ZERO;
    while from < duration {
        let until = (from + span).min(duration);
        let inside: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at >= from && s.at < until)
            .collect();
        if !inside.is_empty() {
            let n = inside.len() as f64;
            let mean = |f: &dyn Fn(&Sample) -> f64| inside.iter().map(|s| f(s)).sum::<f64>() / n;
            points.push(Point {
                until_s: until.as_secs_f64(),
                rss_mib: mean(&|s| s.rss_kib as f64 / 1024.0),
                anon_mib: mean(&|s| s.anon_kib as f64 / 1024.0),
                fds: mean(&|s| s.fds as f64),
                threads: mean(&|s| s.threads as f64),
            });
        }
        from = until;
    }
    points
}

/// The report as text, one fact a line.
pub fn render(report: &SoakReport) -> String {
    let mut out = String::new();
    let opt = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1} ms"));
    out.push_str(&format!(
        "{} boards for {:.0} s (soak and drain): {} runs ({} passed, {} failed, {} interrupted), {:.1} boards/min during the soak\n",
        report.boards,
        report.seconds,
        report.runs,
        report.passed,
        report.failed,
        report.interrupted,
        report.boards_per_minute
    ));
    for (why, n) in &report.failures {
        out.push_str(&format!("  failed at {why}: {n}\n"));
    }
    out.push_str(&format!(
        "passed cycle p50 {} p99 {}; station CPU {:.2} ms per run\n",
        opt(report.passed_cycle_p50_ms),
        opt(report.passed_cycle_p99_ms),
        report.cpu_ms_per_cycle
    ));
    out.push_str(&format!(
        "RSS  second quarter mean {:.1} MiB max {:.1} MiB; last quarter mean {:.1} MiB max {:.1} MiB\n",
        report.rss_mib.second_mean,
        report.rss_mib.second_max,
        report.rss_mib.last_mean,
        report.rss_mib.last_max
    ));
    let anon = &report.anon_mib;
    out.push_str(&format!(
        "anon second quarter mean {:.1} MiB max {:.1} MiB; last quarter mean {:.1} MiB max {:.1} MiB\n",
        anon.second_mean, anon.second_max, anon.last_mean, anon.last_max
    ));
    for (name, q) in [("fds ", &report.fds), ("threads", &report.threads)] {
        out.push_str(&format!(
            "{name} second quarter mean {:.1} max {}; last quarter mean {:.1} max {}\n",
            q.second_mean, q.second_max, q.last_mean, q.last_max
        ));
    }
    out.push_str("timeline (means): ");
    let points: Vec<String> = report
        .timeline
        .iter()
        .map(|p| {
            format!(
                "{:.0}s rss {:.1} anon {:.1} fds {:.0} threads {:.0}",
                p.until_s, p.rss_mib, p.anon_mib, p.fds, p.threads
            )
        })
        .collect();
    out.push_str(&points.join(" | "));
    out.push('\n');
    for check in &report.checks {
        out.push_str(&format!(
            "{} {}: {}\n",
            if check.passed { "ok  " } else { "FAIL" },
            check.name,
            check.detail
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{DeviceInfo, TokenRecord};

    fn run(id: RunId, outcome: Outcome, tokens: &[&str]) -> RunRecord {
        RunRecord {
            id,
            uid: uuid::Uuid::nil(),
            station_id: "soak".into(),
            port: "/x/ttySIM0".into(),
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            finished_at: Some(time::OffsetDateTime::UNIX_EPOCH),
            outcome,
            failed_step: None,
            reason_code: None,
            reason: None,
            verified_by: None,
            device: DeviceInfo::default(),
            steps: Vec::new(),
            tokens: tokens
                .iter()
                .map(|k| TokenRecord {
                    kind: crate::token::TokenKind::parse(k).unwrap_or(crate::token::TokenKind::Jwt),
                    text: String::new(),
                    authentic: true,
                    checks_json: String::new(),
                })
                .collect(),
            artifacts: Vec::new(),
            trace: Default::default(),
            compacted_at: None,
        }
    }

    #[test]
    fn records_must_match_exactly_once() {
        let runs = [run(1, Outcome::Passed, &[]), run(2, Outcome::Failed, &[])];
        let reported = [(1, Outcome::Passed), (2, Outcome::Failed)];
        assert!(records_check(&reported, &runs).passed);
        // Missing, duplicated, mismatched, never reported, in flight.
        assert!(!records_check(&[(1, Outcome::Passed)], &runs).passed);
        let twice = [
            (1, Outcome::Passed),
            (1, Outcome::Passed),
            (2, Outcome::Failed),
        ];
        assert!(!records_check(&twice, &runs).passed);
        let wrong = [(1, Outcome::Failed), (2, Outcome::Failed)];
        assert!(!records_check(&wrong, &runs).passed);
        let with_extra = [
            run(1, Outcome::Passed, &[]),
            run(2, Outcome::Failed, &[]),
            run(3, Outcome::InFlight, &[]),
        ];
        assert!(!records_check(&reported, &with_extra).passed);
    }

    #[test]
    fn tokens_issued_must_all_be_recorded() {
        let runs = [
            run(1, Outcome::Passed, &["identity", "keygen", "jwt"]),
            run(2, Outcome::Failed, &["identity"]),
        ];
        let board = |attest_tokens, keygen_tokens, jwts| BoardStats {
            attest_tokens,
            keygen_tokens,
            jwts,
            ..BoardStats::default()
        };
        let stats = [board(1, 1, 1), board(1, 0, 0)];
        assert!(token_checks(&stats, &runs).iter().all(|c| c.passed));
        let lost = [board(2, 1, 1), board(1, 0, 0)];
        let checks = token_checks(&lost, &runs);
        assert!(!checks[0].passed && checks[1].passed && checks[2].passed);
        assert!(!token_checks(&[], &[])[0].passed, "no boards, no proof");

        // A keygen tried twice (its first answer overlong) may leave one
        // issued token unrecorded, not two; none may be invented.
        let mut retried = run(3, Outcome::Passed, &["identity", "keygen", "jwt"]);
        retried.steps.push(crate::record::StepRecord {
            name: Step::Keygen,
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            passed: true,
            attempts: 2,
            detail: String::new(),
        });
        let runs = [retried];
        assert!(token_checks(&[board(1, 2, 1)], &runs)[1].passed);
        assert!(token_checks(&[board(1, 1, 1)], &runs)[1].passed);
        assert!(!token_checks(&[board(1, 3, 1)], &runs)[1].passed);
        assert!(!token_checks(&[board(1, 0, 1)], &runs)[1].passed);
    }

    #[test]
    fn quarters_split_by_time() {
        let samples: Vec<Sample> = (0..=8)
            .map(|i| Sample {
                at: Duration::from_secs(i),
                rss_kib: 1024 * (10 + i),
                anon_kib: 1024,
                fds: 20,
                threads: 4,
            })
            .collect();
        let q = quarters(&samples, |s| s.rss_kib as f64 / 1024.0);
        assert_eq!(
            (q.second_mean, q.second_median, q.second_max),
            (13.5, 13.0, 14.0)
        );
        assert_eq!((q.last_mean, q.last_median, q.last_max), (17.0, 17.0, 18.0));
    }
}
