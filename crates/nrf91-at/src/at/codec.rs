//! Line framing for AT traffic (`tokio_util::codec`).
//!
//! Incoming lines end in `\r\n`, `\n`, `\r` (or a stray NUL); empty lines are
//! dropped. A line terminator inside double quotes belongs to the line when
//! the line is a structured response (`+X:`, `%X:`, `#X:`) or a command echo
//! (`AT...`): that is how a `%CMNG` read returns a multi-line PEM. A line
//! longer than `max_line` is skipped up to the next terminator and reported as
//! [`Frame::Overlong`], never as an error (Framed ends the stream after one).
//! ANSI escape sequences, other control characters and the prompts of every
//! registered dialect (the shell's `uart:~$ `) are removed from every line:
//! none of them can occur in a raw AT response, so doing it whatever the
//! dialect costs nothing and makes dialect detection simpler.
use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use super::Dialect;
use crate::serial::LineEnding;

/// One decoded item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A non-empty line, cleaned, without its terminator.
    Line(String),
    /// A line of `length` bytes (terminator excluded) exceeded the maximum
    /// and was dropped.
    Overlong { length: usize },
}

/// Decoder state for the line at the front of the buffer.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_line: usize,
    /// Bytes of the current line already examined.
    scanned: usize,
    in_quote: bool,
    /// Whether quotes are tracked for the current line (decided at its first `"`).
    structured: Option<bool>,
    /// `Some(n)` while skipping an overlong line of `n` bytes so far.
    discarding: Option<usize>,
}

impl LineCodec {
    pub fn new(max_line: usize) -> Self {
        LineCodec {
            max_line: max_line.max(1),
            scanned: 0,
            in_quote: false,
            structured: None,
            discarding: None,
        }
    }

    /// Forget any partial line (after the caller cleared the buffer).
    pub fn reset(&mut self) {
        self.scanned = 0;
        self.in_quote = false;
        self.structured = None;
        self.discarding = None;
    }

    fn start_line(&mut self) {
        self.scanned = 0;
        self.in_quote = false;
        self.structured = None;
    }
}

fn is_terminator(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | 0)
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        loop {
            if let Some(skipped) = self.discarding {
                match buf.iter().position(|&b| is_terminator(b)) {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.discarding = None;
                        self.start_line();
                        return Ok(Some(Frame::Overlong {
                            length: skipped.saturating_add(i),
                        }));
                    }
                    None => {
                        self.discarding = Some(skipped.saturating_add(buf.len()));
                        buf.clear();
                        return Ok(None);
                    }
                }
            }
            let mut end = None;
            let mut too_long = false;
            let mut i = self.scanned;
            while i < buf.len() {
                let b = buf[i];
                if is_terminator(b) && !self.in_quote {
                    end = Some(i);
                    break;
                }
                if i >= self.max_line {
                    too_long = true;
                    break;
                }
                if b == b'"' {
                    if self.in_quote {
                        self.in_quote = false;
                    } else {
                        let structured = *self
                            .structured
                            .get_or_insert_with(|| is_structured(&buf[..i]));
                        self.in_quote = structured;
                    }
                }
                i += 1;
            }
            match end {
                Some(end) => {
                    let raw = buf.split_to(end + 1);
                    self.start_line();
                    let line = clean_line(&raw[..end]);
                    if !line.is_empty() {
                        return Ok(Some(Frame::Line(line)));
                    }
                    // Empty line (e.g. the `\n` of `\r\n`): look for the next.
                }
                None if too_long => {
                    buf.advance(i);
                    self.discarding = Some(i);
                }
                None => {
                    self.scanned = i;
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if let Some(skipped) = self.discarding.take() {
            buf.clear();
            self.start_line();
            return Ok(Some(Frame::Overlong { length: skipped }));
        }
        // An unterminated last line (e.g. `OK` without CRLF before EOF).
        let raw = buf.split();
        self.start_line();
        let line = clean_line(&raw);
        Ok((!line.is_empty()).then_some(Frame::Line(line)))
    }
}

