//! The line-wide rules a run checks once its device's identity is proven:
//! one run per device at a time, and what to do with a device that passed
//! before (`plan.reprovision`). The ledger knows the history (the station's
//! own, or the line's); the plan decides.

use tracing::warn;

use super::Reprovision;
use super::{Link, Run, StepFailure};
use crate::ledger::{DeviceCheck, LedgerError, Sighting};
use crate::record::{ReasonCode, Step};

/// A ledger error during a step: `ledger_unreachable` when a shared ledger
/// could not answer (down, or refusing us: a wrong password is no better),
/// else `store`.
pub(crate) fn ledger_failure(step: Step, error: &LedgerError) -> StepFailure {
    let code = match error {
        LedgerError::Unreachable { .. }
        | LedgerError::Postgres { .. }
        | LedgerError::PostgresData { .. } => ReasonCode::LedgerUnreachable,
        _ => ReasonCode::Store,
    };
    StepFailure::new(step, code, error.to_string())
}

impl<T: Link> Run<'_, T> {
    /// Tell the ledger this run holds `device_uuid` now; fail the step if
    /// the device runs elsewhere at the same time (`duplicate_identity`) or
    /// already passed and the policy refuses it (`reprovision`). Returns a
    /// note for the step's detail when the policy only warns.
    pub async fn check_device(
        &mut self,
        step: Step,
        device_uuid: uuid::Uuid,
    ) -> Result<Option<String>, StepFailure> {
        let check = DeviceCheck {
            run: self.record.id,
            device_uuid,
            imei: self.record.device.imei.clone(),
            seen: Sighting {
                station_id: self.record.station_id.clone(),
                port: self.record.port.clone(),
                run_uid: self.record.uid,
                at: self.ctx.clock.now_utc(),
            },
        };
        let history = self
            .ctx
            .ledger
            .check_device(&check)
            .await
            .map_err(|e| ledger_failure(step, &e))?;
        if let Some(other) = history.running {
            return Err(StepFailure::new(
                step,
                ReasonCode::DuplicateIdentity,
                format!("device {device_uuid} is in another run now, at {other}"),
            ));
        }
        let Some(last) = history.last_passed.filter(|_| history.passed > 0) else {
            return Ok(None);
        };
        let before = format!(
            "device {device_uuid} already passed {} time(s), last at {last}",
            history.passed
        );
        match self.ctx.plan.reprovision {
            Reprovision::Allow => Ok(None),
            Reprovision::Warn => {
                warn!(%device_uuid, passed = history.passed, last = %last, "provisioning a device again");
                Ok(Some(before))
            }
            Reprovision::Refuse => Err(StepFailure::new(
                step,
                ReasonCode::Reprovision,
                format!("{before}; plan.reprovision = \"refuse\""),
            )),
        }
    }
}
