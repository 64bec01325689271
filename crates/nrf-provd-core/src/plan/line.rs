//! The line-wide rules a run checks once its device's identity is proven:
//! one run per device at a time, and what to do with a device that passed
//! before (`plan.reprovision`). The ledger knows the history (the station's
//! own, or the line's); the plan decides.

use tracing::warn;

use super::Reprovision;
use super::{Link, Run, StepFailure};
use crate::ledger::{
    Claim, ClaimKind, ClaimThenCheck, DeviceCheck, DeviceHistory, LedgerError, Sighting,
};
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
    /// Claim the identity token's `nonce`, then tell the ledger this run
    /// holds `device_uuid` now, in one ledger call: fail the step on a
    /// replay (before the run takes the device), if the device runs
    /// elsewhere at the same time (`duplicate_identity`), or if it already
    /// passed and the policy refuses it (`reprovision`). Returns a note for
    /// the step's detail when the policy only warns.
    pub async fn claim_nonce_then_check_device(
        &mut self,
        step: Step,
        nonce: &str,
        device_uuid: uuid::Uuid,
    ) -> Result<Option<String>, StepFailure> {
        let kind = ClaimKind::AttestNonce;
        let claim = Claim {
            kind,
            value: nonce.to_string(),
            at: self.ctx.clock.now_utc(),
        };
        let check = self.device_check(device_uuid);
        let found = self
            .ctx
            .ledger
            .claim_then_check_device(self.record.id, &claim, &check)
            .await;
        let history = match found {
            Err(e) => {
                // The token proved the device: the record names it, as
                // when the claim stood and only the check failed.
                self.take_device(device_uuid);
                return Err(ledger_failure(step, &e));
            }
            Ok(found) => found,
        };
        let history = match history {
            ClaimThenCheck::Replay(outcome) => {
                super::claimed(step, kind, outcome)?;
                // A ledger that says "replay" with a fresh outcome broke
                // its contract: never a pass.
                return Err(StepFailure::new(
                    step,
                    ReasonCode::Store,
                    "the ledger neither claimed the nonce nor named its first run".to_string(),
                ));
            }
            ClaimThenCheck::Checked(history) => history,
        };
        self.take_device(device_uuid);
        self.judge_history(step, device_uuid, &history)
    }

    /// The run holds the proven `device_uuid` from now on.
    fn take_device(&mut self, device_uuid: uuid::Uuid) {
        if self.state.device_uuid.is_none() {
            // nRF9160: no %DEVICEUUID, the token names the device.
            tracing::Span::current().record("device", tracing::field::display(device_uuid));
        }
        self.state.device_uuid = Some(device_uuid);
        self.record.device.device_uuid = Some(device_uuid);
    }

    /// What the ledger is told of this run and `device_uuid`.
    fn device_check(&self, device_uuid: uuid::Uuid) -> DeviceCheck {
        DeviceCheck {
            run: self.record.id,
            device_uuid,
            imei: self.record.device.imei.clone(),
            seen: Sighting {
                station_id: self.record.station_id.clone(),
                port: self.record.port.clone(),
                run_uid: self.record.uid,
                at: self.ctx.clock.now_utc(),
            },
        }
    }

    /// The line-wide rules, applied to what the ledger knows of the device.
    fn judge_history(
        &self,
        step: Step,
        device_uuid: uuid::Uuid,
        history: &DeviceHistory,
    ) -> Result<Option<String>, StepFailure> {
        if let Some(other) = &history.running {
            return Err(StepFailure::new(
                step,
                ReasonCode::DuplicateIdentity,
                format!("device {device_uuid} is in another run now, at {other}"),
            ));
        }
        let Some(last) = history.last_passed.as_ref().filter(|_| history.passed > 0) else {
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
