//! `attest`: `%ATTESTTOKEN` with a fresh challenge; the station checks the
//! token's kind, nonce and device, then the identity authorities vouch.

use async_trait::async_trait;
use uuid::Uuid;

use super::Rules;
use crate::at::AtError;
use crate::modem::{AttestToken, Modem, SetClock};
use crate::plan::authority::{AskedJwt, Evidence, IdentityCase, Judgement};
use crate::plan::{Clock, Link, RandomSource, Run, StepFailure};
use crate::record::{ReasonCode, Step};
use crate::token::verify::verify;
use crate::token::{self, Expected, Freshness, IdentityExpected, Token};
use crate::trust::TrustStore;

pub const RULES: Rules = Rules::ANY;

/// The board, asked for more evidence by an authority.
struct BoardEvidence<'a, T> {
    modem: &'a mut Modem<T>,
    clock: &'a dyn Clock,
    random: &'a dyn RandomSource,
    device_uuid: Uuid,
    exp_delta: u32,
    /// The time the modem's clock was set to, once it was.
    clock_set: Option<time::OffsetDateTime>,
}

#[async_trait]
impl<T: Link> Evidence for BoardEvidence<'_, T> {
    async fn identity_jwt(&mut self) -> Result<AskedJwt, AtError> {
        // A JWT's iat/exp come from the modem's clock: set it first.
        let clock_set = match self.clock_set {
            Some(at) => at,
            None => {
                let now = self.clock.now_utc();
                self.modem.send(&SetClock(now)).await?;
                self.clock_set = Some(now);
                now
            }
        };
        super::jwt::ask(
            self.modem,
            self.clock,
            self.random,
            super::jwt::Asking {
                device_uuid: Some(self.device_uuid),
                clock_set,
                exp_delta: self.exp_delta,
                audience: None,
            },
        )
        .await
    }
}

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    const STEP: Step = Step::Attest;
    let challenge = run.ctx.random.bytes16();
    let text = run
        .modem
        .send(&AttestToken {
            challenge: Some(challenge),
        })
        .await
        .map_err(Run::<T>::at(STEP))?;
    let token = token::decode(&text).map_err(|e| crate::plan::decode_failure(STEP, &e))?;
    let expected = Expected::Identity(IdentityExpected {
        freshness: Freshness::Challenge(challenge),
        device_uuid: run.state.device_uuid,
    });
    let verifying = run.verifying(expected.kind());

    // What the station checks itself, whoever vouches: the kind, the nonce,
    // the device.
    let own = verify(&token, &expected, &TrustStore::new());
    if !own.bindings_hold() {
        run.record_token(&text, &own);
        let failure = own
            .binding_failure()
            .ok_or_else(|| StepFailure::new(STEP, ReasonCode::Kind, "token not judged"))?;
        let (_, detail) = crate::plan::authority::explain(&own);
        return Err(StepFailure::new(STEP, failure.name.into(), detail));
    }
    let Token::Identity(identity) = &token else {
        return Err(StepFailure::new(
            STEP,
            ReasonCode::Kind,
            "not an identity token",
        ));
    };
    let device_uuid = identity.device_uuid;
    let nonce = identity.nonce;

    let mut not_known = Vec::new();
    let mut vouch = None;
    {
        let mut evidence = BoardEvidence {
            modem: &mut *run.modem,
            clock: run.ctx.clock.as_ref(),
            random: run.ctx.random.as_ref(),
            device_uuid: identity.device_uuid,
            exp_delta: run.ctx.plan.jwt_exp_delta,
            clock_set: None,
        };
        let mut case = IdentityCase {
            token: &token,
            text: &text,
            expected: &expected,
            device_uuid,
            record: &*run.record,
            evidence: &mut evidence,
        };
        for authority in &run.ctx.authorities {
            match authority.judge(&mut case).await {
                Judgement::CannotJudge(why) => {
                    not_known.push(format!("{}: {why}", authority.name()))
                }
                Judgement::Vouched(v) => {
                    vouch = Some(v);
                    break;
                }
                Judgement::Refused {
                    code,
                    detail,
                    verdict,
                } => {
                    run.record_token(&text, &verdict);
                    return Err(StepFailure::new(STEP, code, detail));
                }
            }
        }
    }
    drop(verifying);
    let Some(vouch) = vouch else {
        run.record_token(&text, &own);
        return Err(StepFailure::new(
            STEP,
            ReasonCode::KeyTrusted,
            format!(
                "no identity authority vouches for device {device_uuid} ({})",
                not_known.join("; ")
            ),
        ));
    };
    run.record_token(&text, &vouch.verdict);
    for (evidence, verdict) in &vouch.evidence {
        run.record_token(evidence, verdict);
    }
    run.record.verified_by = Some(vouch.by);
    // The UUID is proven now: the nonce's claim and the line-wide device
    // rules, in one ledger call.
    let again = run
        .claim_nonce_then_check_device(STEP, &hex::encode(nonce), device_uuid)
        .await?;
    let detail = format!(
        "identity token of {device_uuid}, nonce {} = challenge; vouched by {}: {}",
        hex::encode(nonce),
        vouch.by,
        vouch.detail
    );
    run.state.vouch = Some(vouch);
    Ok(match again {
        Some(note) => format!("{detail}; {note}"),
        None => detail,
    })
}
