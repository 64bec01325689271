//! Who a simulated board is: the facts a real nRF91 carries from the factory.

use std::fmt;

use p256::ecdsa::SigningKey;
use p256::pkcs8::EncodePublicKey;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Type Allocation Code of the example IMEI in the reference (352656100367872).
const TAC: &str = "35265610";
/// Device type code of nRF9161 LACA in attestation tokens.
pub const DEVICE_TYPE_NRF9161_LACA: i64 = 4;
/// Device type code of nRF9160 SICA in attestation tokens.
pub const DEVICE_TYPE_NRF9160_SICA: i64 = 3;
/// Model string `AT+CGMM` prints.
pub const MODEL: &str = "nRF9161-LACA";
/// Firmware version `AT+CGMR` prints.
pub const FIRMWARE: &str = "mfw_nrf91x1_2.0.1";
/// One firmware build, one `%XMODEMUUID`: every board of a fleet shares it.
pub const FIRMWARE_UUID: Uuid = uuid::uuid!("25c95751-efa4-40d4-8b4a-1dcaab81fac9");

/// Factory identity of one simulated board.
#[derive(Clone)]
pub struct ModemIdentity {
    pub device_uuid: Uuid,
    /// 15 digits, the last one a Luhn check digit.
    pub imei: String,
    /// `AT+CGMM`, e.g. `nRF9161-LACA`.
    pub model: String,
    /// `AT+CGMR`, e.g. `mfw_nrf91x1_2.0.1`.
    pub firmware: String,
    /// `AT%XMODEMUUID`: the firmware build, not the device.
    pub firmware_uuid: Uuid,
    /// Device type code in attestation tokens (4 = nRF9161 LACA).
    pub device_type: i64,
    /// The device identity key; its public half goes in the trust file.
    pub signing_key: SigningKey,
}

impl fmt::Debug for ModemIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModemIdentity")
            .field("device_uuid", &self.device_uuid)
            .field("imei", &self.imei)
            .field("model", &self.model)
            .field("firmware", &self.firmware)
            .field("firmware_uuid", &self.firmware_uuid)
            .field("device_type", &self.device_type)
            .finish_non_exhaustive()
    }
}

/// A deterministic RNG for `(seed, index, purpose)`.
pub(crate) fn derived_rng(seed: u64, index: u32, purpose: &str) -> StdRng {
    let mut hasher = Sha256::new();
    hasher.update(b"nrf-provd sim\0");
    hasher.update(purpose.as_bytes());
    hasher.update(seed.to_be_bytes());
    hasher.update(index.to_be_bytes());
    StdRng::from_seed(hasher.finalize().into())
}

impl ModemIdentity {
    /// The identity of board `index` in a fleet made from `seed`: the same
    /// pair always gives the same board.
    pub fn from_seed(seed: u64, index: u32) -> Self {
        let mut rng = derived_rng(seed, index, "identity");
        let device_uuid = uuid::Builder::from_random_bytes(rng.r#gen()).into_uuid();
        let serial: u32 = rng.gen_range(0..1_000_000);
        let body = format!("{TAC}{serial:06}");
        let imei = format!("{body}{}", crate::imei::luhn_check_digit(&body));
        let signing_key = SigningKey::random(&mut rng);
        Self {
            device_uuid,
            imei,
            model: MODEL.to_owned(),
            firmware: FIRMWARE.to_owned(),
            firmware_uuid: FIRMWARE_UUID,
            device_type: DEVICE_TYPE_NRF9161_LACA,
            signing_key,
        }
    }

    /// The board with another firmware (`None`: as it is). An nRF9160
    /// firmware (`mfw_nrf9160_…`) makes it an nRF9160 SICA, as only that
    /// chip runs it: model `nRF9160-SICA`, device type 3, and no
    /// `%DEVICEUUID`. What each firmware can do is [`crate::modem`]'s.
    pub fn with_firmware(mut self, firmware: Option<&str>) -> Self {
        if let Some(text) = firmware {
            self.firmware = text.to_owned();
            if text.to_ascii_lowercase().contains("nrf9160") {
                self.model = "nRF9160-SICA".to_owned();
                self.device_type = DEVICE_TYPE_NRF9160_SICA;
            }
        }
        self
    }

    /// SubjectPublicKeyInfo DER of the identity public key.
    pub fn public_key_spki_der(&self) -> Vec<u8> {
        spki_der(&self.signing_key)
    }

    /// The chip name used in JWT `iss`/`jti`: the model up to the dash
    /// (`nRF9161-LACA` -> `nRF9161`), as in the SDK's `"nRF9160.<uuid>"`.
    pub fn chip(&self) -> &str {
        self.model.split('-').next().unwrap_or(&self.model)
    }

    /// `%HWVERSION` text: `nRF9161 LACA A0A`.
    pub fn hw_version(&self) -> String {
        format!("{} A0A", self.model.replace('-', " "))
    }

    /// `%SHORTSWVER` text: the firmware version without its `mfw_` prefix.
    pub fn short_sw_version(&self) -> &str {
        self.firmware.strip_prefix("mfw_").unwrap_or(&self.firmware)
    }
}

/// SubjectPublicKeyInfo DER of `key`'s public half.
pub fn spki_der(key: &SigningKey) -> Vec<u8> {
    // Encoding a valid P-256 point cannot fail; an empty Vec would only make
    // a verifier reject the key, never panic.
    key.verifying_key()
        .to_public_key_der()
        .map(|doc| doc.as_bytes().to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_board_different_index_different_board() {
        let a = ModemIdentity::from_seed(7, 0);
        let b = ModemIdentity::from_seed(7, 0);
        let c = ModemIdentity::from_seed(7, 1);
        assert_eq!(a.device_uuid, b.device_uuid);
        assert_eq!(a.imei, b.imei);
        assert_eq!(a.public_key_spki_der(), b.public_key_spki_der());
        assert_ne!(a.device_uuid, c.device_uuid);
        assert_ne!(a.public_key_spki_der(), c.public_key_spki_der());
    }

    #[test]
    fn identities_look_like_real_ones() {
        for i in 0..50 {
            let id = ModemIdentity::from_seed(99, i);
            assert!(crate::imei::is_valid(&id.imei), "{}", id.imei);
            assert_eq!(id.device_uuid.get_version_num(), 4);
            assert_eq!(id.chip(), "nRF9161");
            assert_eq!(id.hw_version(), "nRF9161 LACA A0A");
            assert_eq!(id.short_sw_version(), "nrf91x1_2.0.1");
            assert_eq!(id.public_key_spki_der().len(), 91);
        }
    }
}
