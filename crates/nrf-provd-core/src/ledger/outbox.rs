//! What travels between the station's outbox and the line's shared
//! ledger: a batch of runs going up, the conflicts coming back. Shared by
//! both ends ([`super::sqlite`], [`super::postgres`]) and the composite
//! that joins them ([`super::line`]), which is why it is neither's.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{Binding, ClaimKind, Outcome, Pin, ReasonCode, RunId, RunRecord, Sighting, Step};

/// The oldest runs of the outbox, with what the shared ledger checks.
#[derive(Debug, Clone, Default)]
pub struct ForwardBatch {
    pub runs: Vec<RunRecord>,
    /// (run, kind as stored, value, claimed at).
    pub claims: Vec<(RunId, String, String, OffsetDateTime)>,
    /// Every identity authority's bindings these runs made (`pin`'s pins
    /// among them), each checked under its own authority.
    pub bindings: Vec<Binding>,
}

/// Which side of an authority's binding clashed on the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingClash {
    /// Another value was bound first for the subject.
    Subject,
    /// The value is bound to another subject of the same authority.
    Value,
}

impl BindingClash {
    /// The conflict kind: `pin` and `pin_key` for the `pin` authority (what
    /// its users have always seen), `<authority>.subject` and
    /// `<authority>.value` for any other (no claim kind has a dot, so no
    /// authority's name makes another conflict's kind).
    pub fn kind(self, authority: &str) -> String {
        match (authority, self) {
            (Pin::AUTHORITY, BindingClash::Subject) => "pin".to_string(),
            (Pin::AUTHORITY, BindingClash::Value) => "pin_key".to_string(),
            (_, BindingClash::Subject) => format!("{authority}.subject"),
            (_, BindingClash::Value) => format!("{authority}.value"),
        }
    }

    /// The authority and clash a conflict kind names; `None` for a claim's
    /// or a device's.
    pub fn of(kind: &str) -> Option<(&str, BindingClash)> {
        match kind {
            "pin" => Some((Pin::AUTHORITY, BindingClash::Subject)),
            "pin_key" => Some((Pin::AUTHORITY, BindingClash::Value)),
            _ => kind
                .strip_suffix(".subject")
                .map(|authority| (authority, BindingClash::Subject))
                .or_else(|| {
                    kind.strip_suffix(".value")
                        .map(|authority| (authority, BindingClash::Value))
                }),
        }
    }

    /// The conflict's value: the subject (a device UUID), or the value's
    /// fingerprint (a bound value may be a key or a secret: never shown raw
    /// to the line's other stations).
    pub fn shown(self, binding: &Binding) -> String {
        match self {
            BindingClash::Subject => binding.subject.to_string(),
            BindingClash::Value => crate::trust::fingerprint(&binding.value),
        }
    }

    /// What clashed, in words, for [`Conflict::reason`].
    fn describe(self, authority: &str, shown: &str) -> String {
        match (authority, self) {
            (Pin::AUTHORITY, BindingClash::Subject) => {
                format!("device {shown} has another key pinned")
            }
            (Pin::AUTHORITY, BindingClash::Value) => {
                format!("identity key {shown} is pinned for another device")
            }
            (_, BindingClash::Subject) => {
                format!("device {shown} has another value bound by authority {authority}")
            }
            (_, BindingClash::Value) => {
                format!("value {shown} of authority {authority} is bound to another device")
            }
        }
    }
}

/// A clash the shared ledger found between one of this station's runs and
/// another run: the same claim, a binding of an identity authority (a
/// different pinned key), or the same device at two places at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub run_uid: Uuid,
    /// `attest`, `keygen`, `jwt_jti` (claims), `device`, or an authority's
    /// binding ([`BindingClash::kind`]): `pin` (another key for the
    /// device), `pin_key` (the key pinned for another device),
    /// `<authority>.subject` and `<authority>.value` alike.
    pub kind: String,
    pub value: String,
    /// The other run.
    pub other: Sighting,
    pub found_at: OffsetDateTime,
}

impl Conflict {
    /// The step the clashing fact came from.
    pub fn step(&self) -> Option<Step> {
        // The identity authorities vouch, and bind, at attest.
        if BindingClash::of(&self.kind).is_some() {
            return Some(Step::Attest);
        }
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
        let what = match (self.kind.as_str(), BindingClash::of(&self.kind)) {
            (_, Some((authority, clash))) => clash.describe(authority, &self.value),
            ("device", None) => {
                format!("device {} was in another run at the same time", self.value)
            }
            (kind, None) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn conflict(kind: &str, value: &str) -> Conflict {
        Conflict {
            run_uid: Uuid::from_u128(1),
            kind: kind.to_string(),
            value: value.to_string(),
            other: Sighting {
                station_id: "B".into(),
                port: "/dev/ttyB0".into(),
                run_uid: Uuid::from_u128(2),
                at: OffsetDateTime::UNIX_EPOCH,
            },
            found_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// What the line's users read about a pin's clash stays as it was.
    #[test]
    fn a_pins_conflicts_keep_their_kinds_and_words() {
        assert_eq!(BindingClash::Subject.kind("pin"), "pin");
        assert_eq!(BindingClash::Value.kind("pin"), "pin_key");
        let pin = conflict("pin", "50503041-3633-4261-803d-1e2b8f70111a");
        assert!(
            pin.reason("passed").starts_with(
                "device 50503041-3633-4261-803d-1e2b8f70111a has another key pinned at station B"
            ),
            "{}",
            pin.reason("passed")
        );
        let key = conflict("pin_key", "sha256:0011223344556677");
        assert!(
            key.reason("passed").starts_with(
                "identity key sha256:0011223344556677 is pinned for another device at station B"
            ),
            "{}",
            key.reason("passed")
        );
        assert_eq!(
            (pin.step(), key.step()),
            (Some(Step::Attest), Some(Step::Attest))
        );
    }

    /// Another authority's conflicts name it, whatever its name, and never
    /// read as a claim's or a device's.
    #[test]
    fn any_authoritys_conflicts_name_it_and_are_told_from_claims() {
        for authority in ["serial", "keygen", "device", "pin_key", "a.value"] {
            for clash in [BindingClash::Subject, BindingClash::Value] {
                let kind = clash.kind(authority);
                assert_eq!(BindingClash::of(&kind), Some((authority, clash)), "{kind}");
                let conflict = conflict(&kind, "v");
                assert!(
                    conflict
                        .reason("passed")
                        .contains(&format!("authority {authority} ")),
                    "{}",
                    conflict.reason("passed")
                );
                assert_eq!(conflict.step(), Some(Step::Attest), "{kind}");
            }
        }
        for kind in ["attest", "keygen", "jwt_jti", "device"] {
            assert_eq!(BindingClash::of(kind), None, "{kind}");
        }
        assert_eq!(conflict("keygen", "v").step(), Some(Step::Keygen));
    }
}
