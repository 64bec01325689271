//! Verdicts: does a decoded token prove what its command must prove, check
//! by check?
//!
//! The caller says what it expects in one value, [`Expected`]: the token kind
//! the command must return (an `%ATTESTTOKEN` answer is an identity token,
//! never a key-generation token or a JWT) and every binding that kind
//! carries (challenge, sec_tag, UUID, common name, time, issuer). A token of
//! another kind fails the `kind` check and nothing else is judged; a binding
//! the kind cannot carry is a failed check, never silently ignored.
//!
//! A token is authentic only when every check passed and its signature was
//! verified with a trusted key. ES256 verification uses ring (about 3× faster
//! than p256 0.13 here; bulk verification must keep up with OpenSSL).

use std::fmt;

use uuid::Uuid;

use super::attest::MSG_TYPE_IDENTITY_V1;
use super::claim::MSG_TYPE_CLAIM;
use super::cose::{self, ALG_ES256, CoseSign1, KID_IDENTITY};
use super::{ClaimToken, IdentityToken, Jwt, KeyFormat, KeygenToken, Token, TokenKind};
use crate::trust::{TrustStore, TrustedKey};

/// Seconds of clock difference tolerated between modem and station when
/// checking a JWT offline ([`JwtFreshness::NotChecked`]).
pub const JWT_LEEWAY_SECS: i64 = 60;

/// Seconds a station's own `%JWT` may have its `iat` before the clock the
/// station set with `AT+CCLK` or after the moment its answer was judged:
/// `+CCLK` has whole seconds, so one second of rounding either side is all
/// an honest modem needs; a few more absorb a slow tick, never a JWT made
/// before this run.
pub const JWT_CLOCK_WINDOW_SECS: i64 = 5;

/// Whether an identity token's freshness is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The challenge sent with `AT%ATTESTTOKEN="<hex>"`: the nonce must equal it.
    Challenge([u8; 16]),
    /// No challenge is known (a token checked offline): a replayed token is
    /// not detected. Only tools may choose this; a station never does.
    NotChecked,
}

/// What an `%ATTESTTOKEN` answer must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityExpected {
    pub freshness: Freshness,
    /// The device UUID seen earlier (e.g. `%DEVICEUUID`), if any.
    pub device_uuid: Option<Uuid>,
}

/// What a `%CLAIMTOKEN` answer must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimExpected {
    /// The challenge sent with `AT%CLAIMTOKEN=<tag>,"<hex>"`: the token must
    /// carry it back (a token without one fails `nonce`).
    pub freshness: Freshness,
    pub device_uuid: Option<Uuid>,
    /// SHA-256 of the ownership public key written to the sec_tag
    /// ([`crate::claim::ownership_key_digest`]).
    pub ownership_key_digest: Option<[u8; 32]>,
}

/// What a `%KEYGEN` answer must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygenExpected {
    /// The format requested (CSR or public key).
    pub format: KeyFormat,
    /// The sec_tag requested.
    pub sec_tag: Option<u32>,
    pub device_uuid: Option<Uuid>,
    /// The CSR subject CN requested; a public-key token carries none, so
    /// asking for one there fails the `common_name` check.
    pub common_name: Option<String>,
}

/// What a `%JWT` answer must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtExpected {
    pub device_uuid: Option<Uuid>,
    /// What this run asked the modem for, or (tools only) nothing.
    pub freshness: JwtFreshness,
    /// The `aud` asked for (`plan.jwt_audience`); `None`: the JWT must
    /// carry no `aud`.
    pub audience: Option<String>,
    /// Expected `iss`.
    pub issuer: Option<String>,
}

