//! The credential store: `%CMNG` write (0), list (1), read (2), delete (3).
use sha2::{Digest, Sha256};

use super::{malformed, missing};
use crate::at::parse::{Param, params};
use crate::at::{AtError, Command, Deadline, Dialect, Response};

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

/// The longest command line a modem takes: the AT host library's command
/// buffer (`nrf91.md`: 4096 bytes; sdk-nrf grew its AT buffer to 2700
/// bytes for nRF Cloud's concatenated certificates, a hint of scale). A
/// `%CMNG` write longer than this is refused before it is sent: the modem
/// would cut it or answer `ERROR`, and a certificate chain that long must
/// be written in fewer certificates.
pub const MAX_COMMAND_BYTES: usize = 4096;

/// `AT%CMNG=0,<tag>,<type>,"<content>"`: the content verbatim (see the
/// module docs of `crate::modem` for line endings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteCredential {
    sec_tag: u32,
    kind: CredentialType,
    content: String,
}

impl WriteCredential {
    /// Refuses content with a double quote (it would end the parameter),
    /// and a command longer than [`MAX_COMMAND_BYTES`].
    pub fn new(sec_tag: u32, kind: CredentialType, content: &str) -> Result<Self, AtError> {
        if content.contains('"') {
            return Err(AtError::InvalidArgument {
                detail: "credential content must not contain double quotes".into(),
            });
        }
        let write = WriteCredential {
            sec_tag,
            kind,
            content: content.to_string(),
        };
        let length = write.text().len();
        if length > MAX_COMMAND_BYTES {
            return Err(AtError::TooLong {
                what: format!(
                    "%CMNG write of the {} ({} bytes of content) to sec_tag {sec_tag}",
                    kind.words(),
                    content.len()
                ),
                length,
                limit: MAX_COMMAND_BYTES,
            });
        }
        Ok(write)
    }
}

impl Command for WriteCredential {
    type Response = ();
    /// Credential writes go to flash.
    const DEADLINE: Deadline = Deadline::Cmng;

    fn text(&self) -> String {
        format!(
            "AT%CMNG=0,{},{},\"{}\"",
            self.sec_tag,
            self.kind.code(),
            self.content
        )
    }

    fn parse(&self, _: &Response) -> Result<(), AtError> {
        Ok(())
    }
}

/// `AT%CMNG=1[,<tag>]` → one `%CMNG: <tag>,<type>,"<sha>"` line per entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCredentials {
    pub sec_tag: Option<u32>,
}

impl Command for ListCredentials {
    type Response = Vec<CredentialEntry>;
    const DEADLINE: Deadline = Deadline::Cmng;

    fn text(&self) -> String {
        match self.sec_tag {
            Some(t) => format!("AT%CMNG=1,{t}"),
            None => "AT%CMNG=1".to_string(),
        }
    }

    fn parse(&self, r: &Response) -> Result<Vec<CredentialEntry>, AtError> {
        parse_cmng_list(r)
    }
}

/// `AT%CMNG=2,<tag>,<type>` → the entry and its content as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadCredential {
    pub sec_tag: u32,
    pub kind: CredentialType,
}

impl Command for ReadCredential {
    type Response = (CredentialEntry, String);
    const DEADLINE: Deadline = Deadline::Cmng;

    fn text(&self) -> String {
        format!("AT%CMNG=2,{},{}", self.sec_tag, self.kind.code())
    }

    fn parse(&self, r: &Response) -> Result<(CredentialEntry, String), AtError> {
        parse_cmng_read(r)
    }
}

/// `AT%CMNG=3,<tag>,<type>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteCredential {
    pub sec_tag: u32,
    pub kind: CredentialType,
}

impl Command for DeleteCredential {
    type Response = ();
    const DEADLINE: Deadline = Deadline::Cmng;

    fn text(&self) -> String {
        format!("AT%CMNG=3,{},{}", self.sec_tag, self.kind.code())
    }

    fn parse(&self, _: &Response) -> Result<(), AtError> {
        Ok(())
    }
}

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

/// The upper-case SHA-256 that `%CMNG` list reports after a
/// [`WriteCredential`] of `content` in `dialect`.
pub fn expected_sha256(content: &str, dialect: Dialect) -> String {
    let stored = dialect.rules().stored_credential(content);
    hex::encode_upper(Sha256::digest(stored.as_bytes()))
}
