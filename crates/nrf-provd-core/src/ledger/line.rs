//! A station of a line: its own SQLite ledger first, the line's shared
//! PostgreSQL ledger always.
//!
//! - Every run is begun and finished in the local SQLite exactly as on a
//!   station of its own; finishing it queues it in the outbox (same
//!   transaction), owed to the line sink (`SinkId::LINE`) as to every other
//!   sink. The forwarder ([`LineLedger::start_forwarding`]) is that sink's
//!   delivery task: it sends what the line is owed to PostgreSQL in
//!   batches, oldest first, idempotently by run uid, and brings back the
//!   conflicts found on this station's runs. A PostgreSQL outage only grows
//!   the outbox; a run PostgreSQL refuses for good (its data) is a dead
//!   letter with the server's answer (`nrf-provd deliveries`), and the
//!   runs after it go on.
//! - `required`: claims, authorities' bindings (`pin`'s pins) and the
//!   device check go to PostgreSQL during the run (then to the local
//!   ledger too); when it cannot answer within `claim_timeout` the step
//!   fails with `ledger_unreachable`.
//! - `deferred`: they are made locally; PostgreSQL checks them when the run
//!   is forwarded (the outbox carries every authority's bindings, each
//!   checked under its own authority) and records any clash as a conflict
//!   on both runs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::deliveries::SinkId;
pub use super::outbox::Conflict;
use super::outbox::ForwardBatch;
use super::postgres::within;
pub use super::settings::LedgerMode as LineMode;
use super::shared::SharedLedger;
use super::sqlite::stored_claim_value;
use super::{
    Binding, BindingOutcome, Claim, ClaimOutcome, DeviceCheck, DeviceHistory, Ledger, LedgerError,
    LedgerStatus, RunId, RunRecord, RunStart, ShiftChange, ShiftOnRecord, Sighting,
    SqliteDeliveries, SqliteLedger,
};

/// A central claim's round trip, successful ones
/// (`nrf_provd_ledger_claim_seconds`): 0.25 ms to about 6 s in steps of
/// 1.5, so that a p99 read from it (the bench's) is within a step; the
/// claim timeout's default is 5 s.
fn claim_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 1.5, 26))
}

// `Shared::reachable`: 0 until the server first answered or failed.
const REACHABLE: u8 = 1;
const UNREACHABLE: u8 = 2;

#[derive(Default)]
struct Shared {
    backlog: AtomicU64,
    conflicts: AtomicU64,
    reachable: AtomicU8,
    wake: Notify,
}

impl Shared {
    fn set_reachable(&self, reachable: bool) -> bool {
        let new = if reachable { REACHABLE } else { UNREACHABLE };
        self.reachable.swap(new, Ordering::Relaxed) != new
    }
}

/// A task that ends when its handle drops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The station's ledger on a line: see the module documentation.
pub struct LineLedger {
    local: SqliteLedger,
    central: Arc<dyn SharedLedger>,
    mode: LineMode,
    station_id: String,
    /// How long a device may be held by one run (the run deadline).
    hold: Duration,
    /// Runs in flight: what a central claim is recorded under.
    in_flight: Mutex<HashMap<RunId, RunStart>>,
    shared: Arc<Shared>,
    forwarder: Mutex<Option<AbortOnDrop>>,
    claim_seconds: Histogram,
}

