//! `pin`: trust on first sight, like SSH's known hosts.
//!
//! The station asks the board for two `%JWT`s signed with its identity key.
//! A JWT's signing input is standard (`base64url(header).base64url(claims)`),
//! so ECDSA public-key recovery over two of them leaves one key: the device
//! identity key (`token::recover`). The first time a device UUID is seen its
//! key is pinned in the ledger; from then on a device UUID that answers with
//! another key fails `identity_changed`, naming where and when the pin was
//! made.
//!
//! What a pin proves: the board holds the same private key as when it was
//! first seen. What it does not: that Nordic made the chip. So a pinned token
//! is never called authentic (its signature check is `pinned_signature`).
//!
//! The `%ATTESTTOKEN` and `%KEYGEN` signatures are checked under the pinned
//! key with this project's COSE signing input (`Sig_structure`), which Nordic
//! does not publish; whether they verify is recorded, and logged once per
//! station, because on a real modem that one line answers the question.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{IdentityAuthority, IdentityCase, Judgement, VerifiedBy, Vouch, explain};
use crate::ledger::{Ledger, Pin, PinOutcome};
use crate::plan::{Clock, StepFailure};
use crate::record::{ReasonCode, Step};
use crate::token::recover::recover_common_key;
use crate::token::verify::{verify, verify_pinned};
use crate::token::{self, Expected, JwtExpected, Token, TokenKind};
use crate::trust::TrustStore;

pub struct PinAuthority {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
}

impl PinAuthority {
    pub fn new(ledger: Arc<dyn Ledger>, clock: Arc<dyn Clock>) -> Self {
        PinAuthority { ledger, clock }
    }
}

/// A short, stable name for a key: the first 16 hex digits of the SHA-256
/// of its SubjectPublicKeyInfo.
pub fn fingerprint(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    format!("sha256:{}", hex::encode(&digest[..8]))
}

fn refused(
    code: ReasonCode,
    detail: impl Into<String>,
    verdict: crate::token::Verdict,
) -> Judgement {
    Judgement::Refused {
        code,
        detail: detail.into(),
        verdict,
    }
}

#[async_trait]
impl IdentityAuthority for PinAuthority {
    fn name(&self) -> VerifiedBy {
        VerifiedBy::Pin
    }

    async fn judge(&self, case: &mut IdentityCase<'_>) -> Judgement {
        let own = verify(case.token, case.expected, &TrustStore::new()).without_key_checks();
        let now = self.clock.now_utc();
        let expected = Expected::Jwt(JwtExpected {
            device_uuid: Some(case.device_uuid),
            now: now.unix_timestamp(),
            issuer: None,
        });
        // Two JWTs, each bound to this device and this time.
        let mut jwts = Vec::with_capacity(2);
        let mut evidence = Vec::with_capacity(2);
        for _ in 0..2 {
            let text = match case.evidence.identity_jwt().await {
                Ok(text) => text,
                Err(e) => {
                    let failure = StepFailure::from_at(Step::Attest, &e);
                    return refused(
                        failure.code,
                        format!("asking for a %JWT to learn the identity key: {e}"),
                        own,
                    );
                }
            };
            let jwt = match token::decode(&text) {
                Ok(Token::Jwt(jwt)) => jwt,
                Ok(other) => {
                    return refused(
                        ReasonCode::Kind,
                        format!("%JWT answered with {}", other.kind().with_article()),
                        own,
                    );
                }
                Err(e) => return refused(ReasonCode::Decode, format!("%JWT: {e}"), own),
            };
            let verdict = verify(&Token::Jwt(jwt.clone()), &expected, &TrustStore::new())
                .without_key_checks();
            if !verdict.bindings_hold() {
                let (code, detail) = explain(&verdict);
                return refused(code, format!("%JWT: {detail}"), own);
            }
            jwts.push(jwt);
            evidence.push((text, verdict));
        }
        let key = match recover_common_key(&jwts[0], &jwts[1]) {
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
        for ((_, verdict), jwt) in evidence.iter_mut().zip(&jwts) {
            *verdict = verify_pinned(&Token::Jwt(jwt.clone()), &expected, case.device_uuid, &key);
        }
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
                "identity key {print} learnt from two %JWTs and pinned on first sight \
                 (the same key as first seen from now on; not proof that Nordic made the chip)"
            ),
            Ok(PinOutcome::Same(first)) => format!(
                "identity key {print}, the same as pinned at station {} port {} on {} (run {})",
                first.station_id,
                first.port,
                crate::record::ser::rfc3339(&first.at),
                first.run_uid
            ),
            Ok(PinOutcome::Changed(first)) => {
                return refused(
                    ReasonCode::IdentityChanged,
                    format!(
                        "device {} answered with identity key {print}, but key {} was pinned \
                         at station {} port {} on {} (run {})",
                        case.device_uuid,
                        fingerprint(&first.public_key),
                        first.station_id,
                        first.port,
                        crate::record::ser::rfc3339(&first.at),
                        first.run_uid
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
        let verdict = verify_pinned(case.token, case.expected, case.device_uuid, &key);
        let signed = verdict.pinned_signature() == Some(true);
        observe_signing_input(TokenKind::Identity, signed);
        Judgement::Vouched(Vouch {
            by: VerifiedBy::Pin,
            key: Some(key),
            detail: format!(
                "{detail}; %ATTESTTOKEN signature {} under it",
                if signed {
                    "verifies"
                } else {
                    "does NOT verify"
                }
            ),
            verdict,
            evidence,
        })
    }
}

/// Whether this station has said yet what the modem's COSE signatures
/// showed, per token kind (identity, keygen).
static SAID: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];

/// Log once per station (process) whether a board's COSE signature of
/// `kind` verified under the key learnt from its JWTs: on a real modem this
/// answers whether this project's COSE signing input is the modem's.
pub fn observe_signing_input(kind: TokenKind, verified: bool) {
    let slot = match kind {
        TokenKind::Identity => &SAID[0],
        TokenKind::Keygen => &SAID[1],
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
             this station builds. `pin` and `nrfcloud` are unaffected; `keys` cannot judge \
             these tokens"
        );
    }
}
