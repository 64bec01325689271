//! Round trips with keys made in the test: signed tokens verify, and each
//! check fails on its own when its one condition is broken.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use nrf91_token as token;
use nrf91_token::encode::{self, PAYLOAD_ID_CSR};
use nrf91_token::trust::TrustStore;
use nrf91_token::verify::{CheckName, Verdict, verify};
use nrf91_token::{Token, cose};
use p256::ecdsa::SigningKey;
use testkit::token::*;
use uuid::Uuid;

fn full_expectations() -> Bindings {
    Bindings {
        challenge: Some(CHALLENGE),
        sec_tag: Some(SEC_TAG),
        device_uuid: Some(DEVICE),
        common_name: Some(DEVICE.to_string()),
        now: Some(NOW),
        issuer: Some(format!("nRF9161.{DEVICE}")),
    }
}

fn check(text: &str, trust: &TrustStore, expect: &Bindings) -> Verdict {
    let token = token::decode(text).expect("decodes");
    verify(&token, &expect.expect(&token), trust)
}

fn failed(verdict: &Verdict) -> Vec<&'static str> {
    verdict.failures().map(|c| c.name.as_str()).collect()
}

fn names(verdict: &Verdict) -> Vec<&'static str> {
    verdict.checks.iter().map(|c| c.name.as_str()).collect()
}

/// Flip one bit of the COSE signature inside a modem token's text.
fn flip_signature_bit(text: &str) -> String {
    let (first, second) = text.split_once('.').expect("two parts");
    let mut cose_bytes = URL_SAFE_NO_PAD.decode(second).expect("b64");
    let last = cose_bytes.len() - 1;
    cose_bytes[last] ^= 0x01;
    format!("{first}.{}", URL_SAFE_NO_PAD.encode(cose_bytes))
}

#[test]
fn signed_identity_token_is_authentic_with_every_check_applied() {
    let key = random_key();
    let verdict = check(&identity(&key), &trust(DEVICE, &key), &full_expectations());
    assert!(verdict.authentic(), "{verdict:?}");
    assert_eq!(
        names(&verdict),
        [
            "kind",
            "message_type",
            "key_trusted",
            "algorithm",
            "key_id",
            "signature",
            "device_uuid",
            "nonce"
        ]
    );
}

#[test]
fn signed_keygen_csr_token_is_authentic_with_every_check_applied() {
    let key = random_key();
    let verdict = check(
        &keygen_csr(&key),
        &trust(DEVICE, &key),
        &full_expectations(),
    );
    assert!(verdict.authentic(), "{verdict:?}");
    assert_eq!(
        names(&verdict),
        [
            "kind",
            "message_type",
            "key_trusted",
            "algorithm",
            "key_id",
            "signature",
            "digest",
            "csr_signature",
            "device_uuid",
            "sec_tag",
            "common_name"
        ]
    );
}

#[test]
fn signed_keygen_public_key_token_is_authentic() {
    let key = random_key();
    let verdict = check(
        &keygen_pub(&key),
        &trust(DEVICE, &key),
        &full_expectations(),
    );
    assert!(verdict.authentic(), "{verdict:?}");
}

#[test]
fn signed_jwt_is_authentic_with_every_check_applied() {
    let key = random_key();
    let verdict = check(&jwt(&key), &trust(DEVICE, &key), &full_expectations());
    assert!(verdict.authentic(), "{verdict:?}");
    assert_eq!(
        names(&verdict),
        [
            "kind",
            "algorithm",
            "key_trusted",
            "signature",
            "device_uuid",
            "jwt_time",
            "jwt_issuer"
        ]
    );
}

#[test]
fn wrong_key_fails_only_the_signature() {
    let key = random_key();
    let other = random_key();
    for text in [identity(&key), keygen_csr(&key), jwt(&key)] {
        let verdict = check(&text, &trust(DEVICE, &other), &full_expectations());
        assert!(!verdict.authentic());
        assert_eq!(failed(&verdict), ["signature"], "{text}");
    }
}

#[test]
fn unknown_device_fails_key_trusted_and_is_never_authentic() {
    let key = random_key();
    let stranger = Uuid::from_u128(42);
    for text in [identity(&key), keygen_csr(&key), jwt(&key)] {
        let verdict = check(&text, &trust(stranger, &key), &full_expectations());
        assert!(!verdict.authentic());
        assert_eq!(failed(&verdict), ["key_trusted"]);
        assert!(
            verdict.check(CheckName::Signature).is_none(),
            "no key, no signature check"
        );
    }
    let verdict = check(&identity(&key), &TrustStore::new(), &Bindings::default());
    assert!(!verdict.authentic());
}

