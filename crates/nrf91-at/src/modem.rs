//! Typed nRF91 commands. Each command is a type ([`Command`]) that holds
//! its arguments (checked when it is made), writes its text, names its
//! deadline class and parses its answer; the parsers are plain functions
//! over a [`Response`] next to the command, so they can be tested and
//! fuzzed without a port. [`Modem::send`] (or [`Client::send`]) runs one;
//! [`Modem::identify`] and [`Modem::imei`] are the sequences the station
//! asks for.
//!
//! | file | commands |
//! |---|---|
//! | `identity` | `+CMEE=1`, `+CGSN[=1]`, `+CGMM`, `+CGMR`, `%HWVERSION`, `%XMODEMUUID`, `%DEVICEUUID` |
//! | `cfun` | `+CFUN?`, `+CFUN=` |
//! | `clock` | `+CCLK=` |
//! | `tokens` | `%ATTESTTOKEN`, `%KEYGEN`, `%JWT`, `%CLAIMTOKEN` |
//! | `firmware` | what `+CGMR` says (Nordic's version rule), the firmware each command needs |
//! | `cmng` | `%CMNG` write, list, read, delete |
//!
//! `%CMNG` content and line endings: [`WriteCredential`] sends the content
//! exactly as given (raw dialect: line terminators inside the quotes are
//! part of the command). Nordic's tools rewrite PEM line endings to `\r\n`
//! first; callers that want the same stored bytes (and so the same SHA-256
//! as those tools) use [`pem_crlf`]. The shell dialect cannot carry CR, and
//! the SDK's `at_shell` turns each `\n` of an `AT%CMNG=0` command back into
//! CRLF, so there the modem stores CRLF text; [`expected_sha256`] gives the
//! digest `%CMNG` list will report either way. [`ReadCredential`] returns
//! the content as stored in every dialect (the client undoes the shell's
//! `\n` → `\r\n` output translation).
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::at::parse::{Param, params, segments, split_prefix};
use crate::at::{AtError, Client, Command, CommandTimeouts, Deadline, Dialect, Response};

mod cfun;
mod clock;
mod cmng;
mod firmware;
mod identity;
mod tokens;

pub use cfun::*;
pub use clock::*;
pub use cmng::*;
pub use firmware::*;
pub use identity::*;
pub use tokens::*;

/// Typed nRF91 commands over an AT [`Client`].
pub struct Modem<T> {
    client: Client<T>,
}

fn malformed(line: &str) -> AtError {
    AtError::Malformed {
        line: line.to_string(),
    }
}

fn missing(what: &str) -> AtError {
    AtError::Malformed {
        line: format!("(no {what} line in response)"),
    }
}

