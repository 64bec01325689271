//! How the stand-in reads a claim token: just enough of `%ATTESTTOKEN` to
//! find the device, as nRF Cloud's provisioning service must. Written from
//! `reference/nrf91.md`, independently of `crate::token` and the client.
//! Signatures are not checked: the real signing input is not published.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::value::Value;
use uuid::Uuid;

/// The device a claim token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenDevice {
    pub device_uuid: Uuid,
    pub device_type: i64,
    pub firmware_uuid: Uuid,
}

/// `deviceType` as the provisioning service names it (`nrf9160_SICA`).
pub fn device_type_name(code: i64) -> &'static str {
    match code {
        1 => "nrf9160_SIAA",
        2 => "nrf9160_SIBA",
        3 => "nrf9160_SICA",
        4 => "nrf9161_LACA",
        5 => "nrf9131_LACA",
        6 => "nrf9151_LACA",
        _ => "unknown",
    }
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| format!("Invalid claim token: {what} is not base64url ({e})"))
}

fn uuid_item(value: &Value, what: &str) -> Result<Uuid, String> {
    match value {
        Value::Bytes(b) => Uuid::from_slice(b)
            .map_err(|_| format!("Invalid claim token: {what} is {} bytes, not 16", b.len())),
        _ => Err(format!("Invalid claim token: {what} is not a byte string")),
    }
}

/// Decode `<b64url(body)>.<b64url(COSE_Sign1)>`; the body is CBOR tag 55799
/// around `[1, device_uuid, device_type, firmware_uuid, nonce]`.
pub fn read_token(token: &str) -> Result<TokenDevice, String> {
    let (body, cose) = token
        .trim()
        .split_once('.')
        .ok_or("Invalid claim token: expected two base64url parts joined by '.'")?;
    let body = b64(body, "the first part")?;
    let cose = b64(cose, "the second part")?;
    if cose.is_empty() {
        return Err("Invalid claim token: the signature part is empty".into());
    }
    let value: Value = ciborium::from_reader(body.as_slice())
        .map_err(|e| format!("Invalid claim token: the first part is not CBOR ({e})"))?;
    let Value::Tag(55799, inner) = value else {
        return Err("Invalid claim token: the first part is not a self-described CBOR item".into());
    };
    let Value::Array(items) = *inner else {
        return Err("Invalid claim token: the first part is not an array".into());
    };
    if items.len() != 5 {
        return Err(format!(
            "Invalid claim token: {} items in the first part, expected 5",
            items.len()
        ));
    }
    let int = |v: &Value| match v {
        Value::Integer(i) => i64::try_from(i128::from(*i)).ok(),
        _ => None,
    };
    if int(&items[0]) != Some(1) {
        return Err(
            "Invalid claim token: not a device identity attestation token (message type 1)".into(),
        );
    }
    let device_type = int(&items[2]).ok_or("Invalid claim token: device type is not an integer")?;
    Ok(TokenDevice {
        device_uuid: uuid_item(&items[1], "the device UUID")?,
        device_type,
        firmware_uuid: uuid_item(&items[3], "the firmware UUID")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Any text is a token or a 400 message; never a panic.
        #[test]
        fn any_text_is_judged(text in "[A-Za-z0-9_=.-]{0,200}") {
            if let Err(message) = read_token(&text) {
                proptest::prop_assert!(message.starts_with("Invalid claim token"));
            }
        }
    }

    #[test]
    fn a_token_of_another_message_type_is_refused() {
        // [2, uuid, 4, uuid, nonce] in tag 55799
        let mut body = vec![0xd9, 0xd9, 0xf7, 0x85, 0x02, 0x50];
        body.extend([1; 16]);
        body.extend([0x04, 0x50]);
        body.extend([2; 16]);
        body.push(0x50);
        body.extend([3; 16]);
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode([0x80])
        );
        let refused = read_token(&token);
        assert!(
            matches!(&refused, Err(m) if m.contains("message type 1")),
            "{refused:?}"
        );
        body[4] = 0x01;
        let token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode([0x80])
        );
        let device = read_token(&token).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(device.device_uuid, Uuid::from_bytes([1; 16]));
        assert_eq!(device.device_type, 4);
        assert_eq!(device.firmware_uuid, Uuid::from_bytes([2; 16]));
    }
}
