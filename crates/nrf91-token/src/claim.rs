//! `%CLAIMTOKEN`: the device claim token.
//!
//! `<b64url(claim token)>.<b64url(COSE_Sign1)>`, the COSE payload detached
//! like `%ATTESTTOKEN`'s. Nordic publishes what the message holds (device
//! type, device UUID, firmware UUID, the SHA-256 of the ownership public
//! key) but **not its CBOR layout**. This decoder reads the layout this
//! project ASSUMES, mirroring the attestation body:
//!
//! ```text
//! tag 55799 [ msg_type: int (4, ASSUMED: the one type missing from Nordic's parser table),
//!             device_uuid: bstr(16), device_type: int, firmware_uuid: bstr(16),
//!             ownership_key_digest: bstr(32),
//!             challenge: bstr(16)          ; only when the host gave one (ASSUMED) ]
//! ```
//!
//! and the digest as SHA-256 of the ownership public key's
//! SubjectPublicKeyInfo DER ([`ownership_key_digest`], ASSUMED: one
//! function, so it changes in one place). An item that is not what the
//! assumed layout has at its place is kept as raw CBOR, and the token says
//! which fields it recognised ([`ClaimToken::recognised`]): a real modem's
//! token in another layout still decodes, and fails the `layout` check
//! rather than being judged on fields read by guesswork.

use ciborium::value::Value;
use uuid::Uuid;

use super::attest::DeviceType;
use super::cose::{self, CoseSign1, TAG_SELF_DESCRIBED};
use super::{Part, TokenError};

/// Message type of a device claim token (ASSUMED; see the module docs).
pub const MSG_TYPE_CLAIM: i64 = 4;

/// The field names of the assumed layout, in order.
pub const FIELDS: [&str; 6] = [
    "msg_type",
    "device_uuid",
    "device_type",
    "firmware_uuid",
    "ownership_key_digest",
    "challenge",
];

/// SHA-256 of an ownership public key (SubjectPublicKeyInfo DER): what a
/// claim token binds (ASSUMED, see the module docs).
pub fn ownership_key_digest(spki_der: &[u8]) -> [u8; 32] {
    super::keygen::sha256(spki_der)
}

/// One body item the assumed layout does not explain, kept as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawItem {
    /// Its place in the body array, from 1.
    pub item: usize,
    /// The item re-encoded as CBOR.
    pub cbor: Vec<u8>,
}

/// A decoded device claim token. Every field is `None` when the body did
/// not hold it where the assumed layout puts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken {
    /// The token text (without response prefix and quotes).
    pub text: String,
    /// Body bytes as received: the detached payload the signature covers.
    pub body: Vec<u8>,
    pub msg_type: Option<i64>,
    pub device_uuid: Option<Uuid>,
    pub device_type: Option<DeviceType>,
    pub firmware_uuid: Option<Uuid>,
    pub ownership_key_digest: Option<[u8; 32]>,
    /// The host's challenge, when the body carries one.
    pub challenge: Option<[u8; 16]>,
    /// The names (from [`FIELDS`]) of the fields recognised.
    pub recognised: Vec<&'static str>,
    /// Items the assumed layout does not explain.
    pub raw: Vec<RawItem>,
    pub cose: Option<CoseSign1>,
}

fn err(field: &'static str, problem: impl Into<String>) -> TokenError {
    TokenError::Field {
        part: Part::Body,
        field,
        problem: problem.into(),
    }
}

/// Whether `body` (an `%ATTESTTOKEN`-shaped self-described body) is a
/// claim token: an array whose first item is [`MSG_TYPE_CLAIM`].
pub(crate) fn is_claim_body(body: &[u8]) -> bool {
    match cose::read_cbor(body, Part::Body) {
        Ok(Value::Tag(TAG_SELF_DESCRIBED, inner)) => match *inner {
            Value::Array(items) => items.first().and_then(cose::as_i64) == Some(MSG_TYPE_CLAIM),
            _ => false,
        },
        _ => false,
    }
}

fn bytes<const N: usize>(value: &Value) -> Option<[u8; N]> {
    match value {
        Value::Bytes(b) => b.as_slice().try_into().ok(),
        _ => None,
    }
}

