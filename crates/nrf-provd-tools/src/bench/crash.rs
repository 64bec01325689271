//! `nrf-provd bench --crash N`: SIGKILL the daemon N times at random
//! moments while it provisions simulated boards, restarting it on the same
//! database each time, and report what a crash cost.
//!
//! The boards stay in their fixtures across kills (as on a line when the
//! daemon restarts): a board cut off mid-command is found again by the next
//! daemon, which must settle the port and provision it without a replug.
//! No faults are injected, so every failed run is a cost of the crashes.
//!
//! After each kill, with no daemon running, the database is read as it was
//! left:
//! - integrity: `PRAGMA integrity_check` says `ok`;
//! - lost: a run the daemon reported finished (its run line), or a
//!   committed run seen after an earlier kill, is missing;
//! - changed: such a run reads differently now (any field);
//! - cut: runs left in flight (the kill hit them; the next daemon records
//!   them as interrupted, which is not a change of a committed run).
//!
//! At the end a last daemon provisions every board once more and is
//! stopped gracefully: no run may be left in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::child::{self, SimChild, SimSpec};
use super::daemon::{self, DaemonChild, Reported};
use super::{BenchError, STALL_LIMIT, WorkDir, board_index};
use crate::ledger::{RunFilter, backends};
use crate::record::{Outcome, RunId, RunRecord};
use crate::sim::Latency;

/// A kill comes this long after the daemon started, uniformly at random:
/// from before the first board is found to well past a whole cycle
/// (about 3.5 s with realistic latency), so kills land in every command.
const KILL_AFTER: std::ops::Range<Duration> = Duration::from_millis(200)..Duration::from_secs(6);
/// How long the last daemon may take to stop (runs in flight finish).
const STOP_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct CrashOptions {
    pub kills: usize,
    pub boards: usize,
    pub latency: Latency,
    pub baud: Option<u32>,
    pub seed: u64,
    /// The `nrf-provd` executable: the daemon and the simulator.
    pub executable: PathBuf,
    pub keep: bool,
}

/// What the kills cost.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CrashReport {
    pub kills: usize,
    /// Kills that cut at least one run short.
    pub kills_mid_run: usize,
    /// Runs cut short by a kill (in flight when it came).
    pub runs_cut: usize,
    pub runs: usize,
    pub passed: usize,
    pub failed: usize,
    pub interrupted: usize,
    /// Committed or reported runs missing afterwards, one line each.
    pub lost: Vec<String>,
    /// Committed runs that read differently afterwards, one line each.
    pub changed: Vec<String>,
    /// Runs in flight after the last daemon stopped gracefully.
    pub left_in_flight: usize,
    /// Integrity checks that did not say `ok`, one line each.
    pub integrity: Vec<String>,
    /// Failed runs that were a board's first run under a new daemon, by
    /// `step code`: the boards a restart broke.
    pub failed_after_restart: BTreeMap<String, usize>,
    /// Other failed runs, by `step code`.
    pub failed_other: BTreeMap<String, usize>,
    pub panics: usize,
    pub seconds: f64,
}

impl CrashReport {
    /// The targets: nothing lost or changed, nothing in flight, integrity
    /// every time, no board failing, no panic.
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.changed.is_empty()
            && self.left_in_flight == 0
            && self.integrity.is_empty()
            && self.failed_after_restart.is_empty()
            && self.failed_other.is_empty()
            && self.panics == 0
    }
}

/// The database as a kill left it, and what the bench knows it must hold.
#[derive(Default)]
struct Books {
    /// Runs seen finished after an earlier kill.
    committed: HashMap<RunId, RunRecord>,
    /// Runs the daemons reported finished, with their outcome.
    reported: HashMap<RunId, Outcome>,
}

