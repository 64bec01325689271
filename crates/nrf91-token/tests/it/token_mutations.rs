//! Every single-byte change and every truncation of a valid token — of its
//! text and of its decoded parts — is a decode error or "not authentic",
//! never a panic and never "authentic".

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use nrf91_token as token;
use nrf91_token::trust::TrustStore;
use nrf91_token::verify::verify;
use nrf91_token::{Expected, encode};
use testkit::token::*;

struct Tally {
    tried: usize,
    decode_errors: usize,
}

/// Decode and verify `text`; fail the test if it comes out authentic.
fn assert_not_authentic(
    text: &str,
    trust: &TrustStore,
    expect: &Expected,
    tally: &mut Tally,
    what: &str,
) {
    tally.tried += 1;
    match token::decode(text) {
        Err(_) => tally.decode_errors += 1,
        Ok(token) => {
            let verdict = verify(&token, expect, trust);
            assert!(!verdict.authentic(), "{what} came out authentic: {text}");
        }
    }
}

fn expectations() -> Bindings {
    Bindings {
        challenge: Some(CHALLENGE),
        sec_tag: Some(SEC_TAG),
        device_uuid: Some(DEVICE),
        common_name: Some(DEVICE.to_string()),
        now: Some(NOW),
        issuer: None,
    }
}

/// All 255 other values at every position, and every proper prefix.
fn walk_bytes(original: &[u8], mut each: impl FnMut(&[u8], String)) {
    let mut buf = original.to_vec();
    for i in 0..original.len() {
        for value in 0..=255u8 {
            if value == original[i] {
                continue;
            }
            buf[i] = value;
            each(&buf, format!("byte {i} set to {value:#04x}"));
        }
        buf[i] = original[i];
    }
    for len in 0..original.len() {
        each(&original[..len], format!("truncated to {len} bytes"));
    }
}

fn walk_text(text: &str, trust: &TrustStore) -> Tally {
    // Sanity: the unmodified token passes, so a failure below is the
    // mutation's. Mutations are judged as what the original's command must
    // return.
    let token = token::decode(text).expect("original decodes");
    let expect = expectations().expect(&token);
    assert!(
        verify(&token, &expect, trust).authentic(),
        "original must be authentic"
    );
    let mut tally = Tally {
        tried: 0,
        decode_errors: 0,
    };
    walk_bytes(text.as_bytes(), |bytes, what| {
        // Non-UTF-8 text never reaches the decoder (it takes &str).
        if let Ok(mutated) = std::str::from_utf8(bytes) {
            assert_not_authentic(mutated, trust, &expect, &mut tally, &what);
        }
    });
    tally
}

/// Mutate each decoded part of a two-part modem token, re-encode, verify.
fn walk_parts(text: &str, trust: &TrustStore) -> Tally {
    let expect = expectations().expect(&token::decode(text).expect("original decodes"));
    let (a, b) = text.split_once('.').expect("two parts");
    let first = URL_SAFE_NO_PAD.decode(a).expect("b64");
    let second = URL_SAFE_NO_PAD.decode(b).expect("b64");
    let mut tally = Tally {
        tried: 0,
        decode_errors: 0,
    };
    walk_bytes(&first, |bytes, what| {
        let t = encode::join_b64(bytes, &second);
        assert_not_authentic(&t, trust, &expect, &mut tally, &format!("part 1 {what}"));
    });
    walk_bytes(&second, |bytes, what| {
        let t = encode::join_b64(&first, bytes);
        assert_not_authentic(&t, trust, &expect, &mut tally, &format!("part 2 {what}"));
    });
    tally
}

#[test]
fn identity_token_text_mutations_are_never_authentic() {
    let key = random_key();
    let tally = walk_text(&identity(&key), &trust(DEVICE, &key));
    assert!(tally.tried > 10_000 && tally.decode_errors > 0);
}

#[test]
fn identity_token_byte_mutations_are_never_authentic() {
    let key = random_key();
    let tally = walk_parts(&identity(&key), &trust(DEVICE, &key));
    assert!(tally.tried > 10_000);
}

#[test]
fn keygen_public_key_token_text_mutations_are_never_authentic() {
    let key = random_key();
    walk_text(&keygen_pub(&key), &trust(DEVICE, &key));
}

#[test]
fn keygen_csr_token_text_mutations_are_never_authentic() {
    let key = random_key();
    walk_text(&keygen_csr(&key), &trust(DEVICE, &key));
}

#[test]
fn keygen_csr_token_byte_mutations_are_never_authentic() {
    let key = random_key();
    walk_parts(&keygen_csr(&key), &trust(DEVICE, &key));
}

#[test]
fn jwt_text_mutations_are_never_authentic() {
    let key = random_key();
    walk_text(&jwt(&key), &trust(DEVICE, &key));
}
