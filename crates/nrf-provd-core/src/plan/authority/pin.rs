//! `pin`: trust on first sight, like SSH's known hosts.
//!
//! The station asks the board for two `%JWT`s signed with its identity key,
//! each carrying a fresh challenge of this run as its subject and
//! `iat`/`exp` on the clock the station just set ([`Evidence`]); a JWT made
//! for anything else (harvested earlier, replayed) fails its bindings
//! before any key is learnt from it. A JWT's signing input is standard
//! (`base64url(header).base64url(claims)`), so ECDSA public-key recovery
//! over the two leaves one key: the device identity key
//! (`token::recover`). The first time a device UUID is seen its key is
//! pinned in the ledger; from then on a device UUID that answers with
//! another key fails `identity_changed`, and a key already pinned for
//! another device UUID fails `key_reused`, each naming where and when the
//! pin was made.
//!
//! What a pin proves: the board holds the same private key as when it was
//! first seen, now. What it does not: that Nordic made the chip. So a pinned
//! token is never called authentic (its signature check is
//! `pinned_signature`).
//!
//! The `%ATTESTTOKEN` and `%KEYGEN` signatures are checked under the pinned
//! key with this project's COSE signing input (`Sig_structure`), which Nordic
//! does not publish. With `identity.pin_cose = "required"` (the default) a
//! board whose COSE signatures do not verify fails `cose_unverified` (before
//! anything is pinned); with `"recorded"` (real modems) whether they verify
//! is recorded and logged once per station, because on a real modem that
//! one line answers the question.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tracing::{info, warn};

use uuid::Uuid;

use super::{
    Evidence, IdentityAuthority, IdentityCase, Judgement, LaterTokens, VerifiedBy, Vouch, explain,
};
use crate::ledger::{Ledger, Pin, PinOutcome};
use crate::plan::PinCose;
use crate::plan::{Clock, StepFailure};
use crate::record::{ReasonCode, Step};
use crate::token::recover::recover_common_key;
use crate::token::verify::{verify, verify_pinned};
use crate::token::{self, Jwt, Token, TokenKind, Verdict};
use crate::trust::{TrustStore, TrustedKey, fingerprint};

/// What a `cose_unverified` failure adds, so that an operator with real
/// modems knows the choice.
pub const COSE_UNVERIFIED_HINT: &str = "the board's COSE signature does not verify under the \
     key learnt from its own %JWTs with this station's COSE signing input: a board that does \
     not hold that key (a clone), or a real modem, whose signing input is not published; \
     identity.pin_cose = \"recorded\" accepts real modems (README, \"Who vouches\")";

pub struct PinAuthority {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    cose: PinCose,
}

impl PinAuthority {
    pub fn new(ledger: Arc<dyn Ledger>, clock: Arc<dyn Clock>, cose: PinCose) -> Self {
        PinAuthority {
            ledger,
            clock,
            cose,
        }
    }
}

fn refused(code: ReasonCode, detail: impl Into<String>, verdict: Verdict) -> Judgement {
    Judgement::Refused {
        code,
        detail: detail.into(),
        verdict,
    }
}

/// Where and when a pin was made, for a reason text.
fn pinned_at(pin: &Pin) -> String {
    format!(
        "station {} port {} on {} (run {})",
        pin.station_id,
        pin.port,
        crate::record::ser::rfc3339(&pin.at),
        pin.run_uid
    )
}

/// Two `%JWT`s of this run, each bound to its request; refused as the
/// first failure says.
async fn two_jwts(
    evidence: &mut dyn Evidence,
    own: &Verdict,
) -> Result<Vec<(String, Jwt, token::Expected, Verdict)>, Judgement> {
    let mut jwts = Vec::with_capacity(2);
    for _ in 0..2 {
        let asked = match evidence.identity_jwt().await {
            Ok(asked) => asked,
            Err(e) => {
                let failure = StepFailure::from_at(Step::Attest, &e);
                return Err(refused(
                    failure.code,
                    format!("asking for a %JWT to learn the identity key: {e}"),
                    own.clone(),
                ));
            }
        };
        let jwt = match token::decode(&asked.text) {
            Ok(Token::Jwt(jwt)) => jwt,
            Ok(other) => {
                return Err(refused(
                    ReasonCode::Kind,
                    format!("%JWT answered with {}", other.kind().with_article()),
                    own.clone(),
                ));
            }
            Err(e) => {
                let failure = crate::plan::decode_failure(Step::Attest, &e);
                return Err(refused(failure.code, format!("%JWT: {e}"), own.clone()));
            }
        };
        // Bound to this run (challenge, clock, exp_delta) and this device
        // before any key is learnt from it.
        let verdict = verify(
            &Token::Jwt(jwt.clone()),
            &asked.expected,
            &TrustStore::new(),
        )
        .without_key_checks();
        if !verdict.bindings_hold() {
            let (code, detail) = explain(&verdict);
            return Err(refused(code, format!("%JWT: {detail}"), own.clone()));
        }
        jwts.push((asked.text, jwt, asked.expected, verdict));
    }
    Ok(jwts)
}

#[async_trait]
impl IdentityAuthority for PinAuthority {
    fn name(&self) -> VerifiedBy {
        VerifiedBy::Pin
    }

