//! One delivery task per sink: the oldest run it is owed, delivered, its
//! answer committed, then the next. A sink that fails waits (its backoff,
//! or what the receiver asked for) before it tries the same run again, so
//! a receiver that is down sees one attempt per wait, not a storm; a dead
//! letter is set aside and the next run goes.
//!
//! The tasks run on a thread and runtime of their own (`sinks`), as the
//! HTTP API does: a program a command sink starts, a webhook's TLS
//! handshake or a broker's reconnects never take a turn on the runtime
//! that paces the boards, and what delivering costs is that thread's CPU.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::health::{REFRESH, behind};
use super::{Delivery, RunJson, Sink, SinkConfig, SinkError, SinkHealth};
use crate::ledger::deliveries::{Due, SinkId};
use crate::ledger::{LedgerError, SqliteDeliveries};
use crate::text::escape;

/// How often an idle sink looks for new runs when nothing tells it of
/// them (no station's count of finished runs to follow).
pub const POLL: Duration = Duration::from_millis(250);
/// How often an idle sink that follows the station's finished runs looks
/// anyway: for what another process changed (`deliveries --retry`, a
/// line's amendment).
pub const IDLE_POLL: Duration = Duration::from_secs(2);
/// The first retry's wait; doubled each attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A receiver's `Retry-After` is honoured up to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The name of the sinks' thread, and of its runtime's blocking threads
/// (a webhook's name lookup): what the bench counts as delivering.
pub const THREAD: &str = "sinks";
pub const BLOCKING_THREADS: &str = "sinks-blocking";
/// What a stopping sinks' thread gives its tasks (a command's program is
/// killed, a connection dropped) before it leaves them.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The running delivery tasks; they stop when this drops.
pub struct Deliveries {
    store: SqliteDeliveries,
    health: Arc<SinkHealth>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
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
        // receivers are idempotent by the run's uid. Joined, so nothing is
        // delivered once this is gone.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why the sinks did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot start the sinks' thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Make `configs` the configured sinks in the outbox (in this order) and
/// start a task for each on the `sinks` thread. `runs_finished` (the
/// station's count of finished runs) wakes an idle sink as a run
/// finishes; without it an idle sink looks every [`POLL`].
pub async fn start(
    store: SqliteDeliveries,
    configs: Vec<SinkConfig>,
    runs_finished: Option<watch::Receiver<u64>>,
) -> Result<Deliveries, StartError> {
    let (ready, started) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread_store = store.clone();
    let thread = std::thread::Builder::new()
        .name(THREAD.into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name(BLOCKING_THREADS)
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready.send(Err(StartError::Thread(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                match launch(thread_store, configs, runs_finished).await {
                    Ok((tasks, health)) => {
                        let _ = ready.send(Ok(health));
                        // Until the Deliveries drop (the sender with them).
                        let _ = stopped.await;
                        for task in &tasks {
                            task.abort();
                        }
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            });
            runtime.shutdown_timeout(STOP_GRACE);
        })
        .map_err(StartError::Thread)?;
    let health = match started.await {
        Ok(result) => result?,
        // The thread ended without a word: it panicked.
        Err(_) => {
            let _ = thread.join();
            return Err(StartError::Thread(std::io::Error::other(
                "the sinks' thread stopped while starting",
            )));
        }
    };
    Ok(Deliveries {
        store,
        health,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// On the sinks' runtime: open the sinks (an MQTT sink connects on this
/// runtime), name them in the outbox, start their tasks and the watcher.
async fn launch(
    store: SqliteDeliveries,
    configs: Vec<SinkConfig>,
    runs_finished: Option<watch::Receiver<u64>>,
) -> Result<(Vec<JoinHandle<()>>, Arc<SinkHealth>), StartError> {
    let sinks = configs
        .iter()
        .map(super::open)
        .collect::<Result<Vec<_>, _>>()?;
    let ids = store
        .configure(sinks.iter().map(|sink| sink.name().to_string()).collect())
        .await?;
    let recent = Arc::new(RecentRuns::default());
    let mut tasks: Vec<JoinHandle<()>> = sinks
        .into_iter()
        .zip(configs)
        .zip(ids)
        .map(|((sink, config), id)| {
            let serving = Serving {
                store: store.clone(),
                recent: Arc::clone(&recent),
                id,
                sink,
                deadline: config.deadline(),
                runs_finished: runs_finished.clone(),
            };
            tokio::spawn(serving.serve())
        })
        .collect();
    let health = Arc::new(SinkHealth::default());
    health.set(store.backlog().await?);
    tasks.push(tokio::spawn(watch_health(store, Arc::clone(&health))));
    Ok((tasks, health))
}

/// Keep `health` up to date; say in the log when a sink falls behind and
/// when it catches up.
async fn watch_health(store: SqliteDeliveries, health: Arc<SinkHealth>) {
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

/// One sink's delivery task.
struct Serving {
    store: SqliteDeliveries,
    recent: Arc<RecentRuns>,
    id: SinkId,
    sink: Arc<dyn Sink>,
    deadline: Duration,
    runs_finished: Option<watch::Receiver<u64>>,
}

impl Serving {
    async fn serve(mut self) {
        let (store, id) = (self.store.clone(), self.id);
        // What the last acknowledgement read as owed next (`Some(None)`:
        // nothing), so that a delivery costs the outbox one trip, not two.
        let mut known: Option<Option<Due>> = None;
        loop {
            let owed = match known.take() {
                Some(owed) => Ok(owed),
                None => {
                    self.mark_seen();
                    store.next(id).await
                }
            };
            let due = match owed {
                Ok(Some(due)) => due,
                Ok(None) => {
                    self.idle().await;
                    continue;
                }
                Err(e) => {
                    warn!(sink = self.sink.name(), error = %e, "cannot read the sink's outbox; trying again");
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
            known = self.deliver(&due).await;
        }
    }

    /// Take the station's count of finished runs as seen before the outbox
    /// is read, so that a run finishing meanwhile wakes [`Serving::idle`]
    /// rather than slipping past it.
    fn mark_seen(&mut self) {
        if let Some(runs) = self.runs_finished.as_mut() {
            runs.borrow_and_update();
        }
    }

    /// Owed nothing: until the station finishes a run (or [`IDLE_POLL`]),
    /// or for [`POLL`] when there is no station to follow.
    async fn idle(&mut self) {
        let Some(runs) = self.runs_finished.as_mut() else {
            tokio::time::sleep(POLL).await;
            return;
        };
        let station_gone = tokio::select! {
            changed = runs.changed() => changed.is_err(),
            () = tokio::time::sleep(IDLE_POLL) => false,
        };
        if station_gone {
            // Plain polling from now on.
            self.runs_finished = None;
        }
    }

    /// Deliver `due` and commit the answer; after an acknowledgement, what
    /// is owed next (read with it).
    async fn deliver(&mut self, due: &Due) -> Option<Option<Due>> {
        let (store, id, sink) = (self.store.clone(), self.id, Arc::clone(&self.sink));
        let run = match self.recent.get(&store, due).await {
            Ok(run) => run,
            Err(e) => {
                warn!(sink = sink.name(), run = due.run, error = %e, "cannot read the run to deliver; trying again");
                tokio::time::sleep(FIRST_BACKOFF).await;
                return None;
            }
        };
        let answer = match tokio::time::timeout(self.deadline, sink.deliver(&run)).await {
            Ok(answer) => answer,
            Err(_) => Delivery::Retry {
                after: None,
                error: format!("no answer within {}s", self.deadline.as_secs()),
            },
        };
        let committed = match answer {
            Delivery::Ack => {
                self.mark_seen();
                match store.acknowledge_then_next(id, run.id).await {
                    Ok(next) => return Some(next),
                    Err(e) => Err(e),
                }
            }
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
        None
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
