//! Typed nRF91 commands. Each command's syntax sits next to the parser of
//! its response; the parsers are plain functions over a [`Response`] so they
//! can be tested and fuzzed without a port.
//!
//! `%CMNG` content and line endings: [`Modem::cmng_write`] sends the content
//! exactly as given (raw dialect: line terminators inside the quotes are part
//! of the command). Nordic's tools rewrite PEM line endings to `\r\n` first;
//! callers that want the same stored bytes (and so the same SHA-256 as those
//! tools) use [`pem_crlf`]. The shell dialect cannot carry CR (it is removed,
//! LF is sent as `\n`), and the SDK's `at_shell` turns each `\n` of an
//! `AT%CMNG=0` command back into CRLF, so there the modem stores CRLF text;
//! [`expected_sha256`] gives the digest `%CMNG` list will report either way.
//! [`Modem::cmng_read`] returns the content as stored in both dialects (the
//! client undoes the shell's `\n` → `\r\n` output translation).
use nom::{
    Parser,
    character::complete::{char, digit1},
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::at::parse::{Param, params, split_prefix};
use crate::at::{AtError, Client, Dialect, Response};

/// Who the device says it is (not judged: see the identify step).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// The IMEI field as printed (see [`parse_imei_field`]).
    pub imei: String,
    pub model: String,
    /// `AT+CGMR` as printed, e.g. `mfw_nrf91x1_2.0.1`.
    pub firmware: String,
    pub firmware_version: Option<FirmwareVersion>,
    /// UUID of the firmware build (`%XMODEMUUID`), not of the device.
    pub firmware_uuid: Option<uuid::Uuid>,
    /// `%DEVICEUUID` (nRF91x1 only; `None` on nRF9160).
    pub device_uuid: Option<uuid::Uuid>,
    /// `%HWVERSION`, e.g. `nRF9161 LACA A0A`.
    pub hw_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct FirmwareVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// `+CFUN` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionalMode {
    Off,
    On,
    Offline,
    Other(u8),
}

impl FunctionalMode {
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => FunctionalMode::Off,
            1 => FunctionalMode::On,
            4 => FunctionalMode::Offline,
            n => FunctionalMode::Other(n),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            FunctionalMode::Off => 0,
            FunctionalMode::On => 1,
            FunctionalMode::Offline => 4,
            FunctionalMode::Other(n) => n,
        }
    }

    /// The mode in words, for a record.
    pub fn words(self) -> String {
        match self {
            FunctionalMode::Off => "off".into(),
            FunctionalMode::On => "online".into(),
            FunctionalMode::Offline => "offline".into(),
            FunctionalMode::Other(n) => format!("mode {n}"),
        }
    }

    /// Key generation and credential writes need the modem off or offline.
    pub fn allows_key_operations(self) -> bool {
        matches!(self, FunctionalMode::Off | FunctionalMode::Offline)
    }
}

/// `%KEYGEN` output format (one definition, shared with the token decoder).
pub use crate::token::KeyFormat;

/// `%JWT` parameters; `key: None` signs with the device identity key.
#[derive(Debug, Clone, Default)]
pub struct JwtRequest {
    pub exp_delta: Option<u32>,
    pub subject: Option<String>,
    pub audience: Option<String>,
    /// `(sec_tag, key_type)`.
    pub key: Option<(u32, u8)>,
}

/// `%CMNG` credential types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum CredentialType {
    RootCa,
    ClientCert,
    ClientKey,
    Psk,
    PskIdentity,
    PublicKey,
    DeviceIdentityPublicKey,
    Reserved,
    EndorsementKey,
    OwnershipKey,
    NordicIdentityRootCa,
    NordicPublicKey,
    /// A type this code does not know (newer firmware); kept, not rejected.
    Other(u8),
}