/// Whether a JWT was made for this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtFreshness {
    /// The station's own `AT%JWT=0,<exp_delta>,"<challenge>",…` right after
    /// it set the modem's clock: `sub` must be the challenge, `iat` and `exp`
    /// must be there, `iat` within [`JWT_CLOCK_WINDOW_SECS`] of
    /// `clock_set..=now`, and `exp - iat` exactly `exp_delta`.
    Asked(JwtAsked),
    /// A JWT judged offline: `iat`/`exp`, when present, must hold `now`
    /// (with [`JWT_LEEWAY_SECS`]); a harvested or replayed JWT is not
    /// detected. Only tools may choose this; a station never does.
    NotChecked { now: i64 },
}

/// What the station asked a `%JWT` for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAsked {
    /// The fresh random challenge sent as the subject (32 hex digits).
    pub challenge: String,
    /// Unix seconds the station set the modem's clock to (`AT+CCLK`).
    pub clock_set: i64,
    /// Unix seconds when the answer is judged.
    pub now: i64,
    /// The `exp_delta` asked for, in seconds.
    pub exp_delta: u32,
}

impl JwtAsked {
    /// The subject to send: `challenge` as 32 lowercase hex digits.
    pub fn challenge_text(challenge: [u8; 16]) -> String {
        hex::encode(challenge)
    }
}

/// The token kind a command must return and every binding it must show.
/// There is no default: a caller states each binding, or `None` on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Identity(IdentityExpected),
    Keygen(KeygenExpected),
    Jwt(JwtExpected),
    Claim(ClaimExpected),
}

impl Expected {
    pub fn kind(&self) -> TokenKind {
        match self {
            Expected::Identity(_) => TokenKind::Identity,
            Expected::Keygen(_) => TokenKind::Keygen,
            Expected::Jwt(_) => TokenKind::Jwt,
            Expected::Claim(_) => TokenKind::Claim,
        }
    }

    /// Words for the kind this expects, e.g. "an identity token (the answer to
    /// AT%ATTESTTOKEN)".
    fn describe(&self) -> String {
        match self {
            Expected::Keygen(k) => format!(
                "{} (the answer to AT%KEYGEN format {})",
                describe_keygen(k.format),
                k.format.code()
            ),
            other => format!(
                "{} (the answer to AT{})",
                other.kind().with_article(),
                other.kind().command()
            ),
        }
    }
}

fn describe_keygen(format: KeyFormat) -> &'static str {
    match format {
        KeyFormat::Csr => "a key-generation token with a CSR",
        KeyFormat::PublicKey => "a key-generation token with a public key",
    }
}

/// Words for what a decoded token is.
fn describe_token(token: &Token) -> String {
    match token {
        Token::Keygen(t) => describe_keygen(t.format).to_string(),
        other => other.kind().with_article().to_string(),
    }
}

/// The checks a verdict can hold. Stable names: they are stored in records
/// and printed by `verify`.
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
pub enum CheckName {
    /// The token is of the kind its command must return.
    Kind,
    MessageType,
    KeyTrusted,
    Algorithm,
    KeyId,
    Signature,
    DeviceUuid,
    Nonce,
    SecTag,
    Digest,
    CsrSignature,
    CommonName,
    JwtTime,
    JwtIssuer,
    /// A JWT's `sub` is this run's challenge.
    JwtChallenge,
    /// A JWT's `aud` is the one asked for.
    JwtAudience,
    /// The signature checked with a key pinned on first sight (`pin`), not
    /// with a trusted key: never part of an authentic verdict.
    PinnedSignature,
    /// A claim token's body is the layout this station assumes (Nordic
    /// does not publish it); the detail names what was recognised.
    Layout,
}

impl CheckName {
    pub const ALL: &[CheckName] = <CheckName as strum::VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether this check needs the device identity key (as opposed to a
    /// binding the station can check on the token alone).
    pub fn needs_key(self) -> bool {
        matches!(
            self,
            CheckName::KeyTrusted | CheckName::Signature | CheckName::PinnedSignature
        )
    }
}

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    pub name: CheckName,
    pub passed: bool,
    pub detail: String,
}

