//! COSE_Sign1 framing shared by the verifier and the simulator.
//!
//! The one place that decides which bytes a modem's ES256 signature covers
//! (`sig_structure`). Nordic does not publish the exact input; we use RFC 9052
//! `Sig_structure` ("Signature1", protected bytes as received, empty external
//! AAD, payload). If the real construction is learned it changes here only.

use ciborium::value::Value;
use p256::ecdsa::{Signature, SigningKey, signature::Signer};

/// COSE algorithm identifier of ES256 (ECDSA P-256 with SHA-256).
pub const ALG_ES256: i64 = -7;
/// Key id of the device identity key: the CBOR encoding of -2.
pub const KID_IDENTITY: &[u8] = &[0x21];
/// Key id Nordic's tools call "nordic base production key" (CBOR -4).
pub const KID_NORDIC_PRODUCTION: &[u8] = &[0x23];
/// Key id Nordic's tools call "nordic base R&D key" (CBOR -5).
pub const KID_NORDIC_RND: &[u8] = &[0x24];
/// CBOR tag of COSE_Sign1.
pub const TAG_COSE_SIGN1: u64 = 18;
/// CBOR "self-described CBOR" tag (bytes d9 d9 f7) around token bodies.
pub const TAG_SELF_DESCRIBED: u64 = 55799;

/// Serialise a CBOR value. Writing into a Vec cannot fail for plain values.
pub fn to_cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into a Vec cannot fail");
    out
}

/// The protected header a modem sends: the bstr contents `{1: -7}` (`a1 01 26`).
pub fn protected_es256() -> Vec<u8> {
    to_cbor(&Value::Map(vec![(
        Value::Integer(1.into()),
        Value::Integer(ALG_ES256.into()),
    )]))
}

/// The bytes an ES256 signature of a COSE_Sign1 covers (RFC 9052 §4.4).
/// `protected` is the protected header exactly as received; `payload` is the
/// embedded payload, or for a detached token the decoded body bytes.
pub fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    to_cbor(&Value::Array(vec![
        Value::Text("Signature1".into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ]))
}

/// Build a tagged COSE_Sign1 signed with `key` over [`sig_structure`].
/// With `detached` the payload slot is `null`, as in `%ATTESTTOKEN`.
pub fn sign1(key: &SigningKey, kid: &[u8], payload: &[u8], detached: bool) -> Vec<u8> {
    let protected = protected_es256();
    let signature: Signature = key.sign(&sig_structure(&protected, payload));
    encode_sign1(
        &protected,
        kid,
        (!detached).then_some(payload),
        &signature.to_bytes(),
    )
}

/// Frame the four COSE_Sign1 fields as tag 18 around an array.
pub fn encode_sign1(
    protected: &[u8],
    kid: &[u8],
    payload: Option<&[u8]>,
    signature: &[u8],
) -> Vec<u8> {
    to_cbor(&Value::Tag(
        TAG_COSE_SIGN1,
        Box::new(Value::Array(vec![
            Value::Bytes(protected.to_vec()),
            Value::Map(vec![(Value::Integer(4.into()), Value::Bytes(kid.to_vec()))]),
            payload.map_or(Value::Null, |p| Value::Bytes(p.to_vec())),
            Value::Bytes(signature.to_vec()),
        ])),
    ))
}

// ---------------------------------------------------------------------------
// Decoding

use super::{Part, TokenError};

/// Deepest CBOR nesting accepted from the wire. Token structures are at most
/// three levels deep; a low limit keeps hostile input off the stack.
const CBOR_DEPTH_LIMIT: usize = 16;

/// A decoded COSE_Sign1 (RFC 9052 §4.2), fields as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoseSign1 {
    /// Protected header bstr contents exactly as received (signed over).
    pub protected: Vec<u8>,
    /// `alg` (label 1) from the protected header, when it is an integer.
    pub alg: Option<i64>,
    /// `kid` (label 4), from the protected header or else the unprotected one.
    pub kid: Option<Vec<u8>>,
    /// Embedded payload; `None` when detached (`null`).
    pub payload: Option<Vec<u8>>,
    pub signature: Vec<u8>,
}

impl CoseSign1 {
    /// Human name of the key id, for reports.
    pub fn kid_name(&self) -> &'static str {
        match self.kid.as_deref() {
            Some(KID_IDENTITY) => "device identity key",
            Some(KID_NORDIC_PRODUCTION) => "Nordic base production key",
            Some(KID_NORDIC_RND) => "Nordic base R&D key",
            Some(_) => "unknown key",
            None => "no key id",
        }
    }
}