#[test]
fn flipped_signature_bit_fails_only_the_signature() {
    let key = random_key();
    for text in [identity(&key), keygen_csr(&key)] {
        let verdict = check(
            &flip_signature_bit(&text),
            &trust(DEVICE, &key),
            &full_expectations(),
        );
        assert_eq!(failed(&verdict), ["signature"]);
    }
    let text = jwt(&key);
    let (input, sig) = text.rsplit_once('.').expect("jwt");
    let mut sig = URL_SAFE_NO_PAD.decode(sig).expect("b64");
    sig[10] ^= 0x80;
    let tampered = format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig));
    let verdict = check(&tampered, &trust(DEVICE, &key), &full_expectations());
    assert_eq!(failed(&verdict), ["signature"]);
}

#[test]
fn other_challenge_fails_only_the_nonce() {
    let key = random_key();
    let expect = Bindings {
        challenge: Some([0xee; 16]),
        ..full_expectations()
    };
    let verdict = check(&identity(&key), &trust(DEVICE, &key), &expect);
    assert_eq!(failed(&verdict), ["nonce"]);
    assert!(
        verdict
            .first_failure()
            .expect("failure")
            .detail
            .contains("eeee")
    );
}

#[test]
fn other_sec_tag_fails_only_the_sec_tag() {
    let key = random_key();
    let expect = Bindings {
        sec_tag: Some(17),
        ..full_expectations()
    };
    let verdict = check(&keygen_csr(&key), &trust(DEVICE, &key), &expect);
    assert_eq!(failed(&verdict), ["sec_tag"]);
}

#[test]
fn other_device_uuid_seen_in_the_run_fails_only_device_uuid() {
    let key = random_key();
    let expect = Bindings {
        device_uuid: Some(Uuid::from_u128(7)),
        ..full_expectations()
    };
    for text in [identity(&key), keygen_csr(&key), jwt(&key)] {
        let verdict = check(&text, &trust(DEVICE, &key), &expect);
        assert_eq!(failed(&verdict), ["device_uuid"]);
    }
}

#[test]
fn der_changed_after_signing_fails_only_the_digest() {
    let key = random_key();
    // Sign a payload over one CSR, then send a different (valid) CSR.
    let signed_der = csr_der();
    let sent_der = csr_der();
    let payload = keygen_payload(&signed_der, PAYLOAD_ID_CSR);
    let text = encode::keygen_token(&sent_der, &payload, &key);
    let verdict = check(&text, &trust(DEVICE, &key), &full_expectations());
    assert_eq!(failed(&verdict), ["digest"]);
}

#[test]
fn csr_whose_own_signature_is_bad_fails_only_csr_signature() {
    let key = random_key();
    let mut der = csr_der();
    // The last byte is the low byte of the ECDSA s value.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let text = encode::keygen_token(&der, &keygen_payload(&der, PAYLOAD_ID_CSR), &key);
    let verdict = check(&text, &trust(DEVICE, &key), &full_expectations());
    assert_eq!(failed(&verdict), ["csr_signature"]);
}

#[test]
fn other_common_name_fails_only_common_name() {
    let key = random_key();
    let expect = Bindings {
        common_name: Some("someone-else".into()),
        ..full_expectations()
    };
    let verdict = check(&keygen_csr(&key), &trust(DEVICE, &key), &expect);
    assert_eq!(failed(&verdict), ["common_name"]);
}

#[test]
fn payload_id_that_contradicts_the_der_fails_only_message_type() {
    let key = random_key();
    let der = csr_der();
    let text = encode::keygen_token(&der, &keygen_payload(&der, 8), &key);
    let verdict = check(&text, &trust(DEVICE, &key), &full_expectations());
    assert_eq!(failed(&verdict), ["message_type"]);
}

#[test]
fn unknown_message_type_fails_only_message_type() {
    let key = random_key();
    let mut body = identity_body(CHALLENGE);
    body.msg_type = 2;
    let text = encode::identity_token(&body, &key);
    let verdict = check(&text, &trust(DEVICE, &key), &full_expectations());
    assert_eq!(failed(&verdict), ["message_type"]);
}