/// `Ok(None)` when the modem answered ERROR / +CME ERROR (command absent).
fn optional<R>(r: Result<R, AtError>) -> Result<Option<R>, AtError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(AtError::Error { .. } | AtError::Cme { .. } | AtError::Cms { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn check_quotable(what: &str, value: &str) -> Result<(), AtError> {
    if crate::at::parse::has_quote_or_newline(value) {
        return Err(AtError::InvalidArgument {
            detail: format!("{what} must not contain quotes or line breaks: {value:?}"),
        });
    }
    Ok(())
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Modem<T> {
    pub fn new(client: Client<T>) -> Self {
        Modem { client }
    }

    pub fn client(&mut self) -> &mut Client<T> {
        &mut self.client
    }

    pub fn into_client(self) -> Client<T> {
        self.client
    }

    /// Run one typed command (see [`Client::send`]).
    pub async fn send<C: Command + Sync>(&mut self, cmd: &C) -> Result<C::Response, AtError> {
        self.client.send(cmd).await
    }

    /// The IMEI field as the board printed it ([`parse_imei_field`]):
    /// `AT+CGSN=1`, else bare `AT+CGSN`. Whether it is an IMEI is the
    /// caller's to judge ([`crate::imei::check`]).
    pub async fn imei(&mut self) -> Result<String, AtError> {
        match self.send(&Imei::Quoted).await {
            Ok(imei) => return Ok(imei),
            // Refused, or an answer without the field: ask the bare form.
            Err(
                AtError::Error { .. }
                | AtError::Cme { .. }
                | AtError::Cms { .. }
                | AtError::Malformed { .. },
            ) => {}
            Err(e) => return Err(e),
        }
        self.send(&Imei::Bare).await
    }

    /// Who the board says it is; the commands older firmware lacks
    /// (`%XMODEMUUID`, `%DEVICEUUID`, `%HWVERSION`) are `None` when refused.
    pub async fn identify(&mut self) -> Result<Identity, AtError> {
        let imei = self.imei().await?;
        let model = self.send(&Model).await?;
        let firmware = self.send(&Firmware).await?;
        let firmware_version = parse_firmware_version(&firmware);
        let firmware_uuid = optional(self.send(&FirmwareUuid).await)?;
        let device_uuid = optional(self.send(&DeviceUuid).await)?;
        let hw_version = optional(self.send(&HwVersion).await)?;
        Ok(Identity {
            imei,
            model,
            firmware,
            firmware_version,
            firmware_uuid,
            device_uuid,
            hw_version,
        })
    }
}

/// The deadline of a command typed by hand (`nrf-provd at` without
/// `--timeout`): the class of the typed command of the same name and form,
/// the slowest of a compound line, the general one for any other command.
pub fn deadline_for_text(line: &str, timeouts: &CommandTimeouts) -> Duration {
    let class = |name: &str, set: bool| match name {
        "%ATTESTTOKEN" => AttestToken::DEADLINE,
        "%KEYGEN" => Keygen::DEADLINE,
        "%JWT" => Jwt::DEADLINE,
        "%CLAIMTOKEN" => ClaimToken::DEADLINE,
        // Every %CMNG operation has the class of a write.
        "%CMNG" => WriteCredential::DEADLINE,
        "+CFUN" if set => SetFunctionalMode::DEADLINE,
        _ => Deadline::Command,
    };
    segments(line)
        .iter()
        .map(|s| timeouts.of(class(&s.name, s.set)))
        .max()
        .unwrap_or(timeouts.command)
}

/// Run every response parser on `r` (fuzzing: none may panic).
pub fn fuzz_parsers(r: &Response) {
    let _ = parse_imei(r);
    let _ = Imei::Quoted.parse(r);
    let _ = Model.parse(r);
    let _ = Firmware.parse(r);
    let _ = FirmwareUuid.parse(r);
    let _ = DeviceUuid.parse(r);
    let _ = HwVersion.parse(r);
    let _ = ReadFunctionalMode.parse(r);
    let _ = AttestToken { challenge: None }.parse(r);
    let _ = parse_token(r, "%KEYGEN:");
    let _ = parse_token(r, "%JWT:");
    let _ = ClaimToken {
        sec_tag: 0,
        challenge: None,
    }
    .parse(r);
    let _ = parse_cmng_list(r);
    let _ = parse_cmng_read(r);
    for line in &r.lines {
        let _ = parse_firmware_version(line);
        let _ = split_prefix(line);
    }
}

/// Fuzz body for the `%CMNG` list/read parsers and the other modem answers
/// (`+CGSN`, `%XMODEMUUID`, `+CCLK`): the `cmng` cargo-fuzz target and a
/// proptest call it. The first byte picks the dialect; the rest is what the
/// modem sent, assembled as the client does (framing, echo, final result)
/// for each command, and also taken line by line as a response. Nothing may
/// panic, and whatever parses must hold what the parser promises.
pub fn fuzz_cmng(data: &[u8]) {
    use crate::at::client::{ClientOptions, Exchange, Step};
    use crate::at::codec::{Frame, LineCodec};
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let dialect = if seed & 1 == 0 {
        Dialect::RAW
    } else {
        Dialect::SHELL
    };
    let mut codec = LineCodec::new(ClientOptions::default().max_line);
    let mut buf = BytesMut::from(body);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        frames.push(frame);
    }
    const COMMANDS: &[&str] = &[
        "AT%CMNG=1",
        "AT%CMNG=1,16842753",
        "AT%CMNG=2,16842753,0",
        "AT+CGSN=1",
        "AT%XMODEMUUID",
        "AT+CCLK?",
    ];
    for cmd in COMMANDS {
        let mut exchange = Exchange::new(cmd, dialect);
        for frame in &frames {
            if let Step::Done(result) = exchange.feed(frame.clone()) {
                if let Ok(response) = result {
                    check_answers(&response, dialect);
                }
                exchange = Exchange::new(cmd, dialect);
            }
        }
    }
    let lines = frames
        .into_iter()
        .filter_map(|f| match f {
            Frame::Line(line) => Some(line),
            Frame::Overlong { .. } => None,
        })
        .collect();
    check_answers(&Response { lines }, dialect);
}

/// The promises [`fuzz_cmng`] checks on one response.
fn check_answers(r: &Response, dialect: Dialect) {
    fuzz_parsers(r);
    let check_entry = |e: &CredentialEntry| {
        assert!(
            e.sha256.len() == 64
                && e.sha256
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)),
            "%CMNG digest not 64 upper-case hex digits: {e:?}"
        );
        assert_eq!(CredentialType::from_code(e.kind.code()), e.kind);
        // What was parsed, printed as the modem prints it, parses the same.
        let line = format!("%CMNG: {},{},\"{}\"", e.sec_tag, e.kind.code(), e.sha256);
        let again = parse_cmng_list(&Response { lines: vec![line] });
        assert_eq!(again.ok().as_deref(), Some(std::slice::from_ref(e)));
    };
    if let Ok(entries) = parse_cmng_list(r) {
        entries.iter().for_each(check_entry);
    }
    if let Ok((entry, content)) = parse_cmng_read(r) {
        check_entry(&entry);
        let _ = expected_sha256(&content, dialect);
    }
    if let Ok(imei) = parse_imei(r) {
        assert!(crate::imei::is_valid(&imei));
    }
    let _ = parse_imei_field(r);
    if let Ok(uuid) = parse_uuid(r, "%XMODEMUUID:") {
        let printed = uuid.hyphenated().to_string();
        let again = parse_uuid(
            &Response {
                lines: vec![format!("%XMODEMUUID: {printed}")],
            },
            "%XMODEMUUID:",
        );
        assert_eq!(again.ok(), Some(uuid));
    }
    // `+CCLK: "<time>"` as a modem answers `AT+CCLK?`, and any line as the
    // bare time text: what parses prints back to text that parses the same.
    let quoted = r
        .all_with_prefix("+CCLK:")
        .filter_map(|text| match params(text).as_deref() {
            Some([Param::Str(s)]) => Some(s.clone()),
            _ => None,
        });
    for text in quoted.chain(r.lines.iter().cloned()) {
        if let Some((unix, tz)) = crate::at::cclk::parse(&text) {
            let printed = crate::at::cclk::format(unix, tz);
            assert_eq!(
                crate::at::cclk::parse(&printed),
                Some((unix, tz)),
                "+CCLK {text:?} printed as {printed:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests;
