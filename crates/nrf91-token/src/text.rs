//! Device text is data: what a board says (its identify strings, a JWT's
//! claims, a CSR's subject) is shown to people and programs only in a form
//! that cannot act on them.
//!
//! - [`escape`]: for a terminal or a text log. Control characters (C0, DEL,
//!   C1), which can move the cursor, rewrite a window title (OSC), forge a
//!   log line (CR, LF) or cut a line short (NUL), and the Unicode controls
//!   that reorder what is displayed (bidi embeddings, overrides, isolates)
//!   are written as escapes (`\r`, `\x1b`, `\u{202e}`); a backslash is
//!   doubled, so an escape the device wrote itself cannot pass for one of
//!   ours.
//! - [`csv_cell`]: for a CSV cell a spreadsheet may open. OWASP's
//!   CSV-injection rule: a cell beginning with `=`, `+`, `-`, `@`, tab or CR
//!   is prefixed with `'`, so that it is read as text, not as a formula.
//! - [`first_control`]: where a token's text field holds a control
//!   character (the decoders refuse such a token as malformed).

use std::borrow::Cow;
use std::fmt::{self, Write};

/// Whether `c` must not reach a terminal or a log as itself.
fn needs_escape(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

/// Unicode's explicit directional formatting characters (UAX #9): they
/// reorder the text a person sees ("Trojan Source").
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every control character escaped (see the module docs).
/// Borrowed when there is nothing to escape, which is the usual case.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| needs_escape(c) || c == '\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    // Writing into a String cannot fail.
    let _ = match c {
        '\\' => out.write_str("\\\\"),
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        '\0' => out.write_str("\\0"),
        c if u32::from(c) < 0x80 && needs_escape(c) => write!(out, "\\x{:02x}", u32::from(c)),
        c if needs_escape(c) => write!(out, "\\u{{{:x}}}", u32::from(c)),
        c => out.write_char(c),
    };
}

/// `text`, escaped as [`escape`] does, as a `Display` value (for `format!`
/// and tracing fields without an allocation when nothing needs escaping).
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&escape(self.0))
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The characters that make a spreadsheet read a cell as a formula
/// (OWASP, "CSV Injection").
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `cell` as it may go into a CSV file: prefixed with `'` when it begins
/// with a character that starts a formula.
pub fn csv_cell(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// The first control character in `text` and its position (in
/// characters), if any.
pub fn first_control(text: &str) -> Option<(usize, char)> {
    text.chars().enumerate().find(|(_, c)| c.is_control())
}

/// A character as people read it in an error: `U+001B`.
pub fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_as_is() {
        assert!(matches!(escape("nRF9161-LACA é"), Cow::Borrowed(_)));
        assert!(matches!(csv_cell("nRF9161"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_control_is_escaped_and_backslashes_are_doubled() {
        let hostile = "a\x1b]0;owned\x07b\r\nc\0d\t\u{9b}e\u{202e}f\\x1b\u{7f}";
        assert_eq!(
            escape(hostile),
            "a\\x1b]0;owned\\x07b\\r\\nc\\0d\\t\\u{9b}e\\u{202e}f\\\\x1b\\x7f"
        );
        // Nothing the terminal would act on is left.
        assert!(!escape(hostile).chars().any(needs_escape));
        assert_eq!(Escaped("x\ry").to_string(), "x\\ry");
        assert_eq!(format!("{:<5}|", Escaped("\r")), "\\r   |");
    }

    #[test]
    fn formula_cells_are_neutralised_as_owasp_says() {
        for (cell, shown) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1", "'+1"),
            ("-2", "'-2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(csv_cell(cell), shown, "{cell:?}");
        }
    }

    #[test]
    fn the_first_control_character_is_found() {
        assert_eq!(first_control("abc"), None);
        assert_eq!(first_control("ab\0c"), Some((2, '\0')));
        assert_eq!(first_control("é\u{85}"), Some((1, '\u{85}')));
        assert_eq!(code_point('\u{1b}'), "U+001B");
    }
}
