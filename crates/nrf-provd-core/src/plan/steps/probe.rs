//! `probe`: the dialect found when the board arrived, and numeric CME errors.

use super::{Place, Rules};
use crate::modem::NumericErrors;
use crate::plan::{Link, Run, StepFailure};
use crate::record::Step;

pub const RULES: Rules = Rules {
    place: Place::First("it finds out how to talk to the modem"),
    ..Rules::ANY
};

pub async fn run<T: Link>(run: &mut Run<'_, T>) -> Result<String, StepFailure> {
    let at = Run::<T>::at(Step::Probe);
    // Detected once, by the station's presence check (or configured).
    let dialect = run.arrival.dialect;
    run.modem.client().set_dialect(dialect);
    run.modem.send(&NumericErrors).await.map_err(at)?;
    let how = if run.arrival.detected {
        "found when the board arrived"
    } else {
        "as configured"
    };
    Ok(format!(
        "dialect {} ({how}), numeric errors on",
        dialect.as_str()
    ))
}
