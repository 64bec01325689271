//! `jwt`: set the modem clock, `%JWT` with the identity key; verified and
//! its `jti` claimed once.
//!
//! Every `%JWT` the station asks for (this step's and the `pin`
//! authority's two) is made by [`ask`]: it carries a fresh random
//! challenge of this run as its subject, and `exp_delta`, so that the
//! answer must carry the challenge back and `iat`/`exp` on the clock the
//! station just set. The challenge goes in `sub`, not `aud`: `aud` keeps
//! its own meaning (`plan.jwt_audience`, checked when configured), and a
//! JWT whose subject is a station's challenge is of no use as the device's
//! credential anywhere else. `sub` is the SDK's subject parameter, which
//! the modem signs back as given (it defaults to the device UUID only when
//! absent; `iss` names the device either way).

use time::OffsetDateTime;
use uuid::Uuid;

use super::Rules;
use crate::at::AtError;
use crate::ledger::ClaimKind;
use crate::modem::{Jwt, JwtRequest, Modem, SetClock};
use crate::plan::authority::AskedJwt;
use crate::plan::{Clock, Link, RandomSource, Run, StepFailure};
use crate::record::{ReasonCode, Step};
use crate::token::{Expected, JwtAsked, JwtExpected, JwtFreshness, Token};

pub const RULES: Rules = Rules::ANY;

/// What a `%JWT` of this run is asked for, besides its challenge.
pub(crate) struct Asking {
    pub device_uuid: Option<Uuid>,
    /// When the station set the modem's clock (`AT+CCLK`).
    pub clock_set: OffsetDateTime,
    pub exp_delta: u32,
    pub audience: Option<String>,
}

/// Ask the board for a `%JWT` signed by its identity key, with a fresh
/// challenge as its subject: the answer and the one expectation that binds
/// it to this request (judged at the time the answer came).
pub(crate) async fn ask<T: Link>(
    modem: &mut Modem<T>,
    clock: &dyn Clock,
    random: &dyn RandomSource,
    asking: Asking,
) -> Result<AskedJwt, AtError> {
    let challenge = JwtAsked::challenge_text(random.bytes16());
    let request = JwtRequest {
        exp_delta: Some(asking.exp_delta),
        subject: Some(challenge.clone()),
        audience: asking.audience.clone(),
        key: None,
    };
    let text = modem.send(&Jwt::new(&request)?).await?;
    let expected = Expected::Jwt(JwtExpected {
        device_uuid: asking.device_uuid,
        freshness: JwtFreshness::Asked(JwtAsked {
            challenge,
            clock_set: asking.clock_set.unix_timestamp(),
            now: clock.now_utc().unix_timestamp(),
            exp_delta: asking.exp_delta,
        }),
        audience: asking.audience,
        issuer: None,
    });
    Ok(AskedJwt { text, expected })
}

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    const STEP: Step = Step::Jwt;
    let at = Run::<T>::at(STEP);
    let now = run.ctx.clock.now_utc();
    run.modem.send(&SetClock(now)).await.map_err(&at)?;
    let asking = Asking {
        device_uuid: run.state.device_uuid,
        clock_set: now,
        exp_delta: run.ctx.plan.jwt_exp_delta,
        audience: run.ctx.plan.jwt_audience.clone(),
    };
    let asked = ask(
        run.modem,
        run.ctx.clock.as_ref(),
        run.ctx.random.as_ref(),
        asking,
    )
    .await
    .map_err(&at)?;
    let Token::Jwt(jwt) = run.judge(STEP, &asked.text, &asked.expected)? else {
        return Err(StepFailure::new(STEP, ReasonCode::Kind, "not a JWT"));
    };
    let jti = jwt.claim_str("jti").unwrap_or("");
    if jti.is_empty() {
        return Err(StepFailure::new(
            STEP,
            ReasonCode::Jti,
            "JWT has no jti claim",
        ));
    }
    run.claim(STEP, ClaimKind::JwtJti, jti).await?;
    Ok(format!(
        "JWT of {}, jti {jti}, sub = this run's challenge",
        jwt.claim_str("iss").unwrap_or("-")
    ))
}
