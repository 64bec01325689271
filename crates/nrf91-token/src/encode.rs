//! Token builders: what a modem emits. Used by the simulator and by tests that
//! need tokens signed with keys they made. Signing goes through
//! [`cose::sign1`], i.e. the same signing input the verifier checks.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ciborium::value::Value;
use p256::ecdsa::SigningKey;

use super::cose::{self, KID_IDENTITY, Signing, TAG_SELF_DESCRIBED};

pub use super::attest::{IdentityBody, MSG_TYPE_IDENTITY_V1};
pub use super::claim::{MSG_TYPE_CLAIM, ownership_key_digest};
pub use super::keygen::{KeygenPayload, PAYLOAD_ID_CSR, PAYLOAD_ID_PUBLIC_KEY, sha256};

fn self_described(items: Vec<Value>) -> Vec<u8> {
    cose::to_cbor(&Value::Tag(
        TAG_SELF_DESCRIBED,
        Box::new(Value::Array(items)),
    ))
}

/// The CBOR encoding of a sec_tag as the modem writes it: a signed 32-bit
/// integer, so tags of 2^31 and above come out negative.
pub fn sec_tag_cbor(sec_tag: u32) -> Vec<u8> {
    cose::to_cbor(&Value::Integer(i64::from(sec_tag as i32).into()))
}

/// CBOR bytes of an identity token body (tag 55799 around an array of 5).
pub fn identity_body(body: &IdentityBody) -> Vec<u8> {
    self_described(vec![
        Value::Integer(body.msg_type.into()),
        Value::Bytes(body.device_uuid.to_vec()),
        Value::Integer(body.device_type.into()),
        Value::Bytes(body.firmware_uuid.to_vec()),
        Value::Bytes(body.nonce.to_vec()),
    ])
}

/// What a device claim token says (the layout this project assumes: see
/// [`crate::claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimBody {
    pub msg_type: i64,
    pub device_uuid: [u8; 16],
    pub device_type: i64,
    pub firmware_uuid: [u8; 16],
    pub ownership_key_digest: [u8; 32],
    /// The host's challenge; the item is left out without one.
    pub challenge: Option<[u8; 16]>,
}

/// CBOR bytes of a claim token body (tag 55799 around an array of 5 or 6).
pub fn claim_body(body: &ClaimBody) -> Vec<u8> {
    let mut items = vec![
        Value::Integer(body.msg_type.into()),
        Value::Bytes(body.device_uuid.to_vec()),
        Value::Integer(body.device_type.into()),
        Value::Bytes(body.firmware_uuid.to_vec()),
        Value::Bytes(body.ownership_key_digest.to_vec()),
    ];
    if let Some(challenge) = body.challenge {
        items.push(Value::Bytes(challenge.to_vec()));
    }
    self_described(items)
}

/// A complete `%CLAIMTOKEN` token signed by `key` (detached COSE payload,
/// as `%ATTESTTOKEN`).
pub fn claim_token(body: &ClaimBody, key: &SigningKey) -> String {
    let body = claim_body(body);
    join_b64(&body, &cose::sign1(key, KID_IDENTITY, &body, true))
}

/// CBOR bytes of a key-generation token payload.
pub fn keygen_payload(payload: &KeygenPayload) -> Vec<u8> {
    self_described(vec![
        Value::Integer(payload.payload_id.into()),
        Value::Bytes(payload.device_uuid.to_vec()),
        Value::Bytes(sec_tag_cbor(payload.sec_tag)),
        Value::Bytes(payload.digest.to_vec()),
        Value::Bytes(payload.nonce.to_vec()),
    ])
}

/// `<b64url(first)>.<b64url(second)>`, the shape of both modem token kinds.
pub fn join_b64(first: &[u8], second: &[u8]) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(first),
        URL_SAFE_NO_PAD.encode(second)
    )
}

/// A complete `%ATTESTTOKEN` token signed by `key` (detached COSE payload).
pub fn identity_token(body: &IdentityBody, key: &SigningKey) -> String {
    let body = identity_body(body);
    join_b64(&body, &cose::sign1(key, KID_IDENTITY, &body, true))
}

/// A complete `%KEYGEN` token: `der` (CSR or SPKI) bound by a signed payload.
pub fn keygen_token(der: &[u8], payload: &KeygenPayload, key: &SigningKey) -> String {
    let payload = keygen_payload(payload);
    join_b64(der, &cose::sign1(key, KID_IDENTITY, &payload, false))
}

/// A compact JWS (ES256): `b64(header).b64(claims).b64(r||s)`.
pub fn jwt(header: &serde_json::Value, claims: &serde_json::Value, key: &SigningKey) -> String {
    jwt_exact(&header.to_string(), &claims.to_string(), key)
}

/// A compact JWS (ES256) over the exact JSON texts given: the signature
/// covers the text as written (a modem pads its JSON with spaces), so it
/// must not be re-serialised. The one JWT signer of the project.
pub fn jwt_exact(header_json: &str, claims_json: &str, key: &SigningKey) -> String {
    jwt_exact_as(Signing::Deterministic, header_json, claims_json, key)
}

/// [`jwt_exact`], signed as `signing` says.
pub fn jwt_exact_as(
    signing: Signing,
    header_json: &str,
    claims_json: &str,
    key: &SigningKey,
) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(claims_json)
    );
    let signature = cose::es256(key, signing_input.as_bytes(), signing);
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn fixture_attest_cose_has_the_framing_sign1_produces() {
        // COSE part of a real modem's %ATTESTTOKEN (fixture): same header bytes.
        let real = URL_SAFE_NO_PAD
            .decode("0oRDoQEmoQRBIfZYQGuXwJliinHc6xDPruiyjsaXyXZbZVpUuOhHG9YS8L05VuglCcJhMN4EUhWVGpaHgNnHHno6ahi-d5tOeZmAcNY")
            .unwrap();
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let ours = cose::sign1(&key, KID_IDENTITY, b"body", true);
        assert_eq!(real[..12], ours[..12]);
        assert_eq!(real.len(), ours.len());
    }

    #[test]
    fn jwt_exact_signs_the_text_as_written() {
        use p256::ecdsa::signature::Verifier;
        let key = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let header = r#"{"typ":"JWT","alg":"ES256"}  "#;
        let claims = r#"{"iss":"nRF9161.x"}  "#;
        let token = jwt_exact(header, claims, &key);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[0]).unwrap(), header.as_bytes());
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[1]).unwrap(), claims.as_bytes());
        let signature =
            p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        key.verifying_key()
            .verify(input.as_bytes(), &signature)
            .unwrap();
        // The Value form is the same signer over the compact serialisation.
        let value = serde_json::json!({"a": 1});
        assert_eq!(
            jwt(&value, &value, &key).rsplit_once('.').unwrap().0,
            jwt_exact("{\"a\":1}", "{\"a\":1}", &key)
                .rsplit_once('.')
                .unwrap()
                .0
        );
    }

    #[test]
    fn large_sec_tags_encode_as_negative_int32() {
        assert_eq!(sec_tag_cbor(17), vec![0x11]);
        assert_eq!(
            sec_tag_cbor(0x8000_0000),
            vec![0x3a, 0x7f, 0xff, 0xff, 0xff]
        );
    }
}
