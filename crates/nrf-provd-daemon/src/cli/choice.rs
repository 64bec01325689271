//! How the protocol's and the ledger's choices are spelt on the command
//! line. clap's `ValueEnum` lives here, on enums of the CLI's own, so that
//! the AT engine and the station core do not depend on clap; each maps
//! onto the type it stands for.

use crate::at::DialectChoice;
use crate::ledger::LedgerMode;
use crate::serial::{FlowControl, LineEnding};

/// `--dialect` of `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DialectArg {
    Auto,
    Raw,
    Shell,
}

impl From<DialectArg> for DialectChoice {
    fn from(arg: DialectArg) -> Self {
        match arg {
            DialectArg::Auto => DialectChoice::Auto,
            DialectArg::Raw => DialectChoice::Raw,
            DialectArg::Shell => DialectChoice::Shell,
        }
    }
}

/// `--flow-control` of `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowControlArg {
    None,
    #[value(name = "rtscts")]
    RtsCts,
    #[value(name = "xonxoff")]
    XonXoff,
}

impl From<FlowControlArg> for FlowControl {
    fn from(arg: FlowControlArg) -> Self {
        match arg {
            FlowControlArg::None => FlowControl::None,
            FlowControlArg::RtsCts => FlowControl::RtsCts,
            FlowControlArg::XonXoff => FlowControl::XonXoff,
        }
    }
}

/// `--line-ending` of `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineEndingArg {
    Crlf,
    Cr,
    Lf,
    Nul,
}

impl From<LineEndingArg> for LineEnding {
    fn from(arg: LineEndingArg) -> Self {
        match arg {
            LineEndingArg::Crlf => LineEnding::Crlf,
            LineEndingArg::Cr => LineEnding::Cr,
            LineEndingArg::Lf => LineEnding::Lf,
            LineEndingArg::Nul => LineEnding::Nul,
        }
    }
}

/// `--ledger-mode` of `bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LedgerModeArg {
    /// In PostgreSQL, during the run: while it cannot be reached no run
    /// passes (`ledger_unreachable`); records are still written locally.
    Required,
    /// Locally during the run, checked by PostgreSQL when forwarded; a clash
    /// found then is recorded on both runs as `conflict`.
    Deferred,
}

impl From<LedgerModeArg> for LedgerMode {
    fn from(arg: LedgerModeArg) -> Self {
        match arg {
            LedgerModeArg::Required => LedgerMode::Required,
            LedgerModeArg::Deferred => LedgerMode::Deferred,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// Each choice is spelt on the command line as the config spells it.
    #[test]
    fn the_command_line_spells_each_choice_as_the_config_does() {
        fn spelt<A: ValueEnum, T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
            to: impl Fn(A) -> T,
        ) {
            for arg in A::value_variants() {
                let name = arg.to_possible_value().map(|v| v.get_name().to_string());
                let name = name.unwrap_or_default();
                let read: T = serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
                    serde::de::value::Error,
                >::new(&name))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(read, to(arg.clone()), "{name}");
            }
        }
        spelt::<DialectArg, DialectChoice>(Into::into);
        spelt::<FlowControlArg, FlowControl>(Into::into);
        spelt::<LineEndingArg, LineEnding>(Into::into);
        spelt::<LedgerModeArg, LedgerMode>(Into::into);
    }
}
