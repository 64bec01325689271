//! `%KEYGEN`: a key generated in the modem, bound to the device identity.
//!
//! `<b64url(DER)>.<b64url(COSE_Sign1)>`: the DER is a CSR or an SPKI; the
//! COSE payload (embedded) is tag 55799 around
//! `[payload_id, device_uuid, bstr(CBOR sec_tag), sha256(DER), nonce]`.

use ciborium::value::Value;
use der::Decode;
use spki::SubjectPublicKeyInfoRef;
use uuid::Uuid;

use super::attest::{bytes_item, five_items, int_item};
use super::cose::{self, CoseSign1};
use super::csr::{self, CsrInfo};
use super::{Part, TokenError};

/// `%KEYGEN` payload id: public key v2 (SubjectPublicKeyInfo DER).
pub const PAYLOAD_ID_PUBLIC_KEY: i64 = 8;
/// `%KEYGEN` payload id: CSR v1 (PKCS#10 DER).
pub const PAYLOAD_ID_CSR: i64 = 9;

/// Fields of a key-generation token payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygenPayload {
    pub payload_id: i64,
    pub device_uuid: [u8; 16],
    pub sec_tag: u32,
    pub digest: [u8; 32],
    pub nonce: [u8; 16],
}

/// SHA-256 of `der`, the digest a key-generation token binds.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(der).into()
}

/// What the DER part holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// PKCS#10 certification request (`%KEYGEN` format 0).
    Csr,
    /// SubjectPublicKeyInfo (`%KEYGEN` format 1).
    PublicKey,
}

impl KeyFormat {
    /// `csr` or `public_key`, as in `parse --json`.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyFormat::Csr => "csr",
            KeyFormat::PublicKey => "public_key",
        }
    }

    /// The `<format>` parameter of `AT%KEYGEN` that asks for this format.
    pub fn code(&self) -> u8 {
        match self {
            KeyFormat::Csr => 0,
            KeyFormat::PublicKey => 1,
        }
    }

    /// The payload id a modem uses for this format.
    pub fn payload_id(&self) -> i64 {
        match self {
            KeyFormat::Csr => PAYLOAD_ID_CSR,
            KeyFormat::PublicKey => PAYLOAD_ID_PUBLIC_KEY,
        }
    }
}

/// A decoded key-generation token.
///
/// When `cose` is `None` (token without its COSE part) the payload fields
/// (`payload_id`, `device_uuid`, `sec_tag`, `digest`, `nonce`) are zero and
/// `digest_matches` is false: there was nothing to read them from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygenToken {
    /// The token text (without response prefix and quotes).
    pub text: String,
    /// The DER exactly as sent (what the digest covers).
    pub der: Vec<u8>,
    pub format: KeyFormat,
    pub payload_id: i64,
    pub device_uuid: Uuid,
    pub sec_tag: u32,
    pub digest: [u8; 32],
    /// SHA-256 of `der` equals `digest`.
    pub digest_matches: bool,
    pub nonce: [u8; 16],
    /// SubjectPublicKeyInfo DER of the generated key.
    pub public_key_spki: Vec<u8>,
    /// Present when `format` is [`KeyFormat::Csr`].
    pub csr: Option<CsrInfo>,
    pub cose: Option<CoseSign1>,
}

fn field(part: Part) -> impl Fn(&'static str, String) -> TokenError {
    move |field, problem| TokenError::Field {
        part,
        field,
        problem,
    }
}

/// The sec_tag: a bstr holding a CBOR integer; negative values are the
/// modem's signed 32-bit view of tags ≥ 2^31.
fn sec_tag(value: &Value) -> Result<u32, TokenError> {
    let err = field(Part::KeygenPayload);
    let Value::Bytes(bytes) = value else {
        return Err(err("sec_tag (item 3)", "not a byte string".into()));
    };
    let inner = cose::read_cbor(bytes, Part::SecTag)?;
    let n = cose::as_i64(&inner)
        .ok_or_else(|| field(Part::SecTag)("sec_tag", "does not hold a CBOR integer".into()))?;
    if let Ok(signed) = i32::try_from(n) {
        Ok(signed as u32)
    } else {
        u32::try_from(n)
            .map_err(|_| field(Part::SecTag)("sec_tag", format!("{n} is not a 32-bit value")))
    }
}

/// Decode the key-generation payload (the COSE payload bytes).
pub fn decode_payload(bytes: &[u8]) -> Result<KeygenPayload, TokenError> {
    let err = field(Part::KeygenPayload);
    let value = cose::read_cbor(bytes, Part::KeygenPayload)?;
    let [payload_id, device_uuid, tag, digest, nonce] = five_items(value, &err)?;
    Ok(KeygenPayload {
        payload_id: int_item(&payload_id, "payload_id (item 1)", &err)?,
        device_uuid: bytes_item(&device_uuid, "device_uuid (item 2)", &err)?,
        sec_tag: sec_tag(&tag)?,
        digest: bytes_item(&digest, "digest (item 4)", &err)?,
        nonce: bytes_item(&nonce, "nonce (item 5)", &err)?,
    })
}

