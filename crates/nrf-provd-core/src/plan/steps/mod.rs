//! The plan's steps: each file holds one step's rules (what must come
//! before it, where it must stand) and its body. To add a step, write its
//! file (its `RULES` and `run`), add its variant to [`Step`] and its line
//! to the table at the end of this file.

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

/// The table of steps: each variant of [`Step`] and the file that holds
/// its `RULES` and `run`. Makes [`rules`] and [`execute`]; a variant
/// without its line does not compile.
macro_rules! steps {
    ($($step:ident => $file:ident),* $(,)?) => {
        $(mod $file;)*

        /// The rules of `step`.
        pub fn rules(step: Step) -> Rules {
            match step {
                $(Step::$step => $file::RULES,)*
            }
        }

        /// The body of `step`; returns a short detail for the record.
        pub(crate) async fn execute<T: Link>(
            run: &mut Run<'_, T>,
            step: Step,
        ) -> Result<String, StepFailure> {
            match step {
                $(Step::$step => $file::run(run).await,)*
            }
        }
    };
}

steps! {
    Probe => probe,
    Identify => identify,
    Offline => offline,
    Attest => attest,
    Claim => claim,
    Keygen => keygen,
    Certify => certify,
    Install => install,
    Confirm => confirm,
    Jwt => jwt,
    Restore => restore,
}