/// Every check that applied to a token, and what the token was.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    /// The kind the token decoded as (not the kind that was expected).
    pub kind: TokenKind,
    pub checks: Vec<Check>,
}

impl Verdict {
    fn new(kind: TokenKind) -> Self {
        Verdict {
            kind,
            checks: Vec::new(),
        }
    }

    /// All checks passed, and a signature was verified with a trusted key.
    pub fn authentic(&self) -> bool {
        let has = |name| self.checks.iter().any(|c| c.name == name);
        has(CheckName::Signature)
            && has(CheckName::KeyTrusted)
            && self.checks.iter().all(|c| c.passed)
    }

    /// Every check that does not need the identity key passed: the token is
    /// of the right kind, fresh and bound to this device, sec_tag and key,
    /// whoever vouches for the signature.
    pub fn bindings_hold(&self) -> bool {
        self.checks
            .iter()
            .filter(|c| !c.name.needs_key())
            .all(|c| c.passed)
            && self.check(CheckName::Kind).is_some_and(|c| c.passed)
    }

    /// Whether the signature verified under a pinned key (see
    /// [`verify_pinned`]); `None` when it was not checked.
    pub fn pinned_signature(&self) -> Option<bool> {
        self.check(CheckName::PinnedSignature).map(|c| c.passed)
    }

    /// The verdict without `key_trusted` and `signature`: for an authority
    /// that vouches without a key (nRF Cloud, collect), whose records must
    /// not show a trust-file lookup that was never the question.
    pub fn without_key_checks(mut self) -> Verdict {
        self.checks.retain(|c| !c.name.needs_key());
        self
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    pub fn first_failure(&self) -> Option<&Check> {
        self.failures().next()
    }

    /// The check called `name`, if it was evaluated.
    pub fn check(&self, name: CheckName) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The check that best explains a failed verdict: a token of the wrong
    /// kind, or naming another device, explains every other failure (its
    /// key is unknown too), so those come first.
    pub fn decisive_failure(&self) -> Option<&Check> {
        [CheckName::Kind, CheckName::DeviceUuid]
            .into_iter()
            .find_map(|name| self.check(name).filter(|c| !c.passed))
            .or_else(|| self.first_failure())
    }

    /// The failed check that best explains why the bindings do not hold
    /// (see [`Verdict::bindings_hold`]), ignoring the key checks.
    pub fn binding_failure(&self) -> Option<&Check> {
        [CheckName::Kind, CheckName::DeviceUuid]
            .into_iter()
            .find_map(|name| self.check(name).filter(|c| !c.passed))
            .or_else(|| self.failures().find(|c| !c.name.needs_key()))
    }

    fn push(&mut self, name: CheckName, passed: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            passed,
            detail: detail.into(),
        });
    }
}

