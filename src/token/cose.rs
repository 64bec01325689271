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
