//! A typed AT command, in the shape of atat's `AtatCmd`: the type knows its
//! text, the type of its answer and how to parse it, and its deadline class.
//! [`super::Client::send`] runs one; the nRF91's commands are in
//! `crate::modem`.
use super::{AtError, Response};

/// How long a command may take, as a class: the station's `[timeouts]`
/// (`super::CommandTimeouts`) turns a class into a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deadline {
    /// Any command without a slower class of its own.
    Command,
    /// `%ATTESTTOKEN` (the modem signs).
    Attest,
    /// `%KEYGEN`: key generation is the slowest command.
    Keygen,
    /// `%JWT` (the modem signs).
    Jwt,
    /// `%CMNG` (credential writes go to flash).
    Cmng,
    /// `+CFUN=` (going offline may wait for a network detach).
    Cfun,
}

/// One AT command: its text, its answer and its deadline.
///
/// Parsers are plain functions over a [`Response`] (the information lines,
/// echo and notifications removed), so they are tested with tables and
/// fuzzed without a port; `parse` only says which one this command's answer
/// goes through.
pub trait Command {
    /// What the command answers, parsed.
    type Response;
    /// Its deadline class.
    const DEADLINE: Deadline;

    /// The command line (e.g. `AT+CGSN=1`), without line ending or dialect
    /// framing. Arguments were checked when the command was made, so
    /// writing cannot fail.
    fn text(&self) -> String;

    /// The answer from the lines of a command that ended `OK`.
    fn parse(&self, response: &Response) -> Result<Self::Response, AtError>;
}