#[test]
fn token_signed_under_another_key_id_fails_only_key_id() {
    let key = random_key();
    let body = encode::identity_body(&identity_body(CHALLENGE));
    let cose_bytes = cose::sign1(&key, cose::KID_NORDIC_PRODUCTION, &body, true);
    let text = encode::join_b64(&body, &cose_bytes);
    let verdict = check(&text, &trust(DEVICE, &key), &full_expectations());
    assert_eq!(failed(&verdict), ["key_id"]);
}

#[test]
fn non_es256_algorithm_fails_the_algorithm_check() {
    let key = random_key();
    let body = encode::identity_body(&identity_body(CHALLENGE));
    // Protected header {1: -35} (ES384), signed correctly over it.
    let protected = vec![0xa1, 0x01, 0x38, 0x22];
    let sig: p256::ecdsa::Signature =
        p256::ecdsa::signature::Signer::sign(&key, &cose::sig_structure(&protected, &body));
    let cose_bytes = cose::encode_sign1(&protected, cose::KID_IDENTITY, None, &sig.to_bytes());
    let verdict = check(
        &encode::join_b64(&body, &cose_bytes),
        &trust(DEVICE, &key),
        &full_expectations(),
    );
    assert_eq!(failed(&verdict), ["algorithm"]);
}

#[test]
fn expired_jwt_fails_only_jwt_time() {
    let key = random_key();
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT"});
    let text = encode::jwt(&header, &jwt_claims(NOW - 7200, NOW - 3600), &key);
    let verdict = check(&text, &trust(DEVICE, &key), &full_expectations());
    assert_eq!(failed(&verdict), ["jwt_time"]);
    assert!(
        verdict
            .check(CheckName::JwtTime)
            .expect("check")
            .detail
            .contains("expired")
    );
}

#[test]
fn jwt_from_another_issuer_fails_only_jwt_issuer() {
    let key = random_key();
    let expect = Bindings {
        issuer: Some("nRF9160.other".into()),
        ..full_expectations()
    };
    let verdict = check(&jwt(&key), &trust(DEVICE, &key), &expect);
    assert_eq!(failed(&verdict), ["jwt_issuer"]);
}

#[test]
fn token_without_its_cose_part_decodes_but_is_not_authentic() {
    let key = random_key();
    for text in [identity(&key), keygen_csr(&key)] {
        let unsigned = text.split_once('.').expect("two parts").0;
        let token = token::decode(unsigned).expect("decodes what is there");
        let verdict = verify(
            &token,
            &full_expectations().expect(&token),
            &trust(DEVICE, &key),
        );
        assert!(!verdict.authentic());
        let sig = verdict
            .check(CheckName::Signature)
            .expect("signature check");
        assert!(!sig.passed && sig.detail.contains("no COSE"), "{sig:?}");
        let json = token.to_json();
        assert_eq!(json["cose"], serde_json::Value::Null);
    }
}

#[test]
fn identity_token_with_an_embedded_payload_other_than_the_body_is_not_authentic() {
    let key = random_key();
    let body = encode::identity_body(&identity_body(CHALLENGE));
    let other = encode::identity_body(&identity_body([1; 16]));
    // Signed over `other`, embedded, sent with `body`.
    let cose_bytes = cose::sign1(&key, cose::KID_IDENTITY, &other, false);
    let text = encode::join_b64(&body, &cose_bytes);
    let verdict = check(&text, &trust(DEVICE, &key), &full_expectations());
    assert!(!verdict.authentic());
    assert_eq!(failed(&verdict), ["signature"]);
}

#[test]
fn decoded_round_trip_reproduces_the_built_fields() {
    let key = random_key();
    let Token::Identity(t) = token::decode(&identity(&key)).expect("decode") else {
        panic!("kind")
    };
    assert_eq!(t.device_uuid, DEVICE);
    assert_eq!(t.firmware_uuid, FIRMWARE);
    assert_eq!(t.nonce, CHALLENGE);
    assert_eq!(t.device_type.name(), "nRF9161 LACA");
    let Token::Keygen(k) = token::decode(&keygen_csr(&key)).expect("decode") else {
        panic!("kind")
    };
    assert_eq!(k.sec_tag, SEC_TAG);
    assert_eq!(k.payload_id, PAYLOAD_ID_CSR);
    assert_eq!(k.csr.expect("csr").subject, format!("CN={DEVICE}"));
    let Token::Jwt(j) = token::decode(&format!("%JWT: \"{}\"", jwt(&key))).expect("decode") else {
        panic!("kind")
    };
    assert_eq!(j.issuer_uuid(), Some(DEVICE));
    assert_eq!(j.claim_str("sub"), Some("station-7"));
}