impl CredentialType {
    /// The type in words, for a record.
    pub fn words(self) -> &'static str {
        use CredentialType::*;
        match self {
            RootCa => "root CA certificate",
            ClientCert => "client certificate",
            ClientKey => "client private key",
            Psk => "PSK",
            PskIdentity => "PSK identity",
            PublicKey => "public key",
            DeviceIdentityPublicKey => "device identity public key",
            Reserved => "reserved",
            EndorsementKey => "endorsement key",
            OwnershipKey => "ownership key",
            NordicIdentityRootCa => "Nordic identity root CA",
            NordicPublicKey => "Nordic public key",
            Other(_) => "credential of an unknown type",
        }
    }

    pub fn from_code(code: u8) -> Self {
        use CredentialType::*;
        match code {
            0 => RootCa,
            1 => ClientCert,
            2 => ClientKey,
            3 => Psk,
            4 => PskIdentity,
            5 => PublicKey,
            6 => DeviceIdentityPublicKey,
            7 => Reserved,
            8 => EndorsementKey,
            9 => OwnershipKey,
            10 => NordicIdentityRootCa,
            11 => NordicPublicKey,
            n => Other(n),
        }
    }

    pub fn code(self) -> u8 {
        use CredentialType::*;
        match self {
            RootCa => 0,
            ClientCert => 1,
            ClientKey => 2,
            Psk => 3,
            PskIdentity => 4,
            PublicKey => 5,
            DeviceIdentityPublicKey => 6,
            Reserved => 7,
            EndorsementKey => 8,
            OwnershipKey => 9,
            NordicIdentityRootCa => 10,
            NordicPublicKey => 11,
            Other(n) => n,
        }
    }
}

/// One `%CMNG` list entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CredentialEntry {
    pub sec_tag: u32,
    pub kind: CredentialType,
    /// SHA-256 of the stored content, upper-case hex.
    pub sha256: String,
}

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

// ---- identity --------------------------------------------------------------

/// The IMEI field exactly as the modem printed it: the quoted value of
/// `AT+CGSN=1`'s `+CGSN: "<imei>"`, or `AT+CGSN`'s whole bare line. Not
/// judged here: whether it is an IMEI is [`crate::imei::check`]'s question
/// (the identify step fails `imei` when it is not); digits found inside
/// other text are never taken for one.
pub fn parse_imei_field(r: &Response) -> Result<String, AtError> {
    if let Some(text) = r.first_with_prefix("+CGSN:") {
        return match params(text).as_deref() {
            Some([Param::Str(s) | Param::Text(s)]) => Ok(s.clone()),
            Some([Param::Int(_)]) => Ok(text.to_string()),
            _ => Err(malformed(text)),
        };
    }
    r.bare_lines()
        .next()
        .map(str::to_string)
        .ok_or_else(|| missing("IMEI"))
}

/// `AT+CGSN=1` → `+CGSN: "<imei>"`; bare `AT+CGSN` → `<imei>`: an IMEI (15
/// digits, Luhn), else the answer is malformed.
pub fn parse_imei(r: &Response) -> Result<String, AtError> {
    let field = parse_imei_field(r)?;
    crate::imei::check(&field).map_err(|_| malformed(&field))?;
    Ok(field)
}

/// `AT+CGMM` / `AT+CGMR` → one bare line.
pub fn parse_bare(r: &Response, what: &str) -> Result<String, AtError> {
    r.bare_lines()
        .next()
        .map(str::to_string)
        .ok_or_else(|| missing(what))
}

/// First `x.y.z` in an `AT+CGMR` answer such as `mfw_nrf91x1_2.0.1`.
pub fn parse_firmware_version(text: &str) -> Option<FirmwareVersion> {
    let num = |s: &str| s.parse::<u32>().ok();
    let bytes = text.as_bytes();
    for (i, _) in text.char_indices() {
        let starts_number = bytes.get(i).is_some_and(u8::is_ascii_digit)
            && (i == 0
                || !bytes
                    .get(i - 1)
                    .is_some_and(|b| b.is_ascii_digit() || *b == b'.'));
        if !starts_number {
            continue;
        }
        let Some(rest) = text.get(i..) else { continue };
        let parsed: nom::IResult<&str, _> =
            (digit1, char('.'), digit1, char('.'), digit1).parse(rest);
        if let Ok((_, (a, _, b, _, c))) = parsed
            && let (Some(major), Some(minor), Some(patch)) = (num(a), num(b), num(c))
        {
            return Some(FirmwareVersion {
                major,
                minor,
                patch,
            });
        }
    }
    None
}

