//! What travels between the station's outbox and the line's shared
//! ledger: a batch of runs going up, the conflicts coming back. Shared by
//! both ends ([`super::sqlite`], [`super::postgres`]) and the composite
//! that joins them ([`super::line`]), which is why it is neither's.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{ClaimKind, Outcome, Pin, ReasonCode, RunId, RunRecord, Sighting, Step};

/// The oldest runs of the outbox, with what the shared ledger checks.
#[derive(Debug, Clone, Default)]
pub struct ForwardBatch {
    pub runs: Vec<RunRecord>,
    /// (run, kind as stored, value, claimed at).
    pub claims: Vec<(RunId, String, String, OffsetDateTime)>,
    /// Pins these runs made.
    pub pins: Vec<Pin>,
}

/// A clash the shared ledger found between one of this station's runs and
/// another run: the same claim, a different pinned key, or the same device
/// at two places at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub run_uid: Uuid,
    /// `attest`, `keygen`, `jwt_jti` (claims), `pin` (another key for the
    /// device), `pin_key` (the key pinned for another device) or `device`.
    pub kind: String,
    pub value: String,
    /// The other run.
    pub other: Sighting,
    pub found_at: OffsetDateTime,
}

impl Conflict {
    /// The step the clashing fact came from.
    pub fn step(&self) -> Option<Step> {
        Some(match self.kind.as_str() {
            "keygen" => Step::Keygen,
            "jwt_jti" => Step::Jwt,
            _ => Step::Attest,
        })
    }

    /// How a run was recorded before a conflict amended it.
    pub fn prior(outcome: &str, reason_code: Option<&str>, reason: Option<&str>) -> String {
        match (reason_code, reason) {
            (Some(code), Some(words)) => format!("{outcome} ({code}: {words})"),
            (Some(code), None) => format!("{outcome} ({code})"),
            _ => outcome.to_string(),
        }
    }

    /// The amended run's reason.
    pub fn reason(&self, prior: &str) -> String {
        let what = match self.kind.as_str() {
            "pin" => format!("device {} has another key pinned", self.value),
            "pin_key" => format!("identity key {} is pinned for another device", self.value),
            "device" => format!("device {} was in another run at the same time", self.value),
            kind => {
                let described = [
                    ClaimKind::AttestNonce,
                    ClaimKind::KeygenNonce,
                    ClaimKind::JwtJti,
                ]
                .into_iter()
                .find(|k| k.as_str() == kind)
                .map_or_else(|| kind.to_string(), |k| k.describe().to_string());
                format!("{described} {} also claimed", self.value)
            }
        };
        format!(
            "{what} at {}; found by the shared ledger after the run, which was recorded as {prior}",
            self.other
        )
    }

    /// Amend `record` as its station does: failed, `conflict`.
    pub fn amend(&self, record: &mut RunRecord) {
        if record.reason_code == Some(ReasonCode::Conflict) {
            return;
        }
        let prior = Conflict::prior(
            record.outcome.as_str(),
            record.reason_code.map(ReasonCode::as_str),
            record.reason.as_deref(),
        );
        let reason = self.reason(&prior);
        record.fail(Outcome::Failed, self.step(), ReasonCode::Conflict, reason);
    }
}
