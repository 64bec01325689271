//! COSE_Sign1 framing shared by the verifier and the simulator, built and
//! read with `coset`.
//!
//! The one place that decides which bytes a modem's ES256 signature covers
//! (`sig_structure`). Nordic does not publish the exact input; we use RFC 9052
//! `Sig_structure` ("Signature1", protected bytes as received, empty external
//! AAD, payload). If the real construction is learned it changes here only.
//! Signatures are checked by the caller over `sig_structure` (with ring), never
//! through coset: its `verify_detached_signature` panics when the payload is
//! present.

use ciborium::value::Value;
use coset::iana::EnumI64;
use coset::{AsCborValue, Header, HeaderBuilder, ProtectedHeader, iana};

/// COSE algorithm identifier of ES256 (ECDSA P-256 with SHA-256).
pub const ALG_ES256: i64 = iana::Algorithm::ES256 as i64;
/// Key id of the device identity key: the CBOR encoding of -2.
pub const KID_IDENTITY: &[u8] = &[0x21];
/// Key id Nordic's tools call "nordic base production key" (CBOR -4).
pub const KID_NORDIC_PRODUCTION: &[u8] = &[0x23];
/// Key id Nordic's tools call "nordic base R&D key" (CBOR -5).
pub const KID_NORDIC_RND: &[u8] = &[0x24];
/// CBOR tag of COSE_Sign1.
pub const TAG_COSE_SIGN1: u64 = iana::CborTag::CoseSign1 as u64;
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
    ProtectedHeader {
        original_data: None,
        header: HeaderBuilder::new()
            .algorithm(iana::Algorithm::ES256)
            .build(),
    }
    .cbor_bstr()
    .ok()
    .and_then(|bstr| bstr.into_bytes().ok())
    .unwrap_or_default()
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
#[cfg(any(test, feature = "encode"))]
pub fn sign1(key: &p256::ecdsa::SigningKey, kid: &[u8], payload: &[u8], detached: bool) -> Vec<u8> {
    sign1_as(Signing::Deterministic, key, kid, payload, detached)
}

/// [`sign1`], signed as `signing` says.
#[cfg(any(test, feature = "encode"))]
pub fn sign1_as(
    signing: Signing,
    key: &p256::ecdsa::SigningKey,
    kid: &[u8],
    payload: &[u8],
    detached: bool,
) -> Vec<u8> {
    let protected = protected_es256();
    let signature = es256(key, &sig_structure(&protected, payload), signing);
    encode_sign1(
        &protected,
        kid,
        (!detached).then_some(payload),
        &signature.to_bytes(),
    )
}

/// How a token builder signs. A real modem's signatures are its own
/// business; the simulator's need to be either repeatable or cheap.
#[cfg(any(test, feature = "encode"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Signing {
    /// p256's RFC 6979 signatures: the same key and message give the same
    /// bytes, so a record can be compared byte for byte (golden tests).
    #[default]
    Deterministic,
    /// ring's, with a random nonce: ~30 µs a signature, its key loaded
    /// each time (~13 µs of it), to p256's ~150. A simulated fleet signs five times a cycle per board,
    /// and p256's signing was a third of the simulator's CPU, taken from the
    /// station it measures when 256 boards reach a step together (issue 25).
    Randomised,
}

/// An ES256 signature of `message` by `key`, made as `signing` says.
#[cfg(any(test, feature = "encode"))]
pub fn es256(
    key: &p256::ecdsa::SigningKey,
    message: &[u8],
    signing: Signing,
) -> p256::ecdsa::Signature {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let deterministic = || p256::ecdsa::signature::Signer::sign(key, message);
    if signing == Signing::Deterministic {
        return deterministic();
    }
    let rng = ring::rand::SystemRandom::new();
    let public = key.verifying_key().to_encoded_point(false);
    let pair = EcdsaKeyPair::from_private_key_and_public_key(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &key.to_bytes(),
        public.as_bytes(),
        &rng,
    );
    pair.ok()
        .and_then(|pair| pair.sign(&rng, message).ok())
        .and_then(|signature| p256::ecdsa::Signature::from_slice(signature.as_ref()).ok())
        // ring refuses nothing p256 holds; should it, p256 signs.
        .unwrap_or_else(deterministic)
}

