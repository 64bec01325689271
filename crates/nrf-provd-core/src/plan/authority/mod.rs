//! Who vouches for a device's identity: the seam where identity
//! authorities plug in. One file each: [`keys`] (the trust file),
//! [`nrfcloud`] (nRF Cloud judges the token), [`pin`] (trust on first
//! sight), [`collect`] (nobody yet: checked and kept for later).
//!
//! The attest step checks what the station can check on its own (the token
//! is an identity token, its nonce is this run's challenge, it names the
//! device the run saw), then asks each configured authority in order. An
//! authority that does not know the device says so ([`Judgement::CannotJudge`])
//! and the next one is asked; one that judges decides — a refusal never
//! falls through to a weaker authority. The vouch says who vouched and, when
//! the authority knows it, the device's identity key, with which the later
//! steps verify their tokens.

mod collect;
mod keys;
mod nrfcloud;
mod pin;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::at::AtError;
use crate::cloud::CloudClient;
use crate::ledger::Ledger;
use crate::plan::{Clock, PinCose};
use crate::record::{ReasonCode, RunRecord};
use crate::token::verify::verify;
use crate::token::{CheckName, Expected, Token, TokenKind, Verdict};
use crate::trust::TrustStore;

pub use crate::record::VerifiedBy;
pub use crate::trust::fingerprint;
pub use collect::CollectAuthority;
pub use keys::KeysAuthority;
pub use nrfcloud::NrfCloudAuthority;
pub use pin::PinAuthority;

/// What an authority is made of: the station's parts any of them may need.
pub struct AuthorityParts<'a, E> {
    pub trust: &'a Arc<TrustStore>,
    pub ledger: &'a Arc<dyn Ledger>,
    pub clock: &'a Arc<dyn Clock>,
    pub pin_cose: PinCose,
    /// The nRF Cloud client, made only when an authority needs it (it
    /// reads the API key).
    pub cloud: &'a dyn Fn() -> Result<Arc<CloudClient>, E>,
}

/// The registry: the authority each name of `identity.authorities` stands
/// for. An authority is its file, its `mod` line, its line here and its
/// name in [`VerifiedBy`]; the config reads the names from there.
pub fn authority<E>(
    by: VerifiedBy,
    parts: &AuthorityParts<'_, E>,
) -> Result<Arc<dyn IdentityAuthority>, E> {
    Ok(match by {
        VerifiedBy::Keys => Arc::new(KeysAuthority::new(Arc::clone(parts.trust))),
        VerifiedBy::Nrfcloud => Arc::new(NrfCloudAuthority::new((parts.cloud)()?)),
        VerifiedBy::Pin => Arc::new(PinAuthority::new(
            Arc::clone(parts.ledger),
            Arc::clone(parts.clock),
            parts.pin_cose,
        )),
        VerifiedBy::Collect => Arc::new(CollectAuthority),
    })
}

/// A `%JWT` the board was asked for in this run, and the one expectation
/// that binds its answer to the request (challenge, clock, `exp_delta`).
#[derive(Debug, Clone)]
pub struct AskedJwt {
    pub text: String,
    pub expected: Expected,
}

/// More evidence an authority may ask the board for.
#[async_trait]
pub trait Evidence: Send {
    /// A `%JWT` signed by the device identity key (no sec_tag), made for
    /// this run: a fresh challenge as its subject, `iat`/`exp` on the clock
    /// the station just set.
    async fn identity_jwt(&mut self) -> Result<AskedJwt, AtError>;
}

/// What an authority judges: an identity token that already passed the
/// station's own checks.
pub struct IdentityCase<'a> {
    pub token: &'a Token,
    /// The token as the modem printed it (what nRF Cloud is sent).
    pub text: &'a str,
    pub expected: &'a Expected,
    pub device_uuid: Uuid,
    /// The run so far (its uid, station and port).
    pub record: &'a RunRecord,
    pub evidence: &'a mut dyn Evidence,
}

/// A vouch for a device's identity.
#[derive(Debug, Clone)]
pub struct Vouch {
    pub by: VerifiedBy,
    /// How the device's later tokens are judged, as this authority allows.
    pub later: Arc<dyn LaterTokens>,
    /// The verdict on the identity token to record.
    pub verdict: Verdict,
    /// More tokens the authority asked the board for, with their verdicts
    /// (the two `%JWT`s of `pin`), to record.
    pub evidence: Vec<(String, Verdict)>,
    /// What was proven, in words (the step's detail).
    pub detail: String,
}

impl Vouch {
    /// Judge a later token of this device (`%KEYGEN`, `%JWT`) as this vouch
    /// allows; the verdict to record, and whether the step may pass.
    pub fn judge(&self, token: &Token, expected: &Expected, device_uuid: Uuid) -> (Verdict, bool) {
        self.later.judge(token, expected, device_uuid)
    }
}

/// How an authority that vouched judges the device's later tokens
/// (`%KEYGEN`, `%JWT`): each authority says so with its vouch, so the plan
/// needs to know none of them.
pub trait LaterTokens: std::fmt::Debug + Send + Sync {
    /// The verdict to record, and whether the step may pass.
    fn judge(&self, token: &Token, expected: &Expected, device_uuid: Uuid) -> (Verdict, bool);
}

/// Every binding holds: for an authority with no key to check with
/// (`nrfcloud`, `collect`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BindingsOnly;

impl LaterTokens for BindingsOnly {
    fn judge(&self, token: &Token, expected: &Expected, _device_uuid: Uuid) -> (Verdict, bool) {
        let verdict = verify(token, expected, &TrustStore::new()).without_key_checks();
        let accepted = verdict.bindings_hold();
        (verdict, accepted)
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

/// The reason code and words for a failed verdict. A COSE token whose
/// signature does not verify under the pinned key fails `cose_unverified`
/// (a JWT's, whose signing input is standard, `identity_changed`).
pub fn explain(verdict: &Verdict) -> (ReasonCode, String) {
    let code = verdict
        .decisive_failure()
        .map_or(ReasonCode::Signature, |c| match c.name {
            CheckName::PinnedSignature if verdict.kind != TokenKind::Jwt => {
                ReasonCode::CoseUnverified
            }
            name => name.into(),
        });
    let mut words: Vec<String> = verdict
        .failures()
        .map(|c| format!("{} ({})", c.name, c.detail))
        .collect();
    if code == ReasonCode::CoseUnverified {
        words.push(pin::COSE_UNVERIFIED_HINT.to_string());
    }
    (code, words.join("; "))
}