pub async fn run(
    options: &CrashOptions,
    mut progress: impl FnMut(&str),
) -> Result<CrashReport, BenchError> {
    if options.kills == 0 || options.boards == 0 {
        return Err(BenchError::Invalid(
            "--crash needs at least one kill and one board".into(),
        ));
    }
    let base = WorkDir::create("crash", options.keep)?;
    let dir = base.sub("run")?;
    let spec = SimSpec {
        executable: &options.executable,
        count: options.boards,
        latency: options.latency,
        baud: options.baud,
        seed: options.seed,
        faults: &[],
    };
    let mut sim = SimChild::start(&spec, &dir).await?;
    let config = daemon::write_config(&dir, &sim, |_| {})?;
    let database = dir.join("results.db");
    let log = dir.join("daemon.log");
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let mut books = Books::default();
    let mut report = CrashReport {
        kills: options.kills,
        ..CrashReport::default()
    };
    let started = Instant::now();

    for kill in 1..=options.kills {
        let mut daemon = DaemonChild::start(&options.executable, &config, &log)?;
        let until = tokio::time::Instant::now() + rng.gen_range(KILL_AFTER);
        let mut fresh: HashSet<String> = HashSet::new();
        loop {
            tokio::select! {
                run = daemon.next_run() => match run {
                    Some(run) => {
                        take(&mut books, &mut report, &mut fresh, &run);
                        if let Some(i) = board_index(&run.port) {
                            sim.replug(&[i]).await?;
                        }
                    }
                    None => return Err(exited(&log)),
                },
                () = tokio::time::sleep_until(until) => break,
            }
        }
        daemon.kill().await;
        // Lines written before the kill are still in the pipe.
        while let Some(run) = daemon.next_run().await {
            take(&mut books, &mut report, &mut fresh, &run);
        }
        let cut = inspect(
            &database,
            &mut books,
            &mut report,
            &format!("after kill {kill}"),
        )
        .await?;
        report.runs_cut += cut;
        report.kills_mid_run += usize::from(cut > 0);
        if kill % 10 == 0 || kill == options.kills {
            progress(&format!(
                "{kill:>4} kills: {} runs reported, {} cut short, lost {}, changed {}",
                books.reported.len(),
                report.runs_cut,
                report.lost.len(),
                report.changed.len()
            ));
        }
    }

    // A last daemon: every board provisioned once more, then a clean stop.
    let mut daemon = DaemonChild::start(&options.executable, &config, &log)?;
    let mut fresh: HashSet<String> = HashSet::new();
    let mut done: HashSet<String> = HashSet::new();
    while done.len() < options.boards {
        match tokio::time::timeout(STALL_LIMIT, daemon.next_run()).await {
            Ok(Some(run)) => {
                take(&mut books, &mut report, &mut fresh, &run);
                done.insert(run.port.clone());
            }
            Ok(None) => return Err(exited(&log)),
            Err(_) => return Err(BenchError::Stalled(STALL_LIMIT)),
        }
    }
    for run in daemon.stop(STOP_LIMIT).await? {
        take(&mut books, &mut report, &mut fresh, &run);
    }
    report.left_in_flight =
        inspect(&database, &mut books, &mut report, "after the last stop").await?;

    let runs = read_runs(&database).await?;
    let count = |o: Outcome| runs.iter().filter(|r| r.outcome == o).count();
    report.runs = runs.len();
    report.passed = count(Outcome::Passed);
    report.failed = count(Outcome::Failed);
    report.interrupted = count(Outcome::Interrupted);
    report.panics = child::panics_in(&log) + child::panics_in(&sim.log);
    report.seconds = started.elapsed().as_secs_f64();
    sim.quit().await;
    Ok(report)
}

/// Book a reported run; a failure is put down to the restart when it was
/// the board's first run under this daemon.
fn take(books: &mut Books, report: &mut CrashReport, fresh: &mut HashSet<String>, run: &Reported) {
    books.reported.insert(run.run, run.outcome);
    let first = fresh.insert(run.port.clone());
    if run.outcome == Outcome::Failed {
        let why = run
            .detail
            .split_once(':')
            .map_or(run.detail.as_str(), |(head, _)| head)
            .to_string();
        let tally = if first {
            &mut report.failed_after_restart
        } else {
            &mut report.failed_other
        };
        *tally.entry(why).or_insert(0) += 1;
    }
}

/// Check the database with no daemon running; the runs left in flight.
async fn inspect(
    database: &Path,
    books: &mut Books,
    report: &mut CrashReport,
    when: &str,
) -> Result<usize, BenchError> {
    let verdict = integrity(database)?;
    if verdict != "ok" {
        report.integrity.push(format!("{when}: {verdict}"));
    }
    let now: HashMap<RunId, RunRecord> = read_runs(database)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    for (id, before) in &books.committed {
        match now.get(id) {
            None => report
                .lost
                .push(format!("{when}: committed run {id} is gone")),
            Some(after) if after != before => report
                .changed
                .push(format!("{when}: run {id} was {before:?}, now {after:?}")),
            Some(_) => {}
        }
    }
    for (id, outcome) in &books.reported {
        match now.get(id) {
            None => report.lost.push(format!(
                "{when}: run {id} reported {outcome} is not in the database"
            )),
            Some(run) if run.outcome != *outcome => report.changed.push(format!(
                "{when}: run {id} reported {outcome}, database says {}",
                run.outcome
            )),
            Some(_) => {}
        }
    }
    let mut cut = 0;
    for (id, run) in now {
        if run.outcome == Outcome::InFlight {
            cut += 1;
        } else {
            books.committed.entry(id).or_insert(run);
        }
    }
    Ok(cut)
}

