//! What the application relaying AT commands adds on the UART, as a pure
//! state machine: bytes in -> echo / shell messages / command lines out, and
//! replies -> bytes.
//!
//! - **Raw** (AT host library) and **SLM**: no echo; a command ends at CR, LF
//!   or NUL outside double quotes (inside quotes a line terminator belongs to
//!   the command, so multi-line PEM works); empty lines are ignored; bytes
//!   past 4096 are dropped as the AT host library does. Output lines end
//!   with `\r\n`. SLM prints `Ready` at every boot.
//! - **Shell** (Zephyr shell + nRF Connect SDK `at_shell`): the shell echoes
//!   typed bytes, ends a line at CR, LF or CRLF (quotes do not matter: that
//!   is why tools escape LF as `\n`), splits arguments with `"` and `'`
//!   quoting, and runs `at <command>`. Like `at_shell`, it turns `\n` into
//!   CRLF in `AT%CMNG=0` commands. Output goes through `shell_print`, which
//!   appends `\n`, and the UART shell turns every `\n` into `\r\n`, so modem
//!   lines arrive as `...\r\r\n` followed by an empty line. The prompt
//!   `uart:~$ ` is green (`ESC[1;32m` ... `ESC[0m`) and errors are red.
//!   Notifications are printed only after `at events_enable`, as
//!   `AT event handler:` followed by the notification.

use super::SimDialect;
use super::modem::Reply;

/// Longest command the relaying application buffers.
pub const MAX_LINE: usize = 4096;
/// The Zephyr shell prompt with its colour codes.
pub const SHELL_PROMPT: &str = "\x1b[1;32muart:~$ \x1b[0m";
const RED: &str = "\x1b[1;31m";
const RESET: &str = "\x1b[0m";

/// What the front end wants done with some input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontEvent {
    /// Bytes to send back right away (echo, shell messages and prompts).
    Output(Vec<u8>),
    /// A complete AT command line for the modem.
    Command(String),
}

/// The relaying application of one session.
#[derive(Debug, Clone)]
pub struct Frontend {
    dialect: SimDialect,
    line: Vec<u8>,
    in_quotes: bool,
    last_was_cr: bool,
    events_enabled: bool,
}

impl Frontend {
    pub fn new(dialect: SimDialect) -> Self {
        Self {
            dialect,
            line: Vec::new(),
            in_quotes: false,
            last_was_cr: false,
            events_enabled: false,
        }
    }

    pub fn dialect(&self) -> SimDialect {
        self.dialect
    }

    /// What the application prints when the board boots.
    pub fn boot_output(&self) -> Vec<u8> {
        match self.dialect {
            SimDialect::Raw => Vec::new(),
            SimDialect::Slm => b"Ready\r\n".to_vec(),
            SimDialect::Shell => format!("\r\n{SHELL_PROMPT}").into_bytes(),
        }
    }

    /// Take bytes from the host.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<FrontEvent> {
        match self.dialect {
            SimDialect::Raw | SimDialect::Slm => self.feed_raw(bytes),
            SimDialect::Shell => self.feed_shell(bytes),
        }
    }

    fn feed_raw(&mut self, bytes: &[u8]) -> Vec<FrontEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            if !self.in_quotes && matches!(b, b'\r' | b'\n' | 0) {
                let line = std::mem::take(&mut self.line);
                let text = String::from_utf8_lossy(&line);
                if !text.trim().is_empty() {
                    events.push(FrontEvent::Command(text.into_owned()));
                }
                continue;
            }
            if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
            if b == b'"' {
                self.in_quotes = !self.in_quotes;
            }
        }
        events
    }

    fn feed_shell(&mut self, bytes: &[u8]) -> Vec<FrontEvent> {
        let mut events = Vec::new();
        let mut echo = Vec::new();
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.last_was_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    echo.extend_from_slice(b"\r\n");
                    events.push(FrontEvent::Output(std::mem::take(&mut echo)));
                    let line = std::mem::take(&mut self.line);
                    events.extend(self.run_shell_line(&String::from_utf8_lossy(&line)));
                }
                0x08 | 0x7f => {
                    if self.line.pop().is_some() {
                        echo.extend_from_slice(b"\x08 \x08");
                    }
                }
                b if b < 0x20 => {}
                b => {
                    if self.line.len() < MAX_LINE {
                        self.line.push(b);
                        echo.push(b);
                    }
                }
            }
        }
        if !echo.is_empty() {
            events.push(FrontEvent::Output(echo));
        }
        events
    }

    fn run_shell_line(&mut self, line: &str) -> Vec<FrontEvent> {
        let argv = shell_argv(line);
        let text = |s: String| {
            vec![FrontEvent::Output(
                format!("{s}{SHELL_PROMPT}").into_bytes(),
            )]
        };
        match argv.as_slice() {
            [] => text(String::new()),
            [cmd, ..] if cmd != "at" => text(format!("{RED}{cmd}: command not found\r\n{RESET}")),
            [_] => text(shell_print(AT_USAGE)),
            [_, sub, ..] if sub == "events_enable" => {
                self.events_enabled = true;
                text(shell_print("AT command event handler enabled"))
            }
            [_, sub, ..] if sub == "events_disable" => {
                self.events_enabled = false;
                text(shell_print("AT command event handler disabled"))
            }
            [_, command, ..] => {
                let command = if command.starts_with("AT%CMNG=0") {
                    command.replace("\\n", "\r\n")
                } else {
                    command.clone()
                };
                vec![FrontEvent::Command(command)]
            }
        }
    }

    /// The reply as pieces of output; notifications may be put between
    /// pieces (only raw and SLM split a reply, a shell prints it at once).
    pub fn render_reply(&self, reply: &Reply) -> Vec<Vec<u8>> {
        let lines = reply.lines();
        match self.dialect {
            SimDialect::Raw | SimDialect::Slm => lines
                .into_iter()
                .map(|l| format!("{l}\r\n").into_bytes())
                .collect(),
            SimDialect::Shell => {
                let response: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
                vec![format!("{}{SHELL_PROMPT}", shell_print(&response)).into_bytes()]
            }
        }
    }

    /// A notification as the host would see it; `None` when the application
    /// would not print it (shell without `at events_enable`).
    pub fn render_urc(&self, urc: &str) -> Option<Vec<u8>> {
        match self.dialect {
            SimDialect::Raw | SimDialect::Slm => Some(format!("{urc}\r\n").into_bytes()),
            SimDialect::Shell if self.events_enabled => Some(
                format!(
                    "{}{SHELL_PROMPT}",
                    shell_print(&format!("AT event handler:\n{urc}\r\n"))
                )
                .into_bytes(),
            ),
            SimDialect::Shell => None,
        }
    }
}

