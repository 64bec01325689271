//! The functional mode: `AT+CFUN?` and `AT+CFUN=<mode>`.
use super::{malformed, missing};
use crate::at::parse::{Param, params};
use crate::at::{AtError, Command, Deadline, Response};

/// `+CFUN` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionalMode {
    Off,
    On,
    Offline,
    Other(u8),
}

impl FunctionalMode {
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => FunctionalMode::Off,
            1 => FunctionalMode::On,
            4 => FunctionalMode::Offline,
            n => FunctionalMode::Other(n),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            FunctionalMode::Off => 0,
            FunctionalMode::On => 1,
            FunctionalMode::Offline => 4,
            FunctionalMode::Other(n) => n,
        }
    }

    /// The mode in words, for a record.
    pub fn words(self) -> String {
        match self {
            FunctionalMode::Off => "off".into(),
            FunctionalMode::On => "online".into(),
            FunctionalMode::Offline => "offline".into(),
            FunctionalMode::Other(n) => format!("mode {n}"),
        }
    }

    /// Key generation and credential writes need the modem off or offline.
    pub fn allows_key_operations(self) -> bool {
        matches!(self, FunctionalMode::Off | FunctionalMode::Offline)
    }
}

/// `AT+CFUN?` → `+CFUN: <mode>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadFunctionalMode;

impl Command for ReadFunctionalMode {
    type Response = FunctionalMode;
    const DEADLINE: Deadline = Deadline::Command;

    fn text(&self) -> String {
        "AT+CFUN?".into()
    }

    fn parse(&self, r: &Response) -> Result<FunctionalMode, AtError> {
        parse_cfun(r)
    }
}

pub fn parse_cfun(r: &Response) -> Result<FunctionalMode, AtError> {
    let text = r
        .first_with_prefix("+CFUN:")
        .ok_or_else(|| missing("+CFUN"))?;
    let mode = params(text)
        .and_then(|p| p.first().and_then(Param::as_int))
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(|| malformed(text))?;
    Ok(FunctionalMode::from_code(mode))
}

/// `AT+CFUN=<mode>`: going offline may wait for a network detach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetFunctionalMode(pub FunctionalMode);

impl Command for SetFunctionalMode {
    type Response = ();
    const DEADLINE: Deadline = Deadline::Cfun;

    fn text(&self) -> String {
        format!("AT+CFUN={}", self.0.code())
    }

    fn parse(&self, _: &Response) -> Result<(), AtError> {
        Ok(())
    }
}
