//! Response grammar (nom 8): classify each line relative to the command in
//! flight, and parse `+X: a,"b",,c` parameter lists.
//!
//! Classification order: final result, echo, notification, information.
//! `OK` is matched only as a whole line, so a base64 line that contains the
//! letters `OK` is information. A prefixed line (`+X:`, `%X:`, `#X:`) is
//! information only when `X` is the name of the command in flight (and that
//! command is not a URC subscription such as `AT+CEREG=5`); otherwise it is a
//! notification. This is what keeps `+CEREG: 5` out of an `AT+CGSN=1`
//! response while `AT+CEREG?` still gets its own `+CEREG:` line.
use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{tag, take_till, take_while, take_while1},
    character::complete::{char, digit1, one_of, space0, space1},
    combinator::{all_consuming, map, recognize, rest},
    multi::separated_list0,
    sequence::{delimited, pair, preceded, terminated},
};

use super::Dialect;

/// A final result code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalResult {
    Ok,
    Error,
    /// `+CME ERROR: <n>`
    Cme(u16),
    /// `+CME ERROR: <text>` (verbose error reporting)
    CmeText(String),
    /// `+CMS ERROR: <n>`
    Cms(u16),
    /// `+CMS ERROR: <text>`
    CmsText(String),
}

/// What a line is, relative to the command in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineClass {
    Final(FinalResult),
    /// The peer echoing the command back (shells always do).
    Echo,
    /// Unsolicited: URC, shell log line, boot banner.
    Notification,
    /// Part of the command's response.
    Info,
}

/// Prefixes that only ever appear as notifications when the command in
/// flight is a *set* of the same name (`AT+CEREG=5` answers just `OK`).
pub const URC_NAMES: &[&str] = &[
    "+CEREG",
    "+CGREG",
    "+CREG",
    "+CSCON",
    "+CGEV",
    "+CNEC",
    "+CEDRXP",
    "+CMT",
    "+CDS",
    "+CIREGU",
    "%CESQ",
    "%XSIM",
    "%MDMEV",
    "%XTIME",
    "%XMODEMSLEEP",
    "%XT3412",
    "%NCELLMEAS",
    "%XNCELLMEAS",
    "%XVBATLOWLVL",
    "%XPOFWARN",
    "%XDATAPRFL",
    "%CONEVAL",
    "%XCONNSTAT",
];

/// Lines that are notifications whatever the command (SLM boot message).
const BARE_URCS: &[&str] = &["Ready", "READY"];

/// Final result of a whole line, if it is one.
pub fn final_result(line: &str) -> Option<FinalResult> {
    let line = line.trim();
    match line {
        "OK" => return Some(FinalResult::Ok),
        "ERROR" => return Some(FinalResult::Error),
        _ => {}
    }
    fn coded<'a>(prefix: &'static str, i: &'a str) -> IResult<&'a str, Option<u16>> {
        preceded(
            (tag(prefix), space0),
            alt((
                map(all_consuming(digit1), |d: &str| d.parse::<u16>().ok()),
                map(rest, |_| None),
            )),
        )
        .parse(i)
    }
    if let Ok((_, code)) = coded("+CME ERROR:", line) {
        return Some(match code {
            Some(c) => FinalResult::Cme(c),
            None => FinalResult::CmeText(text_after(line, "+CME ERROR:")),
        });
    }
    if let Ok((_, code)) = coded("+CMS ERROR:", line) {
        return Some(match code {
            Some(c) => FinalResult::Cms(c),
            None => FinalResult::CmsText(text_after(line, "+CMS ERROR:")),
        });
    }
    None
}

fn text_after(line: &str, prefix: &str) -> String {
    line.get(prefix.len()..).unwrap_or("").trim().to_string()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn name(i: &str) -> IResult<&str, &str> {
    recognize(pair(one_of("+%#"), take_while1(is_name_char))).parse(i)
}

/// Split `+CGSN: "35..."` into (`+CGSN`, `"35..."`).
pub fn split_prefix(line: &str) -> Option<(&str, &str)> {
    let (rest, n) = terminated(name, pair(char(':'), space0)).parse(line).ok()?;
    Some((n, rest))
}

/// One segment of a (possibly compound) command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Upper case, with its `+`/`%`/`#`.
    pub name: String,
    /// `AT+X=...` (not `=?`): a set command.
    pub set: bool,
}

/// The command in flight, as far as classification needs it.
#[derive(Debug, Clone)]
pub struct CommandContext {
    command: String,
    dialect: Dialect,
    segments: Vec<Segment>,
    sent: String,
}