/// How the forwarder works.
#[derive(Debug, Clone, Copy)]
pub struct ForwardSettings {
    pub batch_size: usize,
    /// Look again this often when idle or after a failure.
    pub interval: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LineLedger {
    /// `local` first, `central` always. `hold` bounds how long one run may
    /// hold a device line-wide (give the run deadline).
    pub fn new(
        local: SqliteLedger,
        central: impl SharedLedger + 'static,
        mode: LineMode,
        station_id: &str,
        hold: Duration,
    ) -> LineLedger {
        LineLedger {
            local,
            central: Arc::new(central),
            mode,
            station_id: station_id.to_string(),
            hold,
            in_flight: Mutex::new(HashMap::new()),
            shared: Arc::new(Shared::default()),
            forwarder: Mutex::new(None),
            claim_seconds: claim_histogram(),
        }
    }

    pub fn local(&self) -> &SqliteLedger {
        &self.local
    }

    pub fn central(&self) -> &dyn SharedLedger {
        self.central.as_ref()
    }

    pub fn mode(&self) -> LineMode {
        self.mode
    }

    /// Each successful central claim's round trip, in seconds (a handle:
    /// `/metrics` serves it).
    pub fn claim_seconds(&self) -> &Histogram {
        &self.claim_seconds
    }

    /// Start the forwarder on the current tokio runtime (it runs until the
    /// ledger drops). Without a runtime nothing is forwarded (said once).
    pub fn start_forwarding(&self, settings: ForwardSettings) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!("no async runtime: runs are not forwarded to the shared ledger");
            return;
        };
        let (local, central, shared) = (
            self.local.clone(),
            self.central.clone(),
            Arc::clone(&self.shared),
        );
        let station_id = self.station_id.clone();
        let started_at = OffsetDateTime::now_utc();
        info!(
            ledger = %self.central.shown(),
            mode = self.mode.as_str(),
            batch = settings.batch_size,
            "forwarding runs to the shared ledger"
        );
        let task = async move {
            let outbox = loop {
                match local.outbox() {
                    Ok(outbox) => break outbox,
                    Err(e) => {
                        error!(%e, "cannot open the outbox: runs wait in it");
                        tokio::time::sleep(settings.interval).await;
                    }
                }
            };
            let forwarder = Forwarder {
                local,
                outbox,
                central,
                shared,
                station_id,
                settings,
                started_at,
            };
            forwarder.run().await;
        };
        *lock(&self.forwarder) = Some(AbortOnDrop(runtime.spawn(task)));
    }

    /// Forward everything waiting now (what the forwarder does each time it
    /// wakes); the runs forwarded. For the bench and tests.
    pub async fn forward_now(&self, batch_size: usize) -> Result<u64, LedgerError> {
        let forwarder = Forwarder {
            local: self.local.clone(),
            outbox: self.local.outbox()?,
            central: self.central.clone(),
            shared: Arc::clone(&self.shared),
            station_id: self.station_id.clone(),
            settings: ForwardSettings {
                batch_size,
                interval: Duration::from_secs(1),
            },
            started_at: OffsetDateTime::now_utc(),
        };
        forwarder.pass().await
    }

    fn sighting(&self, run: RunId, at: OffsetDateTime) -> Result<Sighting, LedgerError> {
        let in_flight = lock(&self.in_flight);
        let start = in_flight.get(&run).ok_or(LedgerError::UnknownRun(run))?;
        Ok(Sighting {
            station_id: start.station_id.clone(),
            port: start.port.clone(),
            run_uid: start.uid,
            at,
        })
    }

    /// A central operation during a run: bounded by the claim timeout, and
    /// telling the operator's view whether the server answers.
    async fn central_op<T>(
        &self,
        what: &'static str,
        work: impl std::future::Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, LedgerError> {
        let result = within(self.central.claim_timeout(), what, work).await;
        match &result {
            Ok(_) => {
                self.shared.set_reachable(true);
            }
            Err(e) if e.is_transient() => {
                if self.shared.set_reachable(false) {
                    warn!(%e, "shared ledger unreachable: runs cannot pass in required mode");
                }
            }
            Err(_) => {}
        }
        result
    }
}

#[async_trait]
impl Ledger for LineLedger {
    async fn begin_run(&self, start: &RunStart) -> Result<RunId, LedgerError> {
        let id = self.local.begin_run(start).await?;
        lock(&self.in_flight).insert(id, start.clone());
        Ok(id)
    }

    async fn claim(&self, run: RunId, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        if self.mode == LineMode::Deferred {
            return self.local.claim(run, claim).await;
        }
        let seen = self.sighting(run, claim.at)?;
        let value = stored_claim_value(claim);
        let started = Instant::now();
        let central = self
            .central_op("claim", self.central.claim(claim.kind, &value, &seen))
            .await;
        match &central {
            Ok(Some(first)) => return Ok(ClaimOutcome::ReplayAt(Box::new(first.clone()))),
            Ok(None) => self.claim_seconds.observe(started.elapsed().as_secs_f64()),
            Err(_) => {}
        }
        // Claimed here too, whatever the server said: a token seen during
        // an outage is still seen (and checked centrally when forwarded).
        let local = self.local.claim(run, claim).await?;
        match (central, local) {
            (_, replay @ ClaimOutcome::Replay { .. }) => Ok(replay),
            (Err(e), _) => Err(e),
            (Ok(_), local) => Ok(local),
        }
    }

