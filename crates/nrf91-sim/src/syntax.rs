//! AT command line syntax as the modem parses it: `AT<name>[?|=?|=<params>]`.
//!
//! Parameters are comma-separated; a double-quoted string may contain commas
//! and line terminators (multi-line PEM in `%CMNG`). There are no escapes
//! inside quotes.

use thiserror::Error;

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Upper-case name with its sigil, e.g. `+CGSN`, `%KEYGEN`; empty for `AT`.
    pub name: String,
    pub form: Form,
}

/// The form of a command: `AT+X`, `AT+X?`, `AT+X=?` or `AT+X=<params>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Action,
    Read,
    Test,
    Set(Vec<Param>),
}

/// One parameter of a set command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// Nothing between the commas.
    Empty,
    /// An unquoted token, e.g. a number (kept as text, trimmed).
    Bare(String),
    /// A double-quoted string without its quotes.
    Quoted(String),
}

impl Param {
    /// The value of a bare decimal number.
    pub fn number(&self) -> Option<u64> {
        match self {
            Param::Bare(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
                text.parse().ok()
            }
            _ => None,
        }
    }

    /// The contents of a quoted string.
    pub fn quoted(&self) -> Option<&str> {
        match self {
            Param::Quoted(text) => Some(text),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Param::Empty)
    }
}

/// Why a line is not an AT command.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyntaxError {
    #[error("line does not start with AT")]
    NoPrefix,
    #[error("malformed command name")]
    BadName,
    #[error("unbalanced double quote")]
    UnbalancedQuote,
    #[error("text after a closing quote")]
    TextAfterQuote,
}

/// Normalise a command name for matching: upper case, without a leading `AT`
/// before a sigil, without the sigil. `AT%KEYGEN`, `%keygen` and `KEYGEN` all
/// give `KEYGEN`; `AT` gives `AT`; `ATTESTTOKEN` stays `ATTESTTOKEN`.
pub fn normalize_name(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    let rest = match upper.strip_prefix("AT") {
        Some(rest) if rest.starts_with(['+', '%', '#']) => rest,
        Some("") => return "AT".to_owned(),
        _ => upper.as_str(),
    };
    rest.trim_start_matches(['+', '%', '#']).to_owned()
}

/// Parse one command line (without its terminator).
pub fn parse(line: &str) -> Result<Command, SyntaxError> {
    let line = line.trim_matches(|c: char| c == ' ' || c == '\t');
    let prefix = line.get(..2).ok_or(SyntaxError::NoPrefix)?;
    if !prefix.eq_ignore_ascii_case("AT") {
        return Err(SyntaxError::NoPrefix);
    }
    let rest = &line[2..];
    if rest.is_empty() {
        return Ok(Command {
            name: String::new(),
            form: Form::Action,
        });
    }
    let mut chars = rest.char_indices();
    match chars.next() {
        Some((_, '+' | '%' | '#')) => {}
        _ => return Err(SyntaxError::BadName),
    }
    let end = rest
        .char_indices()
        .skip(1)
        .find(|(_, c)| !c.is_ascii_alphanumeric() && *c != '_')
        .map_or(rest.len(), |(i, _)| i);
    if end < 2 {
        return Err(SyntaxError::BadName);
    }
    let name = rest[..end].to_ascii_uppercase();
    let tail = &rest[end..];
    let form = match tail {
        "" => Form::Action,
        "?" => Form::Read,
        "=?" => Form::Test,
        _ => match tail.strip_prefix('=') {
            Some(params) => Form::Set(split_params(params)?),
            None => return Err(SyntaxError::BadName),
        },
    };
    Ok(Command { name, form })
}

fn split_params(text: &str) -> Result<Vec<Param>, SyntaxError> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut quoted: Option<String> = None;
    let mut in_quotes = false;
    for c in text.chars() {
        if in_quotes {
            if c == '"' {
                in_quotes = false;
            } else if let Some(q) = quoted.as_mut() {
                q.push(c);
            }
            continue;
        }
        match c {
            '"' if quoted.is_none() && current.trim().is_empty() => {
                in_quotes = true;
                quoted = Some(String::new());
            }
            '"' => return Err(SyntaxError::TextAfterQuote),
            ',' => params.push(finish(&mut current, &mut quoted)?),
            _ => current.push(c),
        }
    }
    if in_quotes {
        return Err(SyntaxError::UnbalancedQuote);
    }
    params.push(finish(&mut current, &mut quoted)?);
    Ok(params)
}