/// `AT%XMODEMUUID` → `%XMODEMUUID: <uuid>`; `AT%DEVICEUUID` likewise.
pub fn parse_uuid(r: &Response, prefix: &str) -> Result<uuid::Uuid, AtError> {
    let text = r.first_with_prefix(prefix).ok_or_else(|| missing(prefix))?;
    uuid::Uuid::parse_str(text.trim_matches('"')).map_err(|_| malformed(text))
}

/// `AT%HWVERSION` → `%HWVERSION: nRF9161 LACA A0A`.
pub fn parse_hw_version(r: &Response) -> Result<String, AtError> {
    r.first_with_prefix("%HWVERSION:")
        .map(|s| s.trim_matches('"').to_string())
        .ok_or_else(|| missing("%HWVERSION"))
}

// ---- functional mode -------------------------------------------------------

/// `AT+CFUN?` → `+CFUN: <mode>`.
pub fn parse_cfun(r: &Response) -> Result<FunctionalMode, AtError> {
    let text = r
        .first_with_prefix("+CFUN:")
        .ok_or_else(|| missing("+CFUN"))?;
    let mode = params(text)
        .and_then(|p| p.first().and_then(Param::as_int))
        .and_then(|n| u8::try_from(n).ok())
        .ok_or_else(|| malformed(text))?;
    Ok(FunctionalMode::from_code(mode))
}

// ---- tokens ----------------------------------------------------------------

/// The quoted token of `%ATTESTTOKEN: "<b64>.<b64>"`, `%KEYGEN: "…"` or
/// `%JWT: "…"`: base64url parts joined by dots. Which kind of token it is
/// is not judged here: the caller decodes it and checks the kind its
/// command must return (a keygen token under `%ATTESTTOKEN:` must fail as
/// the wrong kind, not as a garbled line that is retried).
pub fn parse_token(r: &Response, prefix: &str) -> Result<String, AtError> {
    let text = r.first_with_prefix(prefix).ok_or_else(|| missing(prefix))?;
    let token = match params(text).as_deref() {
        Some([Param::Str(s)]) => s.clone(),
        _ => return Err(malformed(text)),
    };
    let charset_ok = token
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '='));
    if !charset_ok || !token.contains('.') || token.split('.').any(str::is_empty) {
        return Err(malformed(text));
    }
    Ok(token)
}

// ---- credential store ------------------------------------------------------

fn entry_from(params: &[Param]) -> Option<CredentialEntry> {
    let sec_tag = u32::try_from(params.first()?.as_int()?).ok()?;
    let kind = CredentialType::from_code(u8::try_from(params.get(1)?.as_int()?).ok()?);
    let sha = match params.get(2)? {
        Param::Str(s) | Param::Text(s) => s.to_ascii_uppercase(),
        _ => return None,
    };
    let hex_ok = sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit());
    hex_ok.then_some(CredentialEntry {
        sec_tag,
        kind,
        sha256: sha,
    })
}

/// `AT%CMNG=1[,<tag>]` → one `%CMNG: <tag>,<type>,"<sha>"` line per entry.
pub fn parse_cmng_list(r: &Response) -> Result<Vec<CredentialEntry>, AtError> {
    r.all_with_prefix("%CMNG:")
        .map(|text| {
            params(text)
                .and_then(|p| entry_from(&p))
                .ok_or_else(|| malformed(text))
        })
        .collect()
}

/// `AT%CMNG=2,<tag>,<type>` → `%CMNG: <tag>,<type>,"<sha>","<content>"`,
/// the content possibly spanning lines (kept verbatim, terminators included).
pub fn parse_cmng_read(r: &Response) -> Result<(CredentialEntry, String), AtError> {
    let text = r
        .first_with_prefix("%CMNG:")
        .ok_or_else(|| missing("%CMNG"))?;
    let p = params(text).ok_or_else(|| malformed(text))?;
    let entry = entry_from(&p).ok_or_else(|| malformed(text))?;
    let content = match p.get(3) {
        Some(Param::Str(s)) => s.clone(),
        _ => return Err(malformed(text)),
    };
    Ok((entry, content))
}

