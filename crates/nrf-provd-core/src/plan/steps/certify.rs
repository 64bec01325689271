//! `certify`: the station CA signs the verified CSR's key.

use super::Rules;
use crate::ca::Issuance;
use crate::plan::{Link, Run, StepFailure};
use crate::record::{Artifact, ArtifactKind, ReasonCode, Step};

pub const RULES: Rules = Rules {
    needs: &[(Step::Keygen, "it signs the CSR that keygen produces")],
    needs_ca: true,
    ..Rules::ANY
};

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    const STEP: Step = Step::Certify;
    if run.state.collected() {
        return Ok(crate::plan::NOT_VOUCHED.to_string());
    }
    let ctx = run.ctx;
    let (ca, (spki, common_name)) = match (&ctx.ca, &run.state.keygen) {
        (Some(ca), Some(keygen)) => (ca, keygen),
        _ => {
            return Err(StepFailure::new(
                STEP,
                ReasonCode::Config,
                "certify needs a CA and a verified keygen step",
            ));
        }
    };
    let issuance = Issuance {
        now: ctx.clock.now_utc().into(),
        validity: ctx.certificate_validity,
        serial: ctx.random.bytes16(),
    };
    let cert = ca
        .sign_device(common_name, spki, issuance)
        .map_err(|e| StepFailure::new(STEP, ReasonCode::Ca, e.to_string()))?;
    let detail = format!("CN={common_name}, signed by the station CA");
    run.record.artifacts.push(Artifact {
        kind: ArtifactKind::DeviceCertificate,
        sec_tag: Some(ctx.plan.sec_tag),
        content: cert.pem.clone(),
    });
    run.state.certificate_pem = Some(cert.pem);
    Ok(detail)
}