fn finish(current: &mut String, quoted: &mut Option<String>) -> Result<Param, SyntaxError> {
    let bare = std::mem::take(current);
    let bare = bare.trim();
    match quoted.take() {
        Some(_) if !bare.is_empty() => Err(SyntaxError::TextAfterQuote),
        Some(text) => Ok(Param::Quoted(text)),
        None if bare.is_empty() => Ok(Param::Empty),
        None => Ok(Param::Bare(bare.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(line: &str) -> Vec<Param> {
        match parse(line).unwrap().form {
            Form::Set(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn forms() {
        assert_eq!(parse("AT").unwrap().name, "");
        assert_eq!(parse("at+cgsn").unwrap().name, "+CGSN");
        assert_eq!(parse("AT+CFUN?").unwrap().form, Form::Read);
        assert_eq!(parse("AT+CFUN=?").unwrap().form, Form::Test);
        assert_eq!(parse("AT%XMODEMUUID").unwrap().form, Form::Action);
        assert_eq!(parse("  AT%DEVICEUUID  ").unwrap().name, "%DEVICEUUID");
    }

    #[test]
    fn rejects_non_commands() {
        assert_eq!(parse("at AT+CGSN"), Err(SyntaxError::BadName));
        assert_eq!(parse("hello"), Err(SyntaxError::NoPrefix));
        assert_eq!(parse("A"), Err(SyntaxError::NoPrefix));
        assert_eq!(parse("AT+"), Err(SyntaxError::BadName));
        assert_eq!(parse("AT+CFUN!"), Err(SyntaxError::BadName));
        assert_eq!(parse("ATé"), Err(SyntaxError::BadName));
    }

    #[test]
    fn params_with_quotes_commas_and_newlines() {
        assert_eq!(
            set("AT%KEYGEN=16,2,0,\"O=Nordic, Inc,CN=x\",\"101010000\""),
            vec![
                Param::Bare("16".into()),
                Param::Bare("2".into()),
                Param::Bare("0".into()),
                Param::Quoted("O=Nordic, Inc,CN=x".into()),
                Param::Quoted("101010000".into()),
            ]
        );
        assert_eq!(
            set("AT%CMNG=0,1,0,\"-----BEGIN\r\nabc\r\n-----END\""),
            vec![
                Param::Bare("0".into()),
                Param::Bare("1".into()),
                Param::Bare("0".into()),
                Param::Quoted("-----BEGIN\r\nabc\r\n-----END".into()),
            ]
        );
        assert_eq!(
            set("AT%JWT=,,\"sub\","),
            vec![
                Param::Empty,
                Param::Empty,
                Param::Quoted("sub".into()),
                Param::Empty
            ]
        );
        assert_eq!(set("AT+CFUN= 4 ")[0].number(), Some(4));
    }

    #[test]
    fn bad_quoting() {
        assert_eq!(
            parse("AT%CMNG=0,1,0,\"abc"),
            Err(SyntaxError::UnbalancedQuote)
        );
        assert_eq!(
            parse("AT%CMNG=0,1,0,\"abc\"x"),
            Err(SyntaxError::TextAfterQuote)
        );
        assert_eq!(
            parse("AT%CMNG=0,1,0,x\"abc\""),
            Err(SyntaxError::TextAfterQuote)
        );
    }

    #[test]
    fn names_normalise_for_fault_matching() {
        for n in ["KEYGEN", "%KEYGEN", "AT%KEYGEN", "at%keygen"] {
            assert_eq!(normalize_name(n), "KEYGEN");
        }
        assert_eq!(normalize_name("AT"), "AT");
        assert_eq!(normalize_name("ATTESTTOKEN"), "ATTESTTOKEN");
        assert_eq!(normalize_name("AT%ATTESTTOKEN"), "ATTESTTOKEN");
        assert_eq!(normalize_name("+CFUN"), "CFUN");
    }
}
