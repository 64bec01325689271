//! Verdicts: does a decoded token prove what it claims, check by check?
//!
//! Each applicable check is evaluated and recorded with its result; a token
//! is authentic only when all of them passed and the signature was checked
//! against a trusted key. ES256 verification uses ring (about 3× faster than
//! p256 0.13 here; bulk verification must keep up with OpenSSL).

use uuid::Uuid;

use super::cose::{self, ALG_ES256, CoseSign1, KID_IDENTITY};
use super::encode::MSG_TYPE_IDENTITY_V1;
use super::{IdentityToken, Jwt, KeygenToken, Token};
use crate::trust::{TrustStore, TrustedKey};

/// Seconds of clock difference tolerated between modem and station when
/// checking a JWT's `iat`/`exp` (the modem clock is set by the host).
pub const JWT_LEEWAY_SECS: i64 = 60;

/// What the run expects a token to show. `None` fields are not checked.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Challenge sent with `AT%ATTESTTOKEN`: the identity token's nonce must equal it.
    pub challenge: Option<[u8; 16]>,
    /// sec_tag requested with `AT%KEYGEN`.
    pub sec_tag: Option<u32>,
    /// Device UUID seen elsewhere in the run.
    pub device_uuid: Option<Uuid>,
    /// Common name requested for the CSR (checked on CSR tokens only).
    pub common_name: Option<String>,
    /// Current time (unix seconds) for JWT `iat`/`exp`.
    pub now: Option<i64>,
    /// Expected JWT `iss`.
    pub jwt_issuer: Option<String>,
}

/// One check and its outcome. `name` is a stable identifier.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Every check that applied to a token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verdict {
    pub checks: Vec<Check>,
}

impl Verdict {
    /// All checks passed, and a signature was verified with a trusted key.
    pub fn authentic(&self) -> bool {
        let has = |name| self.checks.iter().any(|c| c.name == name);
        has("signature") && has("key_trusted") && self.checks.iter().all(|c| c.passed)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    pub fn first_failure(&self) -> Option<&Check> {
        self.failures().next()
    }

    /// The check called `name`, if it was evaluated.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn push(&mut self, name: &'static str, passed: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            passed,
            detail: detail.into(),
        });
    }
}

/// Evaluate every applicable check of `token`.
pub fn verify(token: &Token, trust: &TrustStore, expect: &Expectations) -> Verdict {
    let mut v = Verdict { checks: Vec::new() };
    match token {
        Token::Identity(t) => identity(&mut v, t, trust, expect),
        Token::Keygen(t) => keygen(&mut v, t, trust, expect),
        Token::Jwt(t) => jwt(&mut v, t, trust, expect),
    }
    v
}

