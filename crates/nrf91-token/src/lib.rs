//! nRF91 modem tokens: decoding, the COSE signing input, verification,
//! the trusted identity keys, and device text as data. No I/O beyond the
//! trust file it reads, no async runtime: usable by any nRF91 backend.
//!
//! [`decode`] turns modem output (`%ATTESTTOKEN`, `%KEYGEN`, `%JWT`,
//! `%CLAIMTOKEN` in an assumed layout: [`claim`]) into a
//! typed [`Token`]; [`verify::verify`] decides check by check whether it proves
//! what it claims against one [`Expected`] (the kind asked for and every
//! binding: challenge, device, sec_tag, key) and a [`trust::TrustStore`].
//! Decoding never judges authenticity. [`recover`] learns the identity key
//! two `%JWT`s share; [`text`] keeps what a device says from acting on a
//! terminal, a log or a spreadsheet. The token builders (`encode`, what a
//! modem emits: the simulator's and the tests') are behind the feature
//! `encode`.

pub mod attest;
pub mod claim;
pub mod cose;
pub mod csr;
#[cfg(feature = "encode")]
pub mod encode;
pub mod jwt;
pub mod keygen;
pub mod recover;
pub mod text;
pub mod trust;
pub mod verify;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use std::fmt;
use uuid::Uuid;

pub use attest::{DeviceType, IdentityToken};
pub use claim::ClaimToken;
pub use cose::CoseSign1;
pub use csr::CsrInfo;
pub use jwt::Jwt;
pub use keygen::{KeyFormat, KeygenToken};
pub use verify::{
    Check, CheckName, ClaimExpected, Expected, Freshness, IdentityExpected, JwtAsked, JwtExpected,
    JwtFreshness, KeygenExpected, Verdict,
};

/// The three kinds of token a modem emits, one per command.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum TokenKind {
    /// `%ATTESTTOKEN`: the device identity attestation token.
    Identity,
    /// `%KEYGEN`: a generated key (CSR or public key) bound to the device.
    Keygen,
    /// `%JWT`: a JSON Web Token signed by the device.
    Jwt,
    /// `%CLAIMTOKEN`: the device claim token (the ownership key's digest,
    /// signed by the identity key).
    Claim,
}

impl TokenKind {
    pub const ALL: &[TokenKind] = <TokenKind as strum::VariantArray>::VARIANTS;

    /// `identity`, `keygen`, `jwt` or `claim`, as stored and printed.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The AT command whose answer is this kind.
    pub fn command(self) -> &'static str {
        match self {
            TokenKind::Identity => "%ATTESTTOKEN",
            TokenKind::Keygen => "%KEYGEN",
            TokenKind::Jwt => "%JWT",
            TokenKind::Claim => "%CLAIMTOKEN",
        }
    }

    /// The kind in words with its article, e.g. "an identity token".
    pub fn with_article(self) -> &'static str {
        match self {
            TokenKind::Identity => "an identity token",
            TokenKind::Keygen => "a key-generation token",
            TokenKind::Jwt => "a JWT",
            TokenKind::Claim => "a device claim token",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok()
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A decoded token of one of the four kinds a modem emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Identity(IdentityToken),
    Keygen(KeygenToken),
    Jwt(Jwt),
    Claim(ClaimToken),
}

/// Which piece of a token an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Part 1 of a modem token before its kind is known.
    First,
    /// Part 1 of `%ATTESTTOKEN`: the CBOR body.
    Body,
    /// Part 1 of `%KEYGEN`: the CSR or public key DER.
    Der,
    /// Part 2 of a modem token: the COSE_Sign1.
    Cose,
    /// The protected header inside the COSE_Sign1.
    CoseProtected,
    /// The `%KEYGEN` payload embedded in the COSE_Sign1.
    KeygenPayload,
    /// The bstr-wrapped sec_tag inside the `%KEYGEN` payload.
    SecTag,
    JwtHeader,
    JwtClaims,
    JwtSignature,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::First => "part 1",
            Part::Body => "part 1 (identity body)",
            Part::Der => "part 1 (DER)",
            Part::Cose => "part 2 (COSE_Sign1)",
            Part::CoseProtected => "part 2 (COSE protected header)",
            Part::KeygenPayload => "part 2 (COSE payload)",
            Part::SecTag => "part 2 (COSE payload, sec_tag)",
            Part::JwtHeader => "part 1 (JWT header)",
            Part::JwtClaims => "part 2 (JWT claims)",
            Part::JwtSignature => "part 3 (JWT signature)",
        })
    }
}

