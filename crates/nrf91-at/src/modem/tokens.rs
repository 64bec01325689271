//! The commands that answer a signed token: `%ATTESTTOKEN`, `%KEYGEN`,
//! `%JWT`, `%CLAIMTOKEN`. What a token says is `crate::token`'s to decode and judge.
use super::{check_quotable, malformed, missing};
use crate::at::parse::{Param, params};
use crate::at::{AtError, Command, Deadline, Response};

/// `%KEYGEN` output format (one definition, shared with the token decoder).
pub use crate::token::KeyFormat;

/// `AT%ATTESTTOKEN` or `AT%ATTESTTOKEN="<32 lowercase hex>"`: the identity
/// attestation token, whose nonce is the challenge when one is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttestToken {
    pub challenge: Option<[u8; 16]>,
}

impl Command for AttestToken {
    /// `"<b64url>.<b64url>"` without quotes.
    type Response = String;
    const DEADLINE: Deadline = Deadline::Attest;

    fn text(&self) -> String {
        match self.challenge {
            Some(c) => format!("AT%ATTESTTOKEN=\"{}\"", hex::encode(c)),
            None => "AT%ATTESTTOKEN".to_string(),
        }
    }

    fn parse(&self, r: &Response) -> Result<String, AtError> {
        parse_token(r, "%ATTESTTOKEN:")
    }
}

/// `AT%KEYGEN=<tag>,2,<format>[,"<attributes>"[,"<key_usage>"]]`: a client
/// private key (type 2) made in `sec_tag`; answers the `%KEYGEN` token
/// `"<b64url DER>.<b64url COSE>"`. An absent attributes field before a key
/// usage is left empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keygen {
    sec_tag: u32,
    format: KeyFormat,
    attributes: Option<String>,
    key_usage: Option<String>,
}

impl Keygen {
    /// Refuses attributes or a key usage that cannot be quoted, and a key
    /// usage that is not 9 characters of `0`/`1`.
    pub fn new(
        sec_tag: u32,
        format: KeyFormat,
        attributes: Option<&str>,
        key_usage: Option<&str>,
    ) -> Result<Self, AtError> {
        if let Some(a) = attributes {
            check_quotable("attributes", a)?;
        }
        if let Some(u) = key_usage {
            check_quotable("key usage", u)?;
            if u.len() != 9 || !u.chars().all(|c| c == '0' || c == '1') {
                return Err(AtError::InvalidArgument {
                    detail: format!("key usage must be 9 characters of 0/1: {u:?}"),
                });
            }
        }
        Ok(Keygen {
            sec_tag,
            format,
            attributes: attributes.map(str::to_string),
            key_usage: key_usage.map(str::to_string),
        })
    }
}

impl Command for Keygen {
    type Response = String;
    const DEADLINE: Deadline = Deadline::Keygen;

    fn text(&self) -> String {
        let mut cmd = format!("AT%KEYGEN={},2,{}", self.sec_tag, self.format.code());
        match (&self.attributes, &self.key_usage) {
            (None, None) => {}
            (Some(a), None) => cmd.push_str(&format!(",\"{a}\"")),
            (Some(a), Some(u)) => cmd.push_str(&format!(",\"{a}\",\"{u}\"")),
            (None, Some(u)) => cmd.push_str(&format!(",,\"{u}\"")),
        }
        cmd
    }

    fn parse(&self, r: &Response) -> Result<String, AtError> {
        parse_token(r, "%KEYGEN:")
    }
}

/// `%JWT` parameters; `key: None` signs with the device identity key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtRequest {
    pub exp_delta: Option<u32>,
    pub subject: Option<String>,
    pub audience: Option<String>,
    /// `(sec_tag, key_type)`.
    pub key: Option<(u32, u8)>,
}

/// `AT%JWT=0,<exp_delta>,"<sub>","<aud>"[,<sec_tag>,<key_type>]`, the form
/// the nRF Connect SDK's modem_jwt library sends (0 and "" when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwt(JwtRequest);

impl Jwt {
    /// Refuses a subject or audience that cannot be quoted.
    pub fn new(request: &JwtRequest) -> Result<Self, AtError> {
        check_quotable("subject", request.subject.as_deref().unwrap_or(""))?;
        check_quotable("audience", request.audience.as_deref().unwrap_or(""))?;
        Ok(Jwt(request.clone()))
    }
}

impl Command for Jwt {
    type Response = String;
    const DEADLINE: Deadline = Deadline::Jwt;

    fn text(&self) -> String {
        let req = &self.0;
        let mut cmd = format!(
            "AT%JWT=0,{},\"{}\",\"{}\"",
            req.exp_delta.unwrap_or(0),
            req.subject.as_deref().unwrap_or(""),
            req.audience.as_deref().unwrap_or("")
        );
        if let Some((tag, key_type)) = req.key {
            cmd.push_str(&format!(",{tag},{key_type}"));
        }
        cmd
    }

    fn parse(&self, r: &Response) -> Result<String, AtError> {
        parse_token(r, "%JWT:")
    }
}

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

/// `AT%CLAIMTOKEN=<sec_tag>[,"<32 lowercase hex>"]`: the device claim
/// token for the ownership public key stored in `sec_tag` (`%CMNG` type
/// 9); with a challenge, a fresh one of the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimToken {
    pub sec_tag: u32,
    pub challenge: Option<[u8; 16]>,
}

impl Command for ClaimToken {
    /// `"<b64url>.<b64url>"` without quotes.
    type Response = String;
    /// The modem signs, as for `%ATTESTTOKEN`.
    const DEADLINE: Deadline = Deadline::Attest;

    fn text(&self) -> String {
        match self.challenge {
            Some(c) => format!("AT%CLAIMTOKEN={},\"{}\"", self.sec_tag, hex::encode(c)),
            None => format!("AT%CLAIMTOKEN={}", self.sec_tag),
        }
    }

    fn parse(&self, r: &Response) -> Result<String, AtError> {
        parse_token(r, "%CLAIMTOKEN:")
    }
}
