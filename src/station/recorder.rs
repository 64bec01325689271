//! Recording a run: begin it in the ledger, run the plan under the run
//! deadline and the abort token, finish it in the ledger. The record is
//! durable before it is reported; one that could not be made durable is
//! reported failed (`store`), never passed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info_span, warn};

use crate::modem::Modem;
use crate::plan::{self, Arrival, Link, PlanContext, PlanObserver};
use crate::record::{Outcome, ReasonCode, RunRecord, RunStart};

use super::events::{Events, RunObserver};

/// What a run is recorded under and how long it may take.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub station_id: String,
    /// Upper bound on one whole run; past it the run fails with `timeout`.
    pub run_timeout: Duration,
}

/// Begin a run in the ledger, run the plan under the run deadline and the
/// abort token, and finish it. The record is durable before this returns,
/// unless the ledger refused it (then it says so and is not passed).
pub async fn run_recorded<T: Link>(
    ctx: &PlanContext,
    modem: &mut Modem<T>,
    arrival: Arrival,
    port: &str,
    settings: &RunSettings,
    abort: &CancellationToken,
    events: &Events,
) -> RunRecord {
    let start = RunStart {
        uid: uuid::Builder::from_random_bytes(ctx.random.bytes16()).into_uuid(),
        station_id: settings.station_id.clone(),
        port: port.to_string(),
        started_at: ctx.clock.now_utc(),
    };
    let id = match ctx.ledger.begin_run(&start).await {
        Ok(id) => id,
        Err(err) => return unrecorded(ctx, &start, err.to_string()),
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
        Some(Ok(Ok(()))) => record.outcome = Outcome::Passed,
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
    if let Err(err) = ctx.ledger.finish_run(&record).await {
        // Not durable, so not done: the operator must not see a pass.
        error!(%err, run = record.id, "could not commit run");
        record.fail(Outcome::Failed, None, ReasonCode::Store, err.to_string());
    }
    record
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
    warn!(%reason, "run not recorded");
    let mut record = RunRecord::begun(0, start);
    record.fail(Outcome::Failed, None, ReasonCode::Store, reason);
    record.finished_at = Some(ctx.clock.now_utc());
    record
}
