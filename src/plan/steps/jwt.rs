//! `jwt`: set the modem clock, `%JWT` with the identity key; verified and
//! its `jti` claimed once.

use super::Rules;
use crate::ledger::ClaimKind;
use crate::modem::JwtRequest;
use crate::plan::{Link, Run, StepFailure};
use crate::record::{ReasonCode, Step};
use crate::token::{Expected, JwtExpected, Token};

pub const RULES: Rules = Rules::ANY;

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    const STEP: Step = Step::Jwt;
    let at = Run::<T>::at(STEP);
    let now = run.ctx.clock.now_utc();
    run.modem.set_clock(now).await.map_err(&at)?;
    let request = JwtRequest {
        exp_delta: Some(run.ctx.plan.jwt_exp_delta),
        audience: run.ctx.plan.jwt_audience.clone(),
        ..Default::default()
    };
    let text = run.modem.jwt(&request).await.map_err(&at)?;
    let expected = Expected::Jwt(JwtExpected {
        device_uuid: run.state.device_uuid,
        now: now.unix_timestamp(),
        issuer: None,
    });
    let Token::Jwt(jwt) = run.judge(STEP, &text, &expected)? else {
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
        "JWT of {}, jti {jti}",
        jwt.claim_str("iss").unwrap_or("-")
    ))
}
