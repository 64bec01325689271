//! One delivery task per sink: the oldest run it is owed, delivered, its
//! answer committed, then the next. A sink that fails waits (its backoff,
//! or what the receiver asked for) before it tries the same run again, so
//! a receiver that is down sees one attempt per wait, not a storm; a dead
//! letter is set aside and the next run goes.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::health::{REFRESH, behind};
use super::{Delivery, RunJson, Sink, SinkConfig, SinkHealth};
use crate::ledger::deliveries::{Due, SinkId};
use crate::ledger::{LedgerError, SqliteDeliveries};
use crate::text::escape;

/// How often an idle sink looks for new runs. A finished run waits at most
/// this long before its first attempt.
pub const POLL: Duration = Duration::from_millis(250);
/// The first retry's wait; doubled each attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A receiver's `Retry-After` is honoured up to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The running delivery tasks; they stop when this drops.
pub struct Deliveries {
    store: SqliteDeliveries,
    health: Arc<SinkHealth>,
    tasks: Vec<JoinHandle<()>>,
}

impl Deliveries {
    /// The outbox the tasks deliver from.
    pub fn store(&self) -> &SqliteDeliveries {
        &self.store
    }

    /// How the sinks keep up (for `/metrics` and STATUS).
    pub fn health(&self) -> &Arc<SinkHealth> {
        &self.health
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        // A delivery cut off here is sent again at the next start: the
        // receivers are idempotent by the run's uid.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Make `sinks` the configured ones in the outbox and start a task for
/// each (on the caller's runtime).
pub async fn start(
    store: SqliteDeliveries,
    sinks: Vec<(Arc<dyn Sink>, SinkConfig)>,
) -> Result<Deliveries, LedgerError> {
    let ids = store
        .configure(
            sinks
                .iter()
                .map(|(sink, _)| sink.name().to_string())
                .collect(),
        )
        .await?;
    let recent = Arc::new(RecentRuns::default());
    let mut tasks: Vec<JoinHandle<()>> = sinks
        .into_iter()
        .zip(ids)
        .map(|((sink, config), id)| {
            let store = store.clone();
            let recent = Arc::clone(&recent);
            tokio::spawn(serve(store, recent, id, sink, config.deadline()))
        })
        .collect();
    let health = Arc::new(SinkHealth::default());
    health.set(store.backlog().await?);
    tasks.push(tokio::spawn(watch(store.clone(), Arc::clone(&health))));
    Ok(Deliveries {
        store,
        health,
        tasks,
    })
}

/// Keep `health` up to date; say in the log when a sink falls behind and
/// when it catches up.
async fn watch(store: SqliteDeliveries, health: Arc<SinkHealth>) {
    let mut was_behind: HashSet<String> = HashSet::new();
    loop {
        tokio::time::sleep(REFRESH).await;
        let Ok(backlog) = store.backlog().await else {
            continue;
        };
        let now = OffsetDateTime::now_utc();
        for b in &backlog {
            match (behind(b, now), was_behind.contains(&b.sink)) {
                (Some(why), false) => {
                    warn!(
                        sink = b.sink,
                        owed = b.owed,
                        dead = b.dead,
                        "{why}; `nrf-provd deliveries` shows what waits"
                    );
                    was_behind.insert(b.sink.clone());
                }
                (None, true) => {
                    info!(sink = b.sink, "sink caught up");
                    was_behind.remove(&b.sink);
                }
                _ => {}
            }
        }
        health.set(backlog);
    }
}

/// The runs' JSON the sinks delivered last, shared: every sink is owed
/// the same new run, so it is read and serialised once, not once a sink.
/// A copy serves only a delivery queued before it was read: a run a line's
/// conflict amends is owed again, and then read again.
#[derive(Default)]
struct RecentRuns(std::sync::Mutex<VecDeque<(OffsetDateTime, Arc<RunJson>)>>);

/// Runs [`RecentRuns`] keeps (a few sinks a little apart).
const RECENT_RUNS: usize = 16;

impl RecentRuns {
    async fn get(&self, store: &SqliteDeliveries, due: &Due) -> Result<Arc<RunJson>, LedgerError> {
        if let Some((_, found)) = self
            .lock()
            .iter()
            .find(|(read_at, r)| r.id == due.run && *read_at >= due.queued_at)
        {
            return Ok(Arc::clone(found));
        }
        let read_at = OffsetDateTime::now_utc();
        let json = Arc::new(RunJson::of(&store.run(due.run).await?));
        let mut recent = self.lock();
        recent.retain(|(_, r)| r.id != due.run);
        if recent.len() == RECENT_RUNS {
            recent.pop_front();
        }
        recent.push_back((read_at, Arc::clone(&json)));
        Ok(json)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(OffsetDateTime, Arc<RunJson>)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The wait after `attempts` failed attempts (1, 2, 4 … 60 s).
pub fn backoff(attempts: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32.checked_shl(attempts.min(16)).unwrap_or(u32::MAX))
        .min(MAX_BACKOFF)
}

async fn serve(
    store: SqliteDeliveries,
    recent: Arc<RecentRuns>,
    id: SinkId,
    sink: Arc<dyn Sink>,
    deadline: Duration,
) {
    loop {
        let due = match store.next(id).await {
            Ok(Some(due)) => due,
            Ok(None) => {
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(e) => {
                warn!(sink = sink.name(), error = %e, "cannot read the sink's outbox; trying again");
                tokio::time::sleep(FIRST_BACKOFF).await;
                continue;
            }
        };
        // Not due yet (a retry's wait, kept across restarts); looked at
        // again at least every POLL, so a retry by hand starts at once.
        if let Some(wait) = due.wait(OffsetDateTime::now_utc()) {
            tokio::time::sleep(wait.min(POLL)).await;
            continue;
        }
        let run = match recent.get(&store, &due).await {
            Ok(run) => run,
            Err(e) => {
                warn!(sink = sink.name(), run = due.run, error = %e, "cannot read the run to deliver; trying again");
                tokio::time::sleep(FIRST_BACKOFF).await;
                continue;
            }
        };
        let answer = match tokio::time::timeout(deadline, sink.deliver(&run)).await {
            Ok(answer) => answer,
            Err(_) => Delivery::Retry {
                after: None,
                error: format!("no answer within {}s", deadline.as_secs()),
            },
        };
        let committed = match answer {
            Delivery::Ack => store.acknowledge(id, run.id).await,
            Delivery::Retry { after, error } => {
                let wait = after.map_or_else(|| backoff(due.attempts), |a| a.min(MAX_RETRY_AFTER));
                warn!(sink = sink.name(), run = run.id, uid = %run.uid, attempts = due.attempts + 1,
                      retry_in_s = wait.as_secs_f64(), error = %escape(&error), "delivery failed; will retry");
                let at = OffsetDateTime::now_utc() + wait;
                let committed = store.retry_at(id, run.id, at, error).await;
                tokio::time::sleep(wait.min(POLL)).await;
                committed
            }
            Delivery::Dead { answer } => {
                error!(sink = sink.name(), run = run.id, uid = %run.uid, answer = %escape(&answer),
                       "the receiver refused the run; kept as a dead letter (`nrf-provd deliveries --dead`)");
                store.dead_letter(id, run.id, answer).await
            }
        };
        if let Err(e) = committed {
            // Delivered but not recorded: sent again later, which the
            // receiver's idempotency key makes harmless.
            warn!(sink = sink.name(), run = run.id, error = %e, "cannot record a delivery's outcome");
            tokio::time::sleep(FIRST_BACKOFF).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