/// `key_trusted`: the device UUID has a key in the trust store.
fn trusted_key<'a>(v: &mut Verdict, trust: &'a TrustStore, uuid: Uuid) -> Option<&'a TrustedKey> {
    let key = trust.get(&uuid);
    match key {
        Some(_) => v.push(
            "key_trusted",
            true,
            format!("device {uuid} is in the trust store"),
        ),
        None => v.push(
            "key_trusted",
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
            "signature",
            false,
            "token has no COSE_Sign1 part: it is unsigned",
        );
        return;
    };
    v.push(
        "algorithm",
        c.alg == Some(ALG_ES256),
        match c.alg {
            Some(ALG_ES256) => "ES256".to_string(),
            Some(other) => format!("COSE alg {other}, expected -7 (ES256)"),
            None => "no alg in the protected header, expected -7 (ES256)".to_string(),
        },
    );
    let kid_ok = c.kid.as_deref() == Some(KID_IDENTITY);
    v.push(
        "key_id",
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
            "signature",
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

fn expect_uuid(v: &mut Verdict, expect: &Expectations, actual: Option<Uuid>) {
    if let Some(want) = expect.device_uuid {
        let ok = actual == Some(want);
        v.push(
            "device_uuid",
            ok,
            match actual {
                Some(got) if ok => format!("{got} as seen earlier in the run"),
                Some(got) => format!("token says {got}, the run saw {want}"),
                None => format!("token names no device, the run saw {want}"),
            },
        );
    }
}

fn identity(v: &mut Verdict, t: &IdentityToken, trust: &TrustStore, expect: &Expectations) {
    v.push(
        "message_type",
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
            "signature",
            false,
            "COSE payload is embedded and differs from the token body",
        );
        key = None;
    }
    cose_checks(v, t.cose.as_ref(), &t.body, key);
    expect_uuid(v, expect, Some(t.device_uuid));
    if let Some(challenge) = expect.challenge {
        let ok = t.nonce == challenge;
        v.push(
            "nonce",
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

fn keygen(v: &mut Verdict, t: &KeygenToken, trust: &TrustStore, expect: &Expectations) {
    let Some(payload) = t.cose.as_ref().and_then(|c| c.payload.as_deref()) else {
        v.push(
            "signature",
            false,
            "token has no COSE_Sign1 part: it is unsigned",
        );
        v.push("digest", false, "no signed payload binds the DER");
        return;
    };
    v.push(
        "message_type",
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
        "digest",
        t.digest_matches,
        if t.digest_matches {
            "SHA-256 of the DER equals the signed digest".to_string()
        } else {
            format!(
                "SHA-256 of the DER is {}, the signed digest is {} (DER changed after signing)",
                hex::encode(super::encode::sha256(&t.der)),
                hex::encode(t.digest)
            )
        },
    );
    if let Some(csr) = &t.csr {
        v.push(
            "csr_signature",
            csr.signature_valid,
            if csr.signature_valid {
                "CSR signature verifies with its own key (proof of possession)"
            } else {
                "CSR signature does not verify with its own key"
            },
        );
    }
    expect_uuid(v, expect, Some(t.device_uuid));
    if let Some(want) = expect.sec_tag {
        v.push(
            "sec_tag",
            t.sec_tag == want,
            format!("sec_tag {} (requested {want})", t.sec_tag),
        );
    }
    // A requested CN applies to CSRs; a public-key token has no subject.
    if let (Some(want), Some(csr)) = (&expect.common_name, &t.csr) {
        let got = csr.common_name.as_deref();
        v.push(
            "common_name",
            got == Some(want.as_str()),
            format!(
                "CSR CN {} (requested {want:?})",
                got.map_or_else(|| "missing".to_string(), |g| format!("{g:?}"))
            ),
        );
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

fn jwt_time(v: &mut Verdict, t: &Jwt, now: i64) {
    let (iat, exp) = match (time_claim(t, "iat"), time_claim(t, "exp")) {
        (Ok(iat), Ok(exp)) => (iat, exp),
        (Err(e), _) | (_, Err(e)) => return v.push("jwt_time", false, e),
    };
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
    v.push(
        "jwt_time",
        ok,
        problem.unwrap_or_else(|| format!("valid at {now} (iat {iat:?}, exp {exp:?})")),
    );
}

fn jwt(v: &mut Verdict, t: &Jwt, trust: &TrustStore, expect: &Expectations) {
    let alg = t.header.get("alg").and_then(|a| a.as_str());
    v.push(
        "algorithm",
        alg == Some("ES256"),
        format!("header alg {alg:?}, expected \"ES256\""),
    );
    let uuid = t.issuer_uuid();
    let key = match uuid {
        Some(uuid) => trusted_key(v, trust, uuid),
        None => {
            v.push(
                "key_trusted",
                false,
                "iss names no device UUID; signature not checked",
            );
            None
        }
    };
    if let Some(key) = key {
        let ok = key.verify_es256(t.signing_input.as_bytes(), &t.signature);
        v.push(
            "signature",
            ok,
            if ok {
                "ES256 signature verifies with the trusted key"
            } else {
                "ES256 signature does not verify with the trusted key"
            },
        );
    }
    expect_uuid(v, expect, uuid);
    if let Some(now) = expect.now {
        jwt_time(v, t, now);
    }
    if let Some(want) = &expect.jwt_issuer {
        let got = t.claim_str("iss");
        v.push(
            "jwt_issuer",
            got == Some(want.as_str()),
            format!("iss {got:?}, expected {want:?}"),
        );
    }
}