/// Does the line that starts with `prefix` carry quoted parameters whose
/// quotes may enclose line terminators?
fn is_structured(prefix: &[u8]) -> bool {
    let text = clean_line(prefix);
    let t = text.as_bytes();
    matches!(t.first(), Some(b'+' | b'%' | b'#'))
        || t.get(..2).is_some_and(|p| p.eq_ignore_ascii_case(b"AT"))
}

/// Bytes → text: lossy UTF-8, ANSI sequences and control characters other
/// than tab/CR/LF removed, leading prompts removed, outer whitespace
/// trimmed.
pub fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let stripped = strip_ansi(&text);
    super::dialect::strip_prompts(stripped.trim())
        .trim_end()
        .to_string()
}

/// Remove CSI (`ESC [ … final`), OSC (`ESC ] … BEL|ESC \`) and two-byte
/// escape sequences, and C0 controls except tab, CR and LF.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates, then one final byte.
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\t' | '\r' | '\n' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The bytes to write for `cmd` in `dialect`, line ending included.
pub fn frame_command(cmd: &str, dialect: Dialect, ending: LineEnding) -> Vec<u8> {
    let mut out = dialect.rules().frame(cmd).into_bytes();
    out.extend_from_slice(ending.bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut LineCodec, input: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            out.push(f);
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.to_string())
    }

    #[test]
    fn terminators_and_empty_lines() {
        let mut c = LineCodec::new(64);
        assert_eq!(
            decode_all(&mut c, b"a\r\nb\nc\r\r\n\nd\0e"),
            vec![line("a"), line("b"), line("c"), line("d")]
        );
    }

    #[test]
    fn quoted_terminators_in_structured_lines_stay() {
        let mut c = LineCodec::new(256);
        let input = b"%CMNG: 1,0,\"AB\",\"-----BEGIN\r\nxyz\n-----END\"\r\nOK\r\n";
        assert_eq!(
            decode_all(&mut c, input),
            vec![
                line("%CMNG: 1,0,\"AB\",\"-----BEGIN\r\nxyz\n-----END\""),
                line("OK")
            ]
        );
    }

    #[test]
    fn unstructured_line_quotes_are_ignored() {
        let mut c = LineCodec::new(256);
        assert_eq!(
            decode_all(&mut c, b"noise \" here\r\nOK\r\n"),
            vec![line("noise \" here"), line("OK")]
        );
    }

    #[test]
    fn overlong_line_is_an_item_then_resync() {
        let mut c = LineCodec::new(8);
        let mut buf = BytesMut::from(&b"0123456789abcdef"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"XYZ\r\nOK\r\n");
        assert_eq!(
            c.decode(&mut buf).unwrap(),
            Some(Frame::Overlong { length: 19 })
        );
        assert_eq!(c.decode(&mut buf).unwrap(), Some(line("OK")));
    }

    #[test]
    fn line_of_exactly_max_is_fine() {
        let mut c = LineCodec::new(4);
        assert_eq!(
            decode_all(&mut c, b"abcd\r\nabcde\r\n"),
            vec![line("abcd"), Frame::Overlong { length: 5 }]
        );
    }

    #[test]
    fn eof_flushes_partial_line() {
        let mut c = LineCodec::new(64);
        let mut buf = BytesMut::from(&b"OK"[..]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert_eq!(c.decode_eof(&mut buf).unwrap(), Some(line("OK")));
        assert_eq!(c.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn ansi_and_prompts_removed() {
        assert_eq!(
            clean_line(b"\x1b[1;32muart:~$ \x1b[mat 'AT+CGSN'"),
            "at 'AT+CGSN'"
        );
        assert_eq!(clean_line(b"uart:~$ uart:~$ "), "");
        assert_eq!(clean_line(b"\x1b]0;title\x07OK\x08"), "OK");
        assert_eq!(clean_line(b"http://x:~$ y"), "http://x:~$ y");
    }

    #[test]
    fn framing_per_dialect() {
        assert_eq!(
            frame_command("AT+CGSN", Dialect::SHELL, LineEnding::Crlf),
            b"at 'AT+CGSN'\r\n".to_vec()
        );
        assert_eq!(
            frame_command("AT", Dialect::RAW, LineEnding::Nul),
            b"AT\0".to_vec()
        );
    }
}