const AT_USAGE: &str = "Usage: at <subcommand>\n\nSubcommands:\n  events_enable     Enable AT event handler which prints AT notifications\n  events_disable    Disable AT event handler\n\nAny other subcommand is interpreted as AT command and sent to the modem.\n";

/// `shell_print(sh, "%s", text)`: text plus `\n`, every `\n` sent as `\r\n`.
fn shell_print(text: &str) -> String {
    format!("{text}\n").replace('\n', "\r\n")
}

/// Split a shell line into arguments like the Zephyr shell: whitespace
/// separates, `"` and `'` quote (the other kind is literal inside), a
/// backslash before a quote character makes it literal; other backslashes
/// are kept (so `\n` reaches `at_shell` as two characters).
pub fn shell_argv(line: &str) -> Vec<String> {
    let mut argv = Vec::new();
    let mut current = String::new();
    let mut has_arg = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) if matches!(chars.peek(), Some('"' | '\'')) => {
                current.extend(chars.next());
                has_arg = true;
            }
            (q, None) if q == '"' || q == '\'' => {
                quote = Some(q);
                has_arg = true;
            }
            (q, Some(open)) if q == open => quote = None,
            (w, None) if w.is_whitespace() => {
                if has_arg {
                    argv.push(std::mem::take(&mut current));
                    has_arg = false;
                }
            }
            (other, _) => {
                current.push(other);
                has_arg = true;
            }
        }
    }
    if has_arg {
        argv.push(current);
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modem::{CommandKind, FinalResult};

    fn commands(events: &[FrontEvent]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match e {
                FrontEvent::Command(c) => Some(c.as_str()),
                FrontEvent::Output(_) => None,
            })
            .collect()
    }

    fn output(events: &[FrontEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                FrontEvent::Output(o) => Some(String::from_utf8_lossy(o).into_owned()),
                FrontEvent::Command(_) => None,
            })
            .collect()
    }

    #[test]
    fn raw_accepts_cr_lf_crlf_and_nul() {
        let mut f = Frontend::new(SimDialect::Raw);
        let ev = f.feed(b"AT\rAT+CGSN\nAT+CGMR\r\nAT+CGMM\0\r\n\r\n");
        assert_eq!(commands(&ev), ["AT", "AT+CGSN", "AT+CGMR", "AT+CGMM"]);
        assert_eq!(output(&ev), "", "raw never echoes");
    }

    #[test]
    fn raw_keeps_line_terminators_inside_quotes_across_reads() {
        let mut f = Frontend::new(SimDialect::Raw);
        assert!(f.feed(b"AT%CMNG=0,1,0,\"-----BEGIN\r\n").is_empty());
        let ev = f.feed(b"abc\n-----END\"\r\n");
        assert_eq!(
            commands(&ev),
            ["AT%CMNG=0,1,0,\"-----BEGIN\r\nabc\n-----END\""]
        );
    }

    #[test]
    fn raw_drops_bytes_past_the_buffer() {
        let mut f = Frontend::new(SimDialect::Raw);
        let long = vec![b'A'; MAX_LINE + 100];
        f.feed(&long);
        let ev = f.feed(b"\r");
        assert_eq!(commands(&ev)[0].len(), MAX_LINE);
    }

    #[test]
    fn slm_says_ready_raw_says_nothing() {
        assert_eq!(Frontend::new(SimDialect::Slm).boot_output(), b"Ready\r\n");
        assert!(Frontend::new(SimDialect::Raw).boot_output().is_empty());
        assert!(
            String::from_utf8(Frontend::new(SimDialect::Shell).boot_output())
                .unwrap()
                .ends_with(SHELL_PROMPT)
        );
    }

    #[test]
    fn shell_quoting_styles_give_the_same_command() {
        for input in ["at AT+CGSN\r\n", "at 'AT+CGSN'\r", "at \"AT+CGSN\"\n"] {
            let mut f = Frontend::new(SimDialect::Shell);
            let ev = f.feed(input.as_bytes());
            assert_eq!(commands(&ev), ["AT+CGSN"], "{input:?}");
            let echoed = input.trim_end_matches(['\r', '\n']);
            assert_eq!(output(&ev), format!("{echoed}\r\n"));
        }
    }

    #[test]
    fn shell_keeps_inner_double_quotes_in_single_quotes() {
        let mut f = Frontend::new(SimDialect::Shell);
        let ev = f.feed(b"at 'AT%KEYGEN=16,2,0,\"O=Nordic Semiconductor,CN=x\"'\r\n");
        assert_eq!(
            commands(&ev),
            ["AT%KEYGEN=16,2,0,\"O=Nordic Semiconductor,CN=x\""]
        );
    }

    #[test]
    fn shell_unescapes_lf_in_cmng_writes_only() {
        let mut f = Frontend::new(SimDialect::Shell);
        let ev = f.feed(b"at 'AT%CMNG=0,1,0,\"-----BEGIN\\nabc\\n-----END\"'\r\n");
        assert_eq!(
            commands(&ev),
            ["AT%CMNG=0,1,0,\"-----BEGIN\r\nabc\r\n-----END\""]
        );
        let ev = f.feed(b"at 'AT%JWT=0,0,\"a\\nb\"'\r\n");
        assert_eq!(commands(&ev), ["AT%JWT=0,0,\"a\\nb\""]);
    }

    #[test]
    fn shell_reports_unknown_commands_in_red() {
        let mut f = Frontend::new(SimDialect::Shell);
        let ev = f.feed(b"AT+CGSN\r\n");
        assert!(commands(&ev).is_empty());
        let out = output(&ev);
        assert!(
            out.contains("\x1b[1;31mAT+CGSN: command not found\r\n\x1b[0m"),
            "{out:?}"
        );
        assert!(out.ends_with(SHELL_PROMPT));
    }

    #[test]
    fn shell_backspace_edits_the_line() {
        let mut f = Frontend::new(SimDialect::Shell);
        let ev = f.feed(b"at AT+CGSX\x7fN\r");
        assert_eq!(commands(&ev), ["AT+CGSN"]);
    }

    #[test]
    fn shell_events_gate_notifications() {
        let mut f = Frontend::new(SimDialect::Shell);
        assert_eq!(f.render_urc("+CEREG: 1"), None);
        let ev = f.feed(b"at events_enable\r\n");
        assert!(output(&ev).contains("AT command event handler enabled"));
        let urc = String::from_utf8(f.render_urc("+CEREG: 1").unwrap()).unwrap();
        assert!(
            urc.starts_with("AT event handler:\r\n+CEREG: 1\r\r\n"),
            "{urc:?}"
        );
        assert_eq!(
            Frontend::new(SimDialect::Raw)
                .render_urc("+CEREG: 1")
                .unwrap(),
            b"+CEREG: 1\r\n"
        );
    }

    #[test]
    fn replies_per_dialect() {
        let reply = Reply {
            info: vec!["352656100367872".into()],
            result: FinalResult::Ok,
            kind: CommandKind::Query,
        };
        let raw = Frontend::new(SimDialect::Raw).render_reply(&reply);
        assert_eq!(
            raw,
            vec![b"352656100367872\r\n".to_vec(), b"OK\r\n".to_vec()]
        );
        let shell = Frontend::new(SimDialect::Shell)
            .render_reply(&reply)
            .concat();
        assert_eq!(
            String::from_utf8(shell).unwrap(),
            format!("352656100367872\r\r\nOK\r\r\n\r\n{SHELL_PROMPT}")
        );
    }

    #[test]
    fn argv_splitting() {
        assert_eq!(shell_argv("  at   AT+CGSN  "), ["at", "AT+CGSN"]);
        assert_eq!(shell_argv("at 'a b' \"c'd\""), ["at", "a b", "c'd"]);
        assert_eq!(shell_argv("at \\\"x"), ["at", "\"x"]);
        assert_eq!(shell_argv("at ''"), ["at", ""]);
        assert!(shell_argv("").is_empty());
    }
}