/// Evaluate every check `expected` calls for on `token`.
///
/// An identity token answers this run's challenge and was signed by the
/// key the trust file holds for its device; the same token against another
/// challenge (a replay) fails `nonce`, and nothing else is taken on trust:
///
/// ```
/// use nrf91_token::encode::{self, IdentityBody, MSG_TYPE_IDENTITY_V1};
/// use nrf91_token::trust::TrustStore;
/// use nrf91_token::verify::{CheckName, verify};
/// use nrf91_token::{Expected, Freshness, IdentityExpected, decode};
/// use p256::ecdsa::SigningKey;
/// use p256::pkcs8::EncodePublicKey;
/// use uuid::Uuid;
///
/// // A board's identity key and the station's trust file entry for it.
/// let device = Uuid::from_u128(0x5036_3154_3931_44f0_8022_121b_6401_627d);
/// let key = SigningKey::from_slice(&[7; 32]).expect("a P-256 scalar");
/// let spki = key.verifying_key().to_public_key_der().expect("SPKI");
/// let mut trust = TrustStore::new();
/// trust.insert(device, spki.as_bytes())?;
///
/// // What the board answers to `AT%ATTESTTOKEN` after this run's challenge.
/// let challenge = *b"this run's nonce";
/// let text = encode::identity_token(
///     &IdentityBody {
///         msg_type: MSG_TYPE_IDENTITY_V1,
///         device_uuid: *device.as_bytes(),
///         device_type: 3,
///         firmware_uuid: [0; 16],
///         nonce: challenge,
///     },
///     &key,
/// );
/// let token = decode(&text).expect("decodes");
///
/// let expected = |challenge| {
///     Expected::Identity(IdentityExpected {
///         freshness: Freshness::Challenge(challenge),
///         device_uuid: Some(device),
///     })
/// };
/// assert!(verify(&token, &expected(challenge), &trust).authentic());
///
/// let replayed = verify(&token, &expected(*b"the next nonce!!"), &trust);
/// assert!(!replayed.authentic());
/// assert_eq!(replayed.first_failure().map(|c| c.name), Some(CheckName::Nonce));
/// # Ok::<(), nrf91_token::trust::TrustError>(())
/// ```
pub fn verify(token: &Token, expected: &Expected, trust: &TrustStore) -> Verdict {
    let mut v = Verdict::new(token.kind());
    match (token, expected) {
        (Token::Identity(t), Expected::Identity(e)) => {
            v.push(
                CheckName::Kind,
                true,
                "identity token, as AT%ATTESTTOKEN answers",
            );
            identity(&mut v, t, e, trust);
        }
        (Token::Keygen(t), Expected::Keygen(e)) if t.format == e.format => {
            v.push(
                CheckName::Kind,
                true,
                format!(
                    "{}, as AT%KEYGEN format {} answers",
                    describe_keygen(t.format),
                    e.format.code()
                ),
            );
            keygen(&mut v, t, e, trust);
        }
        (Token::Jwt(t), Expected::Jwt(e)) => {
            v.push(CheckName::Kind, true, "JWT, as AT%JWT answers");
            jwt(&mut v, t, e, trust);
        }
        (Token::Claim(t), Expected::Claim(e)) => {
            v.push(
                CheckName::Kind,
                true,
                "device claim token, as AT%CLAIMTOKEN answers",
            );
            claim(&mut v, t, e, trust);
        }
        _ => v.push(
            CheckName::Kind,
            false,
            format!(
                "expected {}, got {}; nothing else was judged",
                expected.describe(),
                describe_token(token)
            ),
        ),
    }
    v
}

/// As [`verify`], with the key the `pin` authority pinned for `device_uuid`
/// (trust on first sight): the signature is checked with it and recorded
/// as `pinned_signature`, with no `key_trusted` check, so a pinned token is
/// never called authentic. A token naming another device gets no signature
/// check (and fails `device_uuid` when the run knows the device).
pub fn verify_pinned(
    token: &Token,
    expected: &Expected,
    device_uuid: Uuid,
    key: &TrustedKey,
) -> Verdict {
    let mut store = TrustStore::new();
    // The key parsed once already; inserting it cannot fail.
    let _ = store.insert(device_uuid, key.spki_der());
    let mut verdict = verify(token, expected, &store);
    verdict.checks.retain(|c| c.name != CheckName::KeyTrusted);
    for check in &mut verdict.checks {
        if check.name == CheckName::Signature {
            check.name = CheckName::PinnedSignature;
            check.detail = check
                .detail
                .replace("the trusted key", "the key pinned on first sight");
        }
    }
    verdict
}

/// `key_trusted`: the device UUID has a key in the trust store.
fn trusted_key<'a>(v: &mut Verdict, trust: &'a TrustStore, uuid: Uuid) -> Option<&'a TrustedKey> {
    let key = trust.get(&uuid);
    match key {
        Some(_) => v.push(
            CheckName::KeyTrusted,
            true,
            format!("device {uuid} is in the trust store"),
        ),
        None => v.push(
            CheckName::KeyTrusted,
            false,
            format!("device {uuid} is not in the trust store; signature not checked"),
        ),
    }
    key
}

