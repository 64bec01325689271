//! Helpers shared by the token tests: keys made in the test, tokens signed
//! with them, and a trust store that knows them.

use nrf91_token::encode::{self, IdentityBody, KeygenPayload};
use nrf91_token::trust::TrustStore;
use nrf91_token::{csr, encode::PAYLOAD_ID_CSR, encode::PAYLOAD_ID_PUBLIC_KEY};
use p256::ecdsa::SigningKey;
use p256::pkcs8::EncodePublicKey;
use uuid::Uuid;

pub const DEVICE: Uuid = Uuid::from_u128(0x50363154_3931_44f0_8022_121b6401627d);
pub const FIRMWARE: Uuid = Uuid::from_u128(0x1aff3acb_f1a6_4764_a263_4c2646c1c654);
pub const CHALLENGE: [u8; 16] = *b"0123456789abcdef";
pub const SEC_TAG: u32 = 16842753;
pub const NOW: i64 = 1_700_000_000;

pub fn random_key() -> SigningKey {
    SigningKey::random(&mut rand::rngs::OsRng)
}

pub fn spki(key: &SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_public_key_der()
        .expect("SPKI of a fresh key")
        .as_bytes()
        .to_vec()
}

/// A trust store holding `key` for `uuid`.
pub fn trust(uuid: Uuid, key: &SigningKey) -> TrustStore {
    let mut store = TrustStore::new();
    store.insert(uuid, &spki(key)).expect("insert");
    store
}

pub fn identity_body(nonce: [u8; 16]) -> IdentityBody {
    IdentityBody {
        msg_type: 1,
        device_uuid: *DEVICE.as_bytes(),
        device_type: 4,
        firmware_uuid: *FIRMWARE.as_bytes(),
        nonce,
    }
}

/// An identity token for [`DEVICE`] with nonce [`CHALLENGE`].
pub fn identity(key: &SigningKey) -> String {
    encode::identity_token(&identity_body(CHALLENGE), key)
}

pub fn keygen_payload(der: &[u8], payload_id: i64) -> KeygenPayload {
    KeygenPayload {
        payload_id,
        device_uuid: *DEVICE.as_bytes(),
        sec_tag: SEC_TAG,
        digest: encode::sha256(der),
        nonce: [0x5a; 16],
    }
}

/// A CSR for `CN=<DEVICE>` made with a fresh key (the modem's new key).
pub fn csr_der() -> Vec<u8> {
    let subject = csr::parse_subject(&format!("CN={DEVICE}")).expect("subject");
    let usage = csr::parse_key_usage(csr::DEFAULT_KEY_USAGE).expect("usage");
    csr::build_csr(&random_key(), subject, usage).expect("build CSR")
}

/// A `%KEYGEN` CSR token bound by `identity_key`.
pub fn keygen_csr(identity_key: &SigningKey) -> String {
    let der = csr_der();
    encode::keygen_token(&der, &keygen_payload(&der, PAYLOAD_ID_CSR), identity_key)
}

/// A `%KEYGEN` public-key token bound by `identity_key`.
pub fn keygen_pub(identity_key: &SigningKey) -> String {
    let der = spki(&random_key());
    encode::keygen_token(
        &der,
        &keygen_payload(&der, PAYLOAD_ID_PUBLIC_KEY),
        identity_key,
    )
}

pub fn claim_body(owner_spki: &[u8], challenge: Option<[u8; 16]>) -> encode::ClaimBody {
    encode::ClaimBody {
        msg_type: encode::MSG_TYPE_CLAIM,
        device_uuid: *DEVICE.as_bytes(),
        device_type: 4,
        firmware_uuid: *FIRMWARE.as_bytes(),
        ownership_key_digest: encode::ownership_key_digest(owner_spki),
        challenge,
    }
}

/// A `%CLAIMTOKEN` for [`DEVICE`] binding the ownership key `owner_spki`,
/// carrying [`CHALLENGE`], signed by `identity_key`.
pub fn claim(identity_key: &SigningKey, owner_spki: &[u8]) -> String {
    encode::claim_token(&claim_body(owner_spki, Some(CHALLENGE)), identity_key)
}

pub fn jwt_claims(iat: i64, exp: i64) -> serde_json::Value {
    serde_json::json!({
        "iss": format!("nRF9161.{DEVICE}"),
        "jti": format!("nRF9161.{DEVICE}.0a1b2c"),
        "sub": "station-7",
        "aud": "factory",
        "iat": iat,
        "exp": exp,
    })
}

/// A `%JWT` for [`DEVICE`] valid around [`NOW`].
pub fn jwt(key: &SigningKey) -> String {
    encode::jwt(
        &serde_json::json!({"alg": "ES256", "typ": "JWT"}),
        &jwt_claims(NOW - 10, NOW + 3600),
        key,
    )
}

use nrf91_token::{
    ClaimExpected, Expected, Freshness, IdentityExpected, JwtExpected, JwtFreshness,
    KeygenExpected, Token,
};

/// Every binding a test may ask of a token. [`Bindings::expect`] turns them
/// into the expectation of the token's own kind, leaving out what that kind
/// cannot carry — so one set of bindings judges tokens of every kind.
#[derive(Debug, Clone, Default)]
pub struct Bindings {
    pub challenge: Option<[u8; 16]>,
    pub sec_tag: Option<u32>,
    pub device_uuid: Option<Uuid>,
    pub common_name: Option<String>,
    pub now: Option<i64>,
    pub issuer: Option<String>,
}

impl Bindings {
    pub fn expect(&self, token: &Token) -> Expected {
        match token {
            Token::Identity(_) => Expected::Identity(IdentityExpected {
                freshness: self
                    .challenge
                    .map_or(Freshness::NotChecked, Freshness::Challenge),
                device_uuid: self.device_uuid,
            }),
            Token::Keygen(t) => Expected::Keygen(KeygenExpected {
                format: t.format,
                sec_tag: self.sec_tag,
                device_uuid: self.device_uuid,
                common_name: self.common_name.clone().filter(|_| t.csr.is_some()),
            }),
            // Offline: a JWT judged with no request of a run behind it.
            Token::Jwt(_) => Expected::Jwt(JwtExpected {
                device_uuid: self.device_uuid,
                freshness: JwtFreshness::NotChecked {
                    now: self.now.unwrap_or(NOW),
                },
                audience: None,
                issuer: self.issuer.clone(),
            }),
            // The ownership key is a claim's own binding: judged by the
            // claim tests, not by a shared set of bindings.
            Token::Claim(_) => Expected::Claim(ClaimExpected {
                freshness: self
                    .challenge
                    .map_or(Freshness::NotChecked, Freshness::Challenge),
                device_uuid: self.device_uuid,
                ownership_key_digest: None,
            }),
        }
    }
}
