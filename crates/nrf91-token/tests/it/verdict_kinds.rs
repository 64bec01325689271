//! Kind is part of the verdict: a genuine token of a trusted device, offered
//! in answer to the wrong command, is never authentic — it fails the `kind`
//! check, naming both kinds, and nothing else is judged.

use nrf91_token as token;
use nrf91_token::verify::{CheckName, verify};
use nrf91_token::{
    ClaimExpected, Expected, Freshness, IdentityExpected, JwtExpected, JwtFreshness, KeyFormat,
    KeygenExpected,
};
use testkit::token::*;

/// What each token command must answer, with every binding the run knows.
fn commands() -> Vec<(&'static str, Expected)> {
    vec![
        (
            "AT%ATTESTTOKEN",
            Expected::Identity(IdentityExpected {
                freshness: Freshness::Challenge(CHALLENGE),
                device_uuid: Some(DEVICE),
            }),
        ),
        (
            "AT%KEYGEN format 0",
            Expected::Keygen(KeygenExpected {
                format: KeyFormat::Csr,
                sec_tag: Some(SEC_TAG),
                device_uuid: Some(DEVICE),
                common_name: Some(DEVICE.to_string()),
            }),
        ),
        (
            "AT%KEYGEN format 1",
            Expected::Keygen(KeygenExpected {
                format: KeyFormat::PublicKey,
                sec_tag: Some(SEC_TAG),
                device_uuid: Some(DEVICE),
                common_name: None,
            }),
        ),
        (
            "AT%JWT",
            Expected::Jwt(JwtExpected {
                device_uuid: Some(DEVICE),
                freshness: JwtFreshness::NotChecked { now: NOW },
                audience: None,
                issuer: None,
            }),
        ),
        (
            "AT%CLAIMTOKEN",
            Expected::Claim(ClaimExpected {
                freshness: Freshness::Challenge(CHALLENGE),
                device_uuid: Some(DEVICE),
                ownership_key_digest: Some(nrf91_token::claim::ownership_key_digest(&OWNER)),
            }),
        ),
    ]
}

/// The ownership public key the claim tokens bind (any bytes do here).
const OWNER: [u8; 4] = *b"own!";

#[test]
fn every_token_kind_offered_to_every_command_passes_only_its_own() {
    let key = random_key();
    let trust = trust(DEVICE, &key);
    // Genuine tokens of one trusted device, in the order of `commands()`.
    let tokens = [
        ("identity token", identity(&key)),
        ("key-generation token with a CSR", keygen_csr(&key)),
        ("key-generation token with a public key", keygen_pub(&key)),
        ("JWT", jwt(&key)),
        ("device claim token", claim(&key, &OWNER)),
    ];
    for (c, (command, expected)) in commands().iter().enumerate() {
        for (t, (what, text)) in tokens.iter().enumerate() {
            let decoded = token::decode(text).expect("genuine token decodes");
            let verdict = verify(&decoded, expected, &trust);
            if c == t {
                assert!(verdict.authentic(), "{what} for {command}: {verdict:#?}");
                continue;
            }
            assert!(
                !verdict.authentic(),
                "{what} passed as the answer to {command}"
            );
            assert!(!verdict.bindings_hold(), "{what} for {command}");
            let failed: Vec<_> = verdict.failures().collect();
            assert_eq!(failed.len(), 1, "{what} for {command}: {verdict:#?}");
            assert_eq!(failed[0].name, CheckName::Kind);
            let detail = &failed[0].detail;
            assert!(
                detail.contains(what) && detail.contains(command),
                "{what} for {command}: the reason names both kinds: {detail}"
            );
            // The verdict says what the token was, not what was asked for.
            assert_eq!(verdict.kind, decoded.kind());
        }
    }
}

#[test]
fn an_identity_token_offered_again_fails_its_nonce() {
    let key = random_key();
    let text = identity(&key);
    let first = Expected::Identity(IdentityExpected {
        freshness: Freshness::Challenge(CHALLENGE),
        device_uuid: Some(DEVICE),
    });
    let decoded = token::decode(&text).expect("decodes");
    assert!(verify(&decoded, &first, &trust(DEVICE, &key)).authentic());
    // The next run sends a new challenge; the captured token cannot know it.
    let next = Expected::Identity(IdentityExpected {
        freshness: Freshness::Challenge(*b"fedcba9876543210"),
        device_uuid: Some(DEVICE),
    });
    let verdict = verify(&decoded, &next, &trust(DEVICE, &key));
    assert!(!verdict.authentic());
    assert_eq!(
        verdict.decisive_failure().map(|c| c.name),
        Some(CheckName::Nonce)
    );
}

#[test]
fn a_token_of_another_trusted_device_fails_the_device_uuid() {
    let (mine, theirs) = (random_key(), random_key());
    let other = uuid::Uuid::from_u128(0x0dd);
    let mut trust = trust(DEVICE, &mine);
    trust.insert(other, &spki(&theirs)).expect("second device");
    // The other device's genuine JWT, offered on this device's run.
    let text = encode_jwt_of(other, &theirs);
    let decoded = token::decode(&text).expect("decodes");
    let expected = Expected::Jwt(JwtExpected {
        device_uuid: Some(DEVICE),
        freshness: JwtFreshness::NotChecked { now: NOW },
        audience: None,
        issuer: None,
    });
    let verdict = verify(&decoded, &expected, &trust);
    assert!(!verdict.authentic());
    assert_eq!(
        verdict.decisive_failure().map(|c| c.name),
        Some(CheckName::DeviceUuid)
    );
}

#[test]
fn a_common_name_asked_of_a_public_key_token_is_a_failed_check_not_ignored() {
    let key = random_key();
    let decoded = token::decode(&keygen_pub(&key)).expect("decodes");
    let expected = Expected::Keygen(KeygenExpected {
        format: KeyFormat::PublicKey,
        sec_tag: Some(SEC_TAG),
        device_uuid: Some(DEVICE),
        common_name: Some("x".into()),
    });
    let verdict = verify(&decoded, &expected, &trust(DEVICE, &key));
    assert!(!verdict.authentic());
    let failure = verdict.first_failure().expect("a failure");
    assert_eq!(failure.name, CheckName::CommonName);
    assert!(failure.detail.contains("carries no subject"), "{failure:?}");
}

fn encode_jwt_of(device: uuid::Uuid, key: &p256::ecdsa::SigningKey) -> String {
    nrf91_token::encode::jwt(
        &serde_json::json!({"alg": "ES256", "typ": "JWT"}),
        &serde_json::json!({
            "iss": format!("nRF9161.{device}"),
            "jti": format!("nRF9161.{device}.1"),
            "iat": NOW - 10,
            "exp": NOW + 600,
        }),
        key,
    )
}