/// Decode the claim token body: the assumed layout's fields where they
/// are, the rest kept raw.
pub(crate) fn decode_parts(
    text: &str,
    body: Vec<u8>,
    cose_text: &str,
) -> Result<ClaimToken, TokenError> {
    let Value::Tag(TAG_SELF_DESCRIBED, inner) = cose::read_cbor(&body, Part::Body)? else {
        return Err(err(
            "structure",
            "does not start with CBOR tag 55799 (d9 d9 f7)",
        ));
    };
    let Value::Array(items) = *inner else {
        return Err(err("structure", "tag 55799 does not wrap an array"));
    };
    let mut token = ClaimToken {
        text: text.to_string(),
        body: Vec::new(),
        msg_type: None,
        device_uuid: None,
        device_type: None,
        firmware_uuid: None,
        ownership_key_digest: None,
        challenge: None,
        recognised: Vec::new(),
        raw: Vec::new(),
        cose: super::decode_cose_part(cose_text)?,
    };
    for (index, item) in items.iter().enumerate() {
        let known = match index {
            0 => cose::as_i64(item).map(|t| token.msg_type = Some(t)),
            1 => bytes(item).map(|u| token.device_uuid = Some(Uuid::from_bytes(u))),
            2 => cose::as_i64(item).map(|c| token.device_type = Some(DeviceType::from_code(c))),
            3 => bytes(item).map(|u| token.firmware_uuid = Some(Uuid::from_bytes(u))),
            4 => bytes(item).map(|d| token.ownership_key_digest = Some(d)),
            5 => bytes(item).map(|c| token.challenge = Some(c)),
            _ => None,
        };
        match (known, FIELDS.get(index)) {
            (Some(()), Some(name)) => token.recognised.push(name),
            _ => token.raw.push(RawItem {
                item: index + 1,
                cbor: cose::to_cbor(item),
            }),
        }
    }
    token.body = body;
    Ok(token)
}

impl ClaimToken {
    /// Whether the body is exactly the assumed layout: every field but the
    /// optional challenge recognised, and nothing left raw.
    pub fn layout_known(&self) -> bool {
        self.raw.is_empty() && FIELDS[..5].iter().all(|f| self.recognised.contains(f))
    }

    /// Words for what was recognised and what was kept raw.
    pub fn layout_words(&self) -> String {
        let raw: Vec<String> = self
            .raw
            .iter()
            .map(|r| format!("item {} ({})", r.item, hex::encode(&r.cbor)))
            .collect();
        format!(
            "recognised {}; kept raw {}",
            if self.recognised.is_empty() {
                "nothing".to_string()
            } else {
                self.recognised.join(", ")
            },
            if raw.is_empty() {
                "nothing".to_string()
            } else {
                raw.join(", ")
            }
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "claim",
            "layout": "assumed (Nordic does not publish the claim token's CBOR layout)",
            "msg_type": self.msg_type,
            "device_uuid": self.device_uuid.map(|u| u.to_string()),
            "device_type": self.device_type.map(|d| d.name()),
            "device_type_code": self.device_type.map(|d| d.code()),
            "firmware_uuid": self.firmware_uuid.map(|u| u.to_string()),
            "ownership_key_digest": self.ownership_key_digest.map(hex::encode),
            "challenge": self.challenge.map(hex::encode),
            "recognised": self.recognised,
            "raw": self.raw.iter().map(|r| serde_json::json!({
                "item": r.item,
                "cbor": hex::encode(&r.cbor),
            })).collect::<Vec<_>>(),
            "cose": super::cose_json(self.cose.as_ref()),
        })
    }

    pub fn describe(&self) -> String {
        let shown = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
        format!(
            "device claim token (%CLAIMTOKEN), layout ASSUMED (unpublished)\n\
             \x20 message type      {}\n\
             \x20 device UUID       {}\n\
             \x20 device type       {}\n\
             \x20 firmware UUID     {}\n\
             \x20 ownership key     sha256 {}\n\
             \x20 challenge         {}\n\
             \x20 layout            {}\n{}",
            shown(self.msg_type.map(|t| t.to_string())),
            shown(self.device_uuid.map(|u| u.to_string())),
            shown(
                self.device_type
                    .map(|d| format!("{} (code {})", d.name(), d.code()))
            ),
            shown(self.firmware_uuid.map(|u| u.to_string())),
            shown(self.ownership_key_digest.map(hex::encode)),
            shown(self.challenge.map(hex::encode)),
            self.layout_words(),
            super::cose_line(self.cose.as_ref()),
        )
    }
}
