//! `%CLAIMTOKEN`: the device claim token decodes in the layout this
//! project assumes, says which fields it recognised, and fails on its own
//! each binding a station checks: the device, the challenge, the
//! ownership-key digest, the signature.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ciborium::value::Value;
use nrf91_token as token;
use nrf91_token::claim::ownership_key_digest;
use nrf91_token::encode;
use nrf91_token::verify::{CheckName, Verdict, verify};
use nrf91_token::{ClaimExpected, Expected, Freshness, Token, TokenKind, cose};
use testkit::token::*;
use uuid::Uuid;

fn expected(owner_spki: &[u8]) -> Expected {
    Expected::Claim(ClaimExpected {
        freshness: Freshness::Challenge(CHALLENGE),
        device_uuid: Some(DEVICE),
        ownership_key_digest: Some(ownership_key_digest(owner_spki)),
    })
}

fn judge(text: &str, key: &p256::ecdsa::SigningKey, owner_spki: &[u8]) -> Verdict {
    let decoded = token::decode(text).expect("decodes");
    verify(&decoded, &expected(owner_spki), &trust(DEVICE, key))
}

fn failed(verdict: &Verdict) -> Vec<&'static str> {
    verdict.failures().map(|c| c.name.as_str()).collect()
}

#[test]
fn a_claim_token_decodes_with_every_assumed_field_recognised_and_verifies() {
    let (key, owner) = (random_key(), spki(&random_key()));
    let text = claim(&key, &owner);
    let line = format!("%CLAIMTOKEN: \"{text}\"");
    let Token::Claim(decoded) = token::decode(&line).expect("decodes") else {
        panic!("not a claim token");
    };
    assert_eq!(decoded.device_uuid, Some(DEVICE));
    assert_eq!(decoded.firmware_uuid, Some(FIRMWARE));
    assert_eq!(
        decoded.ownership_key_digest,
        Some(ownership_key_digest(&owner))
    );
    assert_eq!(decoded.challenge, Some(CHALLENGE));
    assert_eq!(
        decoded.recognised,
        [
            "msg_type",
            "device_uuid",
            "device_type",
            "firmware_uuid",
            "ownership_key_digest",
            "challenge"
        ]
    );
    assert!(decoded.raw.is_empty());
    let verdict = judge(&text, &key, &owner);
    assert!(verdict.authentic(), "{verdict:#?}");
    let names: Vec<_> = verdict.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kind",
            "layout",
            "message_type",
            "key_trusted",
            "algorithm",
            "key_id",
            "signature",
            "device_uuid",
            "nonce",
            "digest"
        ]
    );
    let json = token::decode(&text).expect("decodes").to_json();
    assert_eq!(json["kind"], "claim");
    assert_eq!(json["challenge"], hex::encode(CHALLENGE));
}

#[test]
fn each_binding_of_a_claim_token_fails_on_its_own() {
    let (key, owner) = (random_key(), spki(&random_key()));
    let other_owner = spki(&random_key());
    let body = |f: &dyn Fn(&mut encode::ClaimBody)| {
        let mut b = claim_body(&owner, Some(CHALLENGE));
        f(&mut b);
        encode::claim_token(&b, &key)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "the digest of another ownership key",
            body(&|b| b.ownership_key_digest = ownership_key_digest(&other_owner)),
            "digest",
        ),
        (
            "another device's UUID",
            body(&|b| b.device_uuid = *Uuid::from_u128(7).as_bytes()),
            "device_uuid",
        ),
        (
            "a stale challenge (a replayed claim token)",
            body(&|b| b.challenge = Some(*b"an earlier chal!")),
            "nonce",
        ),
        (
            "no challenge at all",
            body(&|b| b.challenge = None),
            "nonce",
        ),
        (
            "a forged signature",
            encode::claim_token(&claim_body(&owner, Some(CHALLENGE)), &random_key()),
            "signature",
        ),
    ];
    for (what, text, check) in cases {
        let verdict = judge(&text, &key, &owner);
        assert!(!verdict.authentic(), "{what} passed");
        let failures = failed(&verdict);
        // Another UUID has no key in the trust file either.
        let expected: &[&str] = if check == "device_uuid" {
            &["key_trusted", "device_uuid"]
        } else {
            &[check]
        };
        assert_eq!(failures, expected, "{what}: {verdict:#?}");
    }
}

