//! `offline`: remember the functional mode, go offline (`+CFUN=4`): key
//! generation and credential writes need it.

use super::Rules;
use crate::modem::{FunctionalMode, ReadFunctionalMode, SetFunctionalMode};
use crate::plan::{Link, Run, StepFailure};
use crate::record::Step;

pub const RULES: Rules = Rules::ANY;

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    let at = Run::<T>::at(Step::Offline);
    let mode = run.modem.send(&ReadFunctionalMode).await.map_err(&at)?;
    run.state.original_mode = Some(mode);
    if mode.allows_key_operations() {
        return Ok(format!("was {}, left as is", mode.words()));
    }
    run.modem
        .send(&SetFunctionalMode(FunctionalMode::Offline))
        .await
        .map_err(&at)?;
    Ok(format!("was {}, now offline", mode.words()))
}
