//! `%ATTESTTOKEN`: the device identity attestation token.
//!
//! `<b64url(body)>.<b64url(COSE_Sign1)>`, body = tag 55799 around
//! `[msg_type, device_uuid, device_type, firmware_uuid, nonce]`; the COSE
//! payload is detached (the body is what is signed).

use ciborium::value::Value;
use uuid::Uuid;

use super::cose::{self, CoseSign1, TAG_SELF_DESCRIBED};
use super::{Part, TokenError};

/// `%ATTESTTOKEN` body message type: device identity v1.
pub const MSG_TYPE_IDENTITY_V1: i64 = 1;
/// Fields of an identity attestation token body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityBody {
    pub msg_type: i64,
    pub device_uuid: [u8; 16],
    pub device_type: i64,
    pub firmware_uuid: [u8; 16],
    pub nonce: [u8; 16],
}

/// A decoded identity attestation token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityToken {
    /// The token text (without response prefix and quotes).
    pub text: String,
    /// Body bytes as received: the detached payload the signature covers.
    pub body: Vec<u8>,
    pub msg_type: i64,
    pub device_uuid: Uuid,
    pub device_type: DeviceType,
    /// UUID of the modem firmware build (as `AT%XMODEMUUID`).
    pub firmware_uuid: Uuid,
    pub nonce: [u8; 16],
    /// `None` when the token came without its COSE part.
    pub cose: Option<CoseSign1>,
}

/// The modem's device type code; unknown codes are kept, not rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    Known { code: i64, name: &'static str },
    Unknown(i64),
}

/// Device type codes from Nordic's tools.
const DEVICE_TYPES: [(i64, &str); 6] = [
    (1, "nRF9160 SIAA"),
    (2, "nRF9160 SIBA"),
    (3, "nRF9160 SICA"),
    (4, "nRF9161 LACA"),
    (5, "nRF9131 LACA"),
    (6, "nRF9151 LACA"),
];

impl DeviceType {
    pub fn from_code(code: i64) -> Self {
        DEVICE_TYPES
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(DeviceType::Unknown(code), |(code, name)| {
                DeviceType::Known { code: *code, name }
            })
    }

    pub fn code(&self) -> i64 {
        match self {
            DeviceType::Known { code, .. } | DeviceType::Unknown(code) => *code,
        }
    }

    /// The chip name, or `"unknown"`.
    pub fn name(&self) -> &'static str {
        match self {
            DeviceType::Known { name, .. } => name,
            DeviceType::Unknown(_) => "unknown",
        }
    }
}

fn field(field: &'static str, problem: impl Into<String>) -> TokenError {
    TokenError::Field {
        part: Part::Body,
        field,
        problem: problem.into(),
    }
}

/// Items of a self-described (tag 55799) array of exactly five, as both
/// modem token kinds use.
pub(crate) fn five_items(
    value: Value,
    err: impl Fn(&'static str, String) -> TokenError,
) -> Result<[Value; 5], TokenError> {
    let Value::Tag(TAG_SELF_DESCRIBED, inner) = value else {
        return Err(err(
            "structure",
            "does not start with CBOR tag 55799 (d9 d9 f7)".into(),
        ));
    };
    let Value::Array(items) = *inner else {
        return Err(err("structure", "tag 55799 does not wrap an array".into()));
    };
    items.try_into().map_err(|items: Vec<Value>| {
        err(
            "structure",
            format!("array of {} items, expected 5", items.len()),
        )
    })
}

/// A CBOR integer item, or an error naming the field.
pub(crate) fn int_item(
    value: &Value,
    name: &'static str,
    err: &impl Fn(&'static str, String) -> TokenError,
) -> Result<i64, TokenError> {
    cose::as_i64(value).ok_or_else(|| err(name, "not an integer (or out of range)".into()))
}

/// A CBOR byte string item of exactly `N` bytes.
pub(crate) fn bytes_item<const N: usize>(
    value: &Value,
    name: &'static str,
    err: &impl Fn(&'static str, String) -> TokenError,
) -> Result<[u8; N], TokenError> {
    match value {
        Value::Bytes(b) => b
            .as_slice()
            .try_into()
            .map_err(|_| err(name, format!("{} bytes, expected {N}", b.len()))),
        _ => Err(err(name, format!("not a byte string of {N} bytes"))),
    }
}

/// Decode the CBOR body of an identity token.
pub fn decode_body(bytes: &[u8]) -> Result<IdentityBody, TokenError> {
    let err = |name: &'static str, problem: String| field(name, problem);
    let value = cose::read_cbor(bytes, Part::Body)?;
    let [msg_type, device_uuid, device_type, firmware_uuid, nonce] = five_items(value, err)?;
    Ok(IdentityBody {
        msg_type: int_item(&msg_type, "msg_type (item 1)", &err)?,
        device_uuid: bytes_item(&device_uuid, "device_uuid (item 2)", &err)?,
        device_type: int_item(&device_type, "device_type (item 3)", &err)?,
        firmware_uuid: bytes_item(&firmware_uuid, "firmware_uuid (item 4)", &err)?,
        nonce: bytes_item(&nonce, "nonce (item 5)", &err)?,
    })
}

/// Build the token from its decoded body bytes and the COSE part's text.
pub(crate) fn decode_parts(
    text: &str,
    body: Vec<u8>,
    cose_text: &str,
) -> Result<IdentityToken, TokenError> {
    let fields = decode_body(&body)?;
    let cose = super::decode_cose_part(cose_text)?;
    Ok(IdentityToken {
        text: text.to_string(),
        body,
        msg_type: fields.msg_type,
        device_uuid: Uuid::from_bytes(fields.device_uuid),
        device_type: DeviceType::from_code(fields.device_type),
        firmware_uuid: Uuid::from_bytes(fields.firmware_uuid),
        nonce: fields.nonce,
        cose,
    })
}

impl IdentityToken {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "identity",
            "msg_type": self.msg_type,
            "device_uuid": self.device_uuid.to_string(),
            "device_type": self.device_type.name(),
            "device_type_code": self.device_type.code(),
            "firmware_uuid": self.firmware_uuid.to_string(),
            "nonce": hex::encode(self.nonce),
            "cose": super::cose_json(self.cose.as_ref()),
        })
    }

    pub fn describe(&self) -> String {
        let msg = if self.msg_type == MSG_TYPE_IDENTITY_V1 {
            " (device identity v1)"
        } else {
            " (unknown message type)"
        };
        format!(
            "identity attestation token (%ATTESTTOKEN)\n\
             \x20 message type      {}{msg}\n\
             \x20 device UUID       {}\n\
             \x20 device type       {} (code {})\n\
             \x20 firmware UUID     {}\n\
             \x20 nonce             {}\n{}",
            self.msg_type,
            self.device_uuid,
            self.device_type.name(),
            self.device_type.code(),
            self.firmware_uuid,
            hex::encode(self.nonce),
            super::cose_line(self.cose.as_ref()),
        )
    }
}
