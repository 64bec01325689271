//! Traceability: the station-wide values (work order, lot, operator,
//! product) an operator changes while the station runs, and each port's
//! fixture. A run takes them when it begins; a change applies from the next
//! board on and is recorded in the ledger first (who, when, old → new).
//! With required fields, a board waits until they are set.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;

use super::events::{Events, StationEvent};
use crate::ledger::{CONFIG_CHANGE, Ledger, LedgerError};
use crate::plan::Clock;
use crate::record::{Shift, ShiftChange, ShiftField, Traceability};

/// `[traceability]` as the station uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceSettings {
    /// The values the station starts with.
    pub start: Shift,
    /// Fields a board waits for.
    pub require: Vec<ShiftField>,
    /// Port path or stable name (a symlink such as `/dev/serial/by-id/…`
    /// or `/dev/nrf91/by-fixture/01`) → fixture name.
    pub fixtures: BTreeMap<String, String>,
}

impl TraceSettings {
    /// The fixture of `port`: named by the port's own path, or by any path
    /// that is the same device (a udev stable name of it).
    pub fn fixture_of(&self, port: &str) -> Option<String> {
        if let Some(name) = self.fixtures.get(port) {
            return Some(name.clone());
        }
        if self.fixtures.is_empty() {
            // No fixture named: no path to resolve (every run asks, on a
            // runtime thread).
            return None;
        }
        let device = std::fs::canonicalize(port).ok()?;
        self.fixtures
            .iter()
            .find(|(path, _)| {
                std::fs::canonicalize(Path::new(path)).is_ok_and(|other| other == device)
            })
            .map(|(_, name)| name.clone())
    }
}

/// Why a shift could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum ShiftError {
    /// A value the station will not record.
    #[error("{0}")]
    Invalid(String),
    /// The ledger did not take the change: nothing changed.
    #[error("the change could not be recorded, so nothing changed: {0}")]
    Ledger(#[from] LedgerError),
}

/// The station's current shift and its history's writer.
pub struct ShiftBoard {
    settings: TraceSettings,
    current: watch::Sender<Shift>,
    /// One change at a time, so each is recorded against the value it
    /// replaced.
    changing: Mutex<()>,
}

impl ShiftBoard {
    pub fn new(settings: TraceSettings) -> ShiftBoard {
        ShiftBoard {
            current: watch::Sender::new(settings.start.clone()),
            settings,
            changing: Mutex::new(()),
        }
    }

    pub fn settings(&self) -> &TraceSettings {
        &self.settings
    }

    pub fn current(&self) -> Shift {
        self.current.borrow().clone()
    }

    /// The traceability of a run beginning on `port` now.
    pub fn trace_for(&self, port: &str) -> Traceability {
        self.current().trace(self.settings.fixture_of(port))
    }

    /// Required fields the current shift lacks.
    pub fn missing(&self) -> Vec<ShiftField> {
        self.current().missing(&self.settings.require)
    }

    /// Apply `update` (a field it names is set; empty clears it) for the
    /// next board on, recorded in `ledger` first as made `by` at the
    /// clock's time. `None` when nothing changed (nothing is recorded).
    pub async fn change(
        &self,
        update: &Shift,
        by: &str,
        ledger: &dyn Ledger,
        clock: &dyn Clock,
        events: &Events,
    ) -> Result<Option<ShiftChange>, ShiftError> {
        let _one_at_a_time = self.changing.lock().await;
        let old = self.current();
        let new = old.updated(update).map_err(ShiftError::Invalid)?;
        if new == old {
            return Ok(None);
        }
        let change = ShiftChange {
            at: clock.now_utc(),
            by: by.to_string(),
            old,
            new: new.clone(),
        };
        ledger.record_shift_change(&change).await?;
        self.current.send_replace(new.clone());
        tracing::info!(
            by,
            work_order = ?new.work_order,
            lot = ?new.lot,
            operator = ?new.operator,
            product = ?new.product,
            "shift changed"
        );
        events.send(StationEvent::ShiftChanged { shift: new });
        Ok(Some(change))
    }

    /// At start: go on with the last recorded shift (a restart, a crash
    /// loses no operator's change), unless the config's values changed
    /// since they last applied: then they apply, recorded as a change by
    /// `config` (so the history has no gap).
    pub async fn resume(&self, ledger: &dyn Ledger, clock: &dyn Clock, events: &Events) {
        let _one_at_a_time = self.changing.lock().await;
        let start = self.settings.start.clone();
        let record = match ledger.shift_on_record().await {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(%err, "cannot read the recorded shift; starting with the config's");
                return;
            }
        };
        // The config's values have applied before (or it has none and a
        // fresh history): what was recorded last stands.
        let applied = match &record.from_config {
            Some(from_config) => *from_config == start,
            None => start == Shift::default(),
        };
        if applied {
            if let Some(current) = record.current.filter(|c| *c != start) {
                tracing::info!("going on with the shift last recorded");
                self.current.send_replace(current.clone());
                events.send(StationEvent::ShiftChanged { shift: current });
            }
            return;
        }
        let last = record.current.unwrap_or_default();
        let change = ShiftChange {
            at: clock.now_utc(),
            by: CONFIG_CHANGE.into(),
            old: last,
            new: start,
        };
        if let Err(err) = ledger.record_shift_change(&change).await {
            tracing::warn!(%err, "cannot record the shift the config starts with");
        }
    }

    /// Wait until no required field is missing (`true`), or `stop` is
    /// cancelled (`false`). While waiting, `port`'s board is reported
    /// waiting, with the fields it waits for.
    pub async fn wait_until_complete(
        &self,
        port: &str,
        events: &Events,
        stop: &CancellationToken,
    ) -> bool {
        let mut changes = self.current.subscribe();
        let mut reported = false;
        loop {
            let missing = changes.borrow_and_update().missing(&self.settings.require);
            if missing.is_empty() {
                return true;
            }
            if !reported {
                reported = true;
                let reason = waiting_reason(&missing);
                tracing::info!(port, "{reason}");
                events.send(StationEvent::BoardWaiting {
                    port: port.to_string(),
                    reason,
                });
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                changed = changes.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
            }
        }
    }
}

/// What a waiting board's tile and log say.
pub fn waiting_reason(missing: &[ShiftField]) -> String {
    let names: Vec<&str> = missing.iter().map(|f| f.as_str()).collect();
    format!(
        "waiting for {}: set it on the station page or with `nrf-provd shift set`",
        names.join(", ")
    )
}