    async fn finish_run(&self, record: &RunRecord) -> Result<(), LedgerError> {
        self.local.finish_run(record).await?;
        lock(&self.in_flight).remove(&record.id);
        self.shared.backlog.fetch_add(1, Ordering::Relaxed);
        self.shared.wake.notify_one();
        if let (LineMode::Required, Some(device)) = (self.mode, record.device.device_uuid) {
            // The device is free for another run now, not when forwarded;
            // the station does not wait for it.
            let central = self.central.clone();
            let (uid, limit) = (record.uid, self.central.claim_timeout());
            tokio::spawn(async move {
                let _ = within(limit, "release device", central.release_device(device, uid)).await;
            });
        }
        Ok(())
    }

    async fn bind(&self, binding: &Binding) -> Result<BindingOutcome, LedgerError> {
        if self.mode == LineMode::Deferred {
            return self.local.bind(binding).await;
        }
        let outcome = self.central_op("bind", self.central.bind(binding)).await?;
        // The local copy holds the line's first binding.
        let first = match &outcome {
            BindingOutcome::Bound => binding,
            BindingOutcome::AlreadyBound(first)
            | BindingOutcome::Mismatch(first)
            | BindingOutcome::ValueReused(first) => first,
        };
        self.local.bind(first).await?;
        Ok(outcome)
    }

    async fn check_device(&self, check: &DeviceCheck) -> Result<DeviceHistory, LedgerError> {
        let local = self.local.check_device(check).await?;
        if self.mode == LineMode::Deferred {
            return Ok(local);
        }
        let line = self
            .central_op("device check", self.central.check_device(check, self.hold))
            .await?;
        // The line's registry counts forwarded runs; this station may have
        // passed the device in a run not forwarded yet.
        let later = |a: Option<Sighting>, b: Option<Sighting>| match (a, b) {
            (Some(a), Some(b)) => Some(if a.at >= b.at { a } else { b }),
            (a, b) => a.or(b),
        };
        Ok(DeviceHistory {
            running: line.running.or(local.running),
            passed: line.passed.max(local.passed),
            last_passed: later(line.last_passed, local.last_passed),
        })
    }

    fn status(&self) -> LedgerStatus {
        LedgerStatus {
            backlog: self.shared.backlog.load(Ordering::Relaxed),
            conflicts: self.shared.conflicts.load(Ordering::Relaxed),
            shared_reachable: Some(self.shared.reachable.load(Ordering::Relaxed) == REACHABLE),
        }
    }

    async fn record_shift_change(&self, change: &ShiftChange) -> Result<(), LedgerError> {
        self.local.record_shift_change(change).await
    }

    async fn shift_on_record(&self) -> Result<ShiftOnRecord, LedgerError> {
        self.local.shift_on_record().await
    }
}

/// The forwarding task: the line sink's delivery task.
struct Forwarder {
    /// Where conflicts are recorded (they amend runs).
    local: SqliteLedger,
    /// What the line is owed, on a connection of its own.
    outbox: SqliteDeliveries,
    central: Arc<dyn SharedLedger>,
    shared: Arc<Shared>,
    station_id: String,
    settings: ForwardSettings,
    started_at: OffsetDateTime,
}

impl Forwarder {
    async fn run(self) {
        self.refresh_counts().await;
        let mut started = false;
        // Said once until it changes: the forwarder retries every interval.
        let mut last_failure = String::new();
        loop {
            let result = async {
                if !started {
                    self.central.connect().await?;
                    self.central
                        .station_started(&self.station_id, self.started_at)
                        .await?;
                    started = true;
                }
                self.pass().await
            }
            .await;
            match result {
                Ok(_) => {
                    if self.shared.set_reachable(true) && !last_failure.is_empty() {
                        info!(ledger = %self.central.shown(), "shared ledger reachable again");
                    }
                    last_failure.clear();
                }
                Err(e) => {
                    self.shared.set_reachable(false);
                    let text = e.to_string();
                    if text != last_failure {
                        let backlog = self.shared.backlog.load(Ordering::Relaxed);
                        if e.is_transient() {
                            warn!(%e, backlog, "shared ledger unreachable: runs wait in the outbox");
                        } else {
                            error!(%e, backlog, "forwarding to the shared ledger failed: runs wait in the outbox");
                        }
                    }
                    // `deliveries` says why the oldest runs wait.
                    let noted = self
                        .outbox
                        .note_failure(SinkId::LINE, self.settings.batch_size, text.clone())
                        .await;
                    if let Err(e) = noted {
                        warn!(%e, "cannot note the forwarding failure in the outbox");
                    }
                    last_failure = text;
                    // Tried again after the interval, not at each new run:
                    // a server that is down sees one attempt per interval.
                    tokio::time::sleep(self.settings.interval).await;
                    continue;
                }
            }
            tokio::select! {
                () = self.shared.wake.notified() => {}
                () = tokio::time::sleep(self.settings.interval) => {}
            }
        }
    }