impl CommandContext {
    pub fn new(command: &str, dialect: Dialect) -> Self {
        let sent = dialect.rules().frame(command.trim());
        CommandContext {
            command: command.to_string(),
            dialect,
            segments: segments(command),
            sent,
        }
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn is_echo(&self, line: &str) -> bool {
        self.dialect
            .rules()
            .is_echo(line, &self.command, &self.sent)
    }

    fn owns(&self, prefix: &str) -> bool {
        self.segments
            .iter()
            .any(|s| s.name.eq_ignore_ascii_case(prefix) && !(s.set && is_urc_name(prefix)))
    }
}

fn is_urc_name(prefix: &str) -> bool {
    URC_NAMES.iter().any(|n| n.eq_ignore_ascii_case(prefix))
}

/// Names of the commands in `AT+CFUN?;+CGSN=1` → `+CFUN` (read), `+CGSN` (set).
pub fn segments(command: &str) -> Vec<Segment> {
    let body = command.trim();
    let body = match body.get(..2) {
        Some(p) if p.eq_ignore_ascii_case("AT") => body.get(2..).unwrap_or(""),
        _ => body,
    };
    split_unquoted(body, ';')
        .into_iter()
        .filter_map(|seg| {
            let seg = seg.trim();
            let (after, n) = name(seg).ok()?;
            let set = after.starts_with('=') && !after.starts_with("=?");
            Some(Segment {
                name: n.to_ascii_uppercase(),
                set,
            })
        })
        .collect()
}

fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_quote = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            in_quote = !in_quote;
        } else if c == sep && !in_quote {
            out.push(s.get(start..i).unwrap_or(""));
            start = i + c.len_utf8();
        }
    }
    out.push(s.get(start..).unwrap_or(""));
    out
}

/// Zephyr log line: `[00:00:01.234,567] <inf> module: text`.
fn zephyr_log(i: &str) -> IResult<&str, &str> {
    preceded(
        (
            delimited(char('['), take_till(|c| c == ']'), char(']')),
            space1,
        ),
        delimited(
            char('<'),
            alt((tag("inf"), tag("wrn"), tag("err"), tag("dbg"))),
            char('>'),
        ),
    )
    .parse(i)
}

/// Lines that are never part of a response, whatever the command.
fn is_unsolicited_text(line: &str) -> bool {
    BARE_URCS.contains(&line) || line.starts_with("*** ") || zephyr_log(line).is_ok()
}

/// Classify `line` while `ctx`'s command is in flight.
pub fn classify(line: &str, ctx: &CommandContext) -> LineClass {
    if let Some(f) = final_result(line) {
        return LineClass::Final(f);
    }
    if ctx.is_echo(line) {
        return LineClass::Echo;
    }
    if let Some((prefix, _)) = split_prefix(line) {
        return if ctx.owns(prefix) {
            LineClass::Info
        } else {
            LineClass::Notification
        };
    }
    if is_unsolicited_text(line) {
        return LineClass::Notification;
    }
    LineClass::Info
}

/// Classify a line that arrived while no command was in flight.
pub fn is_notification_idle(line: &str) -> bool {
    split_prefix(line).is_some() || is_unsolicited_text(line)
}

/// One parameter of a `+X: a,"b",,c` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Int(i64),
    Str(String),
    /// Unquoted, not an integer (`nRF9161 LACA A0A`, `0x1F`).
    Text(String),
    Empty,
}

impl Param {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Param::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// Quoted or bare text (an integer is rendered in decimal).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Param::Str(s) | Param::Text(s) => Some(s.clone()),
            Param::Int(n) => Some(n.to_string()),
            Param::Empty => None,
        }
    }
}

fn quoted(i: &str) -> IResult<&str, Param> {
    map(
        delimited(char('"'), take_while(|c| c != '"'), char('"')),
        |s: &str| Param::Str(s.to_string()),
    )
    .parse(i)
}

fn unquoted(i: &str) -> IResult<&str, Param> {
    map(take_while(|c| c != ',' && c != '"'), |s: &str| {
        let s = s.trim();
        if s.is_empty() {
            Param::Empty
        } else if let Ok(n) = s.parse::<i64>() {
            Param::Int(n)
        } else {
            Param::Text(s.to_string())
        }
    })
    .parse(i)
}

fn param(i: &str) -> IResult<&str, Param> {
    delimited(space0, alt((quoted, unquoted)), space0).parse(i)
}

/// Parse a parameter list (the text after `+X: `). `None` when malformed,
/// e.g. an unterminated quote or text after a closing quote.
pub fn params(s: &str) -> Option<Vec<Param>> {
    if s.trim().is_empty() {
        return Some(Vec::new());
    }
    let (_, list) = all_consuming(separated_list0(char(','), param))
        .parse(s)
        .ok()?;
    Some(list)
}

/// Parameters of the first line with `prefix` (e.g. `%CMNG`) in `line`.
pub fn prefixed_params(line: &str, prefix: &str) -> Option<Vec<Param>> {
    let (p, rest) = split_prefix(line)?;
    if !p.eq_ignore_ascii_case(prefix) {
        return None;
    }
    params(rest)
}