/// `algorithm`, `key_id`, `key_trusted` and `signature` of a COSE_Sign1
/// over `payload`.
fn cose_checks(
    v: &mut Verdict,
    cose: Option<&CoseSign1>,
    payload: &[u8],
    key: Option<&TrustedKey>,
) {
    let Some(c) = cose else {
        v.push(
            CheckName::Signature,
            false,
            "token has no COSE_Sign1 part: it is unsigned",
        );
        return;
    };
    v.push(
        CheckName::Algorithm,
        c.alg == Some(ALG_ES256),
        match c.alg {
            Some(ALG_ES256) => "ES256".to_string(),
            Some(other) => format!("COSE alg {other}, expected -7 (ES256)"),
            None => "no alg in the protected header, expected -7 (ES256)".to_string(),
        },
    );
    let kid_ok = c.kid.as_deref() == Some(KID_IDENTITY);
    v.push(
        CheckName::KeyId,
        kid_ok,
        format!(
            "key id {} ({}){}",
            c.kid.as_deref().map_or_else(|| "-".into(), hex::encode),
            c.kid_name(),
            if kid_ok {
                ""
            } else {
                ", expected 21 (device identity key)"
            }
        ),
    );
    if let Some(key) = key {
        let ok = key.verify_es256(&cose::sig_structure(&c.protected, payload), &c.signature);
        v.push(
            CheckName::Signature,
            ok,
            if ok {
                "ES256 signature verifies with the trusted key".to_string()
            } else if c.signature.len() != 64 {
                format!(
                    "signature is {} bytes, expected 64 (r||s)",
                    c.signature.len()
                )
            } else {
                "ES256 signature does not verify with the trusted key".to_string()
            },
        );
    }
}

fn expect_uuid(v: &mut Verdict, want: Option<Uuid>, actual: Option<Uuid>) {
    if let Some(want) = want {
        let ok = actual == Some(want);
        v.push(
            CheckName::DeviceUuid,
            ok,
            match actual {
                Some(got) if ok => format!("{got} as seen earlier in the run"),
                Some(got) => format!("token says {got}, the run saw {want}"),
                None => format!("token names no device, the run saw {want}"),
            },
        );
    }
}

fn identity(v: &mut Verdict, t: &IdentityToken, expect: &IdentityExpected, trust: &TrustStore) {
    v.push(
        CheckName::MessageType,
        t.msg_type == MSG_TYPE_IDENTITY_V1,
        format!(
            "message type {} (expected 1, device identity v1)",
            t.msg_type
        ),
    );
    let mut key = trusted_key(v, trust, t.device_uuid);
    // The payload is detached: the body is what was signed. A COSE payload
    // that disagrees with the body must not pass.
    let embedded = t.cose.as_ref().and_then(|c| c.payload.as_deref());
    if embedded.is_some_and(|p| p != t.body.as_slice()) {
        v.push(
            CheckName::Signature,
            false,
            "COSE payload is embedded and differs from the token body",
        );
        key = None;
    }
    cose_checks(v, t.cose.as_ref(), &t.body, key);
    expect_uuid(v, expect.device_uuid, Some(t.device_uuid));
    if let Freshness::Challenge(challenge) = expect.freshness {
        let ok = t.nonce == challenge;
        v.push(
            CheckName::Nonce,
            ok,
            if ok {
                format!("nonce equals the challenge {}", hex::encode(challenge))
            } else {
                format!(
                    "nonce {} is not the challenge {} (stale or replayed token)",
                    hex::encode(t.nonce),
                    hex::encode(challenge)
                )
            },
        );
    }
}

