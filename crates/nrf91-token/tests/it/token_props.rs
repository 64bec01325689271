//! Property tests over the decoders (the fuzz target's body runs here too,
//! so CI exercises it without cargo-fuzz).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use nrf91_token as token;
use nrf91_token::Token;
use nrf91_token::encode::{self, IdentityBody, KeygenPayload, PAYLOAD_ID_PUBLIC_KEY};
use nrf91_token::verify::verify;
use p256::ecdsa::SigningKey;
use proptest::prelude::*;
use std::sync::OnceLock;
use testkit::token::*;
use uuid::Uuid;

fn key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(random_key)
}

fn valid_tokens() -> &'static [String; 3] {
    static TOKENS: OnceLock<[String; 3]> = OnceLock::new();
    TOKENS.get_or_init(|| [identity(key()), keygen_csr(key()), jwt(key())])
}

proptest! {
    #[test]
    fn fuzz_body_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        token::fuzz_decode(&data);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_text(text in "\\PC{0,300}") {
        let _ = token::decode(&text);
    }

    #[test]
    fn random_parts_decode_to_an_error_or_an_unauthentic_token(
        a in proptest::collection::vec(any::<u8>(), 0..200),
        b in proptest::collection::vec(any::<u8>(), 0..200),
        head in prop_oneof![Just(vec![0xd9u8, 0xd9, 0xf7]), Just(vec![0x30u8]), Just(vec![])],
    ) {
        let first = [head, a].concat();
        let text = encode::join_b64(&first, &b);
        if let Ok(t) = token::decode(&text) {
            prop_assert!(!verify(&t, &Bindings::default().expect(&t), &trust(DEVICE, key())).authentic());
        }
    }

    #[test]
    fn spliced_valid_tokens_are_never_authentic(
        which in 0usize..3,
        at in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        insert in "[A-Za-z0-9_.\\-]{0,8}",
    ) {
        let original = &valid_tokens()[which];
        let start = at.index(original.len());
        let end = (start + cut.index(8)).min(original.len());
        let mutated = format!("{}{}{}", &original[..start], insert, &original[end..]);
        prop_assume!(mutated != *original);
        if let Ok(t) = token::decode(&mutated) {
            let expect = Bindings { now: Some(NOW), ..Bindings::default() };
            prop_assert!(!verify(&t, &expect.expect(&t), &trust(DEVICE, key())).authentic(), "{}", mutated);
        }
    }

    #[test]
    fn identity_bodies_round_trip(
        msg_type in any::<i64>(),
        device in any::<[u8; 16]>(),
        device_type in any::<i64>(),
        firmware in any::<[u8; 16]>(),
        nonce in any::<[u8; 16]>(),
    ) {
        let body = IdentityBody { msg_type, device_uuid: device, device_type, firmware_uuid: firmware, nonce };
        let Ok(Token::Identity(t)) = token::decode(&encode::identity_token(&body, key())) else {
            return Err(TestCaseError::fail("identity token did not decode"));
        };
        prop_assert_eq!(t.msg_type, msg_type);
        prop_assert_eq!(t.device_uuid, Uuid::from_bytes(device));
        prop_assert_eq!(t.device_type.code(), device_type);
        prop_assert_eq!(t.firmware_uuid, Uuid::from_bytes(firmware));
        prop_assert_eq!(t.nonce, nonce);
    }

    #[test]
    fn keygen_payloads_round_trip(
        device in any::<[u8; 16]>(),
        sec_tag in any::<u32>(),
        nonce in any::<[u8; 16]>(),
    ) {
        let der = spki(key());
        let payload = KeygenPayload {
            payload_id: PAYLOAD_ID_PUBLIC_KEY,
            device_uuid: device,
            sec_tag,
            digest: encode::sha256(&der),
            nonce,
        };
        let Ok(Token::Keygen(t)) = token::decode(&encode::keygen_token(&der, &payload, key())) else {
            return Err(TestCaseError::fail("keygen token did not decode"));
        };
        prop_assert_eq!(t.sec_tag, sec_tag);
        prop_assert_eq!(t.device_uuid, Uuid::from_bytes(device));
        prop_assert_eq!(t.nonce, nonce);
        prop_assert!(t.digest_matches);
    }

    #[test]
    fn decoders_reject_or_accept_raw_cbor_without_panicking(
        data in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let text = format!("2dn3{}.{}", URL_SAFE_NO_PAD.encode(&data), URL_SAFE_NO_PAD.encode(&data));
        let _ = token::decode(&text);
        let _ = token::cose::decode_sign1(&data);
        let _ = token::keygen::decode_payload(&data);
    }
}
