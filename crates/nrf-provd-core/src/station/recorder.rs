//! Recording a run: begin it in the ledger, run the plan under the run
//! deadline and the abort token, finish it in the ledger. The record is
//! durable before it is reported; one that could not be made durable is
//! reported failed (`store`), never passed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span, warn};

use crate::modem::Modem;
use crate::plan::{self, Arrival, Link, PlanContext, PlanObserver};
use crate::record::{Outcome, ReasonCode, RunRecord, RunStart, Traceability};

use super::events::{Events, RunObserver};
use super::gate::LedgerGate;
use crate::ledger::LedgerError;

/// What a run is recorded under and how long it may take.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub station_id: String,
    /// Upper bound on one whole run; past it the run fails with `timeout`.
    pub run_timeout: Duration,
}

/// How a board's turn ended.
#[derive(Debug)]
pub enum Recorded {
    /// The run happened; its record is durable, or deferred until the
    /// ledger takes records again (then it says `store`, never passed).
    Run(Box<RunRecord>),
    /// The ledger could not begin the run for a fault that may clear: no
    /// command was sent; wait for the gate and try the board again.
    NotBegun(LedgerError),
}

/// What every run of a station is recorded with.
pub struct Recorder<'a> {
    pub ctx: &'a PlanContext,
    /// Keeps a record whose commit failed until the ledger is back.
    pub gate: &'a LedgerGate,
    pub settings: &'a RunSettings,
    /// Cancelled when the shutdown grace is over: the run is cut short.
    pub abort: &'a CancellationToken,
    pub events: &'a Events,
    /// The work order, lot, operator, product and fixture of this run.
    pub trace: &'a Traceability,
}

impl Recorder<'_> {
    /// Begin a run in the ledger, run the plan under the run deadline and
    /// the abort token, and finish it. The record is durable before this
    /// returns, or kept by the gate until the ledger is back (and then it
    /// is not passed).
    pub async fn run<T: Link>(
        &self,
        modem: &mut Modem<T>,
        arrival: Arrival,
        port: &str,
    ) -> Recorded {
        run_recorded(self, modem, arrival, port).await
    }
}

async fn run_recorded<T: Link>(
    recorder: &Recorder<'_>,
    modem: &mut Modem<T>,
    arrival: Arrival,
    port: &str,
) -> Recorded {
    let Recorder {
        ctx,
        gate,
        settings,
        abort,
        events,
        trace,
    } = *recorder;
    let start = RunStart {
        uid: uuid::Builder::from_random_bytes(ctx.random.bytes16()).into_uuid(),
        station_id: settings.station_id.clone(),
        port: port.to_string(),
        started_at: ctx.clock.now_utc(),
        trace: trace.clone(),
    };
    let id = match ctx.ledger.begin_run(&start).await {
        Ok(id) => id,
        Err(err) if err.is_local_fault() => return Recorded::NotBegun(err),
        Err(err) => return Recorded::Run(Box::new(unrecorded(ctx, &start, err.to_string()))),
    };
    let mut record = RunRecord::begun(id, &start);
    let observer = RunObserver {
        events,
        port,
        run: id,
    };
    let result = {
        // A span per run; the plan fills in the device once it knows it.
        let span = info_span!("run", id, device = tracing::field::Empty);
        let observer: &dyn PlanObserver = &observer;
        let run = plan::run(ctx, modem, arrival, &mut record, observer).instrument(span);
        tokio::select! {
            result = tokio::time::timeout(settings.run_timeout, run) => Some(result),
            _ = abort.cancelled() => None,
        }
    };
    match result {
        Some(Ok(Ok(()))) => record.outcome = record.success(),
        Some(Ok(Err(failure))) => record.fail(
            Outcome::Failed,
            Some(failure.step),
            failure.code,
            failure.detail,
        ),
        Some(Err(_elapsed)) => {
            let step = current_step(ctx, &record);
            record.fail(
                Outcome::Failed,
                step,
                ReasonCode::Timeout,
                format!("run exceeded {:?}", settings.run_timeout),
            );
        }
        None => {
            let step = current_step(ctx, &record);
            record.fail(
                Outcome::Interrupted,
                step,
                ReasonCode::Interrupted,
                "station shutting down",
            );
        }
    }
    record.finished_at = Some(ctx.clock.now_utc());
    match ctx.ledger.finish_run(&record).await {
        Ok(()) => {}
        Err(err) if err.is_transient() => {
            // Not durable yet, so not done: the operator must not see a
            // pass; the record is kept and committed when the ledger is back.
            warn!(%err, run = record.id, "could not commit the run now; keeping it to commit later");
            record = record.uncommitted(&err.to_string());
            gate.defer(record.clone());
        }
        Err(err) => {
            error!(%err, run = record.id, "could not commit the run");
            record.fail(Outcome::Failed, None, ReasonCode::Store, err.to_string());
        }
    }
    Recorded::Run(Box::new(record))
}

/// The step a run was in when it was cut short: the one after the last
/// recorded step.
fn current_step(ctx: &PlanContext, record: &RunRecord) -> Option<crate::record::Step> {
    ctx.plan
        .steps
        .get(record.steps.len())
        .copied()
        .or(Some(crate::record::Step::Restore))
}

/// A record for a run the ledger refused to begin (disk full, permissions):
/// reported as failed, never as passed.
fn unrecorded(ctx: &PlanContext, start: &RunStart, reason: String) -> RunRecord {
    warn!(reason = %crate::text::Escaped(&reason), "run not recorded");
    let mut record = RunRecord::begun(0, start);
    record.fail(Outcome::Failed, None, ReasonCode::Store, reason);
    record.finished_at = Some(ctx.clock.now_utc());
    record
}