fn claim(v: &mut Verdict, t: &ClaimToken, expect: &ClaimExpected, trust: &TrustStore) {
    v.push(
        CheckName::Layout,
        t.layout_known(),
        if t.layout_known() {
            format!("assumed layout: {}", t.layout_words())
        } else {
            format!(
                "not the layout this station assumes (Nordic does not publish it): {}",
                t.layout_words()
            )
        },
    );
    v.push(
        CheckName::MessageType,
        t.msg_type == Some(MSG_TYPE_CLAIM),
        match t.msg_type {
            Some(m) => format!("message type {m} (expected {MSG_TYPE_CLAIM}, device claim)"),
            None => format!("no message type (expected {MSG_TYPE_CLAIM}, device claim)"),
        },
    );
    let key = match t.device_uuid {
        Some(uuid) => trusted_key(v, trust, uuid),
        None => {
            v.push(
                CheckName::KeyTrusted,
                false,
                "the token names no device UUID; signature not checked",
            );
            None
        }
    };
    let embedded = t.cose.as_ref().and_then(|c| c.payload.as_deref());
    let key = if embedded.is_some_and(|p| p != t.body.as_slice()) {
        v.push(
            CheckName::Signature,
            false,
            "COSE payload is embedded and differs from the token body",
        );
        None
    } else {
        key
    };
    cose_checks(v, t.cose.as_ref(), &t.body, key);
    expect_uuid(v, expect.device_uuid, t.device_uuid);
    if let Freshness::Challenge(challenge) = expect.freshness {
        let ok = t.challenge == Some(challenge);
        v.push(
            CheckName::Nonce,
            ok,
            match t.challenge {
                Some(_) if ok => format!("challenge {} carried back", hex::encode(challenge)),
                Some(got) => format!(
                    "challenge {} is not this run's {} (stale or replayed token)",
                    hex::encode(got),
                    hex::encode(challenge)
                ),
                None => format!(
                    "the token carries no challenge, asked for {}: its freshness cannot be shown",
                    hex::encode(challenge)
                ),
            },
        );
    }
    if let Some(want) = expect.ownership_key_digest {
        let ok = t.ownership_key_digest == Some(want);
        v.push(
            CheckName::Digest,
            ok,
            match t.ownership_key_digest {
                Some(_) if ok => {
                    "ownership-key digest is the SHA-256 of the key written".to_string()
                }
                Some(got) => format!(
                    "ownership-key digest {} is not the SHA-256 {} of the key written",
                    hex::encode(got),
                    hex::encode(want)
                ),
                None => "the token carries no ownership-key digest".to_string(),
            },
        );
    }
}

fn keygen(v: &mut Verdict, t: &KeygenToken, expect: &KeygenExpected, trust: &TrustStore) {
    let Some(payload) = t.cose.as_ref().and_then(|c| c.payload.as_deref()) else {
        v.push(
            CheckName::Signature,
            false,
            "token has no COSE_Sign1 part: it is unsigned",
        );
        v.push(CheckName::Digest, false, "no signed payload binds the DER");
        return;
    };
    v.push(
        CheckName::MessageType,
        t.payload_id == t.format.payload_id(),
        format!(
            "payload id {} for a {} (expected {})",
            t.payload_id,
            t.format.as_str(),
            t.format.payload_id()
        ),
    );
    let key = trusted_key(v, trust, t.device_uuid);
    cose_checks(v, t.cose.as_ref(), payload, key);
    v.push(
        CheckName::Digest,
        t.digest_matches,
        if t.digest_matches {
            "SHA-256 of the DER equals the signed digest".to_string()
        } else {
            format!(
                "SHA-256 of the DER is {}, the signed digest is {} (DER changed after signing)",
                hex::encode(super::keygen::sha256(&t.der)),
                hex::encode(t.digest)
            )
        },
    );
    if let Some(csr) = &t.csr {
        v.push(
            CheckName::CsrSignature,
            csr.signature_valid,
            if csr.signature_valid {
                "CSR signature verifies with its own key (proof of possession)"
            } else {
                "CSR signature does not verify with its own key"
            },
        );
    }
    expect_uuid(v, expect.device_uuid, Some(t.device_uuid));
    if let Some(want) = expect.sec_tag {
        v.push(
            CheckName::SecTag,
            t.sec_tag == want,
            format!("sec_tag {} (requested {want})", t.sec_tag),
        );
    }
    if let Some(want) = &expect.common_name {
        match &t.csr {
            Some(csr) => {
                let got = csr.common_name.as_deref();
                v.push(
                    CheckName::CommonName,
                    got == Some(want.as_str()),
                    format!(
                        "CSR CN {} (requested {want:?})",
                        got.map_or_else(|| "missing".to_string(), |g| format!("{g:?}"))
                    ),
                );
            }
            None => v.push(
                CheckName::CommonName,
                false,
                format!("CN {want:?} requested, but a public-key token carries no subject"),
            ),
        }
    }
}