/// Why a text is not a decodable token, and where.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("empty input: no token")]
    Empty,
    #[error("not a token: {0}")]
    NotAToken(String),
    #[error("line starts with {prefix} but holds a {kind} token")]
    PrefixMismatch { prefix: String, kind: TokenKind },
    #[error("{part}: not base64url without padding: {error}")]
    Base64 {
        part: Part,
        error: base64::DecodeError,
    },
    #[error("{part}: bad CBOR at byte {offset}: {message}")]
    Cbor {
        part: Part,
        offset: usize,
        message: String,
    },
    #[error("{part}: {len} unexpected byte(s) after the CBOR item, at byte {offset}")]
    Trailing {
        part: Part,
        offset: usize,
        len: usize,
    },
    #[error("{part}: {field}: {problem}")]
    Field {
        part: Part,
        field: &'static str,
        problem: String,
    },
    #[error("{part}: {message}")]
    Der { part: Part, message: String },
    #[error("{part}: not a JSON object: {message}")]
    Json { part: Part, message: String },
    /// Device text holding a control character: refused before anything
    /// reads it (a log, a terminal, a ledger).
    #[error(
        "{part}: {field} holds control character {} at character {at}; a token's text must be text",
        crate::text::code_point(*character)
    )]
    ControlCharacter {
        part: Part,
        field: String,
        at: usize,
        character: char,
    },
}

impl TokenError {
    /// Whether the token is well-formed but holds something no genuine
    /// modem writes (control characters in its text): the run fails it as
    /// `malformed`, not as a token that could not be decoded.
    pub fn is_malformed_text(&self) -> bool {
        matches!(self, TokenError::ControlCharacter { .. })
    }
}

/// Refuse `text` (a token's field, named `field`) if it holds a control
/// character.
pub(crate) fn refuse_controls(part: Part, field: &str, text: &str) -> Result<(), TokenError> {
    match crate::text::first_control(text) {
        None => Ok(()),
        Some((at, character)) => Err(TokenError::ControlCharacter {
            part,
            field: field.to_string(),
            at,
            character,
        }),
    }
}

/// A response prefix and the token kind it announces.
type Prefix = (&'static str, TokenKind);

/// Response prefixes a whole modem line may carry.
const PREFIXES: [Prefix; 4] = [
    ("%ATTESTTOKEN", TokenKind::Identity),
    ("%KEYGEN", TokenKind::Keygen),
    ("%JWT", TokenKind::Jwt),
    ("%CLAIMTOKEN", TokenKind::Claim),
];

/// Decode a token given bare (`<b64>.<b64>`), quoted, or as a whole
/// `%ATTESTTOKEN: "…"` / `%KEYGEN: "…"` / `%JWT: "…"` / `%CLAIMTOKEN: "…"`
/// line; the kind is detected from the content (a self-described body whose
/// message type is 4 is a claim token, see [`claim`]). A modem token without its COSE part decodes
/// with `cose: None`.
///
/// A real nRF9161's `%ATTESTTOKEN` answer:
///
/// ```
/// use nrf91_token::{Token, TokenKind, decode};
///
/// let line = "%ATTESTTOKEN: \"2dn3hQFQUDYxVDkxRPCAIhIbZAFifQNQGv86y_GmR2SiY0wmRsHGVFDT791_BPH8YOWFiyCHND1q.\
///             0oRDoQEmoQRBIfZYQGuXwJliinHc6xDPruiyjsaXyXZbZVpUuOhHG9YS8L05VuglCcJhMN4EUhWVGpaHgNnHHno6ahi-d5tOeZmAcNY\"";
/// let token = decode(line)?;
/// assert_eq!(token.kind(), TokenKind::Identity);
/// let Token::Identity(identity) = token else { unreachable!() };
/// assert_eq!(identity.device_uuid.to_string(), "50363154-3931-44f0-8022-121b6401627d");
/// assert_eq!(hex::encode(identity.nonce), "d3efdd7f04f1fc60e5858b2087343d6a");
/// // Decoding judges nothing: whether it is authentic is `verify`'s question.
/// assert!(identity.cose.is_some());
/// # Ok::<(), nrf91_token::TokenError>(())
/// ```
pub fn decode(text: &str) -> Result<Token, TokenError> {
    let (prefix, inner) = unwrap_text(text)?;
    let parts: Vec<&str> = inner.split('.').collect();
    let token = match parts.as_slice() {
        [header, claims, signature] => Token::Jwt(jwt::decode_parts(header, claims, signature)?),
        [first] => decode_modem(inner, first, "")?,
        [first, second] => decode_modem(inner, first, second)?,
        _ => {
            return Err(TokenError::NotAToken(format!(
                "{} dot-separated parts; expected 2 (modem token) or 3 (JWT)",
                parts.len()
            )));
        }
    };
    if let Some((prefix, kind)) = prefix {
        if kind != token.kind() {
            return Err(TokenError::PrefixMismatch {
                prefix: prefix.to_string(),
                kind: token.kind(),
            });
        }
    }
    Ok(token)
}

/// Strip whitespace, an optional response prefix and optional quotes.
fn unwrap_text(text: &str) -> Result<(Option<Prefix>, &str), TokenError> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(TokenError::Empty);
    }
    let mut prefix = None;
    if rest.starts_with('%') {
        let (name, tail) = rest.split_once(':').ok_or_else(|| {
            TokenError::NotAToken("line starts with '%' but has no ':' after the name".into())
        })?;
        let known = PREFIXES
            .iter()
            .find(|(p, _)| *p == name.trim())
            .ok_or_else(|| {
                TokenError::NotAToken(format!(
                    "{} is not a token response (expected %ATTESTTOKEN, %KEYGEN, %JWT or %CLAIMTOKEN)",
                    name.trim()
                ))
            })?;
        prefix = Some(*known);
        rest = tail.trim();
    }
    if let Some(quoted) = rest.strip_prefix('"') {
        rest = quoted
            .strip_suffix('"')
            .ok_or_else(|| TokenError::NotAToken("opening quote without a closing quote".into()))?;
    }
    if let Some(at) = rest.find('"') {
        return Err(TokenError::NotAToken(format!(
            "stray quote at character {at} of the token"
        )));
    }
    if rest.is_empty() {
        return Err(TokenError::Empty);
    }
    Ok((prefix, rest))
}

