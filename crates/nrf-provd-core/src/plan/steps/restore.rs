//! `restore`: put the functional mode back (also after a failure).

use super::{Place, Rules};
use crate::modem::{FunctionalMode, SetFunctionalMode};
use crate::plan::{Link, Run, StepFailure};
use crate::record::Step;

pub const RULES: Rules = Rules {
    place: Place::Last("it puts the modem back in its normal functional mode"),
    ..Rules::ANY
};

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    let target = match run.state.original_mode {
        Some(mode @ (FunctionalMode::On | FunctionalMode::Off | FunctionalMode::Offline)) => mode,
        _ => return Ok("nothing to restore".into()),
    };
    run.modem
        .send(&SetFunctionalMode(target))
        .await
        .map_err(Run::<T>::at(Step::Restore))?;
    Ok(format!("back to {}", target.words()))
}
