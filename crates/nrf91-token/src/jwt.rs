//! `%JWT`: a compact JWS (ES256) signed by the device identity key.
//!
//! Claims known from the SDK: `iss` = `"<chip>.<device uuid>"`, `jti`,
//! `sub`, `aud`, `iat`, `exp`. The header is undocumented; `alg` must be ES256.

use serde_json::Value;
use uuid::Uuid;

use super::{Part, TokenError, b64};

/// A decoded JWT.
#[derive(Debug, Clone, PartialEq)]
pub struct Jwt {
    pub text: String,
    pub header: Value,
    pub claims: Value,
    /// `b64(header).b64(claims)` exactly as received: what is signed.
    pub signing_input: String,
    pub signature: Vec<u8>,
}

fn json_object(part: Part, text: &str) -> Result<Value, TokenError> {
    let bytes = b64(part, text)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| TokenError::Json {
        part,
        message: e.to_string(),
    })?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(TokenError::Json {
            part,
            message: "valid JSON but not an object".into(),
        })
    }
}

/// Refuse a header or claims object with a control character in any
/// name or string (`iss`, `jti`, `sub`, `aud`, `kid`, …, nested too).
/// `field` names where `value` is, e.g. `claim "aud"[1]`.
fn refuse_controls(part: Part, field: &str, value: &Value) -> Result<(), TokenError> {
    match value {
        Value::String(text) => super::refuse_controls(part, field, text),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| refuse_controls(part, &format!("{field}[{i}]"), item)),
        Value::Object(map) => map.iter().try_for_each(|(name, item)| {
            super::refuse_controls(part, &format!("the name of a member of {field}"), name)?;
            refuse_controls(part, &format!("{field}.{name}"), item)
        }),
        _ => Ok(()),
    }
}

/// Whether any name or string in `value` holds a control character (the
/// cheap walk every JWT takes; names are built only for the error).
fn has_controls(value: &Value) -> bool {
    let controls = |text: &str| text.chars().any(char::is_control);
    match value {
        Value::String(text) => controls(text),
        Value::Array(items) => items.iter().any(has_controls),
        Value::Object(map) => map
            .iter()
            .any(|(name, item)| controls(name) || has_controls(item)),
        _ => false,
    }
}

/// [`refuse_controls`] over a whole header or claims object, naming its
/// members `<what> "<name>"`.
fn refuse_controls_in(part: Part, what: &str, object: &Value) -> Result<(), TokenError> {
    let Some(map) = object.as_object().filter(|_| has_controls(object)) else {
        return Ok(());
    };
    map.iter().try_for_each(|(name, item)| {
        super::refuse_controls(part, &format!("the name of a {what}"), name)?;
        refuse_controls(part, &format!("{what} {name:?}"), item)
    })
}

pub(crate) fn decode_parts(header: &str, claims: &str, signature: &str) -> Result<Jwt, TokenError> {
    let jwt = Jwt {
        text: format!("{header}.{claims}.{signature}"),
        header: json_object(Part::JwtHeader, header)?,
        claims: json_object(Part::JwtClaims, claims)?,
        signing_input: format!("{header}.{claims}"),
        signature: b64(Part::JwtSignature, signature)?,
    };
    refuse_controls_in(Part::JwtHeader, "header field", &jwt.header)?;
    refuse_controls_in(Part::JwtClaims, "claim", &jwt.claims)?;
    Ok(jwt)
}

impl Jwt {
    /// A string claim.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// The device UUID in `iss` (`"<chip>.<uuid>"`).
    pub fn issuer_uuid(&self) -> Option<Uuid> {
        self.claim_str("iss")?
            .rsplit('.')
            .find_map(|piece| Uuid::try_parse(piece).ok())
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "jwt",
            "header": self.header,
            "claims": self.claims,
            "device_uuid": self.issuer_uuid().map(|u| u.to_string()),
            "signature": hex::encode(&self.signature),
        })
    }

    pub fn describe(&self) -> String {
        let mut out = String::from("JSON Web Token (%JWT)\n");
        for (label, value) in [("header", &self.header), ("claims", &self.claims)] {
            if let Some(map) = value.as_object() {
                for (k, v) in map {
                    out += &format!("  {label:<7} {k:<9} {v}\n");
                }
            }
        }
        out += &format!("  signature {} bytes\n", self.signature.len());
        out
    }
}