/// PEM (or any text) with every line ending rewritten to `\r\n`, as Nordic's
/// tools store certificates.
pub fn pem_crlf(content: &str) -> String {
    let mut out = String::with_capacity(content.len() + content.len() / 32);
    for line in content.lines() {
        out.push_str(line);
        out.push_str("\r\n");
    }
    if !content.ends_with('\n') && out.ends_with("\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

/// The upper-case SHA-256 that `%CMNG` list reports after
/// [`Modem::cmng_write`] of `content` in `dialect`.
pub fn expected_sha256(content: &str, dialect: Dialect) -> String {
    let stored = dialect.rules().stored_credential(content);
    hex::encode_upper(Sha256::digest(stored.as_bytes()))
}

/// `AT+CCLK="yy/MM/dd,hh:mm:ss+zz"` (see [`crate::at::cclk`]; always UTC here).
pub fn cclk_command(utc: time::OffsetDateTime) -> String {
    format!(
        "AT+CCLK=\"{}\"",
        crate::at::cclk::format(utc.unix_timestamp(), 0)
    )
}

/// `AT%KEYGEN=<tag>,2,<format>[,"<attributes>"[,"<key_usage>"]]`; an absent
/// attributes field before a key usage is left empty.
pub fn keygen_command(
    sec_tag: u32,
    format: KeyFormat,
    attributes: Option<&str>,
    key_usage: Option<&str>,
) -> Result<String, AtError> {
    let mut cmd = format!("AT%KEYGEN={sec_tag},2,{}", format.code());
    if let Some(a) = attributes {
        check_quotable("attributes", a)?;
    }
    match (attributes, key_usage) {
        (None, None) => {}
        (Some(a), None) => cmd.push_str(&format!(",\"{a}\"")),
        (a, Some(u)) => {
            check_quotable("key usage", u)?;
            if u.len() != 9 || !u.chars().all(|c| c == '0' || c == '1') {
                return Err(AtError::InvalidArgument {
                    detail: format!("key usage must be 9 characters of 0/1: {u:?}"),
                });
            }
            match a {
                Some(a) => cmd.push_str(&format!(",\"{a}\",\"{u}\"")),
                None => cmd.push_str(&format!(",,\"{u}\"")),
            }
        }
    }
    Ok(cmd)
}

/// `AT%JWT=0,<exp_delta>,"<sub>","<aud>"[,<sec_tag>,<key_type>]`, the form
/// the nRF Connect SDK's modem_jwt library sends (0 and "" when absent).
pub fn jwt_command(req: &JwtRequest) -> Result<String, AtError> {
    let sub = req.subject.as_deref().unwrap_or("");
    let aud = req.audience.as_deref().unwrap_or("");
    check_quotable("subject", sub)?;
    check_quotable("audience", aud)?;
    let mut cmd = format!(
        "AT%JWT=0,{},\"{sub}\",\"{aud}\"",
        req.exp_delta.unwrap_or(0)
    );
    if let Some((tag, key_type)) = req.key {
        cmd.push_str(&format!(",{tag},{key_type}"));
    }
    Ok(cmd)
}

/// `AT%ATTESTTOKEN` or `AT%ATTESTTOKEN="<32 lowercase hex>"`.
pub fn attest_command(challenge: Option<[u8; 16]>) -> String {
    match challenge {
        Some(c) => format!("AT%ATTESTTOKEN=\"{}\"", hex::encode(c)),
        None => "AT%ATTESTTOKEN".to_string(),
    }
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

    /// `AT+CMEE=1`: numeric `+CME ERROR` codes.
    pub async fn enable_cmee(&mut self) -> Result<(), AtError> {
        self.client.command("AT+CMEE=1").await.map(drop)
    }

    /// The IMEI field as the board printed it ([`parse_imei_field`]):
    /// `AT+CGSN=1`, else bare `AT+CGSN`. Whether it is an IMEI is the
    /// caller's to judge ([`crate::imei::check`]).
    pub async fn imei(&mut self) -> Result<String, AtError> {
        let quoted = optional(self.client.command("AT+CGSN=1").await)?;
        if let Some(Ok(imei)) = quoted.as_ref().map(parse_imei_field) {
            return Ok(imei);
        }
        parse_imei_field(&self.client.command("AT+CGSN").await?)
    }

    pub async fn identify(&mut self) -> Result<Identity, AtError> {
        let imei = self.imei().await?;
        let model = parse_bare(&self.client.command("AT+CGMM").await?, "model")?;
        let firmware = parse_bare(&self.client.command("AT+CGMR").await?, "firmware")?;
        let firmware_version = parse_firmware_version(&firmware);
        let firmware_uuid = optional(self.client.command("AT%XMODEMUUID").await)?
            .map(|r| parse_uuid(&r, "%XMODEMUUID:"))
            .transpose()?;
        let device_uuid = optional(self.client.command("AT%DEVICEUUID").await)?
            .map(|r| parse_uuid(&r, "%DEVICEUUID:"))
            .transpose()?;
        let hw_version = optional(self.client.command("AT%HWVERSION").await)?
            .map(|r| parse_hw_version(&r))
            .transpose()?;
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

    pub async fn functional_mode(&mut self) -> Result<FunctionalMode, AtError> {
        parse_cfun(&self.client.command("AT+CFUN?").await?)
    }

    /// `AT+CFUN=<mode>`.
    pub async fn set_functional_mode(&mut self, mode: FunctionalMode) -> Result<(), AtError> {
        let cmd = format!("AT+CFUN={}", mode.code());
        self.client.command(&cmd).await.map(drop)
    }

    /// Identity attestation token, `"<b64url>.<b64url>"` without quotes.
    pub async fn attest(&mut self, challenge: Option<[u8; 16]>) -> Result<String, AtError> {
        let r = self.client.command(&attest_command(challenge)).await?;
        parse_token(&r, "%ATTESTTOKEN:")
    }

    /// Generate a client private key (type 2) in `sec_tag`; returns the
    /// `%KEYGEN` token `"<b64url DER>.<b64url COSE>"`.
    pub async fn keygen(
        &mut self,
        sec_tag: u32,
        format: KeyFormat,
        attributes: Option<&str>,
        key_usage: Option<&str>,
    ) -> Result<String, AtError> {
        let cmd = keygen_command(sec_tag, format, attributes, key_usage)?;
        parse_token(&self.client.command(&cmd).await?, "%KEYGEN:")
    }

    pub async fn jwt(&mut self, req: &JwtRequest) -> Result<String, AtError> {
        let cmd = jwt_command(req)?;
        parse_token(&self.client.command(&cmd).await?, "%JWT:")
    }

    /// `AT%CMNG=0,<tag>,<type>,"<content>"` (content verbatim; see module docs).
    pub async fn cmng_write(
        &mut self,
        sec_tag: u32,
        kind: CredentialType,
        content: &str,
    ) -> Result<(), AtError> {
        if content.contains('"') {
            return Err(AtError::InvalidArgument {
                detail: "credential content must not contain double quotes".into(),
            });
        }
        let cmd = format!("AT%CMNG=0,{sec_tag},{},\"{content}\"", kind.code());
        self.client.command(&cmd).await.map(drop)
    }

    /// `AT%CMNG=1[,<tag>]`.
    pub async fn cmng_list(
        &mut self,
        sec_tag: Option<u32>,
    ) -> Result<Vec<CredentialEntry>, AtError> {
        let cmd = match sec_tag {
            Some(t) => format!("AT%CMNG=1,{t}"),
            None => "AT%CMNG=1".to_string(),
        };
        parse_cmng_list(&self.client.command(&cmd).await?)
    }

    /// `AT%CMNG=2,<tag>,<type>`: the entry and its content as stored.
    pub async fn cmng_read(
        &mut self,
        sec_tag: u32,
        kind: CredentialType,
    ) -> Result<(CredentialEntry, String), AtError> {
        let cmd = format!("AT%CMNG=2,{sec_tag},{}", kind.code());
        parse_cmng_read(&self.client.command(&cmd).await?)
    }

    /// `AT%CMNG=3,<tag>,<type>`.
    pub async fn cmng_delete(&mut self, sec_tag: u32, kind: CredentialType) -> Result<(), AtError> {
        let cmd = format!("AT%CMNG=3,{sec_tag},{}", kind.code());
        self.client.command(&cmd).await.map(drop)
    }

    /// Set the modem clock (needed for JWT `iat`/`exp`).
    pub async fn set_clock(&mut self, utc: time::OffsetDateTime) -> Result<(), AtError> {
        self.client.command(&cclk_command(utc)).await.map(drop)
    }
}

/// Run every response parser on `r` (fuzzing: none may panic).
pub fn fuzz_parsers(r: &Response) {
    let _ = parse_imei(r);
    let _ = parse_bare(r, "x");
    let _ = parse_uuid(r, "%XMODEMUUID:");
    let _ = parse_hw_version(r);
    let _ = parse_cfun(r);
    let _ = parse_token(r, "%ATTESTTOKEN:");
    let _ = parse_token(r, "%JWT:");
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
mod tests {
    use super::*;

    fn resp(lines: &[&str]) -> Response {
        Response {
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn firmware_versions() {
        let v = |a, b, c| {
            Some(FirmwareVersion {
                major: a,
                minor: b,
                patch: c,
            })
        };
        assert_eq!(parse_firmware_version("mfw_nrf91x1_2.0.1"), v(2, 0, 1));
        assert_eq!(parse_firmware_version("mfw_nrf9160_1.3.5-FOTA"), v(1, 3, 5));
        assert_eq!(parse_firmware_version("mfw_nrf9160_1.3"), None);
        assert_eq!(parse_firmware_version("x1.2.3.4"), v(1, 2, 3));
        assert_eq!(parse_firmware_version("99999999999.1.1 0.0.7"), v(0, 0, 7));
        assert!(v(1, 3, 2) > v(1, 3, 0));
    }

    #[test]
    fn imei_forms() {
        assert_eq!(
            parse_imei(&resp(&["+CGSN: \"352656100367872\""])).unwrap(),
            "352656100367872"
        );
        assert_eq!(
            parse_imei(&resp(&["352656100367872"])).unwrap(),
            "352656100367872"
        );
        for not_an_imei in [
            "12345",
            "imei 352656100367872",
            "352656100367873",
            "+CGSN: \"000000000000001\"",
        ] {
            assert!(
                matches!(
                    parse_imei(&resp(&[not_an_imei])),
                    Err(AtError::Malformed { .. })
                ),
                "{not_an_imei}"
            );
        }
        // The field as printed, for the identify step to judge.
        assert_eq!(
            parse_imei_field(&resp(&["+CGSN: \"junk352656100367872\""])).unwrap(),
            "junk352656100367872"
        );
        assert_eq!(parse_imei_field(&resp(&["12345"])).unwrap(), "12345");
        assert!(parse_imei(&resp(&[])).is_err());
    }

    #[test]
    fn cmng_list_and_read() {
        let sha = "2C43952EE9E000FF2ACC4E2ED0897C0A72AD5FA72C3D934E81741CBD54F05BD1";
        let list = parse_cmng_list(&resp(&[
            &format!("%CMNG: 16842753,0,\"{sha}\""),
            &format!("%CMNG: 4294967292,12,\"{}\"", sha.to_lowercase()),
        ]))
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].kind, CredentialType::RootCa);
        assert_eq!(list[1].sec_tag, 4294967292);
        assert_eq!(list[1].kind, CredentialType::Other(12));
        assert_eq!(list[1].sha256, sha);
        assert!(parse_cmng_list(&resp(&["%CMNG: 1,0,\"nothex\""])).is_err());
        assert_eq!(parse_cmng_list(&resp(&[])).unwrap(), vec![]);

        let pem = "-----BEGIN CERTIFICATE-----\r\nMIIB\r\n-----END CERTIFICATE-----\r\n";
        let (e, content) =
            parse_cmng_read(&resp(&[&format!("%CMNG: 7,1,\"{sha}\",\"{pem}\"")])).unwrap();
        assert_eq!(e.kind, CredentialType::ClientCert);
        assert_eq!(content, pem);
    }

    #[test]
    fn tokens() {
        assert_eq!(
            parse_token(&resp(&["%ATTESTTOKEN: \"2dn3.0oRD\""]), "%ATTESTTOKEN:").unwrap(),
            "2dn3.0oRD"
        );
        for bad in [
            "%ATTESTTOKEN: 2dn3.0oRD",
            "%ATTESTTOKEN: \"nodot\"",
            "%ATTESTTOKEN: \"a b.c\"",
            "%ATTESTTOKEN: \".x\"",
        ] {
            assert!(
                parse_token(&resp(&[bad]), "%ATTESTTOKEN:").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn command_syntax() {
        assert_eq!(attest_command(None), "AT%ATTESTTOKEN");
        assert_eq!(
            attest_command(Some([0xab; 16])),
            "AT%ATTESTTOKEN=\"abababababababababababababababab\""
        );
        assert_eq!(
            keygen_command(16842753, KeyFormat::Csr, Some("CN=x"), None).unwrap(),
            "AT%KEYGEN=16842753,2,0,\"CN=x\""
        );
        assert_eq!(
            keygen_command(1, KeyFormat::PublicKey, None, Some("101010000")).unwrap(),
            "AT%KEYGEN=1,2,1,,\"101010000\""
        );
        assert!(keygen_command(1, KeyFormat::Csr, Some("CN=\"x"), None).is_err());
        assert!(keygen_command(1, KeyFormat::Csr, None, Some("12")).is_err());
        assert_eq!(
            jwt_command(&JwtRequest::default()).unwrap(),
            "AT%JWT=0,0,\"\",\"\""
        );
        assert_eq!(
            jwt_command(&JwtRequest {
                exp_delta: Some(600),
                subject: Some("s".into()),
                audience: None,
                key: Some((5, 2)),
            })
            .unwrap(),
            "AT%JWT=0,600,\"s\",\"\",5,2"
        );
        let t = time::macros::datetime!(2024-03-05 23:59:07 +01:00);
        assert_eq!(cclk_command(t), "AT+CCLK=\"24/03/05,22:59:07+00\"");
    }

    #[test]
    fn pem_line_endings_and_digest() {
        assert_eq!(pem_crlf("a\nb\n"), "a\r\nb\r\n");
        assert_eq!(pem_crlf("a\r\nb"), "a\r\nb");
        assert_eq!(
            expected_sha256("a\nb", Dialect::SHELL),
            expected_sha256("a\r\nb", Dialect::RAW)
        );
        assert_eq!(
            expected_sha256("a\r\nb", Dialect::SHELL),
            expected_sha256("a\r\nb", Dialect::RAW)
        );
        assert_eq!(expected_sha256("", Dialect::RAW).len(), 64);
    }

    #[test]
    fn cfun_and_uuid() {
        assert_eq!(
            parse_cfun(&resp(&["+CFUN: 4"])).unwrap(),
            FunctionalMode::Offline
        );
        assert_eq!(
            parse_cfun(&resp(&["+CFUN: 2"])).unwrap(),
            FunctionalMode::Other(2)
        );
        assert!(parse_cfun(&resp(&["+CFUN: 400"])).is_err());
        let u = parse_uuid(
            &resp(&["%XMODEMUUID: 25c95751-efa4-40d4-8b4a-1dcaab81fac9"]),
            "%XMODEMUUID:",
        )
        .unwrap();
        assert_eq!(u.to_string(), "25c95751-efa4-40d4-8b4a-1dcaab81fac9");
        assert_eq!(
            parse_hw_version(&resp(&["%HWVERSION: nRF9161 LACA A0A"])).unwrap(),
            "nRF9161 LACA A0A"
        );
    }
}