    async fn refresh_counts(&self) {
        if let Ok(backlog) = self.outbox.owed(SinkId::LINE).await {
            self.shared.backlog.store(backlog, Ordering::Relaxed);
        }
        if let Ok(conflicts) = self.local.conflict_count().await {
            self.shared.conflicts.store(conflicts, Ordering::Relaxed);
        }
    }

    /// Forward the whole outbox, then bring back conflicts; the runs sent.
    /// The next batch is read from SQLite while the server stores this one.
    async fn pass(&self) -> Result<u64, LedgerError> {
        let size = self.settings.batch_size;
        let mut sent = 0;
        let mut next = self.outbox.forward_batch(0, size).await?;
        while let Some(batch) = next {
            let after = batch.runs.iter().map(|r| r.id).max().unwrap_or(RunId::MAX);
            let (done, following) =
                tokio::join!(self.forward(batch), self.outbox.forward_batch(after, size));
            sent += done?;
            next = following?;
        }
        self.take_conflicts().await?;
        Ok(sent)
    }

    /// One batch; a run whose data the server refuses for good is a dead
    /// letter with the server's answer, and the others go on. Any other
    /// failure (an outage, a fault of the server's own) leaves the batch
    /// owed, to be tried again.
    async fn forward(&self, batch: ForwardBatch) -> Result<u64, LedgerError> {
        let ids: Vec<RunId> = batch.runs.iter().map(|r| r.id).collect();
        let up_to = ids.iter().copied().max().unwrap_or_default();
        match self.central.forward(&batch).await {
            Ok(done) => {
                let n = ids.len() as u64;
                let backlog = self.outbox.acknowledge_all(SinkId::LINE, ids).await?;
                self.shared.backlog.store(backlog, Ordering::Relaxed);
                info!(
                    runs = n,
                    stored = done.stored,
                    conflicts = done.conflicts,
                    up_to,
                    backlog,
                    "forwarded runs to the shared ledger"
                );
                Ok(n)
            }
            Err(e) if !matches!(e, LedgerError::PostgresData { .. }) => Err(e),
            Err(e) if ids.len() == 1 => {
                error!(%e, run = ids[0], "the shared ledger refuses this run; kept as a dead letter (`nrf-provd deliveries --dead`)");
                self.outbox
                    .dead_letter(SinkId::LINE, ids[0], e.to_string())
                    .await?;
                Ok(0)
            }
            Err(_) => {
                let mut sent = 0;
                for run in batch.runs {
                    let single = ForwardBatch {
                        claims: batch
                            .claims
                            .iter()
                            .filter(|c| c.0 == run.id)
                            .cloned()
                            .collect(),
                        bindings: batch
                            .bindings
                            .iter()
                            .filter(|b| b.run_uid == run.uid)
                            .cloned()
                            .collect(),
                        runs: vec![run],
                    };
                    sent += Box::pin(self.forward(single)).await?;
                }
                Ok(sent)
            }
        }
    }

    /// Conflicts the line found on this station's runs: recorded here
    /// (each run amended once), then marked delivered.
    async fn take_conflicts(&self) -> Result<(), LedgerError> {
        loop {
            let found = self
                .central
                .undelivered_conflicts(&self.station_id, 500)
                .await?;
            if found.is_empty() {
                break;
            }
            let ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
            let recorded = self
                .local
                .record_conflicts(found.into_iter().map(|(_, c)| c).collect())
                .await?;
            for (run, conflict) in &recorded {
                warn!(
                    run,
                    run_uid = %conflict.run_uid,
                    kind = %conflict.kind,
                    value = %conflict.value,
                    other_station = %conflict.other.station_id,
                    other_run = %conflict.other.run_uid,
                    "conflict recorded: run amended to failed (conflict)"
                );
            }
            self.central.delivered(&ids).await?;
        }
        if let Ok(conflicts) = self.local.conflict_count().await {
            self.shared.conflicts.store(conflicts, Ordering::Relaxed);
        }
        Ok(())
    }
}