/// True when `s` cannot go inside a quoted AT parameter.
pub(crate) fn has_quote_or_newline(s: &str) -> bool {
    s.contains(['"', '\r', '\n'])
}

/// A 15-digit run anywhere in a line, as Nordic's dialect detection looks
/// for one. Detection only: what a board's IMEI is, is the whole field
/// (`modem::parse_imei_field`), judged by `imei::check`.
pub fn find_imei(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 15 {
                return line.get(start..i);
            }
        } else {
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finals() {
        let table: &[(&str, Option<FinalResult>)] = &[
            ("OK", Some(FinalResult::Ok)),
            ("ERROR", Some(FinalResult::Error)),
            ("+CME ERROR: 518", Some(FinalResult::Cme(518))),
            ("+CME ERROR:518", Some(FinalResult::Cme(518))),
            ("+CMS ERROR: 301", Some(FinalResult::Cms(301))),
            (
                "+CME ERROR: not found",
                Some(FinalResult::CmeText("not found".into())),
            ),
            ("MIIBOKxyz", None),
            ("OK123", None),
            ("xOK", None),
            ("ERRORS", None),
            (
                "+CME ERROR: 99999",
                Some(FinalResult::CmeText("99999".into())),
            ),
        ];
        for (line, want) in table {
            assert_eq!(&final_result(line), want, "{line}");
        }
    }

    #[test]
    fn classification_table() {
        let raw = |c: &str| CommandContext::new(c, Dialect::RAW);
        let shell = |c: &str| CommandContext::new(c, Dialect::SHELL);
        let table: Vec<(CommandContext, &str, LineClass)> = vec![
            (
                raw("AT+CGSN=1"),
                "+CGSN: \"352656100367872\"",
                LineClass::Info,
            ),
            (raw("AT+CGSN=1"), "+CEREG: 5", LineClass::Notification),
            (raw("AT+CEREG?"), "+CEREG: 5,1", LineClass::Info),
            (raw("AT+CEREG=5"), "+CEREG: 5", LineClass::Notification),
            (raw("at+cereg?"), "+CEREG: 5,1", LineClass::Info),
            (raw("AT+CFUN?;+CGSN=1"), "+CGSN: \"1\"", LineClass::Info),
            (raw("AT+CGSN"), "352656100367872", LineClass::Info),
            (raw("AT+CGSN"), "AT+CGSN", LineClass::Echo),
            (raw("AT+CGSN"), "Ready", LineClass::Notification),
            (raw("AT%KEYGEN=1,2,0"), "MIIBOKOKOK", LineClass::Info),
            (
                raw("AT%KEYGEN=1,2,0"),
                "%KEYGEN: \"MIIB.OK\"",
                LineClass::Info,
            ),
            (raw("AT%KEYGEN=1,2,0"), "%XSIM: 1", LineClass::Notification),
            (shell("AT+CGSN"), "at 'AT+CGSN'", LineClass::Echo),
            (shell("AT+CGSN"), "at AT+CGSN", LineClass::Echo),
            (
                shell("AT+CGSN"),
                "[00:00:01.234,567] <inf> app: hello",
                LineClass::Notification,
            ),
            (
                shell("AT+CGSN"),
                "*** Booting nRF Connect SDK v2.6.0 ***",
                LineClass::Notification,
            ),
            (shell("AT+CGSN"), "OK", LineClass::Final(FinalResult::Ok)),
        ];
        for (ctx, line, want) in table {
            assert_eq!(classify(line, &ctx), want, "{} / {line}", ctx.command());
        }
    }

    #[test]
    fn parameter_lists() {
        use Param::*;
        assert_eq!(
            params("16842753,0,\"ABCDEF\""),
            Some(vec![Int(16842753), Int(0), Str("ABCDEF".into())])
        );
        assert_eq!(
            params("a, \"b\",,4"),
            Some(vec![Text("a".into()), Str("b".into()), Empty, Int(4)])
        );
        assert_eq!(params(""), Some(vec![]));
        assert_eq!(params("\"a,b\",1"), Some(vec![Str("a,b".into()), Int(1)]));
        assert_eq!(params("\"unterminated"), None);
        assert_eq!(params("\"a\"b"), None);
        assert_eq!(params("\"x\r\ny\""), Some(vec![Str("x\r\ny".into())]));
        assert_eq!(
            prefixed_params("%CMNG: 1,2,\"AA\"", "%cmng"),
            Some(vec![Int(1), Int(2), Str("AA".into())])
        );
    }

    #[test]
    fn imei_search() {
        assert_eq!(find_imei("352656100367872"), Some("352656100367872"));
        assert_eq!(
            find_imei("+CGSN: \"352656100367872\""),
            Some("352656100367872")
        );
        assert_eq!(find_imei("3526561003678721"), None);
        assert_eq!(find_imei("35265610036787"), None);
    }
}