/// A numeric claim (JSON numbers may be floats).
fn time_claim(t: &Jwt, name: &str) -> Result<Option<i64>, String> {
    match t.claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| format!("{name} is not a number: {value}")),
    }
}

/// `jwt_time` of a JWT judged offline: the old rule, a window around `now`.
fn jwt_time_offline(v: &mut Verdict, iat: Option<i64>, exp: Option<i64>, now: i64) {
    if iat.is_none() && exp.is_none() {
        return; // the modem adds neither without an exp_delta: nothing to check
    }
    let problem = if iat.is_some_and(|iat| iat > now.saturating_add(JWT_LEEWAY_SECS)) {
        Some(format!("issued in the future (iat {iat:?}, now {now})"))
    } else if exp.is_some_and(|exp| now >= exp.saturating_add(JWT_LEEWAY_SECS)) {
        Some(format!("expired (exp {exp:?}, now {now})"))
    } else {
        None
    };
    let ok = problem.is_none();
    let shown = |t: Option<i64>| t.map_or_else(|| "-".to_string(), |t| t.to_string());
    v.push(
        CheckName::JwtTime,
        ok,
        problem
            .unwrap_or_else(|| format!("valid at {now} (iat {}, exp {})", shown(iat), shown(exp))),
    );
}

/// `jwt_time` of the station's own JWT: both claims there, `iat` on the
/// clock the station just set, `exp - iat` what was asked.
fn jwt_time_asked(v: &mut Verdict, iat: Option<i64>, exp: Option<i64>, asked: &JwtAsked) {
    let (earliest, latest) = (
        asked.clock_set.saturating_sub(JWT_CLOCK_WINDOW_SECS),
        asked.now.saturating_add(JWT_CLOCK_WINDOW_SECS),
    );
    let delta = i64::from(asked.exp_delta);
    let problem = match (iat, exp) {
        (None, None) => Some(format!(
            "no iat and no exp claim, asked for exp_delta {delta}: a JWT made without them \
             (no exp_delta, or the modem's clock unset) was not made for this run"
        )),
        (None, Some(_)) => Some(format!("no iat claim, asked for exp_delta {delta}")),
        (Some(_), None) => Some(format!("no exp claim, asked for exp_delta {delta}")),
        (Some(iat), Some(_)) if iat < earliest || iat > latest => Some(format!(
            "iat {iat} is stale: the station set the modem's clock to {} and judged the \
             answer at {}, so iat must be within {earliest}..={latest}",
            asked.clock_set, asked.now
        )),
        (Some(iat), Some(exp)) if exp.checked_sub(iat) != Some(delta) => Some(format!(
            "exp {exp} - iat {iat} = {}, asked for exp_delta {delta}",
            exp.saturating_sub(iat)
        )),
        _ => None,
    };
    v.push(
        CheckName::JwtTime,
        problem.is_none(),
        problem.unwrap_or_else(|| {
            format!(
                "iat {} on the clock set at {}, exp - iat = {delta} as asked",
                iat.unwrap_or_default(),
                asked.clock_set
            )
        }),
    );
}