async fn read_runs(database: &Path) -> Result<Vec<RunRecord>, BenchError> {
    let reader = backends::local::reader(database)?;
    Ok(reader.runs(&RunFilter::default()).await?)
}

/// `PRAGMA integrity_check` on a read-only connection: `ok`, or the
/// problems it lists.
fn integrity(database: &Path) -> Result<String, BenchError> {
    let fail = |e: rusqlite::Error| BenchError::Invalid(format!("{}: {e}", database.display()));
    let conn =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(fail)?;
    let mut statement = conn.prepare("PRAGMA integrity_check").map_err(fail)?;
    let lines: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .map_err(fail)?
        .collect::<Result<_, _>>()
        .map_err(fail)?;
    Ok(lines.join("; "))
}

fn exited(log: &Path) -> BenchError {
    BenchError::Simulator {
        detail: format!("the daemon exited on its own; see {}", log.display()),
    }
}

/// The report as text.
pub fn render(report: &CrashReport) -> String {
    let mut out = String::new();
    let line = |out: &mut String, ok: bool, text: String| {
        out.push_str(&format!("{} {text}\n", if ok { "ok  " } else { "FAIL" }));
    };
    out.push_str(&format!(
        "{} kills in {:.0} s ({} cut a run short, {} runs cut); {} runs: {} passed, {} failed, {} interrupted\n",
        report.kills,
        report.seconds,
        report.kills_mid_run,
        report.runs_cut,
        report.runs,
        report.passed,
        report.failed,
        report.interrupted
    ));
    let list = |items: &[String]| {
        if items.is_empty() {
            String::new()
        } else {
            format!(": {}", items.join("; "))
        }
    };
    let tally = |t: &BTreeMap<String, usize>| {
        let items: Vec<String> = t.iter().map(|(why, n)| format!("{n} × {why}")).collect();
        list(&items)
    };
    line(
        &mut out,
        report.lost.is_empty(),
        format!(
            "committed runs lost: {}{}",
            report.lost.len(),
            list(&report.lost)
        ),
    );
    line(
        &mut out,
        report.changed.is_empty(),
        format!(
            "committed runs changed: {}{}",
            report.changed.len(),
            list(&report.changed)
        ),
    );
    line(
        &mut out,
        report.left_in_flight == 0,
        format!("runs left in flight: {}", report.left_in_flight),
    );
    line(
        &mut out,
        report.integrity.is_empty(),
        format!(
            "integrity_check: {} of {} not ok{}",
            report.integrity.len(),
            report.kills + 1,
            list(&report.integrity)
        ),
    );
    let after: usize = report.failed_after_restart.values().sum();
    line(
        &mut out,
        after == 0,
        format!(
            "boards failing after a restart: {after}{}",
            tally(&report.failed_after_restart)
        ),
    );
    let other: usize = report.failed_other.values().sum();
    line(
        &mut out,
        other == 0,
        format!("other failed runs: {other}{}", tally(&report.failed_other)),
    );
    line(
        &mut out,
        report.panics == 0,
        format!("panics: {}", report.panics),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(port: &str, run: RunId, outcome: Outcome, detail: &str) -> Reported {
        Reported {
            port: port.into(),
            run,
            outcome,
            detail: detail.into(),
        }
    }

    #[test]
    fn a_failure_is_put_down_to_the_restart_only_on_the_first_run() {
        let (mut books, mut report, mut fresh) =
            (Books::default(), CrashReport::default(), HashSet::new());
        take(
            &mut books,
            &mut report,
            &mut fresh,
            &reported("a", 1, Outcome::Failed, "probe error: AT+CMEE=1: ERROR"),
        );
        take(
            &mut books,
            &mut report,
            &mut fresh,
            &reported("b", 2, Outcome::Passed, ""),
        );
        take(
            &mut books,
            &mut report,
            &mut fresh,
            &reported("a", 3, Outcome::Failed, "keygen timeout: no answer"),
        );
        assert_eq!(report.failed_after_restart.get("probe error"), Some(&1));
        assert_eq!(report.failed_other.get("keygen timeout"), Some(&1));
        assert_eq!(books.reported.len(), 3);
        assert!(!report.ok());
        assert!(CrashReport::default().ok());
    }
}