/// Frame the four COSE_Sign1 fields as tag 18 around an array: `protected`
/// bytes as given, `{4: kid}` unprotected (omitted when `kid` is empty).
#[cfg(any(test, feature = "encode"))]
pub fn encode_sign1(
    protected: &[u8],
    kid: &[u8],
    payload: Option<&[u8]>,
    signature: &[u8],
) -> Vec<u8> {
    let sign1 = coset::CoseSign1 {
        // Serialised from the bytes as given, never re-encoded.
        protected: ProtectedHeader {
            original_data: Some(protected.to_vec()),
            header: Header::default(),
        },
        unprotected: HeaderBuilder::new().key_id(kid.to_vec()).build(),
        payload: payload.map(<[u8]>::to_vec),
        signature: signature.to_vec(),
    };
    use coset::TaggedCborSerializable;
    // Only duplicate header labels can fail to encode, and this header has
    // one label; an empty result would only make a verifier reject.
    sign1.to_tagged_vec().unwrap_or_default()
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
    /// Only values IANA registers or reserves for private use decode.
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

fn field_err(part: Part, field: &'static str, problem: impl Into<String>) -> TokenError {
    TokenError::Field {
        part,
        field,
        problem: problem.into(),
    }
}

/// Decode a tagged (18) COSE_Sign1 in preferred CBOR encoding.
///
/// The structure is read by coset, which also polices what RFC 9052 asks
/// (no duplicate header labels, a non-empty byte-string `kid`, registered
/// algorithm values). The protected header bytes are kept as received: the
/// signature covers them.
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
        _ => {
            return Err(field_err(
                part,
                "tag",
                "no CBOR tag, expected 18 (COSE_Sign1)",
            ));
        }
    };
    let mut items = match items {
        Value::Array(a) if a.len() == 4 => a,
        Value::Array(a) => {
            return Err(field_err(
                part,
                "structure",
                format!("array of {} items, expected 4", a.len()),
            ));
        }
        _ => return Err(field_err(part, "structure", "expected an array of 4 items")),
    };
    // The protected header is read here once, with the wire's nesting limit
    // and a located error; coset gets an empty bstr in its place (which it
    // reads as an empty header without parsing) and the rest.
    let protected = match items.first_mut() {
        Some(Value::Bytes(bytes)) => std::mem::take(bytes),
        _ => return Err(field_err(part, "protected (item 1)", "not a byte string")),
    };
    let header = if protected.is_empty() {
        Header::default()
    } else {
        let value = read_cbor(&protected, Part::CoseProtected)?;
        Header::from_cbor_value(value)
            .map_err(|e| field_err(Part::CoseProtected, "header", e.to_string()))?
    };
    let mut sign1 = coset::CoseSign1::from_cbor_value(Value::Array(items))
        .map_err(|e| field_err(part, "structure", format!("not a COSE_Sign1: {e}")))?;
    sign1.protected = ProtectedHeader {
        original_data: Some(protected),
        header,
    };
    let alg = match &sign1.protected.header.alg {
        Some(coset::Algorithm::Assigned(alg)) => Some(alg.to_i64()),
        Some(coset::Algorithm::PrivateUse(alg)) => Some(*alg),
        Some(coset::Algorithm::Text(_)) | None => None,
    };
    let kid = [&sign1.protected.header.key_id, &sign1.unprotected.key_id]
        .into_iter()
        .find(|kid| !kid.is_empty())
        .cloned();
    Ok(CoseSign1 {
        protected: sign1.protected.original_data.unwrap_or_default(),
        alg,
        kid,
        payload: sign1.payload,
        signature: sign1.signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: [u8; 64] = [7; 64];

    #[test]
    fn both_signings_verify_and_only_the_deterministic_one_repeats() {
        use p256::ecdsa::signature::Verifier;
        let key = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).unwrap();
        let message = b"Signature1 over a body";
        for signing in [Signing::Deterministic, Signing::Randomised] {
            let (one, two) = (es256(&key, message, signing), es256(&key, message, signing));
            for signature in [one, two] {
                assert!(
                    key.verifying_key().verify(message, &signature).is_ok(),
                    "{signing:?}"
                );
                assert!(
                    key.verifying_key()
                        .verify(b"another body", &signature)
                        .is_err()
                );
            }
            assert_eq!(one == two, signing == Signing::Deterministic, "{signing:?}");
        }
    }

    #[test]
    fn builds_the_bytes_a_modem_sends() {
        let detached = encode_sign1(&protected_es256(), KID_IDENTITY, None, &SIG);
        // d2 (tag 18) 84 (array 4) 43 a1 01 26 (bstr {1:-7}) a1 04 41 21
        // ({4: h'21'}) f6 (null) 58 40 (bstr 64)
        assert_eq!(
            hex::encode(&detached[..16]),
            "d28443a10126a1044121f65840070707"
        );
        let decoded = decode_sign1(&detached).unwrap();
        assert_eq!(decoded.protected, [0xa1, 0x01, 0x26]);
        assert_eq!(decoded.alg, Some(ALG_ES256));
        assert_eq!(decoded.kid.as_deref(), Some(KID_IDENTITY));
        assert_eq!(decoded.payload, None);
        assert_eq!(decoded.signature, SIG);
        let embedded = encode_sign1(&protected_es256(), KID_IDENTITY, Some(b"p"), &SIG);
        assert_eq!(
            decode_sign1(&embedded).unwrap().payload.as_deref(),
            Some(&b"p"[..])
        );
    }

    #[test]
    fn protected_header_bytes_are_kept_as_received() {
        // {1: -7} with -7 in a one-byte extended form: not preferred, but
        // inside the signed bstr, so kept exactly for the signing input.
        let protected = [0xa1, 0x01, 0x38, 0x06];
        let cose = encode_sign1(&protected, KID_IDENTITY, None, &SIG);
        let decoded = decode_sign1(&cose).unwrap();
        assert_eq!(decoded.protected, protected);
        assert_eq!(decoded.alg, Some(ALG_ES256));
    }

    #[test]
    fn refuses_what_a_modem_never_sends() {
        let good = encode_sign1(&protected_es256(), KID_IDENTITY, None, &SIG);
        let preferred = "not in preferred (shortest, definite-length) CBOR encoding";
        let mut empty_kid = good.clone();
        empty_kid.splice(6..10, [0xa1, 0x04, 0x40]); // {4: h''}
        let mut undefined = good.clone();
        undefined[10] = 0xf7; // `undefined` for the null payload
        // {256: [[[…0]]]}, 20 arrays deep.
        let deep = [&[0xa1, 0x19, 0x01, 0x00][..], &[0x81; 20][..], &[0x00][..]].concat();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[1..].to_vec(), "no CBOR tag, expected 18"),
            (
                [&[0xd1][..], &good[1..]].concat(),
                "CBOR tag 17, expected 18",
            ),
            // The protected bstr's length in a long form (58 03, not 43).
            (
                [&good[..2], &[0x58, 0x03][..], &good[3..]].concat(),
                preferred,
            ),
            (
                [&[0xd2, 0x9f][..], &good[2..], &[0xff][..]].concat(),
                preferred,
            ),
            (undefined, preferred),
            (
                [&[0xd2, 0x83][..], &good[2..10], &good[11..]].concat(),
                "array of 3 items, expected 4",
            ),
            (
                encode_sign1(&[0xa2, 0x01, 0x26, 0x01, 0x26], KID_IDENTITY, None, &SIG),
                "protected header): header: duplicate map key",
            ),
            (empty_kid, "expected non-empty bstr"),
            (
                [&good[..], &[0x00][..]].concat(),
                "unexpected byte(s) after",
            ),
            (
                encode_sign1(&deep, KID_IDENTITY, None, &SIG),
                "protected header): bad CBOR at byte 0: nested too deeply",
            ),
        ];
        for (bytes, reason) in cases {
            let error = decode_sign1(&bytes).expect_err(reason).to_string();
            assert!(error.contains(reason), "{}: {error}", hex::encode(&bytes));
        }
    }
}
