//! Real modem outputs (tests/fixtures/real-modem-tokens.json) decode to the
//! fields recorded with them, through the library (and through `parse
//! --json`: the root package's `token_cli`).

use nrf91_token as token;
use nrf91_token::{KeyFormat, Token};
use serde_json::Value;
use testkit::fixtures::{REAL_MODEM_TOKENS, assert_fields, token_cases as cases};

fn fixtures() -> Value {
    serde_json::from_str(REAL_MODEM_TOKENS).expect("fixture JSON")
}

#[test]
fn every_fixture_decodes_to_its_expected_fields() {
    let cases = cases();
    assert_eq!(cases.len(), 4);
    for (name, text, expect) in cases {
        let token = token::decode(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_fields(&name, &token.to_json(), &expect);
    }
}

#[test]
fn fixtures_decode_from_quoted_text_and_whole_response_lines() {
    let all = fixtures();
    for (name, prefix) in [
        ("attest", "%ATTESTTOKEN"),
        ("keygen_csr", "%KEYGEN"),
        ("keygen_pub", "%KEYGEN"),
    ] {
        let text = all[name]["token"].as_str().expect("token");
        let bare = token::decode(text).expect("bare");
        let quoted = token::decode(&format!("\"{text}\"")).expect("quoted");
        let line = token::decode(&format!("{prefix}: \"{text}\"\r\n")).expect("line");
        assert_eq!(bare, quoted);
        assert_eq!(bare, line);
    }
}

#[test]
fn a_response_line_of_the_wrong_kind_is_rejected() {
    let all = fixtures();
    let text = all["attest"]["token"].as_str().expect("token");
    let err = token::decode(&format!("%KEYGEN: \"{text}\"")).expect_err("mismatch");
    assert!(err.to_string().contains("%KEYGEN"), "{err}");
}

#[test]
fn identity_fixture_carries_cose_headers_and_device_type_name() {
    let all = fixtures();
    let Token::Identity(t) =
        token::decode(all["attest"]["token"].as_str().expect("token")).expect("decode")
    else {
        panic!("not an identity token")
    };
    assert_eq!(t.device_type.name(), "nRF9160 SICA");
    let cose = t.cose.expect("COSE part");
    assert_eq!(cose.alg, Some(-7));
    assert_eq!(cose.kid.as_deref(), Some(&[0x21][..]));
    assert_eq!(cose.payload, None);
    assert_eq!(cose.signature.len(), 64);
    assert_eq!(cose.protected, vec![0xa1, 0x01, 0x26]);
}

#[test]
fn old_firmware_csr_with_null_parameter_parses_and_its_signature_verifies() {
    let all = fixtures();
    let Token::Keygen(t) =
        token::decode(all["keygen_csr"]["token"].as_str().expect("token")).expect("decode")
    else {
        panic!("not a keygen token")
    };
    assert_eq!(t.format, KeyFormat::Csr);
    let csr = t.csr.as_ref().expect("CSR info");
    assert!(csr.legacy_null_params);
    assert!(csr.signature_valid);
    assert_eq!(csr.subject, "CN=50363154-3931-44f0-8022-121b6401627d");
    assert_eq!(
        csr.common_name.as_deref(),
        Some("50363154-3931-44f0-8022-121b6401627d")
    );
    // The digest binds the bytes as sent, NULL included.
    assert!(t.digest_matches);
    assert!(t.public_key_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
}

#[test]
fn re_encoded_csr_no_longer_matches_its_digest_but_still_parses() {
    let all = fixtures();
    let Token::Keygen(t) =
        token::decode(all["keygen_csr_altered"]["token"].as_str().expect("token")).expect("decode")
    else {
        panic!("not a keygen token")
    };
    assert!(!t.digest_matches);
    let csr = t.csr.as_ref().expect("CSR info");
    assert!(!csr.legacy_null_params);
    assert_eq!(
        csr.common_name.as_deref(),
        Some("50343956-3037-4738-800d-1f29e0a0f7bf")
    );
}

#[test]
fn normalised_copy_of_an_old_firmware_csr_drops_the_null_and_still_verifies() {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let all = fixtures();
    let text = all["keygen_csr"]["token"].as_str().expect("token");
    let der = URL_SAFE_NO_PAD
        .decode(text.split_once('.').expect("two parts").0)
        .expect("b64");
    let parsed = token::csr::parse_csr(&der).expect("parses");
    assert!(parsed.info.legacy_null_params);
    assert_eq!(
        parsed.normalised_der.len(),
        der.len() - 2,
        "NULL (05 00) removed"
    );
    let again = token::csr::parse_csr(&parsed.normalised_der).expect("normalised parses");
    assert!(!again.info.legacy_null_params);
    assert!(again.info.signature_valid);
    assert_eq!(again.public_key_spki, parsed.public_key_spki);
}
