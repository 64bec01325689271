//! Typed AT errors and the one table of `+CME ERROR` meanings.
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while talking AT to a modem. Each variant
/// carries the context a station log needs to explain a failed step.
#[derive(Debug, thiserror::Error)]
pub enum AtError {
    /// No final result before the deadline; `partial_lines` holds the
    /// information lines that did arrive.
    #[error("`{command}`: no final result within {waited:?} ({} partial lines)", partial_lines.len())]
    Timeout {
        command: String,
        waited: Duration,
        partial_lines: Vec<String>,
    },
    /// Plain `ERROR`.
    #[error("`{command}`: ERROR")]
    Error { command: String },
    /// `+CME ERROR: <code>`.
    #[error("`{command}`: +CME ERROR: {code} ({meaning})")]
    Cme {
        command: String,
        code: u16,
        meaning: &'static str,
    },
    /// `+CMS ERROR: <code>`.
    #[error("`{command}`: +CMS ERROR: {code}")]
    Cms { command: String, code: u16 },
    /// The port went away: end of stream, EIO, ENXIO (USB unplug).
    #[error("port disconnected: {detail}")]
    Disconnected { detail: String },
    /// A line longer than the client's maximum arrived while `command` ran.
    #[error("`{command}`: response line of {length} bytes exceeds the maximum line length")]
    Overlong { command: String, length: usize },
    /// A response line that the typed parser could not understand.
    #[error("malformed response line: {line:?}")]
    Malformed { line: String },
    /// A caller-supplied value that cannot be sent (e.g. a quote inside a
    /// quoted parameter).
    #[error("invalid argument: {detail}")]
    InvalidArgument { detail: String },
    /// A command longer than the modem's AT command buffer takes: refused
    /// before it is sent (see `crate::modem::MAX_COMMAND_BYTES`).
    #[error(
        "{what}: the command would be {length} bytes, and the modem's AT command buffer takes at most {limit}; it was not sent"
    )]
    TooLong {
        what: String,
        length: usize,
        limit: usize,
    },
    /// The serial port could not be opened or configured.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: tokio_serial::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl AtError {
    /// True for errors after which the port is unusable (reopen needed).
    pub fn is_disconnect(&self) -> bool {
        matches!(self, AtError::Disconnected { .. })
    }

    /// The CME error code, when the modem answered `+CME ERROR`.
    pub fn cme_code(&self) -> Option<u16> {
        match self {
            AtError::Cme { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// CME error codes: 3GPP TS 27.007 general codes nRF91 uses, and Nordic's
/// codes for the security commands (`%KEYGEN`, `%CMNG`, `%JWT`,
/// `%ATTESTTOKEN`). 521 and 527 exist but their meaning is not published.
const CME_TABLE: &[(u16, &str)] = &[
    (0, "phone failure"),
    (3, "operation not allowed"),
    (4, "operation not supported"),
    (10, "SIM not inserted"),
    (11, "SIM PIN required"),
    (13, "SIM failure"),
    (14, "SIM busy"),
    (15, "SIM wrong"),
    (21, "invalid index"),
    (30, "no network service"),
    (50, "incorrect parameters"),
    (51, "command implemented but currently disabled"),
    (100, "unknown error"),
    (513, "not found"),
    (514, "not allowed / no access"),
    (515, "memory full"),
    (518, "not allowed in active state (modem must be offline)"),
    (519, "already exists"),
    (520, "authentication failed"),
    (523, "key generation failed"),
    (525, "JWT creation failed"),
    (528, "not allowed while the power-off warning is active"),
    (529, "claim token failed"),
];

/// Meaning of a `+CME ERROR` code; `"unknown"` for codes not in the table.
pub fn cme_meaning(code: u16) -> &'static str {
    CME_TABLE
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("unknown", |(_, m)| m)
}

/// Reverse lookup for verbose `+CME ERROR: <text>` (AT+CMEE=2 style).
pub(crate) fn cme_code_for_text(text: &str) -> Option<u16> {
    CME_TABLE
        .iter()
        .find(|(_, m)| m.eq_ignore_ascii_case(text.trim()))
        .map(|(c, _)| *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_codes() {
        assert_eq!(
            cme_meaning(518),
            "not allowed in active state (modem must be offline)"
        );
        assert_eq!(cme_meaning(513), "not found");
        assert_eq!(cme_meaning(521), "unknown");
        assert_eq!(cme_meaning(527), "unknown");
        assert_eq!(cme_code_for_text("Not Found"), Some(513));
    }
}
