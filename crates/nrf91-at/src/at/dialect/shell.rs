//! `shell`: the Zephyr shell with the nRF Connect SDK's `at_shell`.
//!
//! Commands are typed as `at '<command>'`, quoted as Nordic's tools do: CR
//! removed, LF written as the two characters `\n`, and a single quote
//! escaped as `\'` (Nordic's tools do not escape it at all). The shell
//! echoes what it is sent (possibly wrapped), prints a prompt such as
//! `uart:~$ ` in colour, and prints every `\n` of the modem's output as
//! `\r\n`. `at_shell` turns each `\n` of an `AT%CMNG=0` command back into
//! CRLF, so the modem stores CRLF text.
use super::{Dialect, DialectRules, exact_echo};

pub struct Shell;

impl Dialect {
    pub const SHELL: Dialect = Dialect::new(&Shell);
}

impl DialectRules for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn frame(&self, command: &str) -> String {
        let mut s = String::with_capacity(command.len() + 6);
        s.push_str("at '");
        for c in command.chars() {
            match c {
                '\r' => {}
                '\n' => s.push_str("\\n"),
                '\'' => s.push_str("\\'"),
                c => s.push(c),
            }
        }
        s.push('\'');
        s
    }

    fn is_echo(&self, line: &str, command: &str, framed: &str) -> bool {
        exact_echo(line, command, framed)
            // Unquoted form, or a long fragment of a wrapped echo.
            || line
                .strip_prefix("at ")
                .is_some_and(|r| r.trim() == command.trim())
            || (line.len() >= 16 && framed.contains(line))
    }

    /// `uart:~$ `, `rtt:~$` and the like.
    fn strip_prompt<'a>(&self, line: &'a str) -> Option<&'a str> {
        let idx = line.find(":~$")?;
        let name = line.get(..idx)?;
        let plausible = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !plausible {
            return None;
        }
        line.get(idx + 3..)
    }

    /// A stored CRLF inside a multi-line value arrives as CR CR LF.
    fn as_printed(&self, line: String) -> String {
        if line.contains("\r\n") {
            line.replace("\r\n", "\n")
        } else {
            line
        }
    }

    fn stored_credential(&self, content: &str) -> String {
        content.replace('\r', "").replace('\n', "\r\n")
    }
}
