//! A ledger in memory: the same rules as the SQLite one (a claim once,
//! ever; a run finished once) with nothing durable. For tests that run the
//! whole plan in memory, and as the smallest example of the seam.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{
    Binding, BindingOutcome, Claim, ClaimKind, ClaimOutcome, Counts, Ledger, LedgerError,
    LedgerReader, Outcome, RunFilter, RunId, RunRecord, RunStart, ShiftChange, ShiftOnRecord,
};

#[derive(Default)]
struct State {
    runs: Vec<RunRecord>,
    claims: HashMap<(ClaimKind, String), RunId>,
    /// By authority and subject.
    bindings: HashMap<(String, uuid::Uuid), Binding>,
    shift_changes: Vec<ShiftChange>,
}

#[derive(Default)]
pub struct MemoryLedger {
    state: Mutex<State>,
}

impl MemoryLedger {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Ledger for MemoryLedger {
    async fn begin_run(&self, start: &RunStart) -> Result<RunId, LedgerError> {
        let mut state = self.state();
        let id = RunId::try_from(state.runs.len()).unwrap_or(RunId::MAX) + 1;
        state.runs.push(RunRecord::begun(id, start));
        Ok(id)
    }

    async fn claim(&self, run: RunId, claim: &Claim) -> Result<ClaimOutcome, LedgerError> {
        let mut state = self.state();
        if !state.runs.iter().any(|r| r.id == run) {
            return Err(LedgerError::UnknownRun(run));
        }
        let value = match claim.kind {
            ClaimKind::JwtJti => claim.value.clone(),
            ClaimKind::AttestNonce | ClaimKind::KeygenNonce => claim.value.to_ascii_lowercase(),
        };
        match state.claims.get(&(claim.kind, value.clone())) {
            Some(first_run) => Ok(ClaimOutcome::Replay {
                first_run: *first_run,
            }),
            None => {
                state.claims.insert((claim.kind, value), run);
                Ok(ClaimOutcome::Fresh)
            }
        }
    }

    async fn finish_run(&self, record: &RunRecord) -> Result<(), LedgerError> {
        if record.outcome == Outcome::InFlight {
            return Err(LedgerError::InvalidRecord(format!(
                "run {} is finished with outcome in_flight",
                record.id
            )));
        }
        let mut state = self.state();
        let stored = state
            .runs
            .iter_mut()
            .find(|r| r.id == record.id)
            .ok_or(LedgerError::UnknownRun(record.id))?;
        if stored.outcome != Outcome::InFlight {
            return Err(LedgerError::AlreadyFinished {
                id: record.id,
                outcome: stored.outcome.to_string(),
            });
        }
        *stored = record.clone();
        Ok(())
    }

    async fn bind(&self, binding: &Binding) -> Result<BindingOutcome, LedgerError> {
        let mut state = self.state();
        let key = (binding.authority.clone(), binding.subject);
        let first = state.bindings.get(&key).cloned();
        let other = state
            .bindings
            .values()
            .filter(|b| {
                b.authority == binding.authority
                    && b.value == binding.value
                    && b.subject != binding.subject
            })
            .min_by_key(|b| b.at)
            .cloned();
        let outcome = BindingOutcome::decide(&binding.value, first, other);
        if outcome == BindingOutcome::Bound {
            state.bindings.insert(key, binding.clone());
        }
        Ok(outcome)
    }

    async fn record_shift_change(&self, change: &ShiftChange) -> Result<(), LedgerError> {
        self.state().shift_changes.push(change.clone());
        Ok(())
    }

    async fn shift_on_record(&self) -> Result<ShiftOnRecord, LedgerError> {
        Ok(ShiftOnRecord::of(&self.state().shift_changes))
    }
}

#[async_trait]
impl LedgerReader for MemoryLedger {
    async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, LedgerError> {
        let state = self.state();
        let mut runs: Vec<RunRecord> = state
            .runs
            .iter()
            .filter(|r| {
                filter
                    .device_uuid
                    .is_none_or(|u| r.device.device_uuid == Some(u))
            })
            .filter(|r| filter.since.is_none_or(|t| r.started_at >= t))
            .filter(|r| {
                filter
                    .station_id
                    .as_ref()
                    .is_none_or(|s| *s == r.station_id)
            })
            .filter(|r| {
                filter
                    .work_order
                    .as_ref()
                    .is_none_or(|w| r.trace.work_order.as_ref() == Some(w))
            })
            .cloned()
            .collect();
        if let Some(limit) = filter.limit {
            let skip = runs.len().saturating_sub(limit);
            runs.drain(..skip);
        }
        Ok(runs)
    }

    async fn run(&self, id: RunId) -> Result<Option<RunRecord>, LedgerError> {
        Ok(self.state().runs.iter().find(|r| r.id == id).cloned())
    }

    async fn counts(&self) -> Result<Counts, LedgerError> {
        let state = self.state();
        let mut counts = Counts::default();
        for run in &state.runs {
            counts.add(run.outcome, 1);
        }
        Ok(counts)
    }
}