#[test]
fn unknown_device_type_is_reported_not_rejected() {
    let key: SigningKey = random_key();
    let mut body = identity_body(CHALLENGE);
    body.device_type = 99;
    let token = token::decode(&encode::identity_token(&body, &key)).expect("decode");
    let json = token.to_json();
    assert_eq!(json["device_type"], "unknown");
    assert_eq!(json["device_type_code"], 99);
}

#[test]
fn sec_tags_of_2_pow_31_and_above_round_trip_through_negative_cbor() {
    let key = random_key();
    let der = csr_der();
    let mut payload = keygen_payload(&der, PAYLOAD_ID_CSR);
    payload.sec_tag = 0xffff_fffe;
    let Token::Keygen(k) =
        token::decode(&encode::keygen_token(&der, &payload, &key)).expect("decode")
    else {
        panic!("kind")
    };
    assert_eq!(k.sec_tag, 0xffff_fffe);
}

// ---- issue 18: a station's own %JWT is bound to its request -------------

/// What the station asked: this challenge as `sub`, the clock set at
/// `NOW - 2`, judged at `NOW`, `exp_delta` 300, audience `factory`.
fn asked() -> nrf91_token::Expected {
    use nrf91_token::{Expected, JwtAsked, JwtExpected, JwtFreshness};
    Expected::Jwt(JwtExpected {
        device_uuid: Some(DEVICE),
        freshness: JwtFreshness::Asked(JwtAsked {
            challenge: "station-7".into(),
            clock_set: NOW - 2,
            now: NOW,
            exp_delta: 300,
        }),
        audience: Some("factory".into()),
        issuer: None,
    })
}

/// A JWT of `claims` signed by `key`, judged against [`asked`].
fn judged(claims: serde_json::Value, key: &SigningKey) -> Verdict {
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT"});
    let text = encode::jwt(&header, &claims, key);
    let token = token::decode(&text).expect("decodes");
    verify(&token, &asked(), &trust(DEVICE, key))
}

/// A change to a JWT's claims.
type Change = dyn Fn(&mut serde_json::Map<String, serde_json::Value>);

fn detail(verdict: &Verdict, name: CheckName) -> String {
    verdict.check(name).expect("evaluated").detail.clone()
}

#[test]
fn a_jwt_made_for_this_request_passes_every_freshness_check() {
    let key = random_key();
    let verdict = judged(jwt_claims(NOW - 1, NOW - 1 + 300), &key);
    assert!(verdict.authentic(), "{:?}", verdict.checks);
    for name in ["jwt_challenge", "jwt_time", "jwt_audience"] {
        assert!(names(&verdict).contains(&name), "{name}");
    }
}

#[test]
fn each_missing_or_stale_claim_fails_with_words_that_name_it() {
    let key = random_key();
    let with = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut claims = jwt_claims(NOW - 1, NOW - 1 + 300);
        f(claims.as_object_mut().expect("object"));
        judged(claims, &key)
    };
    // (what changed, the one check that fails, words its detail holds)
    let cases: [(&str, Box<Change>, &str, &str); 9] = [
        (
            "no time claims",
            Box::new(|c| {
                c.remove("iat");
                c.remove("exp");
            }),
            "jwt_time",
            "no iat and no exp claim, asked for exp_delta 300",
        ),
        (
            "no iat",
            Box::new(|c| {
                c.remove("iat");
            }),
            "jwt_time",
            "no iat claim",
        ),
        (
            "no exp",
            Box::new(|c| {
                c.remove("exp");
            }),
            "jwt_time",
            "no exp claim",
        ),
        (
            "iat before the clock was set",
            Box::new(|c| {
                c.insert("iat".into(), (NOW - 60).into());
                c.insert("exp".into(), (NOW + 240).into());
            }),
            "jwt_time",
            "iat 1699999940 is stale",
        ),
        (
            "iat after the answer",
            Box::new(|c| {
                c.insert("iat".into(), (NOW + 60).into());
                c.insert("exp".into(), (NOW + 360).into());
            }),
            "jwt_time",
            "is stale",
        ),
        (
            "another exp_delta",
            Box::new(|c| {
                c.insert("exp".into(), (NOW - 1 + 600).into());
            }),
            "jwt_time",
            "exp 1700000599 - iat 1699999999 = 600, asked for exp_delta 300",
        ),
        (
            "another subject",
            Box::new(|c| {
                c.insert("sub".into(), DEVICE.to_string().into());
            }),
            "jwt_challenge",
            "is not this run's challenge station-7",
        ),
        (
            "no subject",
            Box::new(|c| {
                c.remove("sub");
            }),
            "jwt_challenge",
            "no sub claim",
        ),
        (
            "another audience",
            Box::new(|c| {
                c.insert("aud".into(), "elsewhere".into());
            }),
            "jwt_audience",
            "aud \"elsewhere\", asked for \"factory\"",
        ),
    ];
    for (what, change, check, words) in cases {
        let verdict = with(&*change);
        assert_eq!(failed(&verdict), [check], "{what}");
        let name = verdict.failures().next().expect("failure").name;
        assert!(
            detail(&verdict, name).contains(words),
            "{what}: {}",
            detail(&verdict, name)
        );
        assert!(!verdict.authentic() && !verdict.bindings_hold(), "{what}");
    }
}

