//! The modem's clock: `AT+CCLK="yy/MM/dd,hh:mm:ss+zz"` (JWT `iat`/`exp`
//! come from it).
use crate::at::{AtError, Command, Deadline, Response};

/// Set the modem clock to the time held, written as UTC (see
/// [`crate::at::cclk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetClock(pub time::OffsetDateTime);

impl Command for SetClock {
    type Response = ();
    const DEADLINE: Deadline = Deadline::Command;

    fn text(&self) -> String {
        format!(
            "AT+CCLK=\"{}\"",
            crate::at::cclk::format(self.0.unix_timestamp(), 0)
        )
    }

    fn parse(&self, _: &Response) -> Result<(), AtError> {
        Ok(())
    }
}