fn jwt_time(v: &mut Verdict, t: &Jwt, freshness: &JwtFreshness) {
    let (iat, exp) = match (time_claim(t, "iat"), time_claim(t, "exp")) {
        (Ok(iat), Ok(exp)) => (iat, exp),
        (Err(e), _) | (_, Err(e)) => return v.push(CheckName::JwtTime, false, e),
    };
    match freshness {
        JwtFreshness::Asked(asked) => jwt_time_asked(v, iat, exp, asked),
        JwtFreshness::NotChecked { now } => jwt_time_offline(v, iat, exp, *now),
    }
}

/// `jwt_challenge`: `sub` carries this run's challenge back.
fn jwt_challenge(v: &mut Verdict, t: &Jwt, asked: &JwtAsked) {
    let got = t.claim_str("sub");
    let ok = got == Some(asked.challenge.as_str());
    v.push(
        CheckName::JwtChallenge,
        ok,
        match got {
            Some(_) if ok => format!("sub is this run's challenge {}", asked.challenge),
            Some(got) => format!(
                "sub {got:?} is not this run's challenge {} (a JWT made for another run: \
                 harvested or replayed)",
                asked.challenge
            ),
            None => format!(
                "no sub claim, asked for this run's challenge {}",
                asked.challenge
            ),
        },
    );
}

/// `jwt_audience`: `aud` is what was asked, or absent when nothing was.
fn jwt_audience(v: &mut Verdict, t: &Jwt, want: Option<&str>) {
    let got = t.claims.get("aud");
    let (ok, detail) = match (want, got) {
        (None, None) => return,
        (Some(want), Some(serde_json::Value::String(got))) if got == want => {
            (true, format!("aud {got:?} as asked"))
        }
        (Some(want), Some(got)) => (false, format!("aud {got}, asked for {want:?}")),
        (Some(want), None) => (false, format!("no aud claim, asked for {want:?}")),
        (None, Some(got)) => (false, format!("aud {got}, none was asked for")),
    };
    v.push(CheckName::JwtAudience, ok, detail);
}

fn jwt(v: &mut Verdict, t: &Jwt, expect: &JwtExpected, trust: &TrustStore) {
    let alg = t.header.get("alg").and_then(|a| a.as_str());
    v.push(
        CheckName::Algorithm,
        alg == Some("ES256"),
        match alg {
            Some(alg) => format!("header alg {alg:?}, expected \"ES256\""),
            None => "no alg in the header, expected \"ES256\"".to_string(),
        },
    );
    let uuid = t.issuer_uuid();
    let key = match uuid {
        Some(uuid) => trusted_key(v, trust, uuid),
        None => {
            v.push(
                CheckName::KeyTrusted,
                false,
                "iss names no device UUID; signature not checked",
            );
            None
        }
    };
    if let Some(key) = key {
        let ok = key.verify_es256(t.signing_input.as_bytes(), &t.signature);
        v.push(
            CheckName::Signature,
            ok,
            if ok {
                "ES256 signature verifies with the trusted key"
            } else {
                "ES256 signature does not verify with the trusted key"
            },
        );
    }
    expect_uuid(v, expect.device_uuid, uuid);
    if let JwtFreshness::Asked(asked) = &expect.freshness {
        jwt_challenge(v, t, asked);
    }
    jwt_time(v, t, &expect.freshness);
    if matches!(expect.freshness, JwtFreshness::Asked(_)) || expect.audience.is_some() {
        jwt_audience(v, t, expect.audience.as_deref());
    }
    if let Some(want) = &expect.issuer {
        let got = t.claim_str("iss");
        v.push(
            CheckName::JwtIssuer,
            got == Some(want.as_str()),
            match got {
                Some(got) => format!("iss {got:?}, expected {want:?}"),
                None => format!("no iss claim, expected {want:?}"),
            },
        );
    }
}