/// Decode exactly one CBOR item from `bytes`; trailing bytes are an error.
pub(crate) fn read_cbor(bytes: &[u8], part: Part) -> Result<Value, TokenError> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, CBOR_DEPTH_LIMIT)
        .map_err(|e| {
            let (offset, message) = match e {
                ciborium::de::Error::Io(_) => {
                    (bytes.len(), "input ends inside an item".to_string())
                }
                ciborium::de::Error::Syntax(at) => (at, "invalid CBOR".to_string()),
                ciborium::de::Error::Semantic(at, msg) => (at.unwrap_or(0), msg),
                ciborium::de::Error::RecursionLimitExceeded => (0, "nested too deeply".to_string()),
            };
            TokenError::Cbor {
                part,
                offset,
                message,
            }
        })?;
    if !rest.is_empty() {
        return Err(TokenError::Trailing {
            part,
            offset: bytes.len() - rest.len(),
            len: rest.len(),
        });
    }
    Ok(value)
}

/// Integer value of a CBOR item, if it is one that fits an i64.
pub(crate) fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Integer(i) => i64::try_from(*i).ok(),
        _ => None,
    }
}

/// Look up an integer label in a CBOR map (first occurrence).
fn map_get(map: &[(Value, Value)], label: i64) -> Option<&Value> {
    map.iter()
        .find(|(k, _)| as_i64(k) == Some(label))
        .map(|(_, v)| v)
}

fn field_err(part: Part, field: &'static str, problem: impl Into<String>) -> TokenError {
    TokenError::Field {
        part,
        field,
        problem: problem.into(),
    }
}

/// Decode a COSE_Sign1, tagged (18) or untagged.
pub fn decode_sign1(bytes: &[u8]) -> Result<CoseSign1, TokenError> {
    let part = Part::Cose;
    let value = read_cbor(bytes, part)?;
    // Only protected header and payload are signed. Requiring the preferred
    // encoding (as modems send) leaves no second spelling of the unsigned
    // envelope, e.g. `undefined` for `null` or a long-form length.
    let mut canonical = Vec::with_capacity(bytes.len());
    if ciborium::into_writer(&value, &mut canonical).is_err() || canonical != bytes {
        return Err(field_err(
            part,
            "encoding",
            "not in preferred (shortest, definite-length) CBOR encoding",
        ));
    }
    let items = match value {
        Value::Tag(TAG_COSE_SIGN1, inner) => *inner,
        Value::Tag(tag, _) => {
            return Err(field_err(
                part,
                "tag",
                format!("CBOR tag {tag}, expected 18 (COSE_Sign1)"),
            ));
        }
        other => other,
    };
    let Value::Array(items) = items else {
        return Err(field_err(part, "structure", "expected an array of 4 items"));
    };
    let [protected, unprotected, payload, signature]: [Value; 4] =
        items.try_into().map_err(|items: Vec<Value>| {
            field_err(
                part,
                "structure",
                format!("array of {} items, expected 4", items.len()),
            )
        })?;

    let Value::Bytes(protected) = protected else {
        return Err(field_err(part, "protected (item 1)", "not a byte string"));
    };
    let protected_map = if protected.is_empty() {
        Vec::new()
    } else {
        match read_cbor(&protected, Part::CoseProtected)? {
            Value::Map(map) => map,
            _ => {
                return Err(field_err(
                    Part::CoseProtected,
                    "header",
                    "protected header is not a map",
                ));
            }
        }
    };
    let Value::Map(unprotected) = unprotected else {
        return Err(field_err(part, "unprotected (item 2)", "not a map"));
    };
    let payload = match payload {
        Value::Bytes(p) => Some(p),
        Value::Null => None,
        _ => {
            return Err(field_err(
                part,
                "payload (item 3)",
                "neither a byte string nor null",
            ));
        }
    };
    let Value::Bytes(signature) = signature else {
        return Err(field_err(part, "signature (item 4)", "not a byte string"));
    };

    let alg = map_get(&protected_map, 1).and_then(as_i64);
    let kid = match map_get(&protected_map, 4).or_else(|| map_get(&unprotected, 4)) {
        None => None,
        Some(Value::Bytes(kid)) => Some(kid.clone()),
        Some(_) => return Err(field_err(part, "kid (label 4)", "not a byte string")),
    };
    Ok(CoseSign1 {
        protected,
        alg,
        kid,
        payload,
        signature,
    })
}