    async fn judge(&self, case: &mut IdentityCase<'_>) -> Judgement {
        let own = verify(case.token, case.expected, &TrustStore::new()).without_key_checks();
        let jwts = match two_jwts(case.evidence, &own).await {
            Ok(jwts) => jwts,
            Err(refusal) => return refusal,
        };
        let key = match recover_common_key(&jwts[0].1, &jwts[1].1) {
            Ok(key) => key,
            Err(e) => {
                return refused(
                    ReasonCode::Signature,
                    format!("no identity key can be learnt from two %JWTs: {e}"),
                    own,
                );
            }
        };
        // The JWTs verify under the key they gave (recorded as evidence).
        let evidence: Vec<(String, Verdict)> = jwts
            .into_iter()
            .map(|(text, jwt, expected, _)| {
                let verdict = verify_pinned(&Token::Jwt(jwt), &expected, case.device_uuid, &key);
                (text, verdict)
            })
            .collect();
        // The identity token under the key the JWTs gave: required before
        // anything is pinned, unless the station takes real modems.
        let verdict = verify_pinned(case.token, case.expected, case.device_uuid, &key);
        let signed = verdict.pinned_signature() == Some(true);
        observe_signing_input(TokenKind::Identity, signed);
        if !signed && self.cose == PinCose::Required {
            let (_, words) = explain(&verdict);
            return refused(
                ReasonCode::CoseUnverified,
                format!("%ATTESTTOKEN: {words}; {COSE_UNVERIFIED_HINT}"),
                verdict,
            );
        }
        let now = self.clock.now_utc();
        let pin = Pin {
            device_uuid: case.device_uuid,
            public_key: key.spki_der().to_vec(),
            at: now,
            station_id: case.record.station_id.clone(),
            port: case.record.port.clone(),
            run_uid: case.record.uid,
        };
        let print = fingerprint(key.spki_der());
        let detail = match self.ledger.pin(&pin).await {
            Ok(PinOutcome::Pinned) => format!(
                "identity key {print} learnt from two %JWTs of this run and pinned on first \
                 sight (the same key as first seen from now on; not proof that Nordic made the chip)"
            ),
            Ok(PinOutcome::Same(first)) => format!(
                "identity key {print} (from two %JWTs of this run), the same as pinned at {}",
                pinned_at(&first)
            ),
            Ok(PinOutcome::Changed(first)) => {
                return refused(
                    ReasonCode::IdentityChanged,
                    format!(
                        "device {} answered with identity key {print}, but key {} was pinned \
                         at {}",
                        case.device_uuid,
                        fingerprint(&first.public_key),
                        pinned_at(&first)
                    ),
                    own,
                );
            }
            Ok(PinOutcome::Reused(other)) => {
                return refused(
                    ReasonCode::KeyReused,
                    format!(
                        "device {} answered with identity key {print}, which is pinned for \
                         device {} at {}: one key never belongs to two devices",
                        case.device_uuid,
                        other.device_uuid,
                        pinned_at(&other)
                    ),
                    own,
                );
            }
            Err(e) => {
                let code = if e.is_transient() {
                    ReasonCode::LedgerUnreachable
                } else {
                    ReasonCode::Store
                };
                return refused(code, format!("cannot pin the identity key: {e}"), own);
            }
        };
        let cose = if signed {
            "%ATTESTTOKEN signature verifies under it".to_string()
        } else {
            "%ATTESTTOKEN signature NOT verified: it does not verify under the pinned key with \
             this station's COSE signing input, accepted because identity.pin_cose = \
             \"recorded\" (a real modem's input is not published): this pass rests on the \
             %JWTs alone"
                .to_string()
        };
        Judgement::Vouched(Vouch {
            by: VerifiedBy::Pin,
            later: Arc::new(PinnedKey {
                key,
                cose_required: self.cose == PinCose::Required,
            }),
            detail: format!("{detail}; {cose}"),
            verdict,
            evidence,
        })
    }
}

/// A later token: every binding holds; a JWT (whose signing input is
/// standard) must also verify under the pinned key, and so must a COSE
/// token unless `identity.pin_cose = "recorded"` (real modems: their COSE
/// signing input is not published); then it is recorded.
#[derive(Debug)]
struct PinnedKey {
    key: TrustedKey,
    cose_required: bool,
}

impl LaterTokens for PinnedKey {
    fn judge(
        &self,
        token: &Token,
        expected: &token::Expected,
        device_uuid: Uuid,
    ) -> (Verdict, bool) {
        let verdict = verify_pinned(token, expected, device_uuid, &self.key);
        let signed = verdict.pinned_signature() == Some(true);
        let cose = token.kind() != TokenKind::Jwt;
        if cose {
            observe_signing_input(token.kind(), signed);
        }
        let accepted = verdict.bindings_hold() && (signed || (cose && !self.cose_required));
        (verdict, accepted)
    }
}

/// Whether this station has said yet what the modem's COSE signatures
/// showed, per token kind (identity, keygen, claim).
static SAID: [AtomicBool; 3] = [
    AtomicBool::new(false),
    AtomicBool::new(false),
    AtomicBool::new(false),
];

/// Log once per station (process) whether a board's COSE signature of
/// `kind` verified under the key learnt from its JWTs: on a real modem this
/// answers whether this project's COSE signing input is the modem's.
pub fn observe_signing_input(kind: TokenKind, verified: bool) {
    let slot = match kind {
        TokenKind::Identity => &SAID[0],
        TokenKind::Keygen => &SAID[1],
        TokenKind::Claim => &SAID[2],
        TokenKind::Jwt => return,
    };
    if slot.swap(true, Ordering::Relaxed) {
        return;
    }
    let command = kind.command();
    if verified {
        info!(
            "signing input: this board's AT{command} signature verifies under the identity key \
             learnt from its %JWTs, so the modem signs the COSE Sig_structure this station \
             builds; a trust file of such keys (`keys`) would work for these boards"
        );
    } else {
        warn!(
            "signing input: this board's AT{command} signature does NOT verify under the identity \
             key learnt from its %JWTs: the modem signs other bytes than the COSE Sig_structure \
             this station builds. `nrfcloud` is unaffected; `pin` passes such boards only with \
             identity.pin_cose = \"recorded\"; `keys` cannot judge these tokens"
        );
    }
}