#[test]
fn a_body_in_another_layout_decodes_keeps_the_rest_raw_and_fails_layout() {
    let key = random_key();
    // Another layout: a map where the assumed layout has its digest.
    let body = cose::to_cbor(&Value::Tag(
        cose::TAG_SELF_DESCRIBED,
        Box::new(Value::Array(vec![
            Value::Integer(4.into()),
            Value::Bytes(DEVICE.as_bytes().to_vec()),
            Value::Integer(4.into()),
            Value::Bytes(FIRMWARE.as_bytes().to_vec()),
            Value::Map(vec![(Value::Integer(1.into()), Value::Bytes(vec![1; 32]))]),
            Value::Text("extra".into()),
            Value::Integer(9.into()),
        ])),
    ));
    let text = encode::join_b64(&body, &cose::sign1(&key, cose::KID_IDENTITY, &body, true));
    let Token::Claim(decoded) = token::decode(&text).expect("decodes") else {
        panic!("not a claim token");
    };
    assert_eq!(
        decoded.recognised,
        ["msg_type", "device_uuid", "device_type", "firmware_uuid"]
    );
    assert_eq!(
        decoded.raw.iter().map(|r| r.item).collect::<Vec<_>>(),
        [5, 6, 7]
    );
    assert_eq!(decoded.ownership_key_digest, None);
    let verdict = judge(&text, &key, b"owner");
    assert_eq!(failed(&verdict), ["layout", "nonce", "digest"]);
    let layout = verdict.check(CheckName::Layout).expect("layout check");
    assert!(
        layout.detail.contains("kept raw item 5 (a1"),
        "{}",
        layout.detail
    );
}

#[test]
fn an_identity_token_is_not_a_claim_token_and_the_prefix_must_agree() {
    let key = random_key();
    let identity_text = identity(&key);
    assert_eq!(
        token::decode(&identity_text).expect("decodes").kind(),
        TokenKind::Identity
    );
    let error = token::decode(&format!("%CLAIMTOKEN: \"{identity_text}\""))
        .expect_err("identity token under the claim prefix");
    assert!(
        error.to_string().contains("holds a identity token"),
        "{error}"
    );
    // And a claim token is never taken for an identity token.
    let claim_text = claim(&key, b"owner");
    let body = URL_SAFE_NO_PAD
        .decode(claim_text.split('.').next().expect("part 1"))
        .expect("b64");
    assert!(token::attest::decode_body(&body).is_err());
}

#[test]
fn cose_key_ids_minus_2_4_5_are_named_in_the_recorded_check() {
    let key = random_key();
    let body = encode::identity_body(&identity_body(CHALLENGE));
    for (kid, name, passes) in [
        (cose::KID_IDENTITY, "21 (device identity key)", true),
        (
            cose::KID_NORDIC_PRODUCTION,
            "23 (Nordic base production key)",
            false,
        ),
        (cose::KID_NORDIC_RND, "24 (Nordic base R&D key)", false),
    ] {
        let text = encode::join_b64(&body, &cose::sign1(&key, kid, &body, true));
        let decoded = token::decode(&text).expect("decodes");
        let verdict = verify(
            &decoded,
            &Expected::Identity(nrf91_token::IdentityExpected {
                freshness: Freshness::Challenge(CHALLENGE),
                device_uuid: Some(DEVICE),
            }),
            &trust(DEVICE, &key),
        );
        let check = verdict.check(CheckName::KeyId).expect("key_id check");
        assert_eq!(check.passed, passes, "{check:?}");
        assert!(check.detail.contains(name), "{check:?}");
        // Stored as the record's checks: the name travels with the run.
        let stored = serde_json::to_string(&verdict.checks).expect("json");
        assert!(stored.contains(name), "{stored}");
    }
}
