//! The plan's steps: each file holds one step's rules (what must come
//! before it, where it must stand) and its body. To add a step, write its
//! file, add its variant to [`Step`] and its line to [`rules`] and
//! [`execute`].

mod attest;
mod certify;
mod claim;
mod confirm;
mod identify;
mod install;
mod jwt;
mod keygen;
mod offline;
mod probe;
mod restore;

use super::{Link, Run, StepFailure};
use crate::record::Step;

/// Where a step must stand in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Anywhere,
    /// First, and why.
    First(&'static str),
    /// Last, and why.
    Last(&'static str),
}

/// A step's rules, checked when the config is read.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Steps that must come before this one, and why.
    pub needs: &'static [(Step, &'static str)],
    pub place: Place,
    /// Whether the step needs the `[ca]` section.
    pub needs_ca: bool,
    /// Whether the step needs the `[claim]` section (the ownership key).
    pub needs_claim: bool,
}

impl Rules {
    const ANY: Rules = Rules {
        needs: &[],
        place: Place::Anywhere,
        needs_ca: false,
        needs_claim: false,
    };
}

/// The rules of `step`.
pub fn rules(step: Step) -> Rules {
    match step {
        Step::Probe => probe::RULES,
        Step::Identify => identify::RULES,
        Step::Offline => offline::RULES,
        Step::Attest => attest::RULES,
        Step::Keygen => keygen::RULES,
        Step::Certify => certify::RULES,
        Step::Install => install::RULES,
        Step::Confirm => confirm::RULES,
        Step::Jwt => jwt::RULES,
        Step::Restore => restore::RULES,
        Step::Claim => claim::RULES,
    }
}

/// The body of `step`; returns a short detail for the record.
pub(crate) async fn execute<T: Link>(
    run: &mut Run<'_, T>,
    step: Step,
) -> Result<String, StepFailure> {
    match step {
        Step::Probe => probe::run(run).await,
        Step::Identify => identify::run(run).await,
        Step::Offline => offline::run(run).await,
        Step::Attest => attest::run(run).await,
        Step::Keygen => keygen::run(run).await,
        Step::Certify => certify::run(run).await,
        Step::Install => install::run(run).await,
        Step::Confirm => confirm::run(run).await,
        Step::Jwt => jwt::run(run).await,
        Step::Restore => restore::run(run).await,
        Step::Claim => claim::run(run).await,
    }
}