#[test]
fn an_audience_nobody_asked_for_fails_and_none_asked_is_none_required() {
    use nrf91_token::{Expected, JwtFreshness};
    let key = random_key();
    let mut expected = asked();
    if let Expected::Jwt(jwt) = &mut expected {
        jwt.audience = None;
    }
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT"});
    let text = encode::jwt(&header, &jwt_claims(NOW - 1, NOW + 299), &key);
    let token = token::decode(&text).expect("decodes");
    let verdict = verify(&token, &expected, &trust(DEVICE, &key));
    assert_eq!(failed(&verdict), ["jwt_audience"]);
    let mut claims = jwt_claims(NOW - 1, NOW + 299);
    claims.as_object_mut().expect("object").remove("aud");
    let text = encode::jwt(&header, &claims, &key);
    let token = token::decode(&text).expect("decodes");
    assert!(verify(&token, &expected, &trust(DEVICE, &key)).authentic());
    // Offline nothing was asked: no challenge, no audience, the old window.
    if let Expected::Jwt(jwt) = &mut expected {
        jwt.freshness = JwtFreshness::NotChecked { now: NOW };
    }
    let verdict = verify(&token, &expected, &trust(DEVICE, &key));
    assert!(!names(&verdict).contains(&"jwt_challenge"));
}

#[test]
fn control_characters_in_any_jwt_text_or_csr_cn_are_refused_when_decoding() {
    let key = random_key();
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT"});
    for (claim, value, character) in [
        ("jti", "nRF9161.abc\u{0}def", "U+0000"),
        ("iss", "nRF9161\u{1b}]0;owned\u{7}.x", "U+001B"),
        ("sub", "a\rb", "U+000D"),
        ("aud", "\u{9b}31m", "U+009B"),
    ] {
        let mut claims = jwt_claims(NOW - 1, NOW + 299);
        claims[claim] = value.into();
        let text = encode::jwt(&header, &claims, &key);
        let err = token::decode(&text).expect_err("refused");
        assert!(err.is_malformed_text(), "{claim}: {err}");
        assert!(
            err.to_string().contains(&format!(
                "claim \"{claim}\" holds control character {character}"
            )),
            "{err}"
        );
    }
    // Nested, in an audience array, and in the header.
    let mut claims = jwt_claims(NOW - 1, NOW + 299);
    claims["aud"] = serde_json::json!(["ok", "n\u{0}o"]);
    let err = token::decode(&encode::jwt(&header, &claims, &key)).expect_err("refused");
    assert!(err.to_string().contains("claim \"aud\"[1]"), "{err}");
    let bad_header = serde_json::json!({"alg": "ES256", "kid": "\u{1b}[2J"});
    let err = token::decode(&encode::jwt(&bad_header, &jwt_claims(NOW, NOW + 1), &key))
        .expect_err("refused");
    assert!(err.to_string().contains("header field \"kid\""), "{err}");

    // A CSR whose subject CN holds an escape sequence.
    let subject =
        nrf91_token::csr::parse_subject(&format!("CN={DEVICE}\u{1b}[2J")).expect("subject");
    let usage =
        nrf91_token::csr::parse_key_usage(nrf91_token::csr::DEFAULT_KEY_USAGE).expect("usage");
    let der = nrf91_token::csr::build_csr(&random_key(), subject, usage).expect("CSR");
    let text = encode::keygen_token(&der, &keygen_payload(&der, PAYLOAD_ID_CSR), &key);
    let err = token::decode(&text).expect_err("refused");
    assert!(
        err.is_malformed_text()
            && err
                .to_string()
                .contains("the CSR subject's CN holds control character U+001B"),
        "{err}"
    );
}