/// Classify and parse the DER part: an SPKI or a CSR. Returns the format,
/// the SPKI DER of the key, and for a CSR its details.
pub fn decode_der(der: &[u8]) -> Result<(KeyFormat, Vec<u8>, Option<CsrInfo>), TokenError> {
    if let Ok(spki) = SubjectPublicKeyInfoRef::from_der(der) {
        return match csr::p256_point(&spki) {
            Ok(_) => Ok((KeyFormat::PublicKey, der.to_vec(), None)),
            Err(problem) => Err(TokenError::Der {
                part: Part::Der,
                message: format!("public key: {problem}"),
            }),
        };
    }
    match csr::parse_csr(der) {
        Ok(parsed) => {
            if let Some(cn) = &parsed.info.common_name {
                super::refuse_controls(Part::Der, "the CSR subject's CN", cn)?;
            }
            Ok((KeyFormat::Csr, parsed.public_key_spki, Some(parsed.info)))
        }
        Err(e) => Err(TokenError::Der {
            part: Part::Der,
            message: format!("neither a SubjectPublicKeyInfo nor a CSR: {e}"),
        }),
    }
}

pub(crate) fn decode_parts(
    text: &str,
    der: Vec<u8>,
    cose_text: &str,
) -> Result<KeygenToken, TokenError> {
    let (format, public_key_spki, csr) = decode_der(&der)?;
    let cose = super::decode_cose_part(cose_text)?;
    let payload = match &cose {
        None => None,
        Some(c) => {
            let bytes = c.payload.as_deref().ok_or_else(|| TokenError::Field {
                part: Part::Cose,
                field: "payload (item 3)",
                problem: "null; a key-generation token embeds its payload".into(),
            })?;
            Some(decode_payload(bytes)?)
        }
    };
    let computed = sha256(&der);
    Ok(KeygenToken {
        text: text.to_string(),
        format,
        payload_id: payload.as_ref().map_or(0, |p| p.payload_id),
        device_uuid: Uuid::from_bytes(payload.as_ref().map_or([0; 16], |p| p.device_uuid)),
        sec_tag: payload.as_ref().map_or(0, |p| p.sec_tag),
        digest: payload.as_ref().map_or([0; 32], |p| p.digest),
        digest_matches: payload.as_ref().is_some_and(|p| p.digest == computed),
        nonce: payload.as_ref().map_or([0; 16], |p| p.nonce),
        der,
        public_key_spki,
        csr,
        cose,
    })
}

impl KeygenToken {
    /// The COSE payload was present, so the payload fields are real.
    pub fn has_payload(&self) -> bool {
        self.cose.is_some()
    }

    pub fn public_key_pem(&self) -> String {
        csr::spki_pem(&self.public_key_spki)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let p = self.has_payload();
        let mut json = serde_json::json!({
            "kind": "keygen",
            "payload_id": p.then_some(self.payload_id),
            "format": self.format.as_str(),
            "device_uuid": p.then(|| self.device_uuid.to_string()),
            "sec_tag": p.then_some(self.sec_tag),
            "digest": p.then(|| hex::encode(self.digest)),
            "digest_matches": self.digest_matches,
            "nonce": p.then(|| hex::encode(self.nonce)),
            "public_key_pem": self.public_key_pem(),
            "cose": super::cose_json(self.cose.as_ref()),
        });
        if let (Some(csr), Some(obj)) = (&self.csr, json.as_object_mut()) {
            obj.insert("subject".into(), csr.subject.clone().into());
            obj.insert("common_name".into(), csr.common_name.clone().into());
            obj.insert("csr_signature_valid".into(), csr.signature_valid.into());
            obj.insert("legacy_null_params".into(), csr.legacy_null_params.into());
        }
        json
    }

    pub fn describe(&self) -> String {
        let mut out = format!(
            "key-generation token (%KEYGEN), {}\n",
            match self.format {
                KeyFormat::Csr => "certificate signing request",
                KeyFormat::PublicKey => "public key",
            }
        );
        if self.has_payload() {
            out += &format!(
                "  payload id        {}\n  device UUID       {}\n  sec_tag           {}\n  \
                 digest            {} ({})\n  nonce             {}\n",
                self.payload_id,
                self.device_uuid,
                self.sec_tag,
                hex::encode(self.digest),
                if self.digest_matches {
                    "matches the DER"
                } else {
                    "DOES NOT MATCH the DER"
                },
                hex::encode(self.nonce),
            );
        }
        if let Some(csr) = &self.csr {
            out += &format!(
                "  CSR subject       {}\n  CSR signature     {}{}\n",
                csr.subject,
                if csr.signature_valid {
                    "valid"
                } else {
                    "INVALID"
                },
                if csr.legacy_null_params {
                    " (old-firmware NULL algorithm parameter)"
                } else {
                    ""
                },
            );
        }
        out += &super::cose_line(self.cose.as_ref());
        out += &self.public_key_pem();
        out
    }
}