pub(crate) fn b64(part: Part, text: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|error| TokenError::Base64 { part, error })
}

/// Tag 55799 as it starts a self-described CBOR body.
const SELF_DESCRIBED_PREFIX: [u8; 3] = [0xd9, 0xd9, 0xf7];

fn decode_modem(text: &str, first: &str, second: &str) -> Result<Token, TokenError> {
    // Decode part 1 under a neutral name first: its content says what it is.
    let head = b64(Part::First, first)?;
    if head.starts_with(&SELF_DESCRIBED_PREFIX) && claim::is_claim_body(&head) {
        Ok(Token::Claim(claim::decode_parts(text, head, second)?))
    } else if head.starts_with(&SELF_DESCRIBED_PREFIX) {
        Ok(Token::Identity(attest::decode_parts(text, head, second)?))
    } else if head.first() == Some(&0x30) {
        Ok(Token::Keygen(keygen::decode_parts(text, head, second)?))
    } else {
        Err(TokenError::NotAToken(format!(
            "part 1 is neither an identity or claim body (CBOR tag 55799, d9 d9 f7) nor DER (0x30); it starts with {}",
            hex::encode(head.get(..3).unwrap_or(&head))
        )))
    }
}

/// Decode the COSE part if there is one (empty text means missing).
pub(crate) fn decode_cose_part(second: &str) -> Result<Option<CoseSign1>, TokenError> {
    if second.is_empty() {
        return Ok(None);
    }
    let bytes = b64(Part::Cose, second)?;
    cose::decode_sign1(&bytes).map(Some)
}

impl Token {
    pub fn kind(&self) -> TokenKind {
        match self {
            Token::Identity(_) => TokenKind::Identity,
            Token::Keygen(_) => TokenKind::Keygen,
            Token::Jwt(_) => TokenKind::Jwt,
            Token::Claim(_) => TokenKind::Claim,
        }
    }

    /// The device UUID the token claims, if it carries one.
    pub fn device_uuid(&self) -> Option<Uuid> {
        match self {
            Token::Identity(t) => Some(t.device_uuid),
            Token::Keygen(t) => t.cose.is_some().then_some(t.device_uuid),
            Token::Jwt(t) => t.issuer_uuid(),
            Token::Claim(t) => t.device_uuid,
        }
    }

    /// The token text as given (without prefix and quotes).
    pub fn text(&self) -> &str {
        match self {
            Token::Identity(t) => &t.text,
            Token::Keygen(t) => &t.text,
            Token::Jwt(t) => &t.text,
            Token::Claim(t) => &t.text,
        }
    }

    /// The JSON object `parse --json` prints: UUIDs lowercase with dashes,
    /// bytes as lowercase hex.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Token::Identity(t) => t.to_json(),
            Token::Keygen(t) => t.to_json(),
            Token::Jwt(t) => t.to_json(),
            Token::Claim(t) => t.to_json(),
        }
    }

    /// Multi-line text for a line operator.
    pub fn describe(&self) -> String {
        match self {
            Token::Identity(t) => t.describe(),
            Token::Keygen(t) => t.describe(),
            Token::Jwt(t) => t.describe(),
            Token::Claim(t) => t.describe(),
        }
    }
}

