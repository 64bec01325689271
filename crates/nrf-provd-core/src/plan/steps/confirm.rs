//! `confirm`: the `%CMNG` list digests equal what install wrote.

use super::Rules;
use crate::modem::{ListCredentials, expected_sha256};
use crate::plan::{Link, Run, StepFailure};
use crate::record::{ReasonCode, Step};

pub const RULES: Rules = Rules {
    needs: &[(Step::Install, "it checks what install wrote")],
    ..Rules::ANY
};

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    const STEP: Step = Step::Confirm;
    if run.state.collected() {
        return Ok(crate::plan::NOT_VOUCHED.to_string());
    }
    if crate::plan::firmware::skips_confirm(run.state.firmware.as_ref()) {
        // Only reached with plan.confirm_unsupported = "skip" (the gate
        // refuses it otherwise): say so, never pass as confirmed.
        return Ok(format!(
            "skipped (plan.confirm_unsupported = \"skip\"): firmware {} lists no SHA-256 digests \
             (needs >= {}); what install wrote was NOT confirmed",
            run.state.firmware.as_ref().map_or("", |f| f.text.as_str()),
            crate::modem::MIN_FOR_CMNG_SHA
        ));
    }
    let sec_tag = run.ctx.plan.sec_tag;
    let listed = run
        .modem
        .send(&ListCredentials {
            sec_tag: Some(sec_tag),
        })
        .await
        .map_err(Run::<T>::at(STEP))?;
    let dialect = run.modem.client().dialect();
    for (kind, content) in &run.state.written {
        let expected = expected_sha256(content, dialect);
        let found = listed
            .iter()
            .find(|e| e.sec_tag == sec_tag && e.kind == *kind);
        match found {
            Some(entry) if entry.sha256.eq_ignore_ascii_case(&expected) => {}
            Some(entry) => {
                return Err(StepFailure::new(
                    STEP,
                    ReasonCode::Mismatch,
                    format!(
                        "{} sha256 {} != written {expected}",
                        kind.words(),
                        entry.sha256
                    ),
                ));
            }
            None => {
                return Err(StepFailure::new(
                    STEP,
                    ReasonCode::Missing,
                    format!("{} not listed in sec_tag {sec_tag}", kind.words()),
                ));
            }
        }
    }
    Ok(format!(
        "{} entries match what was written",
        run.state.written.len()
    ))
}
