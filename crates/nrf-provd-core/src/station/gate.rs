//! The ledger's health gates the station: while the ledger cannot take a
//! record (a lock another process holds, a full disk, an I/O error), the
//! station takes no new board, says so (an event, the log, systemd STATUS),
//! retries with backoff and resumes by itself when the fault clears.
//!
//! [`LedgerGate`] wraps the station's ledger and is what the plan sees:
//! - `begin_run` that fails for a fault that may clear pauses the station;
//!   the caller waits for the gate and tries the board again;
//! - a claim during a run (after key generation, say) waits for the fault
//!   to clear instead of failing a board that did nothing wrong;
//! - a finished run whose commit fails is kept ([`LedgerGate::defer`]) and
//!   committed when the ledger is back — with what really happened, never
//!   as passed; the SQLite ledger also keeps it beside the database, so a
//!   restart meanwhile does not lose it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::events::{Events, StationEvent};
use crate::ledger::{
    Binding, BindingOutcome, Claim, ClaimOutcome, ClaimThenCheck, DeviceCheck, DeviceHistory,
    Ledger, LedgerError, LedgerStatus, RunId, RunRecord, RunStart, ShiftChange, ShiftOnRecord,
};

/// First wait before the ledger is tried again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(15);

pub struct LedgerGate {
    inner: Arc<dyn Ledger>,
    /// `None` while open; why the station takes no board while paused.
    paused: watch::Sender<Option<String>>,
    /// Finished runs the ledger did not take yet, oldest first.
    deferred: Mutex<VecDeque<RunRecord>>,
    events: Events,
}

impl LedgerGate {
    pub fn new(inner: Arc<dyn Ledger>, events: Events) -> Arc<Self> {
        Arc::new(LedgerGate {
            inner,
            paused: watch::channel(None).0,
            deferred: Mutex::new(VecDeque::new()),
            events,
        })
    }

    /// The events the gate reports its pauses to (the station's).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Why the station takes no new board, while it does not.
    pub fn paused(&self) -> Option<String> {
        self.paused.borrow().clone()
    }

    /// Wait until the gate is open; false when `stop` came first.
    pub async fn wait_open(&self, stop: &CancellationToken) -> bool {
        let mut state = self.paused.subscribe();
        loop {
            if state.borrow_and_update().is_none() {
                return true;
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                changed = state.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    /// The ledger failed with `err`: pause if the fault may clear.
    fn trip(&self, err: &LedgerError) {
        if !err.is_local_fault() {
            return;
        }
        let reason = err.to_string();
        let newly = self.paused.send_if_modified(|state| {
            let newly = state.is_none();
            *state = Some(reason.clone());
            newly
        });
        if newly {
            warn!(reason = %reason, "the database cannot take a record: taking no new board until it can");
            self.events.send(StationEvent::Paused { reason });
        }
    }

    /// Keep `record`, whose commit failed, and commit it when the ledger is
    /// back (see [`LedgerGate::heal`]).
    pub fn defer(&self, record: RunRecord) {
        self.deferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(record);
    }

    /// Records still waiting for the ledger.
    pub fn deferred(&self) -> usize {
        self.deferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Commit what was deferred (oldest first), then probe: `Ok` when the
    /// ledger takes records again.
    async fn heal(&self) -> Result<(), LedgerError> {
        loop {
            let next = self
                .deferred
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .front()
                .cloned();
            let Some(record) = next else { break };
            match self.inner.finish_run(&record).await {
                // Already there (committed by a replay at open): done too.
                Ok(()) | Err(LedgerError::AlreadyFinished { .. }) => {
                    info!(run = record.id, "recorded a run whose commit had failed");
                    self.deferred
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    // Will never commit (a bug, not a fault): say so loudly
                    // rather than retry for ever.
                    warn!(run = record.id, error = %e, "a deferred record cannot be committed; giving it up");
                    self.deferred
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                }
            }
        }
        self.inner.probe().await
    }

    /// While paused (or while records wait), try the ledger again with
    /// backoff; open the gate when it takes records. Runs until `stop`.
    pub async fn keep_trying(self: Arc<Self>, stop: CancellationToken) {
        let mut state = self.paused.subscribe();
        loop {
            // Wait until there is something to heal.
            while state.borrow_and_update().is_none() && self.deferred() == 0 {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = state.changed() => if changed.is_err() { return },
                }
            }
            let mut backoff = FIRST_BACKOFF;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                match self.heal().await {
                    Ok(()) => {
                        let was_paused = self.paused.send_replace(None).is_some();
                        if was_paused {
                            info!("the database takes records again: taking boards");
                            self.events.send(StationEvent::Resumed);
                        }
                        break;
                    }
                    Err(e) => {
                        self.trip(&e);
                        if !e.is_transient() {
                            warn!(error = %e, "the database refuses a probe for good");
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }

    /// Retry `op` while it fails for a fault that may clear, pausing the
    /// station meanwhile; the fault ends when the gate opens again.
    async fn through<T, F, Fut>(&self, mut op: F) -> Result<T, LedgerError>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, LedgerError>> + Send,
        T: Send,
    {
        loop {
            match op().await {
                Err(e) if e.is_local_fault() => {
                    self.trip(&e);
                    // No stop token here: a run in flight is bounded by its
                    // own deadline and the station's abort.
                    self.wait_open(&CancellationToken::new()).await;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl Ledger for LedgerGate {
    async fn begin_run(&self, start: &RunStart) -> Result<RunId, LedgerError> {
        let begun = self.inner.begin_run(start).await;
        if let Err(e) = &begun {
            self.trip(e);
        }
        begun
    }

    async fn claim(&self, run: RunId, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        self.through(|| self.inner.claim(run, claim)).await
    }

    async fn finish_run(&self, record: &RunRecord) -> Result<(), LedgerError> {
        let finished = self.inner.finish_run(record).await;
        if let Err(e) = &finished {
            self.trip(e);
        }
        finished
    }

    async fn bind(&self, binding: &Binding) -> Result<BindingOutcome, LedgerError> {
        self.through(|| self.inner.bind(binding)).await
    }

    async fn probe(&self) -> Result<(), LedgerError> {
        self.inner.probe().await
    }

    async fn check_device(&self, check: &DeviceCheck) -> Result<DeviceHistory, LedgerError> {
        self.through(|| self.inner.check_device(check)).await
    }

    async fn claim_then_check_device(
        &self,
        run: RunId,
        claim: &Claim,
        check: &DeviceCheck,
    ) -> Result<ClaimThenCheck, LedgerError> {
        self.through(|| self.inner.claim_then_check_device(run, claim, check))
            .await
    }

    fn status(&self) -> LedgerStatus {
        self.inner.status()
    }

    async fn record_shift_change(&self, change: &ShiftChange) -> Result<(), LedgerError> {
        self.inner.record_shift_change(change).await
    }

    async fn shift_on_record(&self) -> Result<ShiftOnRecord, LedgerError> {
        self.inner.shift_on_record().await
    }
}