impl serde::Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// JSON for the COSE part shared by both modem token kinds.
pub(crate) fn cose_json(cose: Option<&CoseSign1>) -> serde_json::Value {
    match cose {
        None => serde_json::Value::Null,
        Some(c) => serde_json::json!({
            "alg": c.alg,
            "kid": c.kid.as_deref().map(hex::encode),
            "kid_name": c.kid_name(),
            "payload_embedded": c.payload.is_some(),
            "signature": hex::encode(&c.signature),
        }),
    }
}

/// One line describing the COSE part, for [`Token::describe`].
pub(crate) fn cose_line(cose: Option<&CoseSign1>) -> String {
    match cose {
        None => "  COSE_Sign1        MISSING (token is unsigned)\n".into(),
        Some(c) => format!(
            "  COSE_Sign1        alg {}, key id {} ({}), signature {} bytes\n",
            match c.alg {
                Some(cose::ALG_ES256) => "ES256".to_string(),
                Some(other) => other.to_string(),
                None => "missing".to_string(),
            },
            c.kid
                .as_deref()
                .map(hex::encode)
                .unwrap_or_else(|| "-".into()),
            c.kid_name(),
            c.signature.len()
        ),
    }
}

/// Fuzz body (`fuzz/fuzz_targets/tokens.rs`, and a proptest in CI): run
/// every decoder and the verifier over arbitrary bytes. Must never panic.
pub fn fuzz_decode(data: &[u8]) {
    static TRUST: std::sync::OnceLock<crate::trust::TrustStore> = std::sync::OnceLock::new();
    let trust = TRUST.get_or_init(fuzz_trust_store);
    let expectations = fuzz_expectations();
    let verify_all = |token: &Token| {
        for expected in &expectations {
            let _ = verify::verify(token, expected, trust);
        }
    };
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(token) = decode(text) {
            let _ = token.to_json();
            let _ = token.describe();
            verify_all(&token);
        }
    }
    let _ = cose::decode_sign1(data);
    let _ = attest::decode_body(data);
    let _ = keygen::decode_payload(data);
    let _ = csr::parse_csr(data);
    let _ = keygen::decode_der(data);
    // Raw bytes as each part of a modem token.
    let b = URL_SAFE_NO_PAD.encode(data);
    for text in [format!("{b}."), format!("2dn3{b}"), format!("MA.{b}")] {
        if let Ok(token) = decode(&text) {
            verify_all(&token);
        }
    }
}

/// Every kind of expectation, with and without each binding.
fn fuzz_expectations() -> Vec<Expected> {
    let mut all = Vec::new();
    for uuid in [None, Some(Uuid::nil())] {
        for freshness in [Freshness::NotChecked, Freshness::Challenge([0; 16])] {
            all.push(Expected::Identity(IdentityExpected {
                freshness,
                device_uuid: uuid,
            }));
            for ownership_key_digest in [None, Some([0; 32])] {
                all.push(Expected::Claim(ClaimExpected {
                    freshness,
                    device_uuid: uuid,
                    ownership_key_digest,
                }));
            }
        }
        for format in [KeyFormat::Csr, KeyFormat::PublicKey] {
            for (sec_tag, common_name) in [(None, None), (Some(16), Some("x".to_string()))] {
                all.push(Expected::Keygen(KeygenExpected {
                    format,
                    sec_tag,
                    device_uuid: uuid,
                    common_name,
                }));
            }
        }
        for issuer in [None, Some("x".to_string())] {
            let asked = JwtFreshness::Asked(JwtAsked {
                challenge: "00".repeat(16),
                clock_set: 0,
                now: 0,
                exp_delta: 300,
            });
            for freshness in [JwtFreshness::NotChecked { now: 0 }, asked] {
                all.push(Expected::Jwt(JwtExpected {
                    device_uuid: uuid,
                    freshness,
                    audience: issuer.clone(),
                    issuer: issuer.clone(),
                }));
            }
        }
    }
    all
}

fn fuzz_trust_store() -> crate::trust::TrustStore {
    // The public key of the secret scalar 1 (the P-256 generator), trusted for the nil UUID.
    let mut store = crate::trust::TrustStore::default();
    if let Ok(key) = p256::SecretKey::from_slice(&{
        let mut s = [0u8; 32];
        s[31] = 1;
        s
    }) {
        use p256::pkcs8::EncodePublicKey;
        if let Ok(spki) = key.public_key().to_public_key_der() {
            let _ = store.insert(Uuid::nil(), spki.as_bytes());
        }
    }
    store
}
