//! Who vouches for a device's identity: the seam where identity
//! authorities plug in.
//!
//! The attest step checks what the station can check on its own (the token
//! is an identity token, its nonce is this run's challenge, it names the
//! device the run saw), then asks each configured authority in order. An
//! authority that does not know the device says so ([`Judgement::CannotJudge`])
//! and the next one is asked; one that judges decides — a refusal never
//! falls through to a weaker authority. The vouch says who vouched and, when
//! the authority knows it, the device's identity key, with which the later
//! steps verify their tokens.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::at::AtError;
use crate::record::ReasonCode;
use crate::token::verify::verify;
use crate::token::{Expected, Token, Verdict};
use crate::trust::{TrustStore, TrustedKey};

pub use crate::record::VerifiedBy;

/// More evidence an authority may ask the board for.
#[async_trait]
pub trait Evidence: Send {
    /// A `%JWT` signed by the device identity key (no sec_tag).
    async fn identity_jwt(&mut self) -> Result<String, AtError>;
}

/// What an authority judges: an identity token that already passed the
/// station's own checks.
pub struct IdentityCase<'a> {
    pub token: &'a Token,
    pub expected: &'a Expected,
    pub device_uuid: Uuid,
    pub evidence: &'a mut dyn Evidence,
}

/// A vouch for a device's identity.
#[derive(Debug, Clone)]
pub struct Vouch {
    pub by: VerifiedBy,
    /// The device identity key, when the authority knows it.
    pub key: Option<TrustedKey>,
    /// The verdict on the identity token to record.
    pub verdict: Verdict,
    /// What was proven, in words (the step's detail).
    pub detail: String,
}

impl Vouch {
    /// The keys to verify this device's later tokens with: its identity key
    /// when known, else none (then only their bindings can be checked).
    pub fn keys(&self, device_uuid: Uuid) -> TrustStore {
        let mut store = TrustStore::new();
        if let Some(key) = &self.key {
            // The key parsed once already; inserting it cannot fail.
            let _ = store.insert(device_uuid, key.spki_der());
        }
        store
    }
}

/// An authority's answer.
#[derive(Debug, Clone)]
pub enum Judgement {
    /// This authority does not know the device; ask the next one.
    CannotJudge(String),
    Vouched(Vouch),
    /// Judged and refused: the step fails with this code, and no other
    /// authority is asked.
    Refused {
        code: ReasonCode,
        detail: String,
        verdict: Verdict,
    },
}

#[async_trait]
pub trait IdentityAuthority: Send + Sync {
    fn name(&self) -> VerifiedBy;
    async fn judge(&self, case: &mut IdentityCase<'_>) -> Judgement;
}

/// `keys`: the trust file. Knows a device when the file lists its UUID; then
/// the token must be authentic under that key.
pub struct KeysAuthority {
    trust: Arc<TrustStore>,
}

impl KeysAuthority {
    pub fn new(trust: Arc<TrustStore>) -> Self {
        KeysAuthority { trust }
    }

    pub fn trust(&self) -> &Arc<TrustStore> {
        &self.trust
    }
}

#[async_trait]
impl IdentityAuthority for KeysAuthority {
    fn name(&self) -> VerifiedBy {
        VerifiedBy::Keys
    }

    async fn judge(&self, case: &mut IdentityCase<'_>) -> Judgement {
        let Some(key) = self.trust.get(&case.device_uuid) else {
            return Judgement::CannotJudge(format!(
                "device {} is not in the trust file",
                case.device_uuid
            ));
        };
        let verdict = verify(case.token, case.expected, &self.trust);
        if verdict.authentic() {
            return Judgement::Vouched(Vouch {
                by: VerifiedBy::Keys,
                key: Some(key.clone()),
                detail: "signed by the key the trust file lists".into(),
                verdict,
            });
        }
        let (code, detail) = explain(&verdict);
        Judgement::Refused {
            code,
            detail,
            verdict,
        }
    }
}

/// The reason code and words for a failed verdict.
pub fn explain(verdict: &Verdict) -> (ReasonCode, String) {
    let code = verdict
        .decisive_failure()
        .map_or(ReasonCode::Signature, |c| c.name.into());
    let words: Vec<String> = verdict
        .failures()
        .map(|c| format!("{} ({})", c.name, c.detail))
        .collect();
    (code, words.join("; "))
}
