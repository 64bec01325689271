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

pub(crate) fn decode_parts(header: &str, claims: &str, signature: &str) -> Result<Jwt, TokenError> {
    Ok(Jwt {
        text: format!("{header}.{claims}.{signature}"),
        header: json_object(Part::JwtHeader, header)?,
        claims: json_object(Part::JwtClaims, claims)?,
        signing_input: format!("{header}.{claims}"),
        signature: b64(Part::JwtSignature, signature)?,
    })
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
